"""SPEC section 3: `ncghl backfill --from nowcerts|ghl [--since DATE]` reads
every existing record into the same queue, idempotency and mappings as a
webhook, resumes where an interrupted run stopped, follows the running
service with progress and ends with a summary."""

import hashlib
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import BIN, IntegTest, expected_event_id, uniq  # noqa: E402

CREATE_CONTACT = r"^/contacts/?$"
LIST = r"/InsuredDetailList$"
SUMMARY = re.compile(r"summary: (\d+) created, (\d+) updated, (\d+) unchanged, (\d+) failed")


def phone(i, tag):
    """A phone of its own per record (the mappings match people by phone)."""
    return "727%07d" % ((int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16) * 7919 + i) % 10000000)


def insureds(n, tag, **extra):
    out = []
    for i in range(n):
        rec = {"firstName": "Back", "lastName": "Fill%05d%s" % (i, tag),
               "eMail": "bf%05d.%s@example.com" % (i, tag), "phone": phone(i, tag),
               "type": "Insured", "active": True}
        rec.update(extra)
        out.append(rec)
    return out


def db_query(s, sql, args=()):
    """Read-only, beside the running processes, on the store (SQLite or PostgreSQL)."""
    return s.db_query(sql, args)


def cursor(s, side):
    try:
        rows = db_query(s, "SELECT value FROM kv WHERE key = ?", ("backfill.cursor." + side,))
    except harness.DBError:  # not created (or not migrated) yet
        return None
    return json.loads(rows[0][0]) if rows else None


def summary(text):
    m = SUMMARY.search(text)
    if not m:
        raise AssertionError("no summary line in:\n" + text[-3000:])
    return tuple(int(x) for x in m.groups())


