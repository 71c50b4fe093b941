"""SPEC section 1: SIGHUP reloads the scripts atomically; a broken script
never takes the service down, the old mappings stay, the error is logged
with file and line, and a metric counts failed reloads."""

import re
import shutil
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import ROOT, IntegTest, nowcerts_event  # noqa: E402

FAIL_RESULTS = ("failure", "failed", "fail", "error")
OK_RESULTS = ("success", "succeeded", "ok")


def reloads(server, results):
    text = server.get("/metrics").text
    total = 0.0
    for m in re.finditer(r'(?m)^mapping_reloads_total\{[^}]*result="(\w+)"[^}]*\}\s+(\S+)', text):
        if m.group(1) in results:
            total += float(m.group(2))
    return total


def mapping_state(server):
    """The mapping part of /health (SPEC: health shows the mapping state)."""
    body = server.get("/health").json()
    return {k: v for k, v in body.items() if "mapping" in k.lower()}


class Reload(IntegTest):
    def _sync_still_works(self, s):
        ev = nowcerts_event("INSURED_INSERT")
        ans = self.assertJSONAnswer(s.nowcerts(ev), 200)
        self.assertEqual(ans["data"].get("action"), "created", ans)
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)

    def test_broken_reload_keeps_the_old_mappings_and_a_good_one_applies(self):
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy)
        s = self.server({"MAPPINGS_DIR": copy})
        self._sync_still_works(s)
        state0 = mapping_state(s)
        self.assertTrue(state0, "/health shows no mapping state")

        scripts = sorted(x for x in copy.rglob("*.lua") if "tests" not in x.relative_to(copy).parts)
        self.assertTrue(scripts)
        victim = scripts[0]
        good = victim.read_text()
        broken = good.rstrip("\n") + "\nlocal broken = = 1"
        victim.write_text(broken + "\n")
        where = re.escape(victim.name) + r":%d:" % len(broken.split("\n"))
        s.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: re.search(where, s.log_text() + s.stderr_text()), 10, 0.1,
                           "the reload error logged with file and line (%s)" % where)
        self.assertTrue(s.running(), "a broken script took the service down")
        self.assertEqual(mapping_state(s), state0, "a failed reload changed the mappings")
        self._sync_still_works(s)

        victim.write_text(good + "\n-- reloaded\n")
        s.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: mapping_state(s) != state0, 10, 0.1,
                           "the good reload to show in /health")
        self._sync_still_works(s)

        self.assertGreaterEqual(reloads(s, FAIL_RESULTS), 1, "no metric counts the failed reload")
        self.assertGreaterEqual(reloads(s, OK_RESULTS), 1, "no metric counts the good reload")


if __name__ == "__main__":
    harness.main()
