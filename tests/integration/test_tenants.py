"""SPEC section 13, tenants: two agencies in one process, each with its own
credentials, GHL location, mappings, store and upstream, reached by path
(/t/<tenant>/...) and, for GHL, by locationId; isolated from each other;
added, changed and removed on SIGHUP; counted with a tenant label; and the
CLI's --tenant. Each tenant has a fake NowCerts + GHL pair of its own, so
what reached which agency is read from that pair's records."""

import json
import re
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, ghl_event, nowcerts_event, wait_until  # noqa: E402

CREATE_CONTACT = r"^/contacts/?$"
NC_INSERT = r"/Insured/Insert"

# Tenant b's overlay: the shipped contacts map plus one tag of its own.
OVERLAY_B = """\
local contacts = require "defaults.contacts"
local shipped = contacts.insured_to_contact.tags
contacts.insured_to_contact.tags = function(insured)
  local tags = shipped(insured)
  tags[#tags + 1] = "agency-b"
  return tags
end
return contacts
"""


class Tenants(IntegTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # The second agency's NowCerts and GHL.
        cls.fakes_b = harness.Fakes(cls._class_tmp)

    @classmethod
    def tearDownClass(cls):
        cls.fakes_b.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.fakes_b.reset()
        # Each agency's GHL knows only its own sub-account.
        self.fakes.config("ghl", locations=["loc-a"])
        self.fakes_b.config("ghl", locations=["loc-b"])
        self.tdir = self.tmp / "tenants.d"
        self.tdir.mkdir()
        self.overlay = self.tmp / "mappings-b"
        self.overlay.mkdir()
        (self.overlay / "contacts.lua").write_text(OVERLAY_B)

    # -- helpers -----------------------------------------------------------

    def tenant_vars(self, name):
        f = self.fakes if name == "a" else self.fakes_b
        v = {
            "NOWCERTS_BASE_URL": f.nc_base + "/api",
            "NOWCERTS_USERNAME": "user-" + name,
            "NOWCERTS_PASSWORD": "pass-" + name,
            "GHL_BASE_URL": f.ghl_base,
            "GHL_API_KEY": "key-" + name,
            "GHL_LOCATION_ID": "loc-" + name,
        }
        if name == "b":
            v["MAPPINGS_DIR"] = str(self.overlay)
        return v

    def write_tenant(self, name, **extra):
        v = self.tenant_vars(name)
        v.update(extra)
        text = "".join("%s=%s\n" % (k, val) for k, val in v.items() if val is not None)
        (self.tdir / (name + ".env")).write_text(text)

    def start(self, names=("a", "b"), env=None):
        for n in names:
            self.write_tenant(n)
        e = {"TENANTS_DIR": self.tdir, "ADMIN_TOKEN": "it-admin-token"}
        e.update(env or {})
        return self.server(e)

    def events(self, s, tenant):
        p = s.cli("events", "--json", "--tenant", tenant)
        self.assertEqual(p.returncode, 0, p.stderr)
        return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]

    def ghl_contacts(self, fakes, email):
        return [c for c in fakes.records("ghl", "contacts")
                if (c.get("email") or "").lower() == email.lower()]

    def insureds(self, fakes, email):
        return [i for i in fakes.records("nowcerts", "insureds")
                if (i.get("eMail") or i.get("email") or "").lower() == email.lower()]

    def metric(self, s, pattern):
        m = re.search(pattern, s.get("/metrics").text)
        return float(m.group(1)) if m else None

    # -- routing and isolation --------------------------------------------

    def test_a_nowcerts_webhook_on_a_tenants_path_reaches_only_its_location(self):
        s = self.start()
        ev = nowcerts_event("INSURED_INSERT")
        email = ev["data"]["email"]
        a = self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", ev), 200)
        self.assertEqual(a["data"].get("action"), "created", a)
        # Tenant a's GHL has it, in a's location, written with a's key.
        got = self.ghl_contacts(self.fakes, email)
        self.assertEqual(len(got), 1, got)
        self.assertEqual(got[0]["locationId"], "loc-a")
        self.assertEqual(got[0]["firstName"], ev["data"]["firstName"])
        self.assertEqual(got[0]["lastName"], ev["data"]["lastName"])
        creates = self.fakes.calls("ghl", "POST", CREATE_CONTACT)
        self.assertEqual(len(creates), 1, creates)
        self.assertEqual(creates[0]["headers"]["authorization"], "Bearer key-a")
        self.assertNotIn("agency-b", got[0].get("tags") or [])
        # Tenant b's accounts saw nothing at all.
        self.assertEqual(self.fakes_b.calls("ghl"), [])
        self.assertEqual(self.fakes_b.calls("nowcerts"), [])
        # The event is in a's store only.
        self.assertEqual([e["id"] for e in self.events(s, "a")], [a["event_id"]])
        self.assertEqual(self.events(s, "b"), [])
        self.assertEqual(s.db_query("SELECT id FROM events", tenant="a"), [(a["event_id"],)])
        if not s.store_url:
            self.assertFalse((self.tmp / "ncghl.db").exists(), "no single-agency store with tenants")
        # Its log line says whose event it was.
        wait_until(lambda: "tenant a: event %s nowcerts INSURED_INSERT: done" % a["event_id"]
                   in s.log_text(), 10, 0.1, "the event's log line naming tenant a")

    def test_a_tenants_poller_lines_name_it(self):
        self.write_tenant("a", NOWCERTS_POLL_INTERVAL=1)
        s = self.start(names=("b",))
        wait_until(lambda: "tenant a: poller: insureds " in s.log_text(), 20, 0.1,
                   "a poller cycle line naming tenant a")
        self.assertNotRegex(s.log_text(), r"(?m)Z \w+ poller: ")

    def test_the_same_payload_to_two_tenants_is_two_events_with_their_own_mappings(self):
        s = self.start()
        ev = nowcerts_event("INSURED_INSERT")
        email = ev["data"]["email"]
        a = self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", ev), 200)
        b = self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", ev), 200)
        self.assertEqual(a["data"].get("action"), "created", a)
        self.assertEqual(b["data"].get("action"), "created", b)
        # Same body, same canonical id, but each tenant's own idempotency.
        self.assertEqual(a["event_id"], b["event_id"])
        dup = self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", ev), 409)
        self.assertIn(a["event_id"], dup["detail"])
        ca, cb = self.ghl_contacts(self.fakes, email), self.ghl_contacts(self.fakes_b, email)
        self.assertEqual((len(ca), len(cb)), (1, 1), (ca, cb))
        self.assertEqual((ca[0]["locationId"], cb[0]["locationId"]), ("loc-a", "loc-b"))
        # b runs its overlay (an extra tag), a the main mappings.
        self.assertIn("agency-b", cb[0].get("tags") or [], cb[0])
        self.assertNotIn("agency-b", ca[0].get("tags") or [], ca[0])
        self.assertIn("nowcerts", ca[0].get("tags") or [], ca[0])
        auth_b = {c["headers"]["authorization"] for c in self.fakes_b.calls("ghl")}
        self.assertEqual(auth_b, {"Bearer key-b"})
        self.assertEqual(len(self.events(s, "a")), 1)
        self.assertEqual(len(self.events(s, "b")), 1)

    def test_a_ghl_webhook_on_the_plain_route_finds_its_tenant_by_location(self):
        s = self.start()
        c = harness.ghl_contact()
        r = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c, location="loc-b")), 200)
        self.assertTrue(r.get("success"), r)
        ins = self.insureds(self.fakes_b, c["email"])
        self.assertEqual(len(ins), 1, ins)
        self.assertEqual(ins[0]["firstName"], c["firstName"])
        self.assertEqual(ins[0]["lastName"], c["lastName"])
        self.assertEqual(self.insureds(self.fakes, c["email"]), [])
        self.assertEqual(self.fakes.calls("nowcerts"), [])
        # b's NowCerts was signed in to with b's credentials.
        tok_b = [harness.req_body(t) for t in self.fakes_b.token_calls()]
        self.assertTrue(tok_b)
        self.assertEqual({t.get("username") for t in tok_b}, {"user-b"})
        self.assertEqual(len(self.events(s, "b")), 1)
        self.assertEqual(self.events(s, "a"), [])
        # The tenant's path works for GHL too.
        c2 = harness.ghl_contact()
        self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/ghl",
                                     ghl_event("ContactCreate", c2, location="loc-a")), 200)
        self.assertEqual(len(self.insureds(self.fakes, c2["email"])), 1)
        # A location no tenant has is left alone and counted, as for one agency.
        c3 = harness.ghl_contact()
        r = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c3, location="loc-zzz")), 200)
        self.assertEqual(r.get("status"), "ignored", r)
        self.assertIn("loc-zzz", r.get("message", ""))
        self.assertEqual(self.insureds(self.fakes, c3["email"]), [])
        self.assertEqual(self.insureds(self.fakes_b, c3["email"]), [])
        self.assertEqual(self.metric(s, r'ncghl_ignored_events_total\{tenant="",'
                                        r'reason="other_location"\} (\S+)'), 1)

    def test_unknown_tenants_and_unprefixed_nowcerts_webhooks_are_404(self):
        s = self.start()
        r = self.assertJSONAnswer(s.post("/t/zzz/api/v1/webhooks/nowcerts", nowcerts_event()), 404)
        self.assertIn("zzz", r["detail"])
        r = self.assertJSONAnswer(s.nowcerts(nowcerts_event()), 404)
        self.assertIn("/t/<tenant>/api/v1/webhooks/nowcerts", r["detail"])
        r = self.assertJSONAnswer(s.manual({"source": "nowcerts", "entity_type": "contact",
                                            "direction": "to_ghl", "data": {}}), 404)
        self.assertIn("/t/<tenant>/api/v1/sync/manual", r["detail"])
        self.assertEqual(self.fakes.calls("ghl"), [])
        self.assertEqual(self.fakes_b.calls("ghl"), [])

    def test_one_tenants_failing_upstream_does_not_stop_the_other(self):
        self.write_tenant("b", MAX_RETRIES=0)
        s = self.start(names=("a",))
        # Every GHL call of tenant b fails, for good (a 400 is not retried).
        self.fakes_b.fault("ghl", status=400, count=1000)
        eb = nowcerts_event("INSURED_INSERT")
        rb = self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", eb), 502)
        self.assertEqual(rb.get("status"), "dead", rb)
        ea = nowcerts_event("INSURED_INSERT")
        ra = self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", ea), 200)
        self.assertEqual(ra["data"].get("action"), "created", ra)
        self.assertEqual(len(self.ghl_contacts(self.fakes, ea["data"]["email"])), 1)
        self.assertEqual(self.fakes_b.records("ghl", "contacts"), [])
        self.assertEqual([e["status"] for e in self.events(s, "b")], ["dead"])
        self.assertEqual([e["status"] for e in self.events(s, "a")], ["done"])
        h = s.get("/health").json()
        self.assertEqual(sorted(h["tenants"]), ["a", "b"])
        self.assertEqual(h["tenants"]["b"]["ghl_location_id"], "loc-b")

    def test_one_tenants_ghl_limit_does_not_hold_back_the_other(self):
        # Tenant b may send 2 GHL requests per window: its two new people
        # (a search or two and a create each) wait for the next window. Tenant
        # a, with the default limit, is not behind them.
        self.write_tenant("b", GHL_RATE_LIMIT="2", WEBHOOK_WAIT_MS="0")
        s = self.start(names=("a",))
        held = [nowcerts_event("INSURED_INSERT") for _ in range(2)]
        ids = [self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", ev), 202)["event_id"]
               for ev in held]
        wait_until(lambda: len(self.fakes_b.calls("ghl")) >= 2, 10, 0.05, "b's first window used")
        ea = nowcerts_event("INSURED_INSERT")
        ra = self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", ea), 200)
        self.assertEqual(ra["data"].get("action"), "created", ra)
        # When a's contact was made, b was still held by its own limit.
        b_status = {e["id"]: e["status"] for e in self.events(s, "b")}
        self.assertNotEqual([b_status.get(i) for i in ids], ["done", "done"], b_status)
        wait_until(lambda: all(e["status"] == "done" for e in self.events(s, "b")), 60, 0.2,
                   "b's events done once its window allows")
        for ev in held:
            self.assertEqual(len(self.ghl_contacts(self.fakes_b, ev["data"]["email"])), 1)
        at = sorted(harness.req_at(r) for r in self.fakes_b.calls("ghl"))
        for i in range(len(at) - 2):
            self.assertGreaterEqual(at[i + 2] - at[i], 9.75, "b over its limit: %r" % at)

    # -- SIGHUP ------------------------------------------------------------

    def test_sighup_adds_changes_and_removes_tenants(self):
        s = self.start(names=("a",))
        self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", nowcerts_event()), 404)
        # Added.
        self.write_tenant("b")
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "b" in s.get("/health").json().get("tenants", {}), 10, 0.1,
                   "tenant b in /health")
        eb = nowcerts_event("INSURED_INSERT")
        rb = self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", eb), 200)
        self.assertEqual(len(self.ghl_contacts(self.fakes_b, eb["data"]["email"])), 1)
        # Changed: a's new key is used from now on.
        starts = s.log_text().count("tenant a: started")
        self.write_tenant("a", GHL_API_KEY="key-a2")
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: s.log_text().count("tenant a: started") > starts, 10, 0.1,
                   "tenant a restarted")
        ea = nowcerts_event("INSURED_INSERT")
        self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", ea), 200)
        creates = self.fakes.calls("ghl", "POST", CREATE_CONTACT)
        self.assertEqual([c["headers"]["authorization"] for c in creates], ["Bearer key-a2"])
        # A bad file: refused with its name and variable, the others run on.
        (self.tdir / "c.env").write_text("GHL_LOCATION_ID=loc-c\nPORT=1234\n")
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: re.search(r"c\.env: PORT is set for the whole process", s.log_text()),
                   10, 0.1, "the bad tenant file's log line")
        self.assertNotIn("c", s.get("/health").json()["tenants"])
        # Removed.
        (self.tdir / "c.env").unlink()
        (self.tdir / "b.env").unlink()
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "b" not in s.get("/health").json()["tenants"], 10, 0.1,
                   "tenant b gone")
        r = self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", nowcerts_event()), 404)
        self.assertIn("'b'", r["detail"])
        # Its events stay in its store (the CLI knows only configured tenants).
        self.assertEqual(s.db_query("SELECT id FROM events", tenant="b"), [(rb["event_id"],)])
        ea2 = nowcerts_event("INSURED_INSERT")
        self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", ea2), 200)
        self.assertEqual(len(self.ghl_contacts(self.fakes, ea2["data"]["email"])), 1)

    def test_a_changed_file_whose_tenant_cannot_start_is_a_counted_failed_reload(self):
        s = self.start(names=("a",))
        broken = self.tmp / "broken-overlay"
        broken.mkdir()
        (broken / "contacts.lua").write_text("return {  -- a syntax error\n")
        self.write_tenant("a", MAPPINGS_DIR=broken)
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "the old one runs again" in s.log_text(), 15, 0.1,
                   "the old configuration back")

        def errors():
            m = re.search(r'^ncghl_mapping_reloads_total\{tenant="a",result="error"\} (\d+)',
                          s.get("/metrics").text, re.M)
            return int(m.group(1)) if m else 0
        wait_until(lambda: errors() == 1, 10, 0.1, "the failed reload counted")
        r = s.get("/t/a/api/v1/reloads", headers={"Authorization": "Bearer it-admin-token"})
        self.assertEqual(r.status, 200, r)
        self.assertIn("did not start", json.dumps(r.json()))
        # And it still works, on its old mappings.
        ev = nowcerts_event("INSURED_INSERT")
        self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", ev), 200)

    def test_a_tenants_released_lua_state_runs_the_checked_mappings_until_sighup(self):
        # A tenant's Lua state is released once its start has checked it
        # (and after a minute idle): its next event builds it again from the
        # bytes that were checked, so an overlay edited on disk runs only
        # after a SIGHUP, as for a state that was never released.
        s = self.start()
        (self.overlay / "contacts.lua").write_text(OVERLAY_B.replace("agency-b", "agency-b2"))
        e1 = nowcerts_event("INSURED_INSERT")
        self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", e1), 200)
        c1 = self.ghl_contacts(self.fakes_b, e1["data"]["email"])
        self.assertEqual(len(c1), 1, c1)
        self.assertIn("agency-b", c1[0].get("tags") or [], c1[0])
        self.assertNotIn("agency-b2", c1[0].get("tags") or [], c1[0])
        reloads = s.log_text().count("b: mappings reloaded")
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: s.log_text().count("b: mappings reloaded") > reloads, 10, 0.1,
                   "tenant b's mappings reloaded")
        e2 = nowcerts_event("INSURED_INSERT")
        self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", e2), 200)
        c2 = self.ghl_contacts(self.fakes_b, e2["data"]["email"])
        self.assertEqual(len(c2), 1, c2)
        self.assertIn("agency-b2", c2[0].get("tags") or [], c2[0])

    def test_an_event_running_when_its_tenant_changes_is_not_lost(self):
        s = self.start(names=("a",))
        # Tenant a's GHL is slow: the event is still running at the SIGHUP.
        self.fakes.fault("ghl", latency_ms=1500, count=3)
        ev = nowcerts_event("INSURED_INSERT")
        out = {}
        t = threading.Thread(target=lambda: out.setdefault(
            "r", s.post("/t/a/api/v1/webhooks/nowcerts", ev)))
        t.start()
        wait_until(lambda: "intake nowcerts INSURED_INSERT" in s.log_text(), 10, 0.02, "intake")
        starts = s.log_text().count("tenant a: started")
        self.write_tenant("a", GHL_API_KEY="key-a")  # the same values, a changed file
        with open(self.tdir / "a.env", "a") as f:
            f.write("# edited\n")
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "a.env changed; restarting" in s.log_text(), 10, 0.02, "the restart")
        # While the old one finishes its event, a new webhook is refused, not lost.
        busy = s.post("/t/a/api/v1/webhooks/nowcerts", nowcerts_event("INSURED_INSERT"))
        self.assertJSONAnswer(busy, 503)
        self.assertEqual(busy.headers.get("retry-after"), "2")
        t.join(30)
        # Answered once its tenant restarts (it is stored and still running): 202.
        self.assertEqual(out["r"].status, 202, out["r"])
        wait_until(lambda: s.log_text().count("tenant a: started") > starts, 30, 0.1,
                   "tenant a restarted")
        # The old tenant let it finish before it went: one contact, one event, done.
        self.assertEqual(len(self.ghl_contacts(self.fakes, ev["data"]["email"])), 1)
        self.assertEqual([e["status"] for e in self.events(s, "a")], ["done"])
        self.assertNotIn("still running", s.log_text())

    # -- configuration errors at start ---------------------------------------

    def start_fails(self, files, pattern):
        for name, text in files.items():
            (self.tdir / name).write_text(text)
        s = self.server({"TENANTS_DIR": self.tdir}, start=False)
        p = s.cli("serve", timeout=20)
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stderr + s.log_text(), pattern)

    def test_bad_tenant_files_stop_the_start_with_their_name(self):
        ok = "GHL_LOCATION_ID=loc-a\n"
        self.start_fails({"Bad Name.env": ok}, r"Bad Name\.env: a tenant's name")
        for f in self.tdir.iterdir():
            f.unlink()
        self.start_fails({"a.env": ok + "ADMIN_TOKEN=x\n"},
                         r"a\.env: ADMIN_TOKEN is set for the whole process")
        for f in self.tdir.iterdir():
            f.unlink()
        self.start_fails({"a.env": "GHL_API_KEY=k\n"}, r"a\.env: GHL_LOCATION_ID: required")
        for f in self.tdir.iterdir():
            f.unlink()
        self.start_fails({"a.env": ok, "b.env": ok},
                         r"b\.env: GHL_LOCATION_ID: the same as in .*a\.env")
        for f in self.tdir.iterdir():
            f.unlink()
        self.start_fails({"a.env": ok + "MAX_RETRIES=many\n"},
                         r"a\.env: MAX_RETRIES: not a whole number")

    # -- labels, CLI and admin API -------------------------------------------

    def test_metrics_carry_the_tenant_label(self):
        s = self.start()
        self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", nowcerts_event()), 200)
        self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", nowcerts_event()), 200)
        self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", nowcerts_event()), 200)
        req = r'ncghl_webhook_requests_total\{tenant="%s",source="nowcerts",status="200"\} (\S+)'
        self.assertEqual(self.metric(s, req % "a"), 1)
        self.assertEqual(self.metric(s, req % "b"), 2)
        done = r'ncghl_events\{tenant="%s",status="done"\} (\S+)'
        self.assertEqual(self.metric(s, done % "a"), 1)
        self.assertEqual(self.metric(s, done % "b"), 2)
        up = r'ncghl_upstream_requests_total\{tenant="b",service="ghl",status="\d+"\} (\S+)'
        self.assertGreaterEqual(self.metric(s, up), 1)
        self.assertIsNone(self.metric(s, r'ncghl_webhook_requests_total\{source=[^}]*\} (\S+)'))

    def test_cli_and_admin_api_take_the_tenant(self):
        s = self.start()
        ra = self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", nowcerts_event()), 200)
        rb = self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", nowcerts_event()), 200)
        self.assertEqual([e["id"] for e in self.events(s, "a")], [ra["event_id"]])
        self.assertEqual([e["id"] for e in self.events(s, "b")], [rb["event_id"]])
        p = s.cli("events", "--tenant", "nope")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--tenant nope: no such tenant", p.stderr)
        # Without --tenant, a command on one agency's store or accounts says
        # which tenants there are, and makes no store of its own.
        for args in (("events",), ("doctor",), ("replay", "--dead"), ("conflicts",)):
            p = s.cli(*args)
            self.assertNotEqual(p.returncode, 0, (args, p.stdout))
            self.assertIn("name the tenant with --tenant NAME (a, b)", p.stderr, args)
        if not s.store_url:
            self.assertFalse((self.tmp / "ncghl.db").exists(), "no single-agency store with tenants")
            self.assertFalse((s.workdir / "data" / "ncghl.db").exists())
        auth = {"Authorization": "Bearer it-admin-token"}
        # Without a tenant: 400 naming the tenants (after the token check).
        self.assertEqual(s.get("/api/v1/events").status, 401)
        r = self.assertJSONAnswer(s.get("/api/v1/events", headers=auth), 400)
        self.assertIn("a, b", r["detail"])
        for path in ("/api/v1/events?tenant=b", "/t/b/api/v1/events"):
            r = self.assertJSONAnswer(s.get(path, headers=auth), 200)
            ids = [e["id"] for e in r]
            self.assertEqual(ids, [rb["event_id"]], r)
        r = self.assertJSONAnswer(s.get("/api/v1/events?tenant=zzz", headers=auth), 404)
        self.assertIn("zzz", r["detail"])
        # The page is the process's; its selector lists the tenants /health names.
        page = s.get("/ui/")
        self.assertEqual(page.status, 200, page)
        self.assertIn('id="tenant"', page.text)
        self.assertEqual(sorted(s.get("/health").json()["tenants"]), ["a", "b"])


    # -- the Marketplace install (SPEC 13) ---------------------------------

    def test_a_marketplace_install_stores_the_tokens_of_the_tenant_it_is_for(self):
        client, secret = "it-client-" + harness.uniq(8), "it-secret-" + harness.uniq(16)
        self.fakes_b.config("ghl", oauth_client_id=client, oauth_client_secret=secret)
        # Tenant b waits for its install (no API key); the app's keys and
        # GHL's address are the process's, inherited by every tenant.
        self.write_tenant("a")
        self.write_tenant("b", GHL_API_KEY=None)
        s = self.server({"TENANTS_DIR": self.tdir, "ADMIN_TOKEN": "it-admin-token",
                         "GHL_CLIENT_ID": client, "GHL_CLIENT_SECRET": secret,
                         "GHL_BASE_URL": self.fakes_b.ghl_base, "GHL_API_KEY": None})
        code = self.fakes_b.ghl_oauth_code("loc-b")
        r = s.get("/oauth/callback?code=" + code)
        self.assertEqual(r.status, 200, r.text)
        self.assertIn("loc-b", r.text)
        # The tokens are in b's store, and only there.
        def kv(name):
            rows = s.db_query("SELECT value FROM kv WHERE key = 'ghl_oauth'", tenant=name)
            return json.loads(rows[0][0]) if rows else None
        tokens = kv("b")
        self.assertIsNotNone(tokens)
        self.assertIsNone(kv("a"))
        # b's next contact reaches b's GHL with the installed access token;
        # a keeps its API key.
        ev = nowcerts_event("INSURED_INSERT")
        ans = self.assertJSONAnswer(s.post("/t/b/api/v1/webhooks/nowcerts", ev), 200)
        self.assertEqual(ans["data"].get("action"), "created", ans)
        creates = self.fakes_b.calls("ghl", "POST", CREATE_CONTACT)
        self.assertEqual([c["headers"]["authorization"] for c in creates],
                         ["Bearer " + tokens["access_token"]])
        got = self.ghl_contacts(self.fakes_b, ev["data"]["email"])
        self.assertEqual([c["locationId"] for c in got], ["loc-b"])
        ev2 = nowcerts_event("INSURED_INSERT")
        self.assertJSONAnswer(s.post("/t/a/api/v1/webhooks/nowcerts", ev2), 200)
        self.assertEqual([c["headers"]["authorization"]
                          for c in self.fakes.calls("ghl", "POST", CREATE_CONTACT)], ["Bearer key-a"])
        # A location no tenant serves is refused, and stores nothing.
        r = s.get("/oauth/callback?code=" + self.fakes_b.ghl_oauth_code("loc-z"))
        self.assertEqual(r.status, 403, r.text)
        self.assertEqual(kv("b")["access_token"], tokens["access_token"])
        text = s.log_text() + s.stderr_text()
        for secret_text in (secret, code, tokens["access_token"], tokens["refresh_token"]):
            self.assertNotIn(secret_text, text)


if __name__ == "__main__":
    harness.main()
