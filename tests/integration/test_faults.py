"""SPEC section 11 (faults), the C core's half: shutdown under load, a full
disk, a failed fsync or COMMIT, stranded rows, writes on disk within about a
second, checkpoints and retention off the loop, /metrics from counters,
another process holding the write lock, and a backlog that stays in the
store.

Some tests need root (a tmpfs for the full disk); they say so and skip
without it. The failed-fsync and sync-log tests preload the fault shim built
beside the binary (tests/faults/faultshim.c); it is never part of the
service."""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, Server, insured_data, nowcerts_event  # noqa: E402

SHIM = harness.BIN.parent / "libncghl_faultshim.so"


def shim_env(extra=None):
    """Preloads the fault shim; an ASan build must be told that the shim
    comes before its runtime on purpose."""
    if not SHIM.exists():
        raise AssertionError("fault shim not built: %s (make build)" % SHIM)
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"LD_PRELOAD": str(SHIM),
           "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}
    env.update(extra or {})
    return env


def sanitized_binary():
    try:
        out = subprocess.run(["ldd", str(harness.BIN)], capture_output=True, text=True).stdout
    except OSError:
        return False
    return "libasan" in out or "libubsan" in out


def db_connect(path):
    c = sqlite3.connect(path, timeout=30, isolation_level=None)
    c.execute("PRAGMA busy_timeout = 30000")
    return c


def insert_events(path, rows):
    """Another process putting events straight into the store (as backfill
    does): rows are (id, source, type, payload, status, created_at)."""
    c = db_connect(path)
    try:
        c.execute("BEGIN IMMEDIATE")
        c.executemany("INSERT INTO events (id, source, type, payload, status, attempts,"
                      " created_at, updated_at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                      [(i, src, typ, pl, st, 1 if st == 1 else 0, at, at)
                       for (i, src, typ, pl, st, at) in rows])
        c.execute("COMMIT")
    finally:
        c.close()


def rss_kib(pid):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class Base(IntegTest):
    def restart(self, old, env=None):
        s = Server(old.workdir, self.fakes, {})
        s.env.update({k: v for k, v in old.env.items() if k != "PORT"})
        for k, v in (env or {}).items():
            if v is None:
                s.env.pop(k, None)
            else:
                s.env[k] = str(v)
        s.db_path = old.db_path
        self.servers.append(s)
        return s.start()

    def wait_all_done(self, s, ids, timeout=90):
        def check():
            evs = {e["id"]: e.get("status") for e in s.events("--limit", "1000000")}
            return all(evs.get(i) == "done" for i in ids)
        try:
            harness.wait_until(check, timeout, 0.5, "%d events to be done" % len(ids))
        except AssertionError:
            evs = {e["id"]: e.get("status") for e in s.events("--limit", "1000000")}
            raise AssertionError("not done: %r" % {i: evs.get(i) for i in ids
                                                    if evs.get(i) != "done"}) from None