class BackfillNowCerts(IntegTest):
    N = 2000
    ENV = {"GHL_RATE_LIMIT": 0}

    def _events(self, s, source):
        return db_query(s, "SELECT id, status FROM events WHERE source = ?", (source,))

    def interrupted(self, s, pos, what):
        """A backfill killed once its cursor passed record `pos` (its list
        pages slowed down beforehand); returns the cursor it left."""
        first = subprocess.Popen([str(BIN), "backfill", "--from", "nowcerts"], cwd=s.workdir, env=s.env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, preexec_fn=harness._die_with_parent)
        try:
            harness.wait_until(lambda: (cursor(s, "nowcerts") or {}).get("pos", 0) >= pos, 60, 0.02, what)
        finally:
            first.kill()
            first.communicate()
        return cursor(s, "nowcerts")

    def test_interrupted_backfill_of_2000_resumes_and_syncs_each_once(self):
        self.fakes.config("ghl", rate_limit=1000000)
        tag = uniq(6)
        records = insureds(self.N, tag)
        self.fakes.seed("nowcerts", "insureds", records)
        s = self.server(self.ENV)
        # Slow list pages, so that the kill lands between two of them.
        self.fakes.fault("nowcerts", latency_ms=150, count=100000, path=LIST, method="GET")
        cur = self.interrupted(s, 500, "the backfill to store a few pages")
        self.assertIsNotNone(cur, "the kill came after the last page; nothing was tested")
        self.assertEqual(cur["stage"], 0)
        self.assertLess(cur["pos"], self.N)
        # A page's events and the cursor after it are one transaction.
        self.assertEqual(len(self._events(s, "nowcerts")), cur["pos"])
        self.assertEqual(cur["read"], cur["pos"])
        killed_at = time.time()

        p = s.cli("backfill", "--from", "nowcerts", timeout=240)
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("resuming an interrupted backfill at insureds record %d" % cur["pos"], p.stdout)
        # It went on from the cursor: no list page before it was read again
        # (the first one starts on the last record already stored).
        skips = [int(parse_qs(r["query"])["$skip"][0]) for r in self.fakes.calls("nowcerts", "GET", LIST)
                 if harness.req_at(r) > killed_at]
        self.assertEqual(min(skips), cur["pos"] - 1, skips)
        created, updated, unchanged, failed = summary(p.stdout)
        self.assertEqual((created + updated + unchanged, failed), (self.N - cur["pos"], 0), p.stdout)
        self.assertRegex(p.stdout, r"progress: \d+/\d+ events finished \(\d+%\), [\d.]+/s, ETA")
        self.assertIsNone(cursor(s, "nowcerts"), "the cursor outlived a finished backfill")

        # Exactly one event per record (its own id), each done; one contact each.
        want = {expected_event_id("nowcerts", {"event_type": "INSURED_INSERT",
                                               "timestamp": r["changeDate"], "data": r})
                for r in self.fakes.records("nowcerts", "insureds")}
        evs = self._events(s, "nowcerts")
        harness.wait_until(lambda: all(st == 2 for _, st in self._events(s, "nowcerts")),
                           60, 0.2, "the events killed with the first run to finish")
        self.assertEqual(sorted(e for e, _ in evs), sorted(want))
        by_email = {}
        for c in self.fakes.records("ghl", "contacts"):
            by_email.setdefault((c.get("email") or "").lower(), []).append(c["id"])
        for r in records:
            self.assertEqual(len(by_email.get(r["eMail"].lower(), [])), 1, r["eMail"])
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), self.N)

        # Once more: the same records are the same events, nothing is sent.
        p = s.cli("backfill", "--from", "nowcerts", timeout=240)
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(summary(p.stdout), (0, 0, self.N, 0), p.stdout)
        self.assertIn("%d records were already synced" % self.N, p.stdout)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), self.N)

    def test_a_change_while_reading_is_not_missed(self):
        """A record that changes while the backfill pages moves to the end of
        the list and shifts the others: the backfill notices (the page does
        not start on the record it ended with) and reads the page again."""
        tag = uniq(6)
        records = insureds(250, tag)
        for i, r in enumerate(records):
            r["changeDate"] = r["createDate"] = "2024-01-01T00:%02d:%02dZ" % (i // 60, i % 60)
        seeded = self.fakes.seed("nowcerts", "insureds", records)
        s = self.server(start=False)
        self.fakes.fault("nowcerts", latency_ms=1500, count=100000, path=LIST, method="GET")
        proc = subprocess.Popen([str(BIN), "backfill", "--from", "nowcerts"], cwd=s.workdir, env=s.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, preexec_fn=harness._die_with_parent)
        try:
            harness.wait_until(lambda: (cursor(s, "nowcerts") or {}).get("pos", 0) >= 100,
                               60, 0.02, "the first page")
            # Record 10 changes: it moves to the end, record 100 moves to 99.
            self.fakes.seed("nowcerts", "insureds", dict(seeded[10], city="Moved",
                                                         changeDate="2025-01-01T00:00:00Z"))
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 0, out)
        skips = [parse_qs(r["query"])["$skip"][0] for r in self.fakes.calls("nowcerts", "GET", LIST)]
        self.assertEqual(skips.count("0"), 2, skips)  # the step back
        want = {expected_event_id("nowcerts", {"event_type": "INSURED_INSERT" if r["createDate"] == r["changeDate"]
                                               else "INSURED_UPDATE", "timestamp": r["changeDate"], "data": r})
                for r in self.fakes.records("nowcerts", "insureds")}
        got = {e["id"] for e in s.events("--limit", "1000")}
        self.assertEqual(want - got, set(), "records the backfill missed")
        self.assertEqual(len(got), 251)  # 250 records and the one change

    def test_without_a_service_the_events_wait_for_the_next_start(self):
        tag = uniq(6)
        records = insureds(3, tag)
        self.fakes.seed("nowcerts", "insureds", records)
        s = self.server(start=False)
        p = s.cli("backfill", "--from", "nowcerts")
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("no service is running on %s: 3 events queued; they run at the next start"
                      % s.store_label, p.stdout)
        self.assertEqual([e["status"] for e in s.events()], ["pending"] * 3)
        self.assertEqual(self.fakes.calls("ghl"), [])
        s.start()
        harness.wait_until(lambda: all(self.contacts_with_email(r["eMail"]) for r in records), 20, 0.1,
                           "the queued events to run at start")

    def test_a_resumed_backfill_without_a_service_says_what_waits(self):
        records = insureds(250, uniq(6))
        self.fakes.seed("nowcerts", "insureds", records)
        s = self.server(start=False)
        self.fakes.fault("nowcerts", latency_ms=300, count=100000, path=LIST, method="GET")
        pos = self.interrupted(s, 100, "the backfill to store a page")["pos"]
        self.assertLess(pos, 250, "the kill came after the last page; nothing was tested")
        p = s.cli("backfill", "--from", "nowcerts", timeout=120)
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("resuming an interrupted backfill", p.stdout)
        self.assertIn("no service is running on %s" % s.store_label, p.stdout)
        self.assertIn("250 events in all wait in the store", p.stdout)
        self.assertNotIn("summary:", p.stdout)
        self.assertEqual(len([e for e in s.events("--limit", "1000") if e["status"] == "pending"]), 250)

    def test_since_and_policies(self):
        tag = uniq(6)
        old, new = insureds(2, tag + "o"), insureds(2, tag + "n")
        for r in old:
            r.update(createDate="2020-03-01T00:00:00Z", changeDate="2020-03-01T00:00:00Z")
        seeded = self.fakes.seed("nowcerts", "insureds", old + new)
        self.fakes.seed("nowcerts", "policies", [
            {"number": "BF-P-" + tag, "isQuote": False, "insuredDatabaseId": seeded[2]["id"],
             "insuredEmail": new[0]["eMail"], "totalPremium": 10},
            {"number": "BF-Q-" + tag, "isQuote": True, "insuredDatabaseId": seeded[2]["id"],
             "insuredEmail": new[0]["eMail"], "totalPremium": 20}])
        s = self.server(start=False)
        p = s.cli("backfill", "--from", "nowcerts", "--since", "2024-01-01")
        self.assertEqual(p.returncode, 0, p)
        filters = [parse_qs(r["query"]).get("$filter", [""])[0]
                   for r in self.fakes.calls("nowcerts", "GET", r"DetailList$")]
        self.assertEqual(filters, ["changeDate ge 2024-01-01T00:00:00Z"] * 2)
        types = sorted(e["type"] for e in s.events())
        self.assertEqual(types, ["INSURED_INSERT", "INSURED_INSERT", "POLICY_INSERT", "QUOTE_INSERT"])
        self.assertIn("4 events queued", p.stdout)

    def test_bad_usage(self):
        s = self.server(start=False)
        for args in ((), ("--from", "salesforce"), ("--from", "nowcerts", "--since", "yesterday"),
                     ("--from", "ghl", "--frobnicate")):
            p = s.cli("backfill", *args)
            self.assertEqual(p.returncode, 2, (args, p))
            self.assertTrue(p.stderr.strip(), args)

    def test_progress_bar_on_a_terminal(self):
        records = insureds(5, uniq(6))
        self.fakes.seed("nowcerts", "insureds", records)
        s = self.server()
        master, slave = pty.openpty()
        proc = subprocess.Popen([str(BIN), "backfill", "--from", "nowcerts"], cwd=s.workdir, env=s.env,
                                stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.DEVNULL,
                                preexec_fn=harness._die_with_parent)
        os.close(slave)
        out = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other end closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        os.close(master)
        self.assertEqual(proc.wait(10), 0, out)
        text = out.decode("utf-8", "replace")
        # One line rewritten in place: a bar, the rate and the time left.
        self.assertRegex(text, r"\r\[[#.]{30}\] +\d+%  \d+/5 events  [\d.]+/s  ETA \d+:\d\d")
        self.assertRegex(text, r"\r\[#{30}\] 100%  5/5 events")
        self.assertEqual(summary(text), (5, 0, 0, 0))


