"""SPEC sections 6 and 11: the fault matrix. Each case posts a small batch of
events with unique e-mails, lets one fault act (upstream 5xx and 429
storms, hangs past UPSTREAM_TIMEOUT, connection resets, garbage and
truncated answers, 401 loops, NowCerts' HTTP 200 with "status":0, a token
endpoint that is down, a full disk, another process holding the SQLite write
lock, kill -9 at random moments), clears it, and checks two things:

- the state each event ends in while the fault acts: retried then `done`,
  `retry_wait` (never `dead`) for what is worth trying again, or `dead` with
  the upstream's answer kept for what is not;
- exactly once: after the fault is cleared (and what did not finish is
  replayed), every acknowledged (2xx) event has made exactly one record in
  the fakes (`/_records/contacts` in GHL, `/_records/insureds` in NowCerts),
  and no event has made two.

Retries are kept short (RETRY_INITIAL_DELAY=0.05, MAX_RETRIES=3,
UPSTREAM_TIMEOUT=1) so the whole file runs in about two minutes. The disk-full
case mounts a small tmpfs and needs root.
"""

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import (IntegTest, Server, expected_event_id, ghl_contact, ghl_event,  # noqa: E402
                     insured_data, nowcerts_event)

ADMIN = "fault-matrix-admin-token"
MAX_RETRIES = 3
ENV = {
    "RETRY_INITIAL_DELAY": "0.05",
    "RETRY_BACKOFF_FACTOR": "2",
    "MAX_RETRIES": str(MAX_RETRIES),
    "UPSTREAM_TIMEOUT": "1",
    "WEBHOOK_WAIT_MS": "1000",
    "RATE_LIMIT_PER_MINUTE": "0",
    "ADMIN_TOKEN": ADMIN,
}
# A storm longer than any one event's retries can outlast.
ENDLESS = 100000
BATCH = 4
GHL_CONTACTS = r"^/contacts"


class Sent:
    """One webhook as posted: its body, the e-mail that names its record,
    the answer (None when the connection failed) and its event id."""

    def __init__(self, side, body, email):
        self.side = side  # which endpoint: "nowcerts" or "ghl"
        self.body = body
        self.email = email
        self.status = None
        self.answer = None
        self.id = expected_event_id(side, body)

    @property
    def acked(self):
        return self.status is not None and 200 <= self.status < 300

    def __repr__(self):
        return "<%s %s -> %s>" % (self.side, self.email, self.status)