class Shutdown(Base):
    def test_sigterm_mid_stream_loses_no_acknowledged_event(self):
        # Three rounds of: eight clients posting as fast as they can, SIGTERM
        # in the middle. Every 2xx must be in the store and end done; the
        # process exits 0 and (ASan build) reports nothing.
        # No rate limit on either side: events then end within the 10 s
        # grace (one still running in Lua at exit is lua_rt's to free, not
        # this test's subject).
        self.fakes.config("ghl", latency_ms=50, rate_limit=1000000)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0, rate_limit=100)
        acked = []
        lock = threading.Lock()
        s = self.server({"RATE_LIMIT_PER_MINUTE": 0, "WEBHOOK_WAIT_MS": 200, "GHL_RATE_LIMIT": 0})
        for rnd in range(3):
            if rnd:
                s = self.restart(s)
            stop = threading.Event()
            got = [0]

            def client():
                while not stop.is_set():
                    ev = nowcerts_event("INSURED_INSERT", insured_data())
                    try:
                        r = s.nowcerts(ev, timeout=30)
                    except OSError:
                        return  # the service is gone
                    if r.status in (200, 202):
                        with lock:
                            acked.append(r.json()["event_id"])
                            got[0] += 1
                    elif r.status != 503:
                        raise AssertionError("unexpected answer %r" % r)

            threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
            for t in threads:
                t.start()
            harness.wait_until(lambda: got[0] >= 40, 60, 0.01, "40 acknowledgements")
            s.proc.send_signal(signal.SIGTERM)
            rc = s.proc.wait(30)
            stop.set()
            for t in threads:
                t.join(60)
            self.assertEqual(rc, 0, "exit status after SIGTERM under load")
            m = harness.SANITIZER_RE.search(s.stderr_text())
            self.assertIsNone(m, m and m.group(0))
        s = self.restart(s)
        self.assertGreater(len(acked), 100)
        self.wait_all_done(s, acked, 180)
        self.sigterm_while_answers_wait_for_their_commit(s)

    def sigterm_while_answers_wait_for_their_commit(self, s):
        # Copies of events already done start nothing, so the stop does not
        # wait for a run: SIGTERM lands while their answers wait for the
        # batch commit. Each must still get its real answer (409 or 503),
        # never a 202 for an event that was not stored, and nothing freed
        # may be used (the ASan build checks that).
        evs = [nowcerts_event("INSURED_INSERT", insured_data()) for _ in range(20)]
        for ev in evs:
            self.assertIn(s.nowcerts(ev).status, (200, 202))
        for ev in evs:
            s.wait_event(harness.expected_event_id("nowcerts", ev))
        for _ in range(3):
            stop = threading.Event()
            seen = []

            def client(k):
                i = k
                while not stop.is_set():
                    try:
                        r = s.nowcerts(evs[i % len(evs)], timeout=30)
                    except OSError:
                        return
                    seen.append(r.status)
                    i += 1

            threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(8)]
            for t in threads:
                t.start()
            harness.wait_until(lambda: len(seen) >= 200, 60, 0.01, "200 answers")
            s.proc.send_signal(signal.SIGTERM)
            rc = s.proc.wait(30)
            stop.set()
            for t in threads:
                t.join(60)
            self.assertEqual(rc, 0, "exit status after SIGTERM")
            m = harness.SANITIZER_RE.search(s.stderr_text())
            self.assertIsNone(m, m and m.group(0))
            self.assertEqual(set(seen) - {409, 503}, set(), "answers to copies of done events")
            s = self.restart(s)


