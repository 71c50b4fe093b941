"""SPEC sections 5-6: an acknowledged event is never lost and never done
twice, whatever happens to the process."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, Server, insured_data, nowcerts_event  # noqa: E402


class Durability(IntegTest):
    def _restart(self, old, env=None):
        s = Server(old.workdir, self.fakes, dict(env or {}))
        # The same database and the same settings, on a new port.
        s.env.update({k: v for k, v in old.env.items() if k != "PORT"})
        self.servers.append(s)
        return s.start()

    def test_kill_9_after_acknowledgement_loses_and_duplicates_nothing(self):
        s = self.server({"WEBHOOK_WAIT_MS": 0})
        self.fakes.config("ghl", latency_ms=300)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0)
        events = [nowcerts_event("INSURED_INSERT", insured_data()) for _ in range(20)]
        ids = []
        for ev in events:
            ans = self.assertJSONAnswer(s.nowcerts(ev), 202)
            self.assertEqual(ans.get("status"), "queued", ans)
            ids.append(ans["event_id"])
        s.kill9()
        self.assertEqual(len(set(ids)), 20)

        s2 = self._restart(s)

        def all_done():
            evs = {e["id"]: e for e in s2.events("--limit", "1000")}
            return all(evs.get(i, {}).get("status") == "done" for i in ids)

        try:
            harness.wait_until(all_done, 90, 0.2, "all 20 events to be done after restart")
        except AssertionError:
            evs = {e["id"]: e.get("status") for e in s2.events("--limit", "1000")}
            raise AssertionError("not all done: %r" % [evs.get(i) for i in ids]) from None
        contacts = self.fakes.records("ghl", "contacts")
        emails = sorted((c.get("email") or "").lower() for c in contacts)
        self.assertEqual(emails, sorted(ev["data"]["email"].lower() for ev in events))

    def test_sigterm_then_restart_finishes_what_was_acknowledged(self):
        s = self.server({"WEBHOOK_WAIT_MS": 0})
        self.fakes.config("ghl", latency_ms=300)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0)
        events = [nowcerts_event("INSURED_INSERT", insured_data()) for _ in range(6)]
        ids = [self.assertJSONAnswer(s.nowcerts(ev), 202)["event_id"] for ev in events]
        self.assertEqual(s.stop(), 0, "exit status after SIGTERM")
        s2 = self._restart(s)
        for i in ids:
            s2.wait_event(i)
        for ev in events:
            self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)

    def test_a_second_service_on_the_same_sqlite_store_refuses_to_start(self):
        # Two services on one SQLite file each create the same new person
        # (an audit: 5 of 5 tries); the second must not start, and must not
        # take the first one's running events for its own on the way.
        if harness.PG:
            self.skipTest("several nodes on PostgreSQL share a store by design (test_two_nodes)")
        a = self.server()
        b = Server(a.workdir, self.fakes, {})
        b.env.update({k: v for k, v in a.env.items() if k not in ("PORT", "LOG_FILE")})
        self.servers.append(b)
        b.start(wait=False)
        rc = b.proc.wait(30)
        self.assertEqual(rc, 1)
        self.assertRegex(b.stderr_text() + b.log_text(),
                         r"another ncghl service \(pid %d\) is running on .*Stop it first"
                         % a.proc.pid)
        self.assertTrue(a.running())
        ev = nowcerts_event("INSURED_INSERT")
        self.assertEqual(a.nowcerts(ev).status, 200)
        a.stop()
        # Once it has stopped, a service starts there again.
        self.assertTrue(self._restart(a).running())

    def test_idempotency_survives_a_restart(self):
        s = self.server()
        ev = nowcerts_event("INSURED_INSERT")
        first = self.assertJSONAnswer(s.nowcerts(ev), 200)
        s.stop()
        s2 = self._restart(s)
        again = self.assertJSONAnswer(s2.nowcerts(ev), 409)
        self.assertEqual(again, {"detail": "Event already processed: %s" % first["event_id"]})
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)

    def test_links_survive_a_restart(self):
        # The id cross-reference is stored: after a restart an update still
        # finds the contact by the NowCerts id, though its email changed.
        s = self.server()
        data = insured_data(id="9a1b2c3d-0000-4000-8000-%012x" % int(harness.uniq(12), 16))
        a = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT", data)), 200)
        s.stop()
        s2 = self._restart(s)
        moved = dict(data, email="moved.%s@example.com" % harness.uniq())
        b = self.assertJSONAnswer(s2.nowcerts(nowcerts_event("INSURED_UPDATE", moved)), 200)
        self.assertEqual(b["data"].get("contact_id"), a["data"].get("contact_id"), b)
        self.assertEqual(len(self.fakes.records("ghl", "contacts")), 1)


if __name__ == "__main__":
    harness.main()