class FaultCase(IntegTest):
    """Helpers shared by the cases."""

    def start(self, env=None, workdir=None):
        e = dict(ENV)
        e.update(env or {})
        return self.server(e, workdir=workdir)

    def restart(self, old):
        s = Server(old.workdir, self.fakes, {})
        s.env.update({k: v for k, v in old.env.items() if k != "PORT"})
        self.servers.append(s)
        return s.start()

    def clear_faults(self):
        for side in ("nowcerts", "ghl"):
            self.fakes._ctl(side, "DELETE", "/_fault")

    # -- posting ------------------------------------------------------------

    def make(self, side, n=BATCH, pad=0):
        out = []
        for _ in range(n):
            if side == "nowcerts":
                extra = {"notes": "x" * pad} if pad else {}
                data = insured_data(**extra)
                out.append(Sent("nowcerts", nowcerts_event("INSURED_INSERT", data), data["email"]))
            else:
                c = ghl_contact()
                out.append(Sent("ghl", ghl_event("ContactCreate", c), c["email"]))
        return out

    def post(self, s, sent, timeout=30.0):
        try:
            r = s.post("/api/v1/webhooks/" + sent.side, sent.body, timeout=timeout)
        except OSError:
            sent.status = None
            return sent
        sent.status = r.status
        try:
            sent.answer = r.json()
        except AssertionError:
            sent.answer = r.text
        if isinstance(sent.answer, dict) and sent.answer.get("event_id"):
            self.assertEqual(sent.answer["event_id"], sent.id, "event id of %r" % sent)
        return sent

    def post_all(self, s, batch, timeout=30.0):
        """Posts the batch at once, so a fault storm meets several events."""
        with ThreadPoolExecutor(len(batch)) as pool:
            list(pool.map(lambda x: self.post(s, x, timeout), batch))
        return batch

    # -- states -------------------------------------------------------------

    def states(self, s):
        return {e["id"]: e for e in s.events("--limit", "100000")}

    def settle(self, s, batch, statuses, what):
        """Waits until every event of the batch has reached one of
        `statuses` and returns their rows; fails naming the ones that did
        not (with the state they are in)."""
        ids = [x.id for x in batch]

        def reached():
            st = self.states(s)
            return st if all(st.get(i, {}).get("status") in statuses for i in ids) else None
        try:
            st = harness.wait_until(reached, 60, 0.2, what)
        except AssertionError:
            st = self.states(s)
            seen = [(x.email, x.status, st.get(x.id, {}).get("status"),
                     st.get(x.id, {}).get("last_error")) for x in batch
                    if st.get(x.id, {}).get("status") not in statuses]
            raise AssertionError("%s: expected %s; %d of %d did not get there, e.g. "
                                 "(email, answer, state, last_error) %r"
                                 % (what, "/".join(statuses), len(seen), len(batch),
                                    seen[:6])) from None
        return [st[i] for i in ids]

    def attempts(self, s, event_id):
        """The event's recorded upstream attempts (admin API)."""
        r = s.get("/api/v1/events/" + event_id, headers={"Authorization": "Bearer " + ADMIN})
        self.assertEqual(r.status, 200, r)
        attempts = r.json().get("attempts")
        self.assertIsInstance(attempts, list, r)
        return attempts

    def recover(self, s, batch):
        """After the fault is cleared: whatever did not end `done` is
        replayed (`ncghl replay ID`, as an operator would) and must then
        end done."""
        st = self.states(s)
        for x in batch:
            row = st.get(x.id)
            if row and row.get("status") in ("retry_wait", "dead"):
                p = s.cli("replay", x.id)
                self.assertEqual(p.returncode, 0, "replay %s: %s" % (x.id, p.stderr))
        self.settle(s, [x for x in batch if x.id in st], ("done",),
                    "every stored event to be done once the fault is cleared")

    # -- exactly once -------------------------------------------------------

    def records_by_email(self, side):
        """E-mail (lower case) -> how many records carry it on `side`'s
        upstream: NowCerts webhooks make GHL contacts, GHL ones NowCerts
        insureds."""
        if side == "nowcerts":
            recs, key = self.fakes.records("ghl", "contacts"), "email"
        else:
            recs, key = self.fakes.records("nowcerts", "insureds"), "eMail"
        counts = {}
        for r in recs:
            e = (r.get(key) or r.get("email") or "").lower()
            counts[e] = counts.get(e, 0) + 1
        return counts

    def assertExactlyOnce(self, s, batch):
        st = self.states(s)
        by_side = {}
        for x in batch:
            counts = by_side.setdefault(x.side, None) or self.records_by_email(x.side)
            by_side[x.side] = counts
            n = counts.get(x.email.lower(), 0)
            if x.acked:
                self.assertIn(x.id, st, "acknowledged %r (HTTP %s) is not in the store"
                              % (x, x.status))
                self.assertEqual(n, 1, "acknowledged %r made %d records" % (x, n))
            else:
                self.assertLessEqual(n, 1, "%r made %d records" % (x, n))
                if x.id in st:
                    self.assertEqual(n, 1, "stored %r (not acknowledged) made %d records"
                                     % (x, n))

    def seed_the_other_side(self, batch):
        """Each person of the batch already has a record ("Pre Existing") on
        the side their event is synced to: a GHL contact for a NowCerts
        event, a NowCerts insured for a GHL one."""
        for x in batch:
            if x.side == "nowcerts":
                self.seed_contact(email=x.email, first="Pre", last="Existing")
            else:
                self.seed_id("nowcerts", "insureds", {"firstName": "Pre", "lastName": "Existing",
                                                      "eMail": x.email, "type": "Insured",
                                                      "active": True}, "eMail")

    def fault_answers(self, side, path_re, status):
        return [r for r in self.fakes.calls(side, None, path_re) if r.get("status") == status]