class Burst(Base):
    def wave(self, s, events):
        """Every request written on its own connection before any answer is
        read, so they reach the service together: (status, body) each."""
        import json as _json
        import socket
        socks = []
        for ev in events:
            body = _json.dumps(ev).encode()
            c = socket.create_connection(("127.0.0.1", s.port), timeout=60)
            c.sendall(b"POST /api/v1/webhooks/nowcerts HTTP/1.1\r\nHost: t\r\n"
                      b"Content-Type: application/json\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            socks.append(c)
        out = []
        for c in socks:
            head, _, body = harness.recv_all(c).partition(b"\r\n\r\n")
            out.append((int(head.split(b" ")[1]), _json.loads(body)))
        return out

    def test_burst_on_a_slow_disk_loses_and_duplicates_nothing(self):
        # A slow disk (each WAL sync 100 ms longer) keeps every answer owed
        # for a while, so waves of 48 webhooks at once are a burst: runs then
        # start at processing's share of the loop and the rest wait in the
        # store (src/pace.h). Whatever was held must still run, exactly once:
        # every answer 202, every event done, one GHL contact per person.
        s = self.server(shim_env({"NCGHL_SHIM_SLOW_SYNC_MS": "100", "WEBHOOK_WAIT_MS": 0,
                                  "RATE_LIMIT_PER_MINUTE": 0, "GHL_RATE_LIMIT": 0,
                                  "LOG_LEVEL": "DEBUG"}))
        self.fakes.config("ghl", rate_limit=1000000)
        self.addCleanup(self.fakes.config, "ghl", rate_limit=100)
        events = [nowcerts_event("INSURED_INSERT", insured_data()) for _ in range(4 * 48)]
        ids = []
        for w in range(4):
            for status, ans in self.wave(s, events[w * 48:(w + 1) * 48]):
                self.assertEqual(status, 202, ans)
                self.assertEqual(ans.get("status"), "queued", ans)
                ids.append(ans["event_id"])
        self.assertEqual(len(set(ids)), len(events))
        self.wait_all_done(s, ids, 180)
        for ev in events:
            self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1,
                             ev["data"]["email"])
        # The waves were paced (some runs waited their turn), and each burst
        # ended: the log says so at debug level.
        log = s.log_text() + s.stderr_text()
        self.assertIn("intake burst:", log)
        harness.wait_until(lambda: (s.log_text() + s.stderr_text()).count("intake burst over")
                           == (s.log_text() + s.stderr_text()).count("intake burst:"),
                           30, 0.1, "every burst's end in the log")

    def test_events_held_by_a_long_burst_run_once_they_have_waited_30_s(self):
        # Runs held back by the pace wait at most 30 s (ENGINE_PATIENCE,
        # engine.c): past it they start freely until none is left. A burst
        # that long would make a slow test, so the shim moves the monotonic
        # clock 31 s forward at the 24th request read of a wave of 48, after
        # its first runs were held: those events have then waited 31 s while
        # the slow disk keeps their senders waiting (the pressure still on).
        # The service must notice, say so, and lose or double nothing.
        jump = self.tmp / "clock-jump"
        s = self.server(shim_env({"NCGHL_SHIM_SLOW_SYNC_MS": "300",
                                  "NCGHL_SHIM_CLOCK_JUMP": str(jump), "WEBHOOK_WAIT_MS": 0,
                                  "UPSTREAM_TIMEOUT": 600, "RATE_LIMIT_PER_MINUTE": 0,
                                  "GHL_RATE_LIMIT": 0, "LOG_LEVEL": "DEBUG"}))
        self.fakes.config("ghl", rate_limit=1000000)
        self.addCleanup(self.fakes.config, "ghl", rate_limit=100)
        said = "events have waited 30 s for their turn"
        events, ids = [], []
        # The held runs may all have been claimed before the 24th request
        # (a fast machine): then another wave, at most five.
        for _ in range(5):
            wave = [nowcerts_event("INSURED_INSERT", insured_data()) for _ in range(48)]
            jump.write_text("24 31")
            for status, ans in self.wave(s, wave):
                self.assertEqual(status, 202, ans)
                ids.append(ans["event_id"])
            events += wave
            harness.wait_until(lambda: not jump.exists(), 10, 0.05, "the shim to take the jump")
            log = s.log_text() + s.stderr_text()
            if said in log:
                break
        self.assertIn(said, s.log_text() + s.stderr_text())
        self.assertEqual(len(set(ids)), len(events))
        self.wait_all_done(s, ids, 180)
        for ev in events:
            self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1,
                             ev["data"]["email"])


