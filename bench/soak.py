#!/usr/bin/env python3
"""Soak: runs ncghl for a set time under steady mixed load against the fake
upstreams, with injected upstream faults and periodic kill -9 + restart, and
checks at the end that every acknowledged event was delivered exactly once.

Not part of `make test` (it runs for minutes to hours). Usage:

    python3 bench/soak.py --minutes 30 [--rate 4] [--kill-every 180]
                          [--fault-every 40] [--bin build/ncghl] [--keep]

Every minute it prints one row: elapsed minutes, the service's RSS, the
store file's size (+ its WAL), the service's open file descriptors, events
by status (from /metrics), requests sent and acknowledged, and restarts.
At the end: the exactly-once check against the fakes' records
(`/_records/contacts` in GHL, `/_records/insureds` in NowCerts). Exit
status 0 only when nothing was lost or doubled.

The load, per request: 45 % a new NowCerts insured (becomes a GHL contact),
20 % a new GHL contact (becomes a NowCerts insured), 15 % a manual sync of a
new insured, 10 % an update of a person already sent (new phone, same
e-mail: still one record), 10 % an exact duplicate of an earlier webhook
(409 / "duplicate", no new record).
"""

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.dont_write_bytecode = True
import harness  # noqa: E402
from harness import (Fakes, Server, ghl_contact, ghl_event, insured_data,  # noqa: E402
                     nowcerts_event)

STATUSES = ("pending", "running", "done", "retry_wait", "dead", "ignored")