class UpstreamStorms(FaultCase):
    """5xx, 429, hangs, resets, garbage and truncated answers from GHL."""

    def setUp(self):
        super().setUp()
        # The fake's X-RateLimit-* headers describe a 1 s window, so the
        # service's own limiter, steered by them after a 429, waits for 1 s
        # rather than GHL's real 10 s.
        self.fakes.config("ghl", rate_window=1)

    def _short_storm(self, **fault):
        """A storm no longer than one call's retries: every event is
        retried and ends done, exactly once."""
        s = self.start()
        self.fakes.fault("ghl", path=GHL_CONTACTS, count=MAX_RETRIES, **fault)
        batch = self.post_all(s, self.make("nowcerts"))
        for x in batch:
            self.assertTrue(x.acked, "%r was not acknowledged: %r" % (x, x.answer))
        rows = self.settle(s, batch, ("done",), "every event to be retried and done")
        self.assertEqual(self.fakes._ctl("ghl", "GET", "/_fault"), [],
                         "the storm did not act: faults left unused")
        self.clear_faults()
        self.assertExactlyOnce(s, batch)
        return s, batch, rows

    def _endless_storm(self, env=None, **fault):
        """A storm that outlasts the retries: every event waits in
        retry_wait (never dead, nothing created); once the storm ends and
        the events run again, each is delivered exactly once."""
        s = self.start(env)
        self.fakes.fault("ghl", path=GHL_CONTACTS, count=ENDLESS, **fault)
        batch = self.post_all(s, self.make("nowcerts"))
        for x in batch:
            self.assertTrue(x.acked, "%r was not acknowledged: %r" % (x, x.answer))
        rows = self.settle(s, batch, ("retry_wait", "dead"), "every event to give up for now")
        for x, row in zip(batch, rows):
            self.assertEqual(row["status"], "retry_wait", "%r: %r" % (x, row))
            self.assertTrue(row.get("last_error"), "%r kept no error: %r" % (x, row))
        self.assertEqual(self.records_by_email("nowcerts").keys()
                         & {x.email.lower() for x in batch}, set(),
                         "a record was made while every call failed")
        self.clear_faults()
        self.recover(s, batch)
        self.assertExactlyOnce(s, batch)
        return s, batch, rows

    def test_5xx_storm_shorter_than_the_retries_ends_done(self):
        s, batch, _ = self._short_storm(status=503)
        self.assertEqual(len(self.fault_answers("ghl", GHL_CONTACTS, 503)), MAX_RETRIES)
        failed = [a for x in batch for a in self.attempts(s, x.id)
                  if str(a.get("status")) == "503"]
        self.assertEqual(len(failed), MAX_RETRIES, "503 attempts recorded: %r" % failed)

    def test_5xx_storm_longer_than_the_retries_waits_then_delivers_once(self):
        _, _, rows = self._endless_storm(status=503)
        for row in rows:
            self.assertIn("503", row["last_error"], row)

    def test_429_storm_with_retry_after_ends_done(self):
        self._short_storm(status=429, retry_after=1)
        self.assertEqual(len(self.fault_answers("ghl", GHL_CONTACTS, 429)), MAX_RETRIES)

    def test_429_storm_without_retry_after_ends_done(self):
        self._short_storm(status=429)

    def test_429_storm_longer_than_the_retries_waits_then_delivers_once(self):
        # The outbound limiter holds every GHL call for its 10 s window after
        # a 429 without Retry-After; four rounds of that would only make the
        # file slow, so it is off here (the short storms keep it on).
        _, _, rows = self._endless_storm({"GHL_RATE_LIMIT": "0"}, status=429)
        for row in rows:
            self.assertIn("429", row["last_error"], row)

    def test_hangs_past_upstream_timeout_are_retried_and_end_done(self):
        s, batch, _ = self._short_storm(hang=True)
        timed_out = [a for x in batch for a in self.attempts(s, x.id)
                     if str(a.get("status")) in ("0", "None")]
        self.assertGreaterEqual(len(timed_out), 1, "no timed-out attempt recorded")

    def test_connection_resets_are_retried_and_end_done(self):
        self._short_storm(reset=True)

    def test_garbage_5xx_bodies_are_retried_and_end_done(self):
        self._short_storm(status=502, raw="<html><body>502 Bad Gateway</body></html>")

    def test_truncated_answers_are_retried_and_end_done(self):
        self._short_storm(status=200, truncate=True)

    def test_garbage_success_body_is_never_taken_for_a_success(self):
        """GHL answering 200 with a body that is not JSON has not done the
        work: the event must not end done on it; it keeps the error, and
        after the fault it is delivered exactly once."""
        s = self.start()
        self.fakes.fault("ghl", path=GHL_CONTACTS, count=ENDLESS, status=200,
                         raw="<html>maintenance</html>")
        batch = self.post_all(s, self.make("nowcerts"))
        rows = self.settle(s, batch, ("retry_wait", "dead"), "every event to fail for now")
        for x, row in zip(batch, rows):
            self.assertTrue(row.get("last_error"), "%r kept no error: %r" % (x, row))
        self.clear_faults()
        self.recover(s, batch)
        self.assertExactlyOnce(s, batch)

    def wait_out(self, faults, seeded, error_of):
        """Two events a side meet `faults` (side -> fault spec) forever: every
        one waits in retry_wait, its error holding error_of(side); after the
        faults, replayed, each person is one record. `seeded`: each already
        has a record on the other side. Returns the batch."""
        s = self.start()
        batch = self.make("nowcerts", n=2) + self.make("ghl", n=2)
        if seeded:
            self.seed_the_other_side(batch)
        for side, spec in faults.items():
            self.fakes.fault(side, count=ENDLESS, status=200, **spec)
        self.post_all(s, batch)
        rows = self.settle(s, batch, ("retry_wait",), "every event to wait out the fault")
        for x, row in zip(batch, rows):
            self.assertIn(error_of(x.side), row.get("last_error") or "", (x, row))
        if seeded:  # nobody was made a second time meanwhile
            self.assertExactlyOnce(s, batch)
        self.clear_faults()
        self.recover(s, batch)
        self.assertExactlyOnce(s, batch)
        return batch

    def test_a_search_answered_without_its_list_never_makes_a_second_record(self):
        """A search answered 200 with an error body says nothing of who
        exists: taken for "nobody", the create after it would make a second
        record of a person the other side has."""
        self.wait_out({"ghl": {"path": r"^/contacts/search",
                               "body": {"statusCode": 401, "message": "Invalid JWT (fault matrix)"}},
                       "nowcerts": {"path": r"InsuredDetailList",
                                    "body": {"Message": "An error has occurred."}}},
                      True, lambda side: "list")

    # A search's list there, but not a list of records, or empty while the
    # answer's own count says it found some: as unknown as no list at all
    # (an audit made second records with each).

    def test_a_search_list_that_is_an_object_never_makes_a_second_record(self):
        self.wait_out({"ghl": {"path": r"^/contacts/search",
                               "body": {"contacts": {"id": "x"}, "total": 1}},
                       "nowcerts": {"path": r"InsuredDetailList",
                                    "body": {"value": {"id": "x"}, "@odata.count": 1}}},
                      True, lambda side: "list")

    def test_a_search_list_of_no_records_never_makes_a_second_record(self):
        self.wait_out({"ghl": {"path": r"^/contacts/search",
                               "body": {"contacts": ["x", 1], "total": 2}},
                       "nowcerts": {"path": r"InsuredDetailList",
                                    "body": {"value": ["x", 1], "@odata.count": 2}}},
                      True, lambda side: "list")

    def test_an_empty_search_list_whose_count_says_some_never_makes_a_second_record(self):
        self.wait_out({"ghl": {"path": r"^/contacts/search", "body": {"contacts": [], "total": 1}},
                       "nowcerts": {"path": r"InsuredDetailList",
                                    "body": {"value": [], "@odata.count": 1}}},
                      True, lambda side: "list")

    def test_a_page_that_is_no_answer_makes_events_wait_on_either_side(self):
        """A proxy's HTML page behind a 200, on GHL's search or NowCerts'
        list: the same on both sides, never dead at once."""
        page = "<html>maintenance</html>"
        self.wait_out({"ghl": {"path": r"^/contacts/search", "raw": page},
                       "nowcerts": {"path": r"InsuredDetailList", "raw": page}},
                      False, lambda side: "JSON")

    def test_a_write_answered_200_with_an_error_body_is_not_taken_for_done(self):
        """An update answered 200 with an error body (GHL's PUT without
        `succeded`/`contact`, NowCerts' Insert without `"status":1`) has not
        been seen to change anything: after the fault the change reaches the
        other side."""
        batch = self.wait_out(
            {"ghl": {"method": "PUT", "path": r"^/contacts/",
                     "body": {"statusCode": 400, "message": "Validation failed (fault matrix)"}},
             "nowcerts": {"path": r"Insured/Insert$", "body": {"Message": "An error has occurred."}}},
            True, lambda side: "succeeded" if side == "nowcerts" else "status")
        for x in batch:
            if x.side == "nowcerts":
                got = self.contacts_with_email(x.email)[0]["firstName"]
            else:
                got = self.insureds_with_email(x.email)[0]["firstName"]
            self.assertNotEqual(got, "Pre", x)