class DiskFull(Base):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a small tmpfs for DB_PATH")
        self.mnt = self.tmp / "dbfs"
        self.mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(self.mnt)],
                       check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", str(self.mnt)])

    def fill(self):
        filler = self.mnt / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        return filler

    def test_full_disk_answers_503_and_a_later_copy_is_accepted(self):
        # Events in flight while the disk is full cannot record their
        # outcome; they must still end done once there is room, with no
        # restart. Big webhooks keep arriving meanwhile (and get 503).
        self.fakes.config("ghl", latency_ms=2000)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0)
        s = self.server({"DB_PATH": str(self.mnt / "ncghl.db"), "WEBHOOK_WAIT_MS": 0,
                         "RATE_LIMIT_PER_MINUTE": 0, "MAX_BODY_BYTES": 4 * 1048576})
        acked = [self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT",
                                                                 insured_data())), 202)["event_id"]
                 for _ in range(6)]
        filler = self.fill()
        refused, lock, stop = [], threading.Lock(), threading.Event()

        def client():
            while not stop.is_set():
                ev = nowcerts_event("INSURED_INSERT", insured_data(notes="x" * 300000))
                r = s.nowcerts(ev)
                with lock:
                    if r.status == 503:
                        self.assertIn("detail", r.json())
                        refused.append(ev)
                    else:
                        self.assertEqual(r.status, 202, r)
                        acked.append(r.json()["event_id"])

        threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        harness.wait_until(lambda: "outcome could not be stored" in s.log_text(), 60, 0.2,
                           "an outcome to fail on the full disk")
        stop.set()
        for t in threads:
            t.join(60)
        self.assertTrue(refused, "no 503 with the disk full")
        # Not half-stored: a refused event has no row.
        for ev in refused[:5]:
            self.assertIsNone(s.event(harness.expected_event_id("nowcerts", ev)))
        filler.unlink()
        for ev in refused[:5]:
            r = s.nowcerts(ev)
            ans = self.assertJSONAnswer(r, 202)
            self.assertEqual(ans.get("status"), "queued", ans)
            acked.append(ans["event_id"])
        self.assertTrue(s.running())
        self.wait_all_done(s, acked, 120)


class FileSizeLimit(Base):
    def test_a_file_size_limit_answers_503_and_leaves_for_a_restart_not_killed(self):
        # RLIMIT_FSIZE reached by a write: the kernel sends SIGXFSZ, whose
        # default kills the process (an audit saw it die with nothing
        # logged, into a supervisor's crash loop). It must be the store's
        # "cannot write", as a full disk is.
        s = self.server({"WEBHOOK_WAIT_MS": 0})
        acked = [self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT",
                                                                 insured_data())), 202)["event_id"]
                 for _ in range(3)]
        db = Path(s.workdir) / "ncghl.db"
        biggest = max(p.stat().st_size for p in db.parent.glob("ncghl.db*"))
        subprocess.run(["prlimit", "--pid", str(s.proc.pid), "--fsize=%d:unlimited" % biggest],
                       check=True)
        refused = []
        for _ in range(40):
            ev = nowcerts_event("INSURED_INSERT", insured_data(notes="x" * 20000))
            r = s.nowcerts(ev)
            if r.status == 503:
                refused.append(ev)
            else:
                acked.append(self.assertJSONAnswer(r, 202)["event_id"])
        self.assertTrue(refused, "no write met the limit")
        # A failed write is a failed commit: the service says so and leaves
        # for a restart on its own (non-zero), as test_failed_commit_...
        # does, instead of dying of the signal with nothing said.
        rc = s.proc.wait(60)
        self.assertNotEqual(rc, -signal.SIGXFSZ, "killed by SIGXFSZ")
        self.assertGreater(rc, 0)
        self.assertRegex(s.log_text(), r"ERROR .*(File too large|could not write)")
        s._close()
        s2 = self.restart(s)
        self.wait_all_done(s2, acked)
        for ev in refused[:3]:
            r = s2.nowcerts(ev)
            self.assertIn(r.status, (200, 202), r)
            self.assertNotEqual(r.json().get("status"), "duplicate", r)


