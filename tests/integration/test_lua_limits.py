"""SPEC section 6: the Lua sandbox. Scripts get no os.execute, io or binary
chunks; an instruction budget stops endless loops (even inside pcall) and a
memory cap stops runaway tables. Either fails that event, never the service.

SPEC section 11: the limits belong to the event. One event's memory never
kills another (its own cap fails it; pressure from the others is retried),
and a per-event time limit also stops time spent inside C functions
(patterns, string.rep, JSON)."""

import shutil
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
-- Memory held across a parked call: ev.data.n strings of about 4 KB.
nowcerts.HOLD_MEMORY = function(ev)
  local t = {}
  for i = 1, ev.data.n do t[i] = string.rep("h", 4000) .. i end
  pcall(ncghl.call, "ghl", "GET", "/ncghl-hold")
  return {action = "held", n = #t}
end
-- An ordinary event that needs a few MB for a moment.
nowcerts.NEEDS_MEMORY = function(ev)
  local t = {}
  for i = 1, ev.data.n do t[i] = string.rep("n", 4000) .. i end
  return {action = "built", n = #t}
end
nowcerts.SLOW_PATTERN = function(ev)
  return {found = string.find(string.rep("a", 500000), ".-.-.-.-b") ~= nil}
end
nowcerts.SLOW_PATTERN_IN_PCALL = function(ev)
  local s = string.rep("a", 500000)
  while true do pcall(string.find, s, ".-.-.-.-b") end
end
nowcerts.HUGE_REP = function(ev) return {n = #string.rep("x", 2 ^ 31)} end
nowcerts.HUGE_JSON = function(ev)
  local row, t, u = string.rep("x", 1000), {}, {}
  for i = 1, 1000 do t[i] = row end
  for i = 1, 1000 do u[i] = t end
  return {n = #require("cjson").encode(u)}
end
nowcerts.LONG_LOOP = function(ev) local i = 0 while true do i = i + 1 end end
'''


class Hold:
    """A GHL stand-in whose every request waits until the test releases it:
    events that call it stay parked, holding what they built."""

    def __init__(self):
        self.release = threading.Event()
        self.waiting = 0
        self.lock = threading.Lock()
        hold = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                with hold.lock:
                    hold.waiting += 1
                hold.release.wait(120)
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None  # ncghl hung up first: fine
        self.base = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class HostileRoutes(IntegTest):
    def _server(self, **env):
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy)
        routes = copy / "routes.lua"
        text = routes.read_text()
        cut = text.rstrip().rfind("\nreturn")
        self.assertGreater(cut, 0, "routes.lua does not end in a return")
        routes.write_text(text[:cut] + "\n" + HOSTILE + text[cut:])
        base = {"MAPPINGS_DIR": copy, "LUA_INSTRUCTION_BUDGET": 1000000,
                "LUA_MEMORY_MB": 32, "MAX_RETRIES": 0}
        base.update(env)
        return self.server(base)

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



class LuaLimits(HostileRoutes):
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



class EventMemory(HostileRoutes):
    """LUA_MEMORY_MB=32: each event may use 8 MB of it (the default quarter)."""

    def _held(self):
        hold = Hold()
        self.addCleanup(hold.close)
        s = self._server(GHL_BASE_URL=hold.base, WEBHOOK_WAIT_MS=300, UPSTREAM_TIMEOUT=120,
                         ADMIN_TOKEN="adm-" + harness.uniq(16))
        return s, hold

    def test_one_events_memory_never_kills_another(self):
        s, hold = self._held()
        # 27 MB for one event: over its own 8 MB, under the state's 32 MB.
        hog = s.nowcerts(nowcerts_event("HOLD_MEMORY", {"n": 6500}))
        # Ordinary events needing 6 MB each, while the hog would be holding.
        for i in range(3):
            ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event("NEEDS_MEMORY", {"n": 1500, "i": i})),
                                        200)
            self.assertEqual(ans["data"].get("action"), "built", ans)
        hold.release.set()
        body = hog.json()
        ev = s.wait_event(body["event_id"], ("dead",))
        self.assertIn("the event's own limit (LUA_EVENT_MEMORY_MB)", ev.get("last_error") or "", ev)
        ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event("NEEDS_MEMORY", {"n": 1500})), 200)
        self.assertEqual(ans["data"].get("action"), "built", ans)

    def test_pressure_from_other_events_is_retried_not_dead(self):
        s, hold = self._held()
        # Four events of 7.3 MB each, each within its own cap, parked.
        holders = [s.nowcerts(nowcerts_event("HOLD_MEMORY", {"n": 1800, "i": i})) for i in range(4)]
        for r in holders:
            self.assertEqual(r.status, 202, r)
        harness.wait_until(lambda: hold.waiting >= 4, what="four events parked")
        ans = s.nowcerts(nowcerts_event("NEEDS_MEMORY", {"n": 1500}))
        eid = ans.json()["event_id"]
        ev = s.wait_event(eid, ("retry_wait", "dead"))
        self.assertEqual(ev["status"], "retry_wait", ev)
        self.assertIn("will retry", ev.get("last_error") or "", ev)
        hold.release.set()
        for r in holders:
            s.wait_event(r.json()["event_id"])
        auth = {"Authorization": "Bearer " + s.env["ADMIN_TOKEN"]}
        r = s.post("/api/v1/events/%s/replay" % eid, {}, auth)
        self.assertIn(r.status, (200, 202), r)
        s.wait_event(eid)


class EventTime(HostileRoutes):
    """LUA_EVENT_TIMEOUT_MS also bounds time inside C functions."""

    def _fails_for(self, event_type, words, **env):
        s = self._server(**env)
        body = self._fails_alone(s, event_type)
        for w in words:
            self.assertIn(w, body.get("error", ""), body)
        return body

    def test_pathological_pattern_is_refused(self):
        self._fails_for("SLOW_PATTERN", ("string.find refused", "LUA_EVENT_TIMEOUT_MS"))

    def test_pcall_cannot_swallow_a_refused_pattern(self):
        self._fails_for("SLOW_PATTERN_IN_PCALL", ("LUA_EVENT_TIMEOUT_MS",))

    def test_huge_string_rep_is_refused(self):
        self._fails_for("HUGE_REP", ("string.rep refused", "LUA_EVENT_MEMORY_MB"))

    def test_huge_json_is_refused(self):
        # Memory to spare (256 MB an event): what stops it is the time the
        # encoding would take.
        self._fails_for("HUGE_JSON", ("cjson.encode refused", "LUA_EVENT_TIMEOUT_MS"),
                        LUA_MEMORY_MB=1024)

    def test_lua_code_is_stopped_by_the_clock_too(self):
        self._fails_for("LONG_LOOP", ("time limit (LUA_EVENT_TIMEOUT_MS)",),
                        LUA_INSTRUCTION_BUDGET=10 ** 13, LUA_EVENT_TIMEOUT_MS=300)


class LoadTime(IntegTest):
    """A script's top level runs on the loop too, at start, on reload and in
    `ncghl check`: a slow pattern there is refused as in an event (it held
    the whole service, /health included, for good)."""

    def test_a_slow_pattern_at_load_is_refused_and_the_service_keeps_answering(self):
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy)
        s = self.server({"MAPPINGS_DIR": copy})
        routes = copy / "routes.lua"
        text = routes.read_text()
        cut = text.rstrip().rfind("\nreturn")
        routes.write_text(text[:cut] + '\nlocal _slow = ("a"):rep(20000):find(".-.-.-.-b")'
                          + text[cut:])
        line = text[:cut].count("\n") + 2
        s.proc.send_signal(signal.SIGHUP)
        want = "routes.lua:%d: string.find refused" % line
        harness.wait_until(lambda: want in s.log_text(), 20, 0.1, "the reload refused (%s)" % want)
        self.assertIn("loading the scripts takes longer", s.log_text())
        self.assertEqual(s.get("/health").status, 200)
        p = s.cli("check", timeout=30)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn(want, p.stdout + p.stderr)


if __name__ == "__main__":
    harness.main()
