"""SPEC 13: two ncghl nodes on one PostgreSQL database share the work. Under
a load of unique webhooks sent to both, one node is killed with SIGKILL:
every acknowledged event is still delivered exactly once, the events the
dead node had running are taken up by the other once its lease lapses, and
the GHL location is never over its limit. And the database server itself
going away and coming back (SPEC 11 on PostgreSQL): webhooks meanwhile get
503, their later copies are accepted, and nothing is lost or made twice.

PostgreSQL only (a SQLite file has one service): the file sets
NCGHL_TEST_STORE=postgresql itself, and CMake registers it only as
integration_pg/test_two_nodes."""

import os
import sys
import time
from pathlib import Path

os.environ["NCGHL_TEST_STORE"] = "postgresql"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, ghl_event, insured_data, nowcerts_event  # noqa: E402

STATUS_DONE = 2
STATUS_RUNNING = 1
SLOP = 0.25


class NodeCase(IntegTest):
    def assertDeliveredOnce(self, node, acked, timeout):
        """Every acknowledged event (id -> e-mail) ends done, as `node`'s
        store says, and made one contact in GHL."""
        def all_done():
            rows = dict(node.db_query("SELECT id, status FROM events"))
            return all(rows.get(i) == STATUS_DONE for i in acked)
        harness.wait_until(all_done, timeout, 0.5, "every acknowledged event to be done")
        for eid, email in acked.items():
            self.assertEqual(len(self.contacts_with_email(email)), 1,
                             "event %s: contacts for %s" % (eid, email))


