"""SPEC section 3: the command line (events, replay, check, test, map,
version, help)."""

import json
import re
import shutil
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import ROOT, IntegTest, insured_data, nowcerts_event  # noqa: E402

CREATE_CONTACT = r"^/contacts/?$"
EVENT_KEYS = {"id", "source", "type", "status", "attempts", "last_error"}


class Basics(IntegTest):
    NEEDS_FAKES = False

    def test_version(self):
        p = self.server(start=False).cli("version")
        self.assertEqual(p.returncode, 0, p)
        self.assertRegex(p.stdout, r"\d+\.\d+")

    def test_help(self):
        p = self.server(start=False).cli("help")
        self.assertEqual(p.returncode, 0, p)
        text = p.stdout + p.stderr
        for cmd in ("serve", "check", "test", "map", "events", "replay", "backfill", "version"):
            self.assertIn(cmd, text)

    def test_unknown_command_fails(self):
        p = self.server(start=False).cli("frobnicate")
        self.assertNotEqual(p.returncode, 0, p)
        self.assertTrue((p.stdout + p.stderr).strip(), "no message for an unknown command")


class Events(IntegTest):
    def _three_events(self, s):
        done = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 200)
        self.fakes.fault("ghl", status=400, count=1, path=CREATE_CONTACT, method="POST",
                         body={"statusCode": 400, "message": "Bad Request"})
        dead = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 502)
        ignored = self.assertJSONAnswer(s.nowcerts(nowcerts_event("FOO_BAR")), 200)
        return done["event_id"], dead["event_id"], ignored["event_id"]

    def _check_listing(self, s, done, dead):
        p = s.cli("events")
        self.assertEqual(p.returncode, 0, p)
        rows = {}
        for line in p.stdout.splitlines():
            if not line.strip():
                continue
            f = line.split("\t")
            self.assertEqual(len(f), 6, "not 6 tab-separated fields: %r" % line)
            rows[f[0]] = f
        self.assertIn(done, rows)
        self.assertIn(dead, rows)
        self.assertEqual(rows[done][1:5], ["nowcerts", "INSURED_INSERT", "done", "1"])
        self.assertEqual(rows[dead][1:5], ["nowcerts", "INSURED_INSERT", "dead", "1"])
        self.assertTrue(rows[dead][5].strip(), "dead event without its last error")

        js = s.events()
        self.assertEqual(len(js), len(rows))
        for e in js:
            self.assertTrue(EVENT_KEYS <= set(e), e)
        byid = {e["id"]: e for e in js}
        self.assertEqual(byid[dead]["status"], "dead")
        self.assertEqual(int(byid[dead]["attempts"]), 1)
        self.assertTrue(byid[dead]["last_error"])
        self.assertEqual(byid[done]["source"], "nowcerts")
        self.assertEqual(byid[done]["type"], "INSURED_INSERT")

        only_dead = s.events("--status", "dead")
        self.assertEqual([e["id"] for e in only_dead], [dead])
        self.assertEqual(len(s.events("--limit", "1")), 1)
        p = s.cli("events", "--status", "done", "--limit", "1")
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(len([x for x in p.stdout.splitlines() if x.strip()]), 1, p.stdout)

    def test_events_listing_while_running_and_after_stop(self):
        s = self.server()
        done, dead, _ = self._three_events(s)
        self._check_listing(s, done, dead)
        s.stop()
        self._check_listing(s, done, dead)

    def test_events_rejects_an_unknown_status(self):
        s = self.server(start=False)
        p = s.cli("events", "--status", "sleepy")
        self.assertNotEqual(p.returncode, 0, p)


    def test_an_option_without_its_value_says_so(self):
        s = self.server(start=False)
        for opt in ("--limit", "--status", "--as-case"):
            p = s.cli("events", opt)
            self.assertEqual(p.returncode, 2, p)
            self.assertIn("ncghl events: %s needs a value" % opt, p.stderr)

    def test_a_setting_out_of_range_shows_its_bounds_in_full(self):
        p = self.server({"MAX_BODY_BYTES": 1}, start=False).cli("check")
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("MAX_BODY_BYTES: must be between 64 and 1073741824", p.stdout + p.stderr)


