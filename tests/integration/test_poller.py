"""SPEC section 6: the NowCerts poller turns changed insureds and policies
into events through the same queue as a webhook, skips ncghl's own changes,
and a restart (even kill -9 in the middle of paging) neither skips nor
repeats a change."""

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, Server, expected_event_id, ghl_event, uniq  # noqa: E402

CREATE_CONTACT = r"^/contacts/?$"
UPDATE_CONTACT = r"^/contacts/[^/]+$"
POLL = r"/InsuredDetailList"
POLICY_POLL = r"/PolicyDetailList"


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def phone():
    """A phone of its own: the mappings match people by phone too, so two
    test insureds sharing one would rightly become one contact."""
    return "813%07d" % (int(uniq(6), 16) % 10000000)


def insured(email, **extra):
    rec = {"firstName": "Pol", "lastName": "L" + uniq(5), "eMail": email, "phone": phone(),
           "addressLine1": "7 Pine St", "city": "Tampa", "state": "FL", "zipCode": "33603",
           "type": "Insured", "active": True}
    rec.update(extra)
    return rec


def db_query(s, sql, args=()):
    """Read-only, beside the service, on its store (SQLite or PostgreSQL)."""
    return s.db_query(sql, args)


def kv(s, key):
    """A value of the store's key/value table."""
    rows = db_query(s, "SELECT value FROM kv WHERE key = ?", (key,))
    return rows[0][0] if rows else None


def nowcerts_event_ids(s):
    return [r[0] for r in db_query(s, "SELECT id FROM events WHERE source = 'nowcerts'")]


def event_id_of(rec):
    t = "INSURED_INSERT" if rec["createDate"] == rec["changeDate"] else "INSURED_UPDATE"
    return expected_event_id("nowcerts", {"event_type": t, "timestamp": rec["changeDate"], "data": rec})