class FailedSync(Base):
    def test_failed_fsync_stops_intake_and_a_restart_recovers(self):
        trigger = self.tmp / "fail-sync"
        s = self.server(shim_env({"NCGHL_SHIM_FAIL_SYNC": str(trigger), "WEBHOOK_WAIT_MS": 0,
                                  "RATE_LIMIT_PER_MINUTE": 0}))
        acked = [self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 202)["event_id"]
                 for _ in range(5)]
        trigger.write_text("1")
        refused = nowcerts_event()
        r = s.nowcerts(refused)
        self.assertJSONAnswer(r, 503)
        h = s.get("/health")
        body = self.assertJSONAnswer(h, 503)
        self.assertEqual(body["status"], "unhealthy")
        self.assertIn("fdatasync", body["store"].get("failed", ""), body)
        self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 503)
        trigger.unlink()
        # It leaves for a restart on its own, non-zero.
        rc = s.proc.wait(60)
        self.assertNotEqual(rc, 0)
        s._close()
        s2 = self.restart(s, {"NCGHL_SHIM_FAIL_SYNC": None})
        self.wait_all_done(s2, acked)
        # The refused event reached the file before its fsync failed; it was
        # taken out again at exit, so a copy is accepted as new.
        r = s2.nowcerts(refused)
        self.assertIn(r.status, (200, 202), r)
        self.assertNotEqual(r.json().get("status"), "duplicate", r)
        s2.wait_event(r.json()["event_id"])

    def test_failed_commit_stops_intake_and_a_restart_recovers(self):
        trigger = self.tmp / "fail-write"
        s = self.server(shim_env({"NCGHL_SHIM_FAIL_WRITE": str(trigger), "WEBHOOK_WAIT_MS": 0,
                                  "RATE_LIMIT_PER_MINUTE": 0}))
        acked = [self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 202)["event_id"]
                 for _ in range(5)]
        trigger.write_text("1")
        refused = nowcerts_event()
        self.assertJSONAnswer(s.nowcerts(refused), 503)
        body = self.assertJSONAnswer(s.get("/health"), 503)
        self.assertIn("failed", body["store"], body)
        self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 503)
        trigger.unlink()
        rc = s.proc.wait(60)
        self.assertNotEqual(rc, 0)
        s._close()
        s2 = self.restart(s, {"NCGHL_SHIM_FAIL_WRITE": None})
        self.wait_all_done(s2, acked)
        # The refused event was rolled back with its batch: a copy is new.
        r = s2.nowcerts(refused)
        self.assertIn(r.status, (200, 202), r)
        self.assertNotEqual(r.json().get("status"), "duplicate", r)
        s2.wait_event(r.json()["event_id"])


class Stranded(Base):
    def test_running_row_of_a_dead_owner_is_taken_up_without_restart(self):
        s = self.server()
        now = time.time()
        evs = [nowcerts_event("INSURED_INSERT", insured_data()) for _ in range(2)]
        ids = [harness.expected_event_id("nowcerts", ev) for ev in evs]
        # One row as a crashed process leaves it (running, updated long ago,
        # no owner), one marked with an owner whose lease is gone.
        insert_events(s.db_path, [(ids[0], "nowcerts", "INSURED_INSERT", harness.canonical(evs[0]),
                                   1, now - 120)])
        c = db_connect(s.db_path)
        try:
            cols = [r[1] for r in c.execute("PRAGMA table_info(events)")]
        finally:
            c.close()
        if "owner" in cols:
            insert_events(s.db_path, [(ids[1], "nowcerts", "INSURED_INSERT",
                                       harness.canonical(evs[1]), 1, now)])
            c = db_connect(s.db_path)
            c.execute("UPDATE events SET owner = '999999:1' WHERE id = ?", (ids[1],))
            c.close()
        else:
            ids = ids[:1]
        for i in ids:
            s.wait_event(i, timeout=75)
        for ev in evs[:len(ids)]:
            self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)


class SyncedSoon(Base):
    def test_outcome_and_links_are_synced_without_more_traffic(self):
        sync_log = self.tmp / "syncs.log"
        s = self.server(shim_env({"NCGHL_SHIM_SYNC_LOG": str(sync_log)}))
        nc_id = "9a1b2c3d-0000-4000-8000-%012x" % int(harness.uniq(12), 16)
        ev = nowcerts_event("INSURED_INSERT", insured_data(id=nc_id))
        ans = self.assertJSONAnswer(s.nowcerts(ev), 200)  # its outcome is committed
        acked_ns = time.monotonic_ns()
        time.sleep(1.5)
        s.kill9()
        syncs = [int(x.split()[1]) for x in sync_log.read_text().splitlines() if x.startswith("sync ")]
        self.assertTrue(any(t > acked_ns for t in syncs),
                        "no fsync of the WAL after the outcome's commit (%d syncs before)" % len(syncs))
        s2 = self.restart(s, {"LD_PRELOAD": None, "NCGHL_SHIM_SYNC_LOG": None})
        e = s2.event(ans["event_id"])
        self.assertEqual(e["status"], "done", e)
        self.assertEqual(e["attempts"], 1, e)
        # The link is there: an update with another email finds the contact.
        moved = dict(ev["data"], email="moved.%s@example.com" % harness.uniq())
        b = self.assertJSONAnswer(s2.nowcerts(nowcerts_event("INSURED_UPDATE", moved)), 200)
        self.assertEqual(b["data"].get("contact_id"), ans["data"].get("contact_id"), b)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", r"/contacts/?$")), 1)