class Replay(IntegTest):
    def _dead(self, s):
        self.fakes.fault("ghl", status=400, count=1, path=CREATE_CONTACT, method="POST")
        ev = nowcerts_event("INSURED_INSERT", insured_data())
        ans = self.assertJSONAnswer(s.nowcerts(ev), 502)
        return ans["event_id"], ev["data"]["email"]

    def test_replay_one_event_is_picked_up_by_the_running_service(self):
        s = self.server()
        eid, email = self._dead(s)
        p = s.cli("replay", eid)
        self.assertEqual(p.returncode, 0, p)
        self.assertIn(eid, p.stdout)
        self.assertIn("picked up within about a second", p.stdout)
        ev = s.wait_event(eid, timeout=15)
        self.assertEqual(int(ev["attempts"]), 2, ev)
        self.assertEqual(len(self.contacts_with_email(email)), 1)
        # An id that is not in the store is an error, not a silent success.
        p = s.cli("replay", "nowcerts_" + "0" * 64)
        self.assertNotEqual(p.returncode, 0, p)
        self.assertIn("no event", p.stderr)

    def test_replay_keeps_the_id_and_the_attempt_history(self):
        token = "adm-" + harness.uniq(20)
        s = self.server({"ADMIN_TOKEN": token})
        auth = {"Authorization": "Bearer " + token}
        eid, _ = self._dead(s)
        before = s.get("/api/v1/events/" + eid, auth).json()["attempts"]
        self.assertTrue(before)
        p = s.cli("replay", eid)
        self.assertEqual(p.returncode, 0, p)
        s.wait_event(eid, timeout=15)
        after = s.get("/api/v1/events/" + eid, auth).json()
        self.assertEqual(after["attempts"][:len(before)], before, "the first run's attempts changed")
        self.assertGreater(len(after["attempts"]), len(before))
        self.assertEqual({a["event_attempt"] for a in after["attempts"]}, {1, 2})
        self.assertEqual([e["id"] for e in s.events()], [eid], "the replay made another event")

    def test_replay_dead_requeues_every_dead_event(self):
        s = self.server()
        done = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 200)["event_id"]
        a, ea = self._dead(s)
        b, eb = self._dead(s)
        p = s.cli("replay", "--dead")
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("2 dead events", p.stdout)
        s.wait_event(a, timeout=15)
        s.wait_event(b, timeout=15)
        self.assertEqual(len(self.contacts_with_email(ea)), 1)
        self.assertEqual(len(self.contacts_with_email(eb)), 1)
        # Only the dead ones ran again.
        self.assertEqual(int(s.event(done)["attempts"]), 1)
        p = s.cli("replay", "--dead")
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("no dead events", p.stdout)

    def test_replay_without_service_waits_for_the_next_start(self):
        s = self.server()
        eid, email = self._dead(s)
        s.stop()
        p = s.cli("replay", eid)
        self.assertEqual(p.returncode, 0, p)
        self.assertTrue((p.stdout + p.stderr).strip(), "replay with no service running says nothing")
        self.assertIn("no service is running on %s" % s.store_label, p.stdout)
        self.assertIn("next start", p.stdout)
        self.assertEqual(s.event(eid)["status"], "pending")
        self.assertEqual(self.contacts_with_email(email), [])
        s2 = harness.Server(s.workdir, self.fakes)
        s2.env.update({k: v for k, v in s.env.items() if k != "PORT"})
        self.servers.append(s2)
        s2.start()
        s2.wait_event(eid, timeout=15)
        self.assertEqual(len(self.contacts_with_email(email)), 1)

    def test_replay_refuses_a_running_event(self):
        s = self.server({"WEBHOOK_WAIT_MS": 100})
        # GHL answers slowly, so the event is still running when it is replayed.
        self.fakes.fault("ghl", latency_ms=5000, count=1, path=r"^/contacts")
        eid = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 202)["event_id"]
        s.wait_event(eid, statuses=("running",), timeout=10)
        p = s.cli("replay", eid)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("running", p.stderr)
        ev = s.wait_event(eid, timeout=30)
        self.assertEqual(int(ev["attempts"]), 1, "the refused replay started a second run")

    def test_replay_usage_errors(self):
        s = self.server(start=False)
        for args in ((), ("a", "b"), ("--frob",)):
            with self.subTest(args=args):
                p = s.cli("replay", *args)
                self.assertEqual(p.returncode, 2, p)
                self.assertTrue(p.stderr.strip())
        p = s.cli("replay", "--dead")  # nothing was ever received here
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("no store", p.stderr)