class TwoNodes(NodeCase):
    def _nodes(self, env=None):
        a = self.server(dict(env or {}), workdir=self.tmp / "a")
        b = self.server(dict(env or {}, STORE_URL=a.store_url), workdir=self.tmp / "b")
        return a, b

    def test_kill_9_of_one_node_under_load_delivers_every_acknowledged_event_once(self):
        # GHL's limit binds too: 45 events make 135 or more GHL calls, which
        # at 60 per 10 s for both nodes together take more than two windows.
        limit = 60
        a, b = self._nodes({"WEBHOOK_WAIT_MS": 0, "GHL_RATE_LIMIT": limit})
        # Slow upstream calls keep events running when the node dies.
        self.fakes.config("ghl", latency_ms=400)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0)
        acked = {}  # event id -> email
        refused = 0
        for i in range(60):
            node = a if i % 2 == 0 else b
            if i == 30:
                a.kill9()
            ev = nowcerts_event("INSURED_INSERT", insured_data())
            try:
                r = node.nowcerts(ev, timeout=10)
            except OSError:
                refused += 1  # the dead node: not acknowledged, nothing promised
                continue
            if 200 <= r.status < 300:
                acked[r.json()["event_id"]] = ev["data"]["email"]
        self.assertEqual(refused, 15, "only the killed node's share is refused")
        self.assertEqual(len(acked), 45)

        # What the dead node left running, as the store says.
        owner_prefix = ":%d:" % a.proc.pid
        left = [row[0] for row in a.db_query(
            "SELECT id FROM events WHERE status = ? AND owner LIKE ?",
            (STATUS_RUNNING, "%" + owner_prefix + "%"))]
        # With 400 ms a call the dead node was mid-way through some of its
        # events; without any the take-over below would not be tested.
        self.assertTrue(left, "the killed node had no running event")

        # The lease lapses after 30 s and the survivor sweeps every 10 s;
        # the bound only decides when to give up.
        self.assertDeliveredOnce(b, acked, 120)
        # The dead node's running rows were taken over and finished by b.
        for eid in left:
            rows = b.db_query("SELECT status, owner, attempts FROM events WHERE id = ?", (eid,))
            self.assertEqual(rows[0][0], STATUS_DONE, rows)
            self.assertGreaterEqual(int(rows[0][2]), 2, "event %s ran only once: %r" % (eid, rows))
        self.assertIn("left running by an owner that is gone; queued again", b.log_text())
        # No running row is left, whoever owned it.
        self.assertEqual(b.db_query("SELECT count(*) FROM events WHERE status = ?",
                                    (STATUS_RUNNING,)), [(0,)])
        # And the location was never over its limit, the kill included: any
        # limit+1 GHL requests, from either node, span a whole window.
        at = sorted(harness.req_at(r) for r in self.fakes.calls("ghl"))
        self.assertGreaterEqual(len(at), 3 * len(acked), "GHL calls: %d" % len(at))
        for i in range(len(at) - limit):
            self.assertGreaterEqual(at[i + limit] - at[i], 10.0 - SLOP,
                                    "more than %d GHL requests within 10 s at %d" % (limit, i))

    def test_a_webhook_sent_to_both_nodes_is_one_event(self):
        a, b = self._nodes()
        data = insured_data(id="9a1b2c3d-0000-4000-8000-%012x" % int(harness.uniq(12), 16))
        ev = nowcerts_event("INSURED_INSERT", data)
        first = self.assertJSONAnswer(a.nowcerts(ev), 200)
        again = self.assertJSONAnswer(b.nowcerts(ev), 409)
        self.assertEqual(again, {"detail": "Event already processed: %s" % first["event_id"]})
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)
        # Both nodes read the same links: an update through b, with another
        # e-mail, finds a's contact by the NowCerts id.
        moved = dict(ev["data"], email="moved.%s@example.com" % harness.uniq())
        upd = self.assertJSONAnswer(b.nowcerts(nowcerts_event("INSURED_UPDATE", moved)), 200)
        self.assertEqual(upd["data"].get("contact_id"), first["data"].get("contact_id"), upd)
        self.assertEqual(len(self.contacts_with_email(moved["email"])), 1)
        self.assertEqual(self.contacts_with_email(ev["data"]["email"]), [])

    def _at_once(self, sends):
        """Runs every send at the same moment, each on its own thread; their
        answers, in order."""
        import threading
        out = [None] * len(sends)
        go = threading.Barrier(len(sends))

        def run(i, f):
            go.wait()
            out[i] = f()
        threads = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(sends)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return out

    def test_one_new_person_sent_to_both_nodes_at_once_is_made_once_on_each_side(self):
        a, b = self._nodes()
        # Slow upstreams keep both nodes inside the person's sync at once.
        self.fakes.config("ghl", latency_ms=150)
        self.fakes.config("nowcerts", latency_ms=150)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0)
        self.addCleanup(self.fakes.config, "nowcerts", latency_ms=0)
        for _ in range(3):
            # NowCerts -> GHL: three changes of one new insured, different
            # events (other phones), to both nodes.
            data = insured_data(id="9a1b2c3d-0000-4000-8000-%012x" % int(harness.uniq(12), 16))
            evs = [nowcerts_event("INSURED_INSERT", dict(data, phone="+1555000%04d" % i),
                                  timestamp="2024-01-15T10:30:0%dZ" % i) for i in range(3)]
            answers = self._at_once([lambda n=n, ev=ev: n.nowcerts(ev)
                                     for n, ev in zip((a, b, a), evs)])
            for r in answers:
                self.assertIn(r.status, (200, 202), r)
            ids = [r.json()["event_id"] for r in answers]
            harness.wait_until(lambda: all(a.event(i)["status"] == "done" for i in ids), 60, 0.2,
                               "the three events to be done")
            self.assertEqual(len(self.contacts_with_email(data["email"])), 1, data["email"])

            # GHL -> NowCerts: a new contact's create and update, to both nodes.
            c = self.seed_contact()
            evs = [ghl_event(t, c) for t in ("ContactCreate", "ContactUpdate", "ContactUpdate")]
            answers = self._at_once([lambda n=n, ev=ev: n.ghl(ev) for n, ev in zip((a, b, b), evs)])
            ids = [r.json()["event_id"] for r in answers]
            harness.wait_until(lambda: all(a.event(i)["status"] == "done" for i in ids), 60, 0.2,
                               "the GHL events to be done")
            self.assertEqual(len(self.insureds_with_email(c["email"])), 1, c["email"])

    def test_ghl_rate_limit_is_shared_by_the_nodes(self):
        # 3 requests per 10 s per location, for both nodes together: 4
        # events (at least a search and a create each) to two nodes must
        # spread over more than one window instead of each node sending 3.
        limit = 3
        a, b = self._nodes({"GHL_RATE_LIMIT": limit, "WEBHOOK_WAIT_MS": 0})
        events = [nowcerts_event("INSURED_INSERT", insured_data()) for _ in range(4)]
        ids = [self.assertJSONAnswer((a, b)[i % 2].nowcerts(ev), 202)["event_id"]
               for i, ev in enumerate(events)]

        def all_done():
            rows = dict(a.db_query("SELECT id, status FROM events"))
            return all(rows.get(i) == STATUS_DONE for i in ids)

        harness.wait_until(all_done, 90, 0.5, "the four events to be done")
        for ev in events:
            self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)
        at = sorted(harness.req_at(r) for r in self.fakes.calls("ghl"))
        self.assertGreaterEqual(len(at), 2 * len(events), at)
        # Any limit+1 requests span a whole window; the slop is the
        # difference between when ncghl counted a send and when the fake
        # saw it arrive, not a speed verdict.
        for i in range(len(at) - limit):
            self.assertGreaterEqual(at[i + limit] - at[i], 10.0 - SLOP,
                                    "more than %d GHL requests within 10 s: %r" % (limit, at))
        # Both nodes sent some of them: the window was shared, not owned.
        for n in (a, b):
            self.assertIn(": done", n.log_text())

    def test_one_node_at_a_time_reads_nowcerts_and_another_takes_over(self):
        a, b = self._nodes({"NOWCERTS_POLL_INTERVAL": 1})
        cycle = "poller: insureds "

        def cycles(n):
            return n.log_text().count(cycle)

        harness.wait_until(lambda: cycles(a) + cycles(b) >= 3, 30, 0.2, "three poller cycles")
        holder, other = (a, b) if cycles(a) else (b, a)
        self.assertEqual(cycles(other), 0, "both nodes read NowCerts")
        harness.wait_until(lambda: "another node reads NowCerts now" in other.log_text(), 30, 0.2,
                           "the other node to see the lease held")
        holder.kill9()
        # Its lease is free once its time passed (3 intervals + 30 s) or,
        # as here on one host, once its pid is gone; the bound only decides
        # when to give up.
        harness.wait_until(lambda: cycles(other) >= 1, 90, 0.5, "the other node to take over")