class LostCreateAnswers(FaultCase):
    """A create that reaches the upstream and makes its record, whose
    connection then dies before the answer: the record must not be made a
    second time, neither by ncghl's retries nor by curl re-sending on its
    own (which it does on a reused connection that closes unanswered)."""

    def test_a_create_whose_connection_dies_after_the_write_makes_one_record(self):
        s = self.start()
        self.fakes.fault("ghl", path=r"^/contacts/?$", method="POST", reset=True, after_write=True)
        self.fakes.fault("nowcerts", path=r"/Insured/OnlyInsertInsured", method="POST", reset=True,
                         after_write=True)
        batch = self.make("nowcerts", n=1) + self.make("ghl", n=1)
        self.post_all(s, batch)
        self.settle(s, batch, ("retry_wait", "done"), "both events to meet the lost answer")
        self.assertEqual(self.fakes._ctl("ghl", "GET", "/_fault"), [], "the GHL fault did not act")
        self.assertEqual(self.fakes._ctl("nowcerts", "GET", "/_fault"), [],
                         "the NowCerts fault did not act")
        self.recover(s, batch)
        self.assertExactlyOnce(s, batch)


    def test_a_create_answered_2xx_without_an_id_waits_and_makes_one_record(self):
        """The record made, the answer naming no id (GHL's 201 with
        "contact":null, NowCerts' {"status":1} alone): not dead at once (an
        operator's replay), not created again blindly: retried, it searches
        first and links the record that was made."""
        s = self.start()
        self.fakes.fault("ghl", path=r"^/contacts/?$", method="POST", after_write=True,
                         status=201, body={"contact": None})
        self.fakes.fault("nowcerts", path=r"/Insured/OnlyInsertInsured", method="POST",
                         after_write=True, status=200, body={"status": 1})
        batch = self.make("nowcerts", n=1) + self.make("ghl", n=1)
        self.post_all(s, batch)
        rows = self.settle(s, batch, ("retry_wait", "done"), "both events to meet the id-less answer")
        self.assertNotIn("dead", [r.get("status") for r in rows], rows)
        self.recover(s, batch)
        self.assertExactlyOnce(s, batch)