class Backfill(IntegTest):
    def _settled(self, s):
        return not [e for e in s.events("--limit", "1000")
                    if e.get("status") in ("pending", "running")]

    def test_backfill_from_nowcerts_goes_through_the_running_service(self):
        s = self.server()
        emails = []
        for i in range(3):
            email = "bf%d.%s@example.com" % (i, harness.uniq())
            self.seed_id("nowcerts", "insureds", {
                "firstName": "Back", "lastName": "Fill%d" % i, "eMail": email,
                "type": "Insured", "active": True}, "eMail")
            emails.append(email)
        p = s.cli("backfill", "--from", "nowcerts", timeout=60)
        self.assertEqual(p.returncode, 0, p)
        # It follows the service to the end: progress, then the summary.
        self.assertRegex(p.stdout, r"progress: 3/3 events finished \(100%\)")
        self.assertIn("summary: 3 created, 0 updated, 0 unchanged, 0 failed", p.stdout)
        harness.wait_until(lambda: all(self.contacts_with_email(e) for e in emails), 20, 0.1,
                           "the backfilled insureds to reach GHL")
        # Again: the same records are the same events, nothing is doubled.
        p = s.cli("backfill", "--from", "nowcerts", timeout=60)
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("summary: 0 created, 0 updated, 3 unchanged, 0 failed", p.stdout)
        harness.wait_until(lambda: self._settled(s), 20, 0.1, "the queue to settle")
        for e in emails:
            self.assertEqual(len(self.contacts_with_email(e)), 1)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 3)

    def test_backfill_from_ghl(self):
        s = self.server()
        contacts = [self.seed_contact() for _ in range(2)]
        p = s.cli("backfill", "--from", "ghl", timeout=60)
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("summary: 2 created, 0 updated, 0 unchanged, 0 failed", p.stdout)
        harness.wait_until(lambda: all(self.insureds_with_email(c["email"]) for c in contacts),
                           20, 0.1, "the backfilled contacts to reach NowCerts")
        for c in contacts:
            self.assertEqual(len(self.insureds_with_email(c["email"])), 1)


