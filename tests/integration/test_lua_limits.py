"""SPEC section 6: the Lua sandbox. Scripts get no os.execute, io or binary
chunks; an instruction budget stops endless loops (even inside pcall) and a
memory cap stops runaway tables. Either fails that event, never the service."""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import ROOT, IntegTest, nowcerts_event  # noqa: E402

# Hostile routes, added to a copy of the shipped routes.lua before its final
# `return`. Each event carries the path it tries to write, if any.
HOSTILE = r'''
nowcerts.LOOP_FOREVER = function(ev) while true do end end
nowcerts.LOOP_IN_PCALL = function(ev)
  while true do pcall(function() while true do end end) end
end
nowcerts.EAT_MEMORY = function(ev)
  local t, i = {}, 0
  while true do i = i + 1; t[i] = string.rep("x", 4096) .. i end
end
nowcerts.TRY_OS = function(ev) return os.execute("echo pwned > " .. ev.data.path) end
nowcerts.TRY_IO = function(ev)
  local f = io.open(ev.data.path, "w"); f:write("pwned"); f:close()
end
nowcerts.TRY_BINARY_CHUNK = function(ev)
  return load(string.dump(function() return 1 end), "x", "b")()
end
nowcerts.TRY_C_MODULE = function(ev) return package.loadlib("libc.so.6", "system") end
'''


class LuaLimits(IntegTest):
    def _server(self):
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy)
        routes = copy / "routes.lua"
        text = routes.read_text()
        cut = text.rstrip().rfind("\nreturn")
        self.assertGreater(cut, 0, "routes.lua does not end in a return")
        routes.write_text(text[:cut] + "\n" + HOSTILE + text[cut:])
        return self.server({"MAPPINGS_DIR": copy, "LUA_INSTRUCTION_BUDGET": 1000000,
                            "LUA_MEMORY_MB": 32, "MAX_RETRIES": 0})

    def _fails_alone(self, s, event_type, data=None):
        ans = s.nowcerts(nowcerts_event(event_type, data or {}))
        body = self.assertJSONAnswer(ans, 502)
        self.assertEqual(body.get("status"), "dead", body)
        self.assertTrue(body.get("error"), body)
        self.assertTrue(s.running(), "%s took the service down" % event_type)
        self.assertEqual(s.get("/health").status, 200)
        # The next event, on the same Lua state, still works.
        ev = nowcerts_event("INSURED_INSERT")
        ok = self.assertJSONAnswer(s.nowcerts(ev), 200)
        self.assertEqual(ok["data"].get("action"), "created", ok)
        return body

    def test_endless_loop_is_stopped_by_the_budget(self):
        self._fails_alone(self._server(), "LOOP_FOREVER")

    def test_pcall_cannot_swallow_the_budget(self):
        self._fails_alone(self._server(), "LOOP_IN_PCALL")

    def test_runaway_table_is_stopped_by_the_memory_cap(self):
        self._fails_alone(self._server(), "EAT_MEMORY")

    def test_no_os_io_binary_chunks_or_c_modules(self):
        s = self._server()
        for kind in ("TRY_OS", "TRY_IO", "TRY_BINARY_CHUNK", "TRY_C_MODULE"):
            with self.subTest(kind=kind):
                target = self.tmp / ("pwned-" + kind)
                self._fails_alone(s, kind, {"path": str(target)})
                self.assertFalse(target.exists(), "%s wrote a file" % kind)


if __name__ == "__main__":
    harness.main()