class Poller(IntegTest):
    ENV = {"NOWCERTS_POLL_INTERVAL": 1}

    def _insured(self):
        email = "polled.%s@example.com" % uniq()
        self.seed_id("nowcerts", "insureds", insured(email), "eMail")
        return email

    def _polls_after(self, n, path=POLL):
        """Waits until the poller has listed insureds n more times."""
        start = len(self.fakes.calls("nowcerts", "GET", path))
        harness.wait_until(lambda: len(self.fakes.calls("nowcerts", "GET", path)) >= start + n,
                           15, 0.1, "%d more polls of %s" % (n, path))

    def _restart(self, s):
        s2 = Server(s.workdir, self.fakes)
        s2.env.update({k: v for k, v in s.env.items() if k != "PORT"})
        self.servers.append(s2)
        s2.start()
        return s2

    def test_polled_change_becomes_one_contact_and_restart_repeats_nothing(self):
        s = self.server(self.ENV)
        first = self._insured()
        harness.wait_until(lambda: self.contacts_with_email(first), 15, 0.1,
                           "the polled insured to reach GHL")
        self._polls_after(3)
        self.assertEqual(len(self.contacts_with_email(first)), 1)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 1)
        self.assertEqual(self.fakes.calls("ghl", "PUT", UPDATE_CONTACT), [])

        s.stop()
        second = self._insured()  # changed while the service is down
        s2 = self._restart(s)
        harness.wait_until(lambda: self.contacts_with_email(second), 15, 0.1,
                           "the change made during the downtime to reach GHL")
        self._polls_after(3)
        self.assertEqual(len(self.contacts_with_email(first)), 1)
        self.assertEqual(len(self.contacts_with_email(second)), 1)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 2)
        self.assertEqual(self.fakes.calls("ghl", "PUT", UPDATE_CONTACT), [])
        # One event per change, with the id a relayed webhook of the same
        # record would get, and INSURED_INSERT for a record never changed
        # since it was created.
        evs = [e for e in s2.events() if e["source"] == "nowcerts"]
        self.assertEqual(len(evs), 2, evs)
        self.assertEqual({e["type"] for e in evs}, {"INSURED_INSERT"})
        self.assertEqual({e["status"] for e in evs}, {"done"})
        want = {expected_event_id("nowcerts", {"event_type": "INSURED_INSERT",
                                               "timestamp": r["changeDate"], "data": r})
                for r in self.fakes.records("nowcerts", "insureds")}
        self.assertEqual({e["id"] for e in evs}, want)

    def test_an_update_is_a_new_event_and_reaches_the_same_contact(self):
        s = self.server(self.ENV)
        email = "upd.%s@example.com" % uniq()
        rec = self.fakes.seed("nowcerts", "insureds", insured(email))
        harness.wait_until(lambda: self.contacts_with_email(email), 15, 0.1, "the insert")
        later = datetime.now(timezone.utc) + timedelta(seconds=2)
        changed = dict(rec, city="Orlando", changeDate=iso(later))
        self.fakes.seed("nowcerts", "insureds", changed)
        harness.wait_until(lambda: (self.contacts_with_email(email) or [{}])[0].get("city") == "Orlando",
                           15, 0.1, "the update to reach the contact")
        self._polls_after(2)
        types = sorted(e["type"] for e in s.events() if e["source"] == "nowcerts")
        self.assertEqual(types, ["INSURED_INSERT", "INSURED_UPDATE"])
        self.assertEqual(len(self.contacts_with_email(email)), 1)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 1)

    def test_own_changes_are_not_polled_back(self):
        s = self.server(self.ENV)
        c = self.seed_contact()
        ans = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c)), 200)
        self.assertEqual(ans["data"].get("action"), "created", ans)
        self.assertEqual(len(self.insureds_with_email(c["email"])), 1)
        self._polls_after(3)
        self.assertEqual(self.fakes.calls("ghl", "POST", CREATE_CONTACT), [])
        self.assertEqual(self.fakes.calls("ghl", "PUT", UPDATE_CONTACT), [])
        # The row ncghl wrote (lastChangeUserId is ncghl's user) is compared
        # field by field with the base (SPEC 10) and ends there: skipped,
        # nothing sent back.
        own = [e for e in s.events() if e["source"] == "nowcerts"]
        self.assertEqual(len(own), 1, own)
        self.assertEqual(own[0]["status"], "done", own)
        result = db_query(s, "SELECT result FROM events WHERE id = ?", (own[0]["id"],))
        self.assertEqual(json.loads(result[0][0]).get("action"), "skipped", result)
        self.assertRegex(s.log_text(), r"poller: insureds [1-9]\d* changed \(1 new events, "
                                       r"\d+ seen before, [1-9]\d* ncghl's own\)")

    def test_first_start_reads_no_history(self):
        old = "old.%s@example.com" % uniq()
        hour_ago = iso(datetime.now(timezone.utc) - timedelta(hours=1))
        self.fakes.seed("nowcerts", "insureds", insured(old, createDate=hour_ago, changeDate=hour_ago))
        s = self.server(self.ENV)
        fresh = self._insured()
        harness.wait_until(lambda: self.contacts_with_email(fresh), 15, 0.1, "the fresh change")
        self._polls_after(2)
        self.assertEqual(self.contacts_with_email(old), [])
        self.assertEqual(len([e for e in s.events() if e["source"] == "nowcerts"]), 1)
        self.assertIn("no insureds watermark yet", s.log_text())

    def test_failed_page_keeps_the_watermark_and_the_change_comes_later(self):
        s = self.server(self.ENV)
        self._polls_after(1)
        harness.wait_until(lambda: kv(s, "poller.watermark.insureds"), 10, 0.1,
                           "the first watermark")
        before = kv(s, "poller.watermark.insureds")
        # Every attempt of two whole cycles fails (1 try + MAX_RETRIES 3 each).
        self.fakes.fault("nowcerts", status=500, count=8, path=POLL, method="GET")
        email = "late.%s@example.com" % uniq()
        after = datetime.strptime(before, "%Y-%m-%dT%H:%M:%SZ") + timedelta(seconds=5)
        stamp = iso(after)
        self.fakes.seed("nowcerts", "insureds", insured(email, createDate=stamp, changeDate=stamp))
        harness.wait_until(lambda: "poller: reading insureds at record 0 failed" in s.log_text(),
                           15, 0.1, "a failed cycle")
        self.assertEqual(kv(s, "poller.watermark.insureds"), before)
        self.assertEqual(self.contacts_with_email(email), [])
        harness.wait_until(lambda: self.contacts_with_email(email), 20, 0.1,
                           "the change once NowCerts answers again")
        self.assertGreater(kv(s, "poller.watermark.insureds"), before)
        self.assertEqual(len(self.contacts_with_email(email)), 1)

    def test_a_row_dated_ahead_of_the_clock_does_not_hide_later_changes(self):
        s = self.server(self.ENV)
        ahead = iso(datetime.now(timezone.utc) + timedelta(hours=1))
        email = "ahead.%s@example.com" % uniq()
        self.fakes.seed("nowcerts", "insureds", insured(email, createDate=ahead, changeDate=ahead))
        harness.wait_until(lambda: self.contacts_with_email(email), 15, 0.1, "the row dated ahead")
        self._polls_after(2)
        self.assertLess(kv(s, "poller.watermark.insureds"), ahead)
        later = self._insured()  # dated now, an hour before the other row
        harness.wait_until(lambda: self.contacts_with_email(later), 15, 0.1,
                           "a change made after the row dated ahead")
        self.assertIn("ahead of this machine's clock", s.log_text())
        self.assertEqual(len(self.contacts_with_email(email)), 1)
        self.assertEqual(len(self.contacts_with_email(later)), 1)

    def test_a_watermark_left_ahead_of_the_clock_is_said_and_read_from_the_clock(self):
        s = self.server(self.ENV)
        harness.wait_until(lambda: kv(s, "poller.watermark.insureds"), 10, 0.1,
                           "the first watermark")
        s.stop()
        # As a version before this one could leave it: one row dated a day ahead.
        ahead = iso(datetime.now(timezone.utc) + timedelta(days=1))
        if s.store_url:
            harness.pg_query(s.db_name, "UPDATE kv SET value = ? WHERE key = ?",
                             (ahead, "poller.watermark.insureds"))
        else:
            import sqlite3
            con = sqlite3.connect(s.db_path)
            with con:
                con.execute("UPDATE kv SET value = ? WHERE key = ?", (ahead, "poller.watermark.insureds"))
            con.close()
        p = s.cli("doctor", timeout=60)
        line = next((x for x in p.stdout.splitlines() if "watermarks" in x), "")
        self.assertIn("ahead of this machine's clock", line, p.stdout)
        self.assertTrue(line.startswith("✗"), line)
        self.assertIn("ncghl backfill --from nowcerts --since", p.stdout)
        s2 = self._restart(s)
        email = self._insured()
        harness.wait_until(lambda: self.contacts_with_email(email), 15, 0.1,
                           "a change made after the restart")
        self.assertLess(kv(s2, "poller.watermark.insureds"), ahead)
        self.assertIn("watermark %s is ahead of this machine's clock" % ahead, s2.log_text())

    def test_policies_and_quotes_polled_become_events(self):
        s = self.server(self.ENV)
        email = "pol.%s@example.com" % uniq()
        ins = self.fakes.seed("nowcerts", "insureds", insured(email))
        base = {"insuredDatabaseId": ins["id"], "insuredEmail": email,
                "insuredFirstName": ins["firstName"], "insuredLastName": ins["lastName"],
                "effectiveDate": "2025-01-01T00:00:00Z", "expirationDate": "2026-01-01T00:00:00Z",
                "carrierName": "Acme", "totalPremium": 1200.5,
                "lineOfBusinesses": [{"lineOfBusinessName": "Auto"}]}
        pol = self.fakes.seed("nowcerts", "policies", dict(base, number="P-" + uniq(6), isQuote=False))
        quote = self.fakes.seed("nowcerts", "policies", dict(base, number="Q-" + uniq(6), isQuote=True))

        def types():
            return sorted(e["type"] for e in s.events() if e["source"] == "nowcerts")
        harness.wait_until(lambda: "POLICY_INSERT" in types() and "QUOTE_INSERT" in types(),
                           15, 0.1, "policy and quote events")
        later = iso(datetime.now(timezone.utc) + timedelta(seconds=2))
        pol2 = self.fakes.seed("nowcerts", "policies", dict(pol, totalPremium=999, changeDate=later))
        harness.wait_until(lambda: "POLICY_UPDATE" in types(), 15, 0.1, "the policy update")
        self._polls_after(2, POLICY_POLL)
        self.assertEqual(types(), ["INSURED_INSERT", "POLICY_INSERT", "POLICY_UPDATE", "QUOTE_INSERT"])
        ids = {e["id"] for e in s.events() if e["source"] == "nowcerts"}
        for t, rec in (("POLICY_INSERT", pol), ("QUOTE_INSERT", quote), ("POLICY_UPDATE", pol2)):
            self.assertIn(expected_event_id("nowcerts", {"event_type": t, "timestamp": rec["changeDate"],
                                                         "data": rec}), ids, t)