class Mappings(IntegTest):
    NEEDS_FAKES = False

    def test_check_passes_on_the_shipped_mappings(self):
        p = self.server(start=False).cli("check")
        self.assertEqual(p.returncode, 0, p)

    def test_the_shipped_cases_pass_whatever_the_agency_country(self):
        # The cases' phones are US numbers: an agency's DEFAULT_COUNTRY must
        # not fail them (check, and so every reload, refused them with GB).
        p = self.server({"DEFAULT_COUNTRY": "GB"}, start=False).cli("check")
        self.assertEqual(p.returncode, 0, p)

    def test_check_names_file_and_line_of_a_broken_script(self):
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy)
        scripts = sorted(x for x in copy.rglob("*.lua") if "tests" not in x.relative_to(copy).parts)
        self.assertTrue(scripts, "no .lua scripts in mappings/")
        victim = scripts[0]
        lines = victim.read_text().splitlines()
        lines.append("local broken = = 1")
        victim.write_text("\n".join(lines) + "\n")
        p = self.server(start=False, env={"MAPPINGS_DIR": copy}).cli("check")
        self.assertNotEqual(p.returncode, 0, p)
        out = p.stdout + p.stderr
        self.assertRegex(out, re.escape(victim.name) + r":%d:" % len(lines))

    def test_test_runs_the_shipped_mapping_cases(self):
        p = self.server(start=False).cli("test")
        self.assertEqual(p.returncode, 0, p)
        last = [x for x in p.stdout.splitlines() if x.strip()][-1]
        m = re.fullmatch(r"(\d+) passed, 0 failed", last.strip())
        self.assertTrue(m, "last line %r" % last)
        self.assertGreater(int(m.group(1)), 0, "no mapping test cases ran")

    def test_map_prints_the_requests_a_webhook_would_make(self):
        s = self.server(start=False)
        body = nowcerts_event("INSURED_INSERT", insured_data())
        f = self.tmp / "insured.json"
        f.write_text(json.dumps(body))
        p = s.cli("map", "--source", "nowcerts", f)
        self.assertEqual(p.returncode, 0, p)
        out = json.loads(p.stdout)
        text = json.dumps(out)
        self.assertIn("/contacts", text)
        self.assertIn(body["data"]["email"], text)
        # The requests in order, each {service, method, path, query, body},
        # the outcome, and which source field filled which target field.
        self.assertEqual(out["outcome"], "done", out)
        reqs = out["requests"]
        for r in reqs:
            self.assertTrue({"service", "method", "path", "query", "body"} <= set(r), r)
        self.assertEqual([(r["service"], r["method"], r["path"]) for r in reqs][-1],
                         ("ghl", "POST", "/contacts/"))
        self.assertEqual(reqs[0]["path"], "/contacts/search")  # found nobody: the default
        created = reqs[-1]["body"]
        self.assertEqual(created["email"], body["data"]["email"])
        self.assertEqual(created["postalCode"], body["data"]["address"]["zip"])
        fields = {m["map"]: m["fields"] for m in out["maps"]}
        trace = fields["contacts.insured_to_contact"]
        self.assertEqual(trace["postalCode"]["from"], "address.zip")
        self.assertEqual(trace["source"], {"from": "const", "value": "NowCerts"})

    def test_map_with_fixtures_and_bad_input(self):
        s = self.server(start=False)
        body = nowcerts_event("INSURED_UPDATE", insured_data(email="pat@example.com"))
        f = self.tmp / "insured.json"
        f.write_text(json.dumps(body))
        fixtures = self.tmp / "found.lua"
        fixtures.write_text(
            'return { { name = "found", answers = {\n'
            '  { service = "ghl", method = "POST", path = "/contacts/search",\n'
            '    body = { contacts = { { id = "c42", email = "pat@example.com" } } } } } } }\n')
        p = s.cli("map", "--source", "nowcerts", f, "--fixtures", fixtures)
        self.assertEqual(p.returncode, 0, p)
        out = json.loads(p.stdout)
        self.assertEqual([(r["method"], r["path"]) for r in out["requests"]],
                         [("POST", "/contacts/search"), ("PUT", "/contacts/c42"),
                          ("POST", "/contacts/c42/tags")])
        self.assertEqual(out["data"]["action"], "updated")

        bad = self.tmp / "bad.json"
        bad.write_text('{"event_type": "INSURED_INSERT", "data": ')
        p = s.cli("map", "--source", "nowcerts", bad)
        self.assertNotEqual(p.returncode, 0, p)
        self.assertEqual(p.stdout, "")
        self.assertIn("bad.json is not JSON", p.stderr)
        p = s.cli("map", "--source", "zapier", f)
        self.assertNotEqual(p.returncode, 0, p)
        self.assertIn("--source", p.stderr)

    def test_check_names_the_case_a_mapping_change_breaks(self):
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy)
        contacts = copy / "contacts.lua"
        contacts.write_text(contacts.read_text().replace('map.const("NowCerts")',
                                                         'map.const("Changed")', 1))
        p = self.server(start=False, env={"MAPPINGS_DIR": copy}).cli("check")
        self.assertEqual(p.returncode, 1, p)
        self.assertRegex(p.stderr, r"tests/contacts_to_ghl\.lua:\d+: case \"[^\"]+\": .*"
                                   r"body\.source: expected \"NowCerts\", got \"Changed\"")

    def test_test_with_a_wrong_expectation_exits_1_and_shows_the_diff(self):
        case = self.tmp / "wrong.lua"
        case.write_text(
            'return {\n'
            '  { name = "insured insert creates a GHL contact",\n'
            '    source = "nowcerts",\n'
            '    body = { event_type = "INSURED_INSERT",\n'
            '             data = { firstName = "Jane", email = "jane@example.com" } },\n'
            '    answers = {\n'
            '      { service = "ghl", method = "POST", path = "/contacts/", status = 201,\n'
            '        body = { contact = { id = "c1" } } },\n'
            '    },\n'
            '    expect = {\n'
            '      outcome = "done",\n'
            '      requests = { { service = "ghl", method = "POST", path = "/contacts/",\n'
            '                     body = { email = "jane@example.org" } } },\n'
            '      data = { action = "created" },\n'
            '    } },\n'
            '}\n')
        p = self.server(start=False).cli("test", case)
        self.assertEqual(p.returncode, 1, p)
        lines = [x for x in p.stdout.splitlines() if x.strip()]
        self.assertEqual(lines[-1], "0 passed, 1 failed")
        self.assertEqual(lines[0], "FAIL %s: insured insert creates a GHL contact" % case)
        out = p.stdout
        # The first differing field, then expected against actual.
        self.assertIn('wrong.lua:2: case "insured insert creates a GHL contact": request 1 '
                      '(ghl POST /contacts/) differs from actual request 2 at body.email: '
                      'expected "jane@example.org", got "jane@example.com"', out)
        self.assertIn("expected:", out)
        self.assertIn("actual:", out)
        self.assertRegex(out, r"request +1\. ghl POST /contacts/search body \{")
        self.assertRegex(out, r"request +2\. ghl POST /contacts/ body \{.*\"email\":"
                              r"\"jane@example\.com\".*-> 201 \(fixture\)")

    def test_test_runs_the_worked_example_against_its_own_mappings(self):
        example = ROOT / "examples" / "commercial-lines"
        p = self.server(start=False).cli("test", example / "tests")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        last = [x for x in p.stdout.splitlines() if x.strip()][-1]
        m = re.fullmatch(r"(\d+) passed, 0 failed", last.strip())
        self.assertTrue(m and int(m.group(1)) > 0, last)
        # Away from the example (so against MAPPINGS_DIR, the default
        # mappings) its cases fail: they test the example's own field maps.
        loose = self.tmp / "cases.lua"
        shutil.copy(example / "tests" / "contacts.lua", loose)
        p = self.server(start=False).cli("test", loose)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)

    def test_test_bench_prints_the_rate_on_stderr_only(self):
        p = self.server(start=False).cli("test", "--bench", "3")
        self.assertEqual(p.returncode, 0, p)
        self.assertRegex(p.stderr, r"bench: \d+ cases in [\d.]+ s: \d+ cases/s")
        self.assertNotIn("bench", p.stdout)