class Retention(Base):
    def test_old_done_events_go_and_a_dead_one_stays(self):
        s = self.server({"RETENTION_DAYS": 30})
        done = [self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 200)["event_id"]
                for _ in range(3)]
        self.fakes.fault("ghl", status=400, count=1000, path="/contacts")
        dead = self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 502)["event_id"]
        c = db_connect(s.db_path)
        old = time.time() - 40 * 86400
        for i in done[:2] + [dead]:
            c.execute("UPDATE events SET created_at = ? WHERE id = ?", (old, i))
        self.assertGreater(c.execute("SELECT COUNT(*) FROM attempts WHERE event_id = ?",
                                     (done[0],)).fetchone()[0], 0)
        c.close()
        harness.wait_until(lambda: s.event(done[0]) is None and s.event(done[1]) is None, 60, 0.5,
                           "the aged done events to be removed")
        self.assertEqual(s.event(dead)["status"], "dead")
        self.assertEqual(s.event(done[2])["status"], "done")
        c = db_connect(s.db_path)
        self.assertEqual(c.execute("SELECT COUNT(*) FROM attempts WHERE event_id IN (?, ?)",
                                   tuple(done[:2])).fetchone()[0], 0)
        c.close()

    def test_bad_retention_days_stops_start_up(self):
        s = self.server({"RETENTION_DAYS": "-1"}, start=False)
        p = subprocess.run([str(harness.BIN), "serve"], cwd=s.workdir, env=s.env,
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("RETENTION_DAYS", p.stderr)


def gauge(text, status):
    m = re.search(r'^(?:ncghl_)?events\{status="%s"\} (\S+)$' % status, text, re.M)
    return float(m.group(1)) if m else None


class Metrics(Base):
    def test_events_gauge_follows_changes_without_a_count_per_scrape(self):
        s = self.server()
        before = gauge(s.get("/metrics").text, "done") or 0
        self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 200)
        self.assertEqual(gauge(s.get("/metrics").text, "done"), before + 1)
        now = time.time()
        insert_events(s.db_path, [("manual_%064x" % i, "manual", "bulk", "{}", 2, now)
                                  for i in range(100000)])
        for _ in range(3):
            self.assertEqual(s.get("/metrics").status, 200)
        counts = re.findall(r"count query \d+", s.log_text())
        self.assertEqual(len(counts), 1, "count queries on the loop's connection: %r" % counts)