class ServerGoesAway(NodeCase):
    def test_a_database_restart_refuses_then_accepts_and_loses_nothing(self):
        a = self.server({"WEBHOOK_WAIT_MS": 0})
        cluster = harness.pg_cluster()
        acked = {}  # event id -> email

        def post(ev):
            r = a.nowcerts(ev, timeout=20)
            if 200 <= r.status < 300:
                acked[r.json()["event_id"]] = ev["data"]["email"]
            return r

        for _ in range(3):
            self.assertEqual(post(nowcerts_event("INSURED_INSERT", insured_data())).status, 202)

        cluster.pause()
        try:
            refused = [nowcerts_event("INSURED_INSERT", insured_data()) for _ in range(3)]
            for ev in refused:
                r = post(ev)
                self.assertEqual(r.status, 503, r.text)
                self.assertIn("could not be stored", r.json()["detail"])
            h = a.get("/health")
            self.assertEqual((h.status, h.json()["status"]), (503, "unhealthy"), h.text)
            time.sleep(2.5)  # a few of the node's tries to connect again
        finally:
            cluster.resume()

        # The same bodies again: accepted once the store is back (a refused
        # event was not half-stored, so it is no duplicate).
        def accepted(ev):
            return lambda: post(ev).status == 202
        for ev in refused:
            harness.wait_until(accepted(ev), 60, 0.5, "a refused event to be accepted again")
        for _ in range(3):
            self.assertEqual(post(nowcerts_event("INSURED_INSERT", insured_data())).status, 202)
        self.assertEqual(len(acked), 9)

        # Within the bound only if no event waits for retry_wait's minutes
        # because of the restart (the node's key session, ended by it, is
        # opened again when next used).
        self.assertDeliveredOnce(a, acked, 60)
        self.assertEqual(a.db_query("SELECT count(*) FROM events"), [(9,)])
        # The outage is said once per connection (the node's own, and the
        # shared rate limit's when a run was using it), with what happens
        # meanwhile, not once per try; and its end.
        log = a.log_text()
        said = log.count("cannot connect again")
        self.assertTrue(1 <= said <= 2, log[-3000:])
        self.assertIn("webhooks get 503 until then", log)
        self.assertRegex(log, r"store: connected again to \S+ after [0-9.]+ s")


if __name__ == "__main__":
    harness.main()