class PollerShift(IntegTest):
    ENV = {"NOWCERTS_POLL_INTERVAL": 1, "GHL_RATE_LIMIT": 0}

    def test_a_change_while_paging_is_not_missed(self):
        """A record that changes while the poller pages moves to the end of
        the list and shifts the others one place: the next page does not
        start on the record the last one ended with, so the cycle stops
        there and the next one reads on from the watermark."""
        self.fakes.config("ghl", rate_limit=1000000)
        s = self.server(self.ENV)
        harness.wait_until(lambda: kv(s, "poller.watermark.insureds"), 10, 0.1, "the first cycle")
        # Two seconds apart: the 250 changes span more than the overlap, so
        # a record stepped over would never come into a later window.
        t0 = datetime.now(timezone.utc) - timedelta(seconds=60)
        tag = uniq(6)
        seeded = []
        for i in range(250):
            stamp = iso(t0 + timedelta(seconds=2 * i))
            seeded.append(insured("shift%03d.%s@example.com" % (i, tag), createDate=stamp, changeDate=stamp))
        self.fakes.fault("nowcerts", latency_ms=1500, count=100000, path=POLL, method="GET")
        seeded = self.fakes.seed("nowcerts", "insureds", seeded)
        harness.wait_until(lambda: len(nowcerts_event_ids(s)) >= 100, 30, 0.02, "the first page")
        self.fakes.seed("nowcerts", "insureds", dict(seeded[10], city="Moved",
                                                     changeDate=iso(t0 + timedelta(seconds=1000))))
        harness.wait_until(lambda: len(nowcerts_event_ids(s)) >= 251, 60, 0.1,
                           "every record and the change")
        self.assertIn("the list changed while it was read", s.log_text())
        # Every record as it is now, and record 10 as it was when page 1 read it.
        want = {event_id_of(r) for r in self.fakes.records("nowcerts", "insureds")}
        want.add(event_id_of(seeded[10]))
        self.assertEqual(sorted(nowcerts_event_ids(s)), sorted(want))