class BusyLock(Base):
    def test_intake_waits_for_a_lock_held_elsewhere_and_loop_keeps_answering(self):
        s = self.server({"RATE_LIMIT_PER_MINUTE": 0, "WEBHOOK_WAIT_MS": 0})
        self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 202)
        c = db_connect(s.db_path)
        c.execute("BEGIN IMMEDIATE")
        released = threading.Event()
        answers = []

        def post(ev):
            r = s.nowcerts(ev, timeout=120)
            answers.append((released.is_set(), r))

        evs = [nowcerts_event() for _ in range(5)]
        threads = [threading.Thread(target=post, args=(ev,), daemon=True) for ev in evs]
        for t in threads:
            t.start()
        time.sleep(0.5)
        h = s.get("/health")
        m = s.get("/metrics")
        held = not released.is_set()
        self.assertTrue(held)
        self.assertEqual(h.status, 200, h)
        self.assertEqual(m.status, 200, m)
        self.assertEqual(answers, [], "answered while another process held the write lock")
        time.sleep(2.5)
        self.assertEqual(answers, [], "answered while another process held the write lock")
        released.set()
        c.execute("COMMIT")
        c.close()
        for t in threads:
            t.join(120)
        self.assertEqual(len(answers), 5)
        ids = []
        for after, r in answers:
            self.assertTrue(after)
            ids.append(self.assertJSONAnswer(r, 202)["event_id"])
        self.wait_all_done(s, ids)


    def test_calls_made_while_a_lock_is_held_elsewhere_are_all_recorded(self):
        # The event is running (its GHL calls take 300 ms each) when another
        # process takes the write lock: the calls that end meanwhile cannot
        # be written at once. Once the lock is free every one of them must be
        # in the event's story (attempts), as many as GHL received.
        s = self.server({"RATE_LIMIT_PER_MINUTE": 0, "WEBHOOK_WAIT_MS": 0})
        self.fakes.config("ghl", latency_ms=300)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0)
        ev = nowcerts_event()
        before = len(self.fakes.requests("ghl"))
        eid = self.assertJSONAnswer(s.nowcerts(ev), 202)["event_id"]
        c = db_connect(s.db_path)
        c.execute("BEGIN IMMEDIATE")
        try:
            time.sleep(1.5)  # the search calls end while the lock is held
        finally:
            c.execute("COMMIT")
            c.close()
        s.wait_event(eid)
        calls = self.fakes.requests("ghl")[before:]  # nothing else calls GHL meanwhile
        self.assertGreater(len(calls), 1)
        c = db_connect(s.db_path)
        n = c.execute("SELECT COUNT(*) FROM attempts WHERE event_id = ? AND service = 'ghl'",
                      (eid,)).fetchone()[0]
        c.close()
        self.assertEqual(n, len(calls), "GHL calls %d, recorded %d" % (len(calls), n))
        self.assertNotIn("could not record an upstream attempt", s.log_text() + s.stderr_text())

    def test_an_unanswered_call_kept_for_later_is_stored_as_one_written_at_once(self):
        # A call that times out has no answer. Recorded at once, and recorded
        # later because another process held the lock (a copy kept until the
        # lock is free), it must read the same in the event's story: status
        # 0, its error, the same (empty) answer.
        s = self.server({"RATE_LIMIT_PER_MINUTE": 0, "WEBHOOK_WAIT_MS": 0,
                         "UPSTREAM_TIMEOUT": 1, "MAX_RETRIES": 0})
        self.fakes.fault("ghl", hang=True, count=1000)

        def first_attempt(eid):
            c = db_connect(s.db_path)
            try:
                return c.execute("SELECT status, error IS NULL, answer, typeof(answer) FROM attempts"
                                 " WHERE event_id = ? AND service = 'ghl' ORDER BY seq LIMIT 1",
                                 (eid,)).fetchone()
            finally:
                c.close()

        at_once = self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 202)["event_id"]
        harness.wait_until(lambda: first_attempt(at_once) is not None, 30, 0.1, "a timed-out call")
        later = self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 202)["event_id"]
        c = db_connect(s.db_path)
        c.execute("BEGIN IMMEDIATE")
        try:
            time.sleep(2.5)  # the call times out (1 s) while the lock is held
        finally:
            c.execute("COMMIT")
            c.close()
        harness.wait_until(lambda: first_attempt(later) is not None, 30, 0.1, "the kept attempt")
        self.assertEqual(first_attempt(later), first_attempt(at_once))
        self.assertEqual(first_attempt(later)[0], 0)