class AuthAndNowCerts(FaultCase):
    """401 loops on both sides, NowCerts' "status":0, a token endpoint that
    is down."""

    def test_ghl_401_loop_is_dead_at_once_with_the_answer_kept(self):
        s = self.start()
        self.fakes.fault("ghl", path=GHL_CONTACTS, count=ENDLESS, status=401,
                         body={"statusCode": 401, "message": "Invalid JWT (fault matrix)"})
        batch = self.post_all(s, self.make("nowcerts"))
        rows = self.settle(s, batch, ("dead",), "every event to be dead")
        for x, row in zip(batch, rows):
            self.assertIn("401", row.get("last_error") or "", row)
        # Not retried as if it were a 5xx, and no loop: the static token
        # cannot be renewed, so at most the one retry a 401 allows.
        n401 = len(self.fault_answers("ghl", GHL_CONTACTS, 401))
        self.assertLessEqual(n401, 2 * len(batch), "GHL was asked %d times" % n401)
        self.clear_faults()
        self.recover(s, batch)
        self.assertExactlyOnce(s, batch)

    def test_nowcerts_401_loop_refreshes_once_and_ends_dead_with_the_answer(self):
        s = self.start()
        self.fakes.fault("nowcerts", path=r"^/api/InsuredDetailList", count=ENDLESS, status=401)
        batch = self.post_all(s, self.make("ghl"))
        for x in batch:
            # The GHL endpoint answers 200 even for a dead event (SPEC 5).
            self.assertTrue(x.acked, "%r: %r" % (x, x.answer))
        rows = self.settle(s, batch, ("dead",), "every event to be dead")
        for row in rows:
            self.assertIn("401", row.get("last_error") or "", row)
        tokens = len(self.fakes.token_calls())
        self.assertLessEqual(tokens, 1 + len(batch),
                             "%d token requests for %d events: a refresh loop"
                             % (tokens, len(batch)))
        lists = len(self.fakes.calls("nowcerts", "GET", r"^/api/InsuredDetailList"))
        self.assertLessEqual(lists, 2 * len(batch), "%d list calls" % lists)
        self.clear_faults()
        self.recover(s, batch)
        self.assertExactlyOnce(s, batch)

    def test_nowcerts_status_0_is_a_failure_kept_with_its_message(self):
        s = self.start()
        msg = "Insured could not be saved (fault matrix)"
        self.fakes.fault("nowcerts", path=r"^/api/Insured/", count=ENDLESS, status=200,
                         body={"status": 0, "message": msg})
        batch = self.post_all(s, self.make("ghl"))
        rows = self.settle(s, batch, ("dead",), "every event to be dead")
        for row in rows:
            self.assertIn(msg, row.get("last_error") or "", row)
        self.assertEqual(self.records_by_email("ghl").keys() & {x.email.lower() for x in batch},
                         set(), "an insured was made although NowCerts said status 0")
        self.clear_faults()
        self.recover(s, batch)
        self.assertExactlyOnce(s, batch)

    def _token_endpoint_down(self, **fault):
        s = self.start()
        self.fakes.fault("nowcerts", path=r"^/api/token$", count=ENDLESS, **fault)
        batch = self.post_all(s, self.make("ghl"))
        rows = self.settle(s, batch, ("retry_wait", "dead"), "every event to give up for now")
        for x, row in zip(batch, rows):
            self.assertEqual(row["status"], "retry_wait",
                             "a token endpoint that fails must delay %r, not kill it: %r"
                             % (x, row))
        self.clear_faults()
        self.recover(s, batch)
        self.assertExactlyOnce(s, batch)

    def test_token_endpoint_5xx_delays_events(self):
        self._token_endpoint_down(status=503)

    def test_token_endpoint_time_out_delays_events(self):
        self._token_endpoint_down(hang=True)

    def test_token_endpoint_garbage_delays_events(self):
        self._token_endpoint_down(status=200, raw="<html>sign-in unavailable</html>")