class MappingsReload(IntegTest):
    """SIGHUP runs the mapping test cases before it swaps in new scripts."""

    def _created_source(self, s, email=None):
        ev = nowcerts_event("INSURED_INSERT", insured_data(email=email))
        ans = self.assertJSONAnswer(s.nowcerts(ev), 200)
        self.assertEqual(ans["data"].get("action"), "created", ans)
        [c] = self.contacts_with_email(ev["data"]["email"])
        return c.get("source")

    def _reloads(self, s, word):
        return len(re.findall(r"mappings reload%s" % word, s.log_text()))

    def test_a_reload_whose_case_fails_keeps_the_old_mappings(self):
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy)
        s = self.server({"MAPPINGS_DIR": copy})
        self.assertEqual(self._created_source(s), "NowCerts")
        version = s.get("/health").json()["mappings"]["version"]

        contacts = copy / "contacts.lua"
        contacts.write_text(contacts.read_text().replace('map.const("NowCerts")',
                                                         'map.const("Changed")', 1))
        s.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: self._reloads(s, " failed"), 10, 0.1, "the failed reload")
        self.assertRegex(s.log_text(), r"mappings reload failed.*tests/contacts_to_ghl\.lua:\d+: "
                                       r"case .*body\.source: expected \"NowCerts\", got \"Changed\"")
        self.assertEqual(self._created_source(s), "NowCerts")  # the old mappings still run
        health = s.get("/health").json()
        self.assertEqual(health["mappings"]["version"], version)
        self.assertEqual(health["last_reload"]["result"], "error", health)
        self.assertIn("contacts_to_ghl.lua", health["last_reload"]["message"])

        # The case brought up to date with the change: the reload goes through.
        for case in (copy / "tests").glob("contacts*.lua"):
            case.write_text(case.read_text().replace('source = "NowCerts"', 'source = "Changed"'))
        s.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: self._reloads(s, "ed"), 10, 0.1, "the good reload")
        self.assertEqual(self._created_source(s), "Changed")
        health = s.get("/health").json()
        self.assertNotEqual(health["mappings"]["version"], version)
        self.assertEqual(health["last_reload"]["result"], "ok", health)
        self.assertRegex(health["last_reload"]["message"], r"\d+ test cases passed")

    def test_a_change_between_two_quick_sighups_is_in_force(self):
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy)
        s = self.server({"MAPPINGS_DIR": copy})
        contacts = copy / "contacts.lua"
        text = contacts.read_text()
        # The first SIGHUP starts a reload; the change lands while it may
        # still run (that reload may then fail on half a change), and the
        # second SIGHUP must load it: a SIGHUP that comes during a reload is
        # queued, not dropped.
        s.proc.send_signal(signal.SIGHUP)
        contacts.write_text(text.replace('map.const("NowCerts")', 'map.const("Second")', 1))
        for case in (copy / "tests").glob("contacts*.lua"):
            case.write_text(case.read_text().replace('source = "NowCerts"', 'source = "Second"'))
        s.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: self._created_source(s) == "Second", 10, 0.2,
                           "the change sent between two SIGHUPs to be in force")
        self.assertGreaterEqual(self._reloads(s, "ed"), 1)


if __name__ == "__main__":
    harness.main()