class Backlog(Base):
    def test_100k_pending_events_stay_in_the_store(self):
        s = self.server({"EVENT_CONCURRENCY": 1, "WEBHOOK_WAIT_MS": 0, "UPSTREAM_TIMEOUT": 1,
                         "RATE_LIMIT_PER_MINUTE": 0, "MAX_BODY_BYTES": 1048576}, start=False)
        # Processing stalls: every GHL call hangs.
        self.fakes.fault("ghl", hang=True, count=100000)
        now = time.time()
        s.start()
        insert_events(s.db_path, [("manual_%064x" % i, "manual", "bulk",
                                   '{"source":"nowcerts","entity_type":"contact",'
                                   '"direction":"to_ghl","data":{"n":%d}}' % i, 0, now)
                                  for i in range(100000)])
        # And through intake, with bodies big enough to show if kept.
        pad = "p" * 16000
        for _ in range(3000):
            self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT",
                                                            insured_data(notes=pad))), 202)
        time.sleep(2)  # let a few poll rounds run over the backlog
        kib = rss_kib(s.proc.pid)
        print("  service RSS with the backlog: %d KiB" % kib)
        # Let the one running event end (its next attempt succeeds), so the
        # stop finds nothing running in Lua.
        self.fakes.reset()
        self.assertEqual(s.stop(), 0)
        if sanitized_binary():
            print("  (sanitizer build: its shadow memory makes RSS meaningless; limit not checked)")
            return
        self.assertLess(kib, 64 * 1024)


class Descriptors(Base):
    """The service run out of file descriptors by idle client connections
    (a burst of senders, or a slow client attack): it rests its listener
    instead of spinning on accept(), keeps the descriptors its store needs,
    and takes the waiting clients as connections close."""

    def capped_server(self, soft, hard, env=None):
        wrap = self.tmp / "capped"
        wrap.write_text("#!/bin/sh\nexec prlimit --nofile=%d:%d %s \"$@\"\n"
                        % (soft, hard, harness.BIN))
        wrap.chmod(0o755)
        saved = harness.BIN
        harness.BIN = wrap
        try:
            return self.server(env)
        finally:
            harness.BIN = saved

    def test_the_soft_limit_is_raised_to_the_hard_one(self):
        s = self.capped_server(48, 4096)
        limits = Path("/proc/%d/limits" % s.proc.pid).read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        self.assertEqual(line.split()[3:5], ["4096", "4096"], line)

    def test_out_of_descriptors_rests_the_listener_and_loses_nothing(self):
        import http.client
        import json as _json
        import socket
        s = self.capped_server(64, 64)
        first = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        first.connect()  # accepted before the descriptors run out
        idle = []
        for _ in range(100):
            try:
                idle.append(socket.create_connection(("127.0.0.1", s.port), timeout=5))
            except OSError:
                break
        time.sleep(1.5)  # long enough for a spinning accept() to log thousands of lines
        # The first webhook's commit is the store's first fsync: it needs the
        # WAL's descriptor when none is left to open.
        ev = nowcerts_event("INSURED_INSERT", insured_data())
        first.request("POST", "/api/v1/webhooks/nowcerts", _json.dumps(ev),
                      {"Content-Type": "application/json"})
        r = first.getresponse()
        body = _json.loads(r.read())
        self.assertIn(r.status, (200, 202), body)
        for c in idle:
            c.close()
        # A client that waited in the queue is served once others closed.
        ev2 = nowcerts_event("INSURED_INSERT", insured_data())
        body2 = self.assertJSONAnswer(s.nowcerts(ev2), 200)
        self.wait_all_done(s, [body["event_id"], body2["event_id"]])
        for e in (ev, ev2):
            self.assertEqual(len(self.contacts_with_email(e["data"]["email"])), 1, e["data"]["email"])
        self.assertTrue(s.running(), "the service stopped")
        self.assertEqual(self.assertJSONAnswer(s.get("/health"), 200).get("status"), "healthy")
        log = s.log_text()
        said = [x for x in log.splitlines() if "cannot accept a connection" in x]
        self.assertEqual(len(said), 1, said[:5])
        self.assertIn("Too many open files (open descriptors limit 64)", said[0])
        self.assertNotIn("Error from accept()", log + s.stderr_path.read_text())
        m = re.search(r"^ncghl_http_accept_paused_total (\d+)", s.get("/metrics").text, re.M)
        self.assertTrue(m and int(m.group(1)) >= 1, m)


if __name__ == "__main__":
    harness.main()
