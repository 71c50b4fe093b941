"""SPEC section 1: SIGHUP reloads the scripts atomically; a broken script
never takes the service down, the old mappings stay, the error is logged
with file and line, and a metric counts failed reloads."""

import re
import shutil
import signal
import sys
import threading
import time
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
    for m in re.finditer(r'(?m)^ncghl_mapping_reloads_total\{[^}]*result="(\w+)"[^}]*\}\s+(\S+)', text):
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


class CasesAtStart(IntegTest):
    def test_a_case_the_scripts_fail_at_start_is_said_and_degrades_health_until_a_reload(self):
        # The same check as a reload's: at start there is no older version
        # to keep, so the scripts run, but the log and /health say so (a
        # restart once ran scripts that every reload refused, saying nothing).
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy)
        case = copy / "tests" / "contacts_to_ghl.lua"
        good = case.read_text()
        self.assertIn('source = "NowCerts"', good)
        case.write_text(good.replace('source = "NowCerts"', 'source = "Nowcerts-typo"', 1))
        s = self.server({"MAPPINGS_DIR": copy, "DOCTOR_AT_START": "false"})
        self.assertRegex(s.log_text(), r"ERROR mappings: a test case fails with the scripts loaded"
                         r" at start; they run anyway .*contacts_to_ghl\.lua:\d+: case ")
        h = s.get("/health").json()
        self.assertEqual(h["status"], "degraded", h)
        self.assertEqual(h["last_reload"]["result"], "error", h)
        self.assertIn("but a test case fails", h["last_reload"]["message"])
        self.assertTrue(any("a mapping test case fails" in r for r in h.get("reasons", [])), h)
        self._sync_works(s)  # the scripts in force still run

        case.write_text(good)
        s.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: s.get("/health").json()["status"] == "healthy", 10, 0.1,
                           "/health healthy after a reload whose cases pass")
        self.assertEqual(s.get("/health").json()["last_reload"]["result"], "ok")

    def test_passing_cases_at_start_are_counted(self):
        s = self.server({"DOCTOR_AT_START": "false"})
        h = s.get("/health").json()
        self.assertEqual((h["status"], h["last_reload"]["result"]), ("healthy", "ok"), h)
        self.assertRegex(h["last_reload"]["message"], r"loaded at start, version \w+, \d+ test cases passed")

    def _sync_works(self, s):
        ev = nowcerts_event("INSURED_INSERT")
        ans = self.assertJSONAnswer(s.nowcerts(ev), 200)
        self.assertEqual(ans["data"].get("action"), "created", ans)


class ReloadUnderLoad(IntegTest):
    # Continuous traffic is far beyond GHL's 100 requests per 10 s, which
    # ncghl would otherwise (rightly) wait for.
    FAKE_ARGS = ("--ghl-rate-limit", "100000")

    def test_reload_under_continuous_load_drops_no_request_and_switches(self):
        # A copy of the mappings whose contacts get a new `source` after the
        # reload. Its test cases stay behind: they name the old source, and a
        # reload only swaps in scripts whose cases pass.
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy, ignore=shutil.ignore_patterns("tests"))
        contacts = copy / "contacts.lua"
        old = contacts.read_text()
        self.assertIn('map.const("NowCerts")', old)
        s = self.server({"MAPPINGS_DIR": copy, "RATE_LIMIT_PER_MINUTE": 0, "GHL_RATE_LIMIT": 0})
        state0 = mapping_state(s)

        answers, errors = [], []
        stop = threading.Event()

        def load():
            while not stop.is_set():
                ev = nowcerts_event("INSURED_INSERT")
                try:
                    a = s.nowcerts(ev)
                    answers.append((a.status, ev["data"]["email"]))
                except Exception as e:  # a dropped connection is what this test is about
                    errors.append(repr(e))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            harness.wait_until(lambda: len(answers) >= 20, 20, 0.05, "traffic before the reload")
            contacts.write_text(old.replace('map.const("NowCerts")', 'map.const("NowCerts-v2")'))
            s.proc.send_signal(signal.SIGHUP)
            harness.wait_until(lambda: mapping_state(s) != state0, 10, 0.05, "the reload")
            n = len(answers)
            harness.wait_until(lambda: len(answers) >= n + 20, 20, 0.05, "traffic after the reload")
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [], "requests failed during the reload")
        self.assertEqual(sorted({st for st, _ in answers}), [200], "every webhook answered 200")
        sources = {}
        for st, email in answers:
            found = self.contacts_with_email(email)
            self.assertEqual(len(found), 1, "one contact for %s" % email)
            sources[found[0].get("source")] = sources.get(found[0].get("source"), 0) + 1
        self.assertIn("NowCerts", sources, sources)
        self.assertIn("NowCerts-v2", sources, "the new mappings never took over: %s" % sources)
        self.assertTrue(s.running())


if __name__ == "__main__":
    harness.main()