class BackfillGhl(IntegTest):
    ENV = {"GHL_RATE_LIMIT": 0}

    def test_from_ghl_creates_each_insured_once_over_pages(self):
        self.fakes.config("ghl", rate_limit=1000000)
        contacts = [self.fakes.seed("ghl", "contacts", {
            "locationId": "it-location-1", "firstName": "Gh", "lastName": "L%04d" % i,
            "email": "ghl%04d.%s@example.com" % (i, uniq(6)), "phone": "+1941%07d" % i})
            for i in range(150)]
        pipeline = self.fakes.records("ghl", "pipelines")[0]
        self.fakes.seed("ghl", "opportunities", [
            {"name": "Opp %d" % i, "locationId": "it-location-1", "pipelineId": pipeline["id"],
             "contactId": contacts[i]["id"]} for i in range(3)])
        s = self.server(self.ENV)
        p = s.cli("backfill", "--from", "ghl", timeout=120)
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("read GHL contacts: 150 records", p.stdout)
        self.assertIn("read GHL opportunities: 3 records", p.stdout)
        for c in contacts:
            self.assertEqual(len(self.insureds_with_email(c["email"])), 1, c["email"])
        created, _, _, failed = summary(p.stdout)
        self.assertEqual((created, failed), (150, 0), p.stdout)
        evs = s.events("--limit", "1000")
        self.assertEqual(sorted({e["type"] for e in evs}), ["ContactUpdate", "OpportunityUpdate"])
        self.assertEqual(len(evs), 153)
        # Contacts search was read in pages of 100.
        pages = [json.loads(r["body"]) for r in self.fakes.calls("ghl", "POST", r"^/contacts/search$")
                 if "filters" not in json.loads(r["body"])]
        self.assertEqual([(b["page"], b["pageLimit"]) for b in pages], [(1, 100), (2, 100)])

        p = s.cli("backfill", "--from", "ghl", timeout=120)
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(summary(p.stdout), (0, 0, 153, 0), p.stdout)
        self.assertEqual(len(self.fakes.calls("nowcerts", "POST", r"/Insured/OnlyInsertInsured$")), 150)
        self.assertEqual(len(self.fakes.records("nowcerts", "insureds")), 150)

    def test_since_skips_contacts_not_updated_since(self):
        old = self.fakes.seed("ghl", "contacts", {"locationId": "it-location-1", "firstName": "Old",
                                                  "lastName": "One", "email": "old.%s@example.com" % uniq(),
                                                  "dateAdded": "2020-01-01T00:00:00.000Z",
                                                  "dateUpdated": "2020-01-02T00:00:00.000Z"})
        new = self.fakes.seed("ghl", "contacts", {"locationId": "it-location-1", "firstName": "New",
                                                  "lastName": "One", "email": "new.%s@example.com" % uniq()})
        s = self.server(start=False)
        p = s.cli("backfill", "--from", "ghl", "--since", "2024-06-01")
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("1 GHL records had not changed since 2024-06-01T00:00:00Z", p.stdout)
        evs = s.events()
        self.assertEqual(len(evs), 1)
        self.assertIn("1 events queued", p.stdout)
        body = dict(new, type="ContactUpdate")
        self.assertEqual(evs[0]["id"], expected_event_id("ghl", body))
        self.assertNotEqual(old["email"], new["email"])

    def test_needs_a_location(self):
        s = self.server(start=False, env={"GHL_LOCATION_ID": None})
        p = s.cli("backfill", "--from", "ghl")
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("GHL_LOCATION_ID", p.stderr)


if __name__ == "__main__":
    harness.main()