class Person:
    """One person the load created, and where its record must appear."""

    def __init__(self, email, target):
        self.email = email
        self.target = target  # "ghl" (contacts) or "nowcerts" (insureds)
        self.acked = False


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="ncghl-soak-"))
        self.fakes = Fakes(self.tmp)
        self.env = {
            "RETRY_INITIAL_DELAY": "0.2",
            "MAX_RETRIES": "3",
            "UPSTREAM_TIMEOUT": "2",
            "WEBHOOK_WAIT_MS": "500",
            "RATE_LIMIT_PER_MINUTE": "0",
            "LOG_LEVEL": "INFO",
            "ADMIN_TOKEN": "soak-admin",
        }
        self.server = None
        self.lock = threading.Lock()
        self.people = {}  # email -> Person
        self.sent_bodies = []  # (side, body) of earlier webhooks, for duplicates
        self.counts = {"sent": 0, "acked": 0, "refused": 0, "conn_errors": 0, "duplicates": 0,
                       "restarts": 0, "faults": 0}
        self.stop = threading.Event()

    # -- the service -----------------------------------------------------

    def start_server(self):
        workdir = self.tmp / "svc"
        s = Server(workdir, self.fakes, self.env)
        if self.server is not None:
            s.env.update({k: v for k, v in self.server.env.items() if k != "PORT"})
        s.start()
        self.server = s

    def kill_and_restart(self):
        old = self.server
        old.kill9()
        self.start_server()
        self.counts["restarts"] += 1

    # -- load ------------------------------------------------------------

    def one_request(self):
        r = self.rng.random()
        person = None
        if r < 0.45:
            d = insured_data()
            side, path, body = "nowcerts", "/api/v1/webhooks/nowcerts", nowcerts_event("INSURED_INSERT", d)
            person = Person(d["email"], "ghl")
        elif r < 0.65:
            c = ghl_contact()
            side, path, body = "ghl", "/api/v1/webhooks/ghl", ghl_event("ContactCreate", c)
            person = Person(c["email"], "nowcerts")
        elif r < 0.80:
            d = insured_data()
            side, path = "manual", "/api/v1/sync/manual"
            body = {"source": "nowcerts", "entity_type": "contact", "direction": "to_ghl", "data": d}
            person = Person(d["email"], "ghl")
        elif r < 0.90 and self.people:
            with self.lock:
                p = self.rng.choice([q for q in list(self.people.values())[-200:] if q.target == "ghl"]
                                    or list(self.people.values())[-1:])
            if p.target == "ghl":
                d = insured_data(email=p.email)
                side, path, body = "nowcerts", "/api/v1/webhooks/nowcerts", nowcerts_event("INSURED_UPDATE", d)
            else:
                c = ghl_contact(email=p.email)
                side, path, body = "ghl", "/api/v1/webhooks/ghl", ghl_event("ContactUpdate", c)
        elif self.sent_bodies:
            with self.lock:
                side, path, body = self.rng.choice(self.sent_bodies[-200:])
            self.counts["duplicates"] += 1
        else:
            return
        try:
            ans = self.server.post(path, body, timeout=10)
            status = ans.status
        except OSError:
            status = None
        with self.lock:
            self.counts["sent"] += 1
            if status is None:
                self.counts["conn_errors"] += 1
            elif 200 <= status < 300:
                self.counts["acked"] += 1
            elif status in (503, 502):
                self.counts["refused"] += 1
            if person is not None:
                prior = self.people.get(person.email)
                if prior is None:
                    self.people[person.email] = person
                    prior = person
                if status is not None and (200 <= status < 300 or status == 502):
                    prior.acked = True  # 502: stored, ended dead; replayed at the end
                self.sent_bodies.append((side, path, body))

    def load(self):
        period = 1.0 / self.args.rate
        nxt = time.monotonic()
        while not self.stop.is_set():
            self.one_request()
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()

    def inject_fault(self):
        kind = self.rng.choice(["ghl503", "ghl429", "nc503", "hang", "reset", "token"])
        spec = {
            "ghl503": ("ghl", {"status": 503, "count": 6, "path": "^/contacts"}),
            "ghl429": ("ghl", {"status": 429, "retry_after": 1, "count": 6, "path": "^/contacts"}),
            "nc503": ("nowcerts", {"status": 503, "count": 6, "path": "^/api/Insured"}),
            "hang": ("ghl", {"hang": True, "count": 2, "path": "^/contacts"}),
            "reset": ("ghl", {"reset": True, "count": 4, "path": "^/contacts"}),
            "token": ("nowcerts", {"status": 503, "count": 4, "path": "^/api/token$"}),
        }[kind]
        self.fakes.fault(spec[0], **spec[1])
        self.counts["faults"] += 1

    # -- measuring -------------------------------------------------------

    def sample(self):
        pid = self.server.proc.pid
        rss = fds = 0
        try:
            for line in open("/proc/%d/status" % pid):
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) // 1024
            fds = len(os.listdir("/proc/%d/fd" % pid))
        except OSError:
            pass
        db = Path(self.server.db_path)
        size = db.stat().st_size if db.exists() else 0
        wal = Path(str(db) + "-wal")
        walsize = wal.stat().st_size if wal.exists() else 0
        by = {}
        try:
            text = self.server.get("/metrics").text
            for m in re.finditer(r'^(?:ncghl_)?events\{status="(\w+)"\} (\d+)', text, re.M):
                by[m.group(1)] = int(m.group(2))
        except OSError:
            pass
        return rss, size, walsize, fds, by

    def row(self, minute):
        rss, size, walsize, fds, by = self.sample()
        c = self.counts
        print("| %3d | %4d | %7.1f + %5.1f | %3d | %s | %6d | %6d | %2d |" % (
            minute, rss, size / 1048576, walsize / 1048576, fds,
            " ".join("%s=%d" % (k, by.get(k, 0)) for k in STATUSES if by.get(k)),
            c["sent"], c["acked"], c["restarts"]), flush=True)

    # -- the end ---------------------------------------------------------

    def finish(self):
        s = self.server
        for side in ("nowcerts", "ghl"):
            self.fakes._ctl(side, "DELETE", "/_fault")
        # Events waiting for a later run (minutes away) or dead from a fault
        # are put back now, as an operator would after an outage.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            evs = s.events("--limit", "10000000")
            left = [e for e in evs if e["status"] not in ("done", "ignored")]
            if not left:
                break
            for e in left:
                if e["status"] in ("retry_wait", "dead"):
                    s.cli("replay", e["id"])
            time.sleep(2)
        evs = s.events("--limit", "10000000")
        by = {}
        for e in evs:
            by[e["status"]] = by.get(e["status"], 0) + 1
        print("\nfinal events by status: %s" % json.dumps(by, sort_keys=True))

        def count(recs, key):
            out = {}
            for r in recs:
                e = (r.get(key) or r.get("email") or "").lower()
                out[e] = out.get(e, 0) + 1
            return out
        contacts = count(self.fakes.records("ghl", "contacts"), "email")
        insureds = count(self.fakes.records("nowcerts", "insureds"), "eMail")
        missing, doubled = [], []
        for p in self.people.values():
            n = (contacts if p.target == "ghl" else insureds).get(p.email.lower(), 0)
            if p.acked and n != 1:
                (missing if n == 0 else doubled).append((p.email, n))
            elif n > 1:
                doubled.append((p.email, n))
        acked = sum(1 for p in self.people.values() if p.acked)
        print("people sent %d, acknowledged %d; GHL contacts %d, NowCerts insureds %d"
              % (len(self.people), acked, sum(contacts.values()), sum(insureds.values())))
        print("exactly once: %d missing, %d doubled%s" % (
            len(missing), len(doubled),
            "" if not (missing or doubled) else ": " + repr((missing + doubled)[:10])))
        print("counts: %s" % json.dumps(self.counts, sort_keys=True))
        return not missing and not doubled

    def run(self):
        a = self.args
        print("soak: %d min, %.1f req/s, kill -9 every %d s, a fault every %d s, seed %d, dir %s"
              % (a.minutes, a.rate, a.kill_every, a.fault_every, a.seed, self.tmp), flush=True)
        self.start_server()
        print("| min | RSS MiB | store MiB (+WAL) | fds | events by status | sent | acked | restarts |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
        loader = threading.Thread(target=self.load, daemon=True)
        loader.start()
        t0 = time.monotonic()
        next_kill = t0 + a.kill_every
        next_fault = t0 + a.fault_every
        minute = 0
        end = t0 + a.minutes * 60
        while time.monotonic() < end:
            time.sleep(1)
            now = time.monotonic()
            if now >= next_fault:
                self.inject_fault()
                next_fault = now + a.fault_every
            if now >= next_kill:
                self.kill_and_restart()
                next_kill = now + a.kill_every
            if now - t0 >= (minute + 1) * 60:
                minute += 1
                self.row(minute)
        self.stop.set()
        loader.join(30)
        ok = self.finish()
        self.row(minute)
        self.server.stop()
        self.fakes.stop()
        if not a.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        print("soak: %s" % ("PASS" if ok else "FAIL"))
        return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--rate", type=float, default=4.0, help="requests a second")
    p.add_argument("--kill-every", type=int, default=180, help="seconds between kill -9s")
    p.add_argument("--fault-every", type=int, default=40, help="seconds between faults")
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--bin", help="the ncghl binary (default build/ncghl)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if args.bin:
        harness.BIN = Path(args.bin).resolve()
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