class Storage(FaultCase):
    """The store itself: a full disk, another process holding the write
    lock, kill -9 at random moments."""

    def _mount_small_disk(self, size_kb):
        where = self.tmp / "disk"
        where.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dk" % size_kb, "tmpfs",
                            str(where)], capture_output=True, text=True)
        if p.returncode != 0:
            self.fail("the disk-full case mounts a tmpfs and needs root: %s" % p.stderr.strip())
        # Runs after tearDown has stopped the servers that use it.
        self.addCleanup(subprocess.run, ["umount", "-l", str(where)], capture_output=True)
        return where

    @staticmethod
    def _fill(where):
        """Fills the file system until the kernel says ENOSPC."""
        chunk = b"\0" * 65536
        path = where / "filler"
        with open(path, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(chunk)
            except OSError:
                pass
            try:
                while True:
                    f.write(b"\0" * 512)
            except OSError:
                pass
        return path

    def test_disk_full_answers_503_and_a_later_copy_is_accepted(self):
        disk = self._mount_small_disk(1536)
        s = self.start({"DB_PATH": str(disk / "ncghl.db")})
        warm = self.make("nowcerts", 2)
        for x in warm:
            self.post(s, x)
            self.assertTrue(x.acked, "%r before the disk was full: %r" % (x, x.answer))
        filler = self._fill(disk)
        during = []
        refused = 0
        for x in self.make("nowcerts", 40, pad=20000):
            self.post(s, x)
            during.append(x)
            self.assertIn(x.status, (200, 202, 503),
                          "%r on a full disk: %r" % (x, x.answer))
            refused += x.status == 503
            if refused >= 3:
                break
        self.assertGreaterEqual(refused, 1, "no webhook was refused although the disk is full: "
                                "%r" % during)
        with self.subTest("/health is 503 while the store cannot be written"):
            health = s.get("/health")
            self.assertEqual(health.status, 503, "/health on a full disk: %r" % health)
        self.assertTrue(s.running(), "ncghl exited on a full disk")

        filler.unlink()
        for x in during:
            if x.status == 503:
                self.post(s, x)
                self.assertIn(x.status, (200, 202),
                              "a copy of an event refused on a full disk must be accepted "
                              "once there is room, not %r" % x.answer)
        batch = warm + during
        self.settle(s, batch, ("done",), "every accepted event to be done after the disk "
                    "has room again")
        self.assertExactlyOnce(s, batch)

    def test_another_process_holding_the_write_lock_never_acknowledges_unstored(self):
        s = self.start()
        warm = self.make("nowcerts", 1)
        self.post(s, warm[0])
        self.assertTrue(warm[0].acked)
        locker = subprocess.Popen(["sqlite3", s.db_path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  preexec_fn=harness._die_with_parent)
        self.addCleanup(lambda: locker.poll() is None and locker.kill())
        locker.stdin.write(".timeout 10000\nBEGIN IMMEDIATE;\nSELECT 'locked';\n")
        locker.stdin.flush()
        self.assertEqual(locker.stdout.readline().strip(), "locked")

        batch = self.make("nowcerts", BATCH)
        # Generous: it only decides when to stop waiting for an answer that
        # a stalled intake would never give while the lock is held.
        threads = [threading.Thread(target=self.post, args=(s, x, 30.0)) for x in batch]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        with self.subTest("every webhook is answered while the other process holds the lock"):
            self.assertEqual([x for x in batch if x.status is None], [],
                             "intake stalled: no answer while another process held the lock "
                             "(answers: %r)" % batch)
            for x in batch:
                self.assertIn(x.status, (200, 202, 503), "%r: %r" % (x, x.answer))
        # Whatever was acknowledged must be on disk: the process dies now,
        # before the other process lets go of the lock.
        s.kill9()
        locker.stdin.write("ROLLBACK;\n.quit\n")
        locker.stdin.flush()
        locker.wait(10)

        s2 = self.restart(s)
        st = self.states(s2)
        for x in batch:
            if x.acked:
                self.assertIn(x.id, st, "%r was acknowledged while another process held the "
                              "write lock, and is not in the store" % x)
            elif x.id not in st:
                self.post(s2, x)
                self.assertTrue(x.acked, "a copy of %r must be accepted: %r" % (x, x.answer))
        self.settle(s2, batch + warm, ("done",), "every event to be done")
        self.assertExactlyOnce(s2, batch + warm)

    def test_kill_9_at_random_moments_under_a_stream_of_webhooks(self):
        seed = int(os.environ.get("FAULT_SEED") or random.randrange(1 << 30))
        print("    kill -9 rounds: FAULT_SEED=%d" % seed, flush=True)
        rng = random.Random(seed)
        self.fakes.config("ghl", latency_ms=20)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0)
        s = self.start({"WEBHOOK_WAIT_MS": "200"})
        current = [s]
        sent = []
        stop = threading.Event()

        def feed(side):
            while not stop.is_set():
                x = self.make(side, 1)[0]
                self.post(current[0], x, timeout=5.0)
                sent.append(x)
                if x.status is None:
                    time.sleep(0.02)

        # One stream each way: NowCerts webhooks make GHL contacts, GHL
        # webhooks NowCerts insureds.
        feeders = [threading.Thread(target=feed, args=(side,)) for side in ("nowcerts", "ghl")]
        for t in feeders:
            t.start()
        try:
            for _ in range(5):
                time.sleep(rng.uniform(0.2, 1.2))
                current[0].kill9()
                current[0] = self.restart(current[0])
            time.sleep(0.5)
        finally:
            stop.set()
            for t in feeders:
                t.join(15)
        s = current[0]
        acked = [x for x in sent if x.acked]
        print("    %d webhooks sent, %d acknowledged, over 5 kill -9 rounds"
              % (len(sent), len(acked)), flush=True)
        self.assertGreater(len(acked), 0, "no webhook was acknowledged at all")
        st = self.states(s)
        stored = [x for x in sent if x.id in st]
        self.settle(s, stored, ("done",), "every stored event to be done after the restarts")
        self.assertExactlyOnce(s, sent)


if __name__ == "__main__":
    harness.main()