class PollerAtScale(IntegTest):
    """1,000 changed insureds across ten pages, the service killed with -9
    while it is still paging, then started again."""
    N = 1000
    ENV = {"NOWCERTS_POLL_INTERVAL": 1, "GHL_RATE_LIMIT": 0}

    def _ghl_settled(self):
        """True once every request the fake GHL received is answered and no
        new one arrived since the last look."""
        reqs = self.fakes.requests("ghl")
        n = len(reqs) if all(r.get("status") is not None for r in reqs) else -1
        last, self._last_n = getattr(self, "_last_n", None), n
        return n >= 0 and n == last

    def test_kill9_while_paging_loses_and_repeats_nothing(self):
        self.fakes.config("ghl", rate_limit=1000000)
        s = self.server(self.ENV)
        self.assertTrue(harness.wait_until(lambda: kv(s, "poller.watermark.insureds"),
                                           10, 0.1, "the first cycle"))
        # Slow list pages, so that the kill lands between two of them.
        self.fakes.fault("nowcerts", latency_ms=300, count=100000, path=POLL, method="GET")
        tag = uniq(6)
        records = [insured("bulk%04d.%s@example.com" % (i, tag), lastName="Bulk%04d" % i)
                   for i in range(self.N)]
        self.fakes.seed("nowcerts", "insureds", records)
        harness.wait_until(lambda: len(nowcerts_event_ids(s)) >= 250, 60, 0.05,
                           "a few pages of events")
        s.kill9()
        stored = len(nowcerts_event_ids(s))
        self.assertLess(stored, self.N, "the kill came after the last page; nothing was tested")
        # A contact create sent just before the kill is still on its way
        # through the (slow, Python) fake; the event re-runs after the restart
        # and searches by email first, so let the fake finish what it was sent
        # before the service comes back, as a real GHL would in that time.
        harness.wait_until(self._ghl_settled, 60, 0.3, "the fake GHL to answer what it was sent")
        s2 = Server(s.workdir, self.fakes)
        s2.env.update({k: v for k, v in s.env.items() if k != "PORT"})
        self.servers.append(s2)
        s2.start()

        def settled():
            evs = [e for e in s2.events("--limit", "100000") if e["source"] == "nowcerts"]
            return len(evs) >= self.N and all(e["status"] in ("done", "dead") for e in evs) and evs
        evs = harness.wait_until(settled, 240, 0.5, "all %d changes to be processed" % self.N)
        # Exactly one event per change: the ids are the records' own.
        want = {expected_event_id("nowcerts", {"event_type": "INSURED_INSERT",
                                               "timestamp": r["changeDate"], "data": r})
                for r in self.fakes.records("nowcerts", "insureds")}
        self.assertEqual(len(want), self.N)
        self.assertEqual(sorted(e["id"] for e in evs), sorted(want))
        self.assertEqual({e["status"] for e in evs}, {"done"})
        # Exactly one GHL contact for each.
        by_email = {}
        for c in self.fakes.records("ghl", "contacts"):
            by_email.setdefault((c.get("email") or "").lower(), []).append(c["id"])
        for r in records:
            self.assertEqual(len(by_email.get(r["eMail"].lower(), [])), 1, r["eMail"])
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), self.N)


if __name__ == "__main__":
    harness.main()
