"""SPEC section 12: `ncghl doctor` against the fakes (all ✓, then each ✗
case with its fix and the exit code), the same checks at `serve` start and
after a reload (warnings in the log, /health "degraded" with the reasons)."""

import json
import shutil
import signal

import harness
from harness import IntegTest, ROOT, wait_until

NC_USER, NC_PASS = "it-user", "it-secret-password"


class DoctorBase(IntegTest):
    # The fake NowCerts accepts only this user and password, so a wrong
    # password is refused as the real one would.
    FAKE_ARGS = ("--nowcerts-user", NC_USER, "--nowcerts-pass", NC_PASS)

    def env(self, **kw):
        e = {"NOWCERTS_USERNAME": NC_USER, "NOWCERTS_PASSWORD": NC_PASS, "DOCTOR_AT_START": "true"}
        e.update(kw)
        return e

    def doctor(self, **env):
        s = self.server(env=self.env(**env), start=False)
        p = s.cli("doctor", timeout=60)
        lines = [l for l in p.stdout.splitlines() if l.strip()]
        return p, lines

    def mappings_copy(self, edits):
        """A copy of the shipped mappings with (file, old, new) replacements."""
        d = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", d)
        for name, old, new in edits:
            f = d / name
            text = f.read_text()
            self.assertIn(old, text, "the shipped %s changed; update this test" % name)
            f.write_text(text.replace(old, new, 1))
        return d

    def failed(self, lines):
        return [l for l in lines if l.startswith("✗")]

    def assertAllPassed(self, p, lines):
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(self.failed(lines), [], p.stdout)
        self.assertEqual(lines[-1], "all checks passed")


class Doctor(DoctorBase):
    def test_all_checks_pass_against_the_fakes(self):
        p, lines = self.doctor()
        self.assertAllPassed(p, lines)
        text = "\n".join(lines)
        self.assertRegex(text, r"✓ NowCerts login as it-user works \(token user id [0-9a-f-]{36}\)")
        self.assertIn("✓ GHL token works for location it-location-1", text)
        # Pipelines and stages resolved to the fake's ids.
        pipes = {p["name"]: p for p in self.fakes.records("ghl", "pipelines")}
        pl = pipes["Personal Lines"]
        bound = [s for s in pl["stages"] if s["name"] == "Bound"][0]
        self.assertIn('✓ pipeline "Personal Lines" -> %s, stage "Bound" -> %s' % (pl["id"], bound["id"]),
                      text)
        fields = {f["fieldKey"]: f for f in self.fakes.records("ghl", "customFields")
                  if f.get("locationId") == "it-location-1"}
        self.assertIn('✓ custom field "policy_number" (policies.custom_fields) -> id %s'
                      % fields["opportunity.policy_number"]["id"], text)
        self.assertIn("✓ nowcerts webhooks routed: INSURED_INSERT, INSURED_UPDATE", text)
        self.assertRegex(text, r"✓ store .*ncghl\.db is writable")
        self.assertIn("✓ PUBLIC_URL unset", text)
        # One line per check: every line is a ✓, a ✗ or the closing line.
        for l in lines[:-1]:
            self.assertTrue(l.startswith("✓ ") or l.startswith("✗ "), l)

    def test_bad_nowcerts_password(self):
        p, lines = self.doctor(NOWCERTS_PASSWORD="wrong-password")
        self.assertEqual(p.returncode, 1, p.stdout)
        bad = self.failed(lines)
        self.assertEqual(len(bad), 1, p.stdout)
        self.assertIn("NowCerts login as it-user failed", bad[0])
        self.assertIn("Fix: check NOWCERTS_USERNAME and NOWCERTS_PASSWORD", bad[0])
        self.assertNotIn(".. Fix", bad[0])
        self.assertNotIn("wrong-password", p.stdout + p.stderr)
        self.assertEqual(lines[-1], "1 check failed")

    def test_fixes_name_the_setting_that_is_wrong(self):
        # A NowCerts base URL without /api: the token request 404s, and the
        # credentials are not what is wrong.
        nc = self.fakes.nc_base
        p, lines = self.doctor(NOWCERTS_BASE_URL=nc)
        text = "\n".join(self.failed(lines))
        self.assertIn("Fix: NOWCERTS_BASE_URL (%s) has no token endpoint: it ends in /api" % nc, text)
        # GHL's old API base (a path GHL does not have): not the location.
        p, lines = self.doctor(GHL_BASE_URL=self.fakes.ghl_base + "/v1")
        text = "\n".join(self.failed(lines))
        self.assertIn("GHL_BASE_URL (%s/v1) has no such API" % self.fakes.ghl_base, text)
        self.assertNotIn("is not a sub-account", text)
        # No API key: set it (not "check the network").
        p, lines = self.doctor(GHL_API_KEY=None)
        text = "\n".join(self.failed(lines))
        self.assertIn("Fix: set GHL_API_KEY", text)
        self.assertNotIn("check the address and the network", text)

    def test_a_password_in_a_base_url_is_never_printed(self):
        # Neither in the fix doctor prints nor in any log line (every
        # request's line names its URL).
        p, lines = self.doctor(GHL_BASE_URL="http://apikey:UrlS3cret@127.0.0.1:1", LOG_LEVEL="DEBUG")
        self.assertIn("http://apikey:***@127.0.0.1:1", p.stdout)
        self.assertIn("127.0.0.1:1/locations", p.stdout + p.stderr)  # the requests were logged
        self.assertNotIn("UrlS3cret", p.stdout + p.stderr)

    def test_wrong_location(self):
        self.fakes.seed("ghl", "locations", {"id": "the-real-location", "name": "Agency"})
        p, lines = self.doctor(GHL_LOCATION_ID="it-location-1")
        self.assertEqual(p.returncode, 1, p.stdout)
        text = "\n".join(self.failed(lines))
        self.assertIn("✗ GHL token and location it-location-1: HTTP 403", text)
        self.assertIn("Fix: GHL_LOCATION_ID it-location-1 is not a sub-account this token reaches", text)
        # What depends on the location says it was not checked, not "missing".
        self.assertIn("✗ pipelines and stages not checked", text)
        self.assertIn("✗ custom fields not checked", text)
        p, lines = self.doctor(GHL_LOCATION_ID="the-real-location")
        self.assertAllPassed(p, lines)
        self.assertIn("✓ GHL token works for location the-real-location (Agency)", lines)

    def test_a_location_answer_that_is_no_location_is_not_a_pass(self):
        # A proxy's page or an error body behind a 200 says nothing of the token.
        for fault in ({"raw_body": "<html><body>maintenance</body></html>"},
                      {"body": {"statusCode": 401, "message": "Invalid JWT"}}):
            with self.subTest(fault=fault):
                self.fakes.fault("ghl", path=r"^/locations/it-location-1$", count=1, status=200, **fault)
                p, lines = self.doctor()
                self.fakes._ctl("ghl", "DELETE", "/_fault")
                self.assertEqual(p.returncode, 1, p.stdout)
                bad = "\n".join(self.failed(lines))
                self.assertIn("GHL answered GET /locations/it-location-1 with HTTP 200 but no location", bad)
                self.assertIn("Fix: check GHL_BASE_URL", bad)
                self.assertNotIn("✓ GHL token works", "\n".join(lines))

    def test_pipeline_that_does_not_exist_gets_a_did_you_mean(self):
        # Names written in pipelines.lua win, so a typo there must be caught.
        d = self.mappings_copy([("pipelines.lua", "pipelines.by_line = {}",
                                 'pipelines.by_line = { { pipeline = "Comercial Lines",'
                                 ' words = { "commercial" } }, { pipeline = "Personal Lines" } }')])
        p, lines = self.doctor(MAPPINGS_DIR=d)
        self.assertEqual(p.returncode, 1, p.stdout)
        bad = self.failed(lines)
        self.assertTrue(bad, p.stdout)
        self.assertIn('pipeline "Comercial Lines"', bad[0])
        self.assertIn('is not in this location (did you mean "Commercial Lines"?)', bad[0])
        self.assertIn("Fix: correct the name in pipelines.lua", bad[0])
        self.assertTrue(all("Comercial Lines" in b for b in bad), bad)

    def test_stage_that_does_not_exist(self):
        d = self.mappings_copy([("pipelines.lua", "pipelines.by_line = {}",
                                 'pipelines.by_line = { { pipeline = "Commercial Lines",'
                                 ' words = { "commercial" } }, { pipeline = "Personal Lines" } }'),
                                ("pipelines.lua", "pipelines.stage = {}",
                                 'pipelines.stage = { quote = "Quoted", policy = "Bund" }')])
        p, lines = self.doctor(MAPPINGS_DIR=d)
        self.assertEqual(p.returncode, 1, p.stdout)
        bad = self.failed(lines)
        self.assertEqual(len(bad), 2, p.stdout)  # one per pipeline
        self.assertIn('stage "Bund" of pipeline "Commercial Lines" (policy) is not in GHL '
                      '(did you mean "Bound"?)', bad[0])

    def test_pipelines_choices_when_pipelines_lua_has_it(self):
        # pipelines.choices(location_pipelines), where it exists, says what
        # each line of business would get; doctor prints it.
        d = self.tmp / "agency"
        d.mkdir()
        (d / "pipelines.lua").write_text(
            'local p = require "defaults.pipelines"\n'
            'function p.choices(have)\n'
            '  assert(type(have) == "table" and #have == 2, "the location\'s pipelines")\n'
            '  return {\n'
            '    { line = "Homeowners", kind = "quote", pipeline = "Personal Lines", stage = "Quoted",\n'
            '      how = "matched" },\n'
            '    { line = "Cyber", kind = "policy", stage = "Bound", how = "missing" },\n'
            '  }\n'
            'end\n'
            'return p\n')
        p, lines = self.doctor(MAPPINGS_DIR=d)
        self.assertEqual(p.returncode, 1, p.stdout)
        text = "\n".join(lines)
        self.assertRegex(text, r'✓ pipeline "Personal Lines" -> \w+, stage "Quoted" -> [\w-]+ \(quotes, matched\)')
        self.assertEqual(self.failed(lines),
                         ["✗ pipeline for Cyber (policy): none matches in this location. Fix: name a "
                          "pipeline for it in pipelines.lua, or create one in GHL (Opportunities > Pipelines)"])

    def test_custom_field_key_missing(self):
        d = self.mappings_copy([("policies.lua", '{ key = "carrier",', '{ key = "carier",')])
        p, lines = self.doctor(MAPPINGS_DIR=d)
        self.assertEqual(p.returncode, 1, p.stdout)
        bad = self.failed(lines)
        self.assertEqual(len(bad), 1, p.stdout)
        self.assertIn('custom field "carier" (policies.custom_fields) is not in this location '
                      '(did you mean "carrier"?)', bad[0])
        self.assertIn("Fix: create it in GHL (Settings > Custom Fields)", bad[0])

    def test_custom_field_in_field_key_form(self):
        # GHL's fieldKey form ("opportunity.x") is matched as well as the bare key.
        d = self.mappings_copy([("policies.lua", '{ key = "carrier",', '{ key = "opportunity.carrier",')])
        p, lines = self.doctor(MAPPINGS_DIR=d)
        self.assertAllPassed(p, lines)
        self.assertTrue(any(l.startswith('✓ custom field "opportunity.carrier"') for l in lines), lines)

    def test_custom_field_key_form_is_a_setting(self):
        # GHL's key form is unconfirmed: with key_form = "fieldKey" only the
        # full "opportunity.x" form matches, so the shipped bare keys do not.
        d = self.tmp / "agency"
        d.mkdir()
        (d / "policies.lua").write_text('require("ncghl.custom_fields").key_form = "fieldKey"\n'
                                        'return require "defaults.policies"\n')
        p, lines = self.doctor(MAPPINGS_DIR=d)
        self.assertEqual(p.returncode, 1, p.stdout)
        bad = self.failed(lines)
        self.assertEqual(len(bad), 4, p.stdout)
        self.assertIn('custom field "policy_number" (policies.custom_fields) is not in this location '
                      '(did you mean "opportunity.policy_number"?)', bad[0])
        self.assertIn('key_form = "fieldKey"', bad[0])

    def test_missing_route_store_and_public_url(self):
        d = self.mappings_copy([("routes.lua", "nowcerts.INSURED_UPDATE = nowcerts.INSURED_INSERT\n", "")])
        (self.tmp / "a-file").write_text("not a directory")
        p, lines = self.doctor(MAPPINGS_DIR=d, PUBLIC_URL="http://127.0.0.1:8001",
                               DB_PATH=str(self.tmp / "a-file" / "ncghl.db"))
        self.assertEqual(p.returncode, 1, p.stdout)
        text = "\n".join(self.failed(lines))
        self.assertIn('✗ nowcerts INSURED_UPDATE has no route', text)
        self.assertIn("Fix: add nowcerts.INSURED_UPDATE to routes.lua", text)
        self.assertIn("a-file/ncghl.db cannot be opened", text)
        self.assertIn("PUBLIC_URL http://127.0.0.1:8001 is a loopback address", text)
        self.assertEqual(lines[-1], "3 checks failed")

    def test_public_url_shows_what_would_be_registered(self):
        p, lines = self.doctor(PUBLIC_URL="https://ncghl.example.com/")
        self.assertAllPassed(p, lines)
        self.assertIn("✓ PUBLIC_URL: ncghl subscribe would register "
                      "https://ncghl.example.com/api/v1/webhooks/nowcerts?hook=<event>", "\n".join(lines))

    def test_broken_mapping_is_a_failure(self):
        d = self.mappings_copy([("contacts.lua", "local contacts = {}", "local contacts = {")])
        p, lines = self.doctor(MAPPINGS_DIR=d)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertRegex(lines[0], r"^✗ mappings in .* do not load: .*contacts\.lua:\d+:")

    def test_usage(self):
        s = self.server(env=self.env(), start=False)
        p = s.cli("doctor", "--bogus")
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage: ncghl doctor [--env FILE] [--sandbox]", p.stderr)


class DoctorSandbox(IntegTest):
    NEEDS_FAKES = False

    def test_sandbox_runs_against_its_own_fakes_and_stops_them(self):
        nc_port, ghl_port = harness.free_port(), harness.free_port()
        env = {"SANDBOX_NOWCERTS_PORT": nc_port, "SANDBOX_GHL_PORT": ghl_port,
               "NOWCERTS_USERNAME": None, "NOWCERTS_PASSWORD": None, "GHL_API_KEY": None,
               "GHL_LOCATION_ID": None, "NOWCERTS_BASE_URL": None, "GHL_BASE_URL": None}
        s = self.server(env=env, start=False)
        p = s.cli("doctor", "--sandbox", timeout=90)
        lines = [l for l in p.stdout.splitlines() if l.strip()]
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(lines[-1], "all checks passed")
        self.assertIn("✓ GHL token works for location", p.stdout)
        self.assertIn('✓ custom field "policy_number" (policies.custom_fields) -> id', p.stdout)
        # The fakes it started are gone with it.
        self.assertFalse(harness.port_open(nc_port) or harness.port_open(ghl_port))


class DoctorAtServe(DoctorBase):
    def health(self, s):
        r = s.get("/health")
        return r.json()

    def test_serve_warns_and_health_is_degraded_until_a_reload_fixes_it(self):
        # Names written in pipelines.lua win, so a typo there must be caught.
        d = self.mappings_copy([("pipelines.lua", "pipelines.by_line = {}",
                                 'pipelines.by_line = { { pipeline = "Comercial Lines",'
                                 ' words = { "commercial" } }, { pipeline = "Personal Lines" } }')])
        s = self.server(env=self.env(MAPPINGS_DIR=d))
        # (The shipped policy cases fail with these pipelines too: degraded
        # at once for that, then for the preflight's line as well.)
        h = wait_until(lambda: (lambda h: h if h["status"] == "degraded" and any(
            "Comercial Lines" in r for r in h.get("reasons", [])) else None)(self.health(s)),
                       what="/health degraded by the preflight")
        self.assertEqual(s.get("/health").status, 200)  # degraded still serves
        self.assertTrue(any('pipeline "Comercial Lines"' in r and 'did you mean "Commercial Lines"' in r
                            for r in h["reasons"]), h)
        self.assertRegex(s.log_text(), r'WARN.*doctor: ✗ pipeline "Comercial Lines".*Fix: ')
        # It keeps serving webhooks meanwhile.
        r = s.nowcerts(harness.nowcerts_event(data=harness.insured_data()))
        self.assertIn(r.status, (200, 202), r)
        # The mapping is fixed and reloaded: the checks run again.
        (d / "pipelines.lua").write_text((ROOT / "mappings" / "pipelines.lua").read_text())
        s.proc.send_signal(signal.SIGHUP)
        h = wait_until(lambda: (lambda h: h if h["status"] == "healthy" else None)(self.health(s)),
                       what="/health healthy after the reload")
        self.assertNotIn("reasons", h)

    def test_healthy_when_all_checks_pass(self):
        s = self.server(env=self.env())
        wait_until(lambda: "doctor: all" in s.log_text(), what="the start-up checks")
        h = self.health(s)
        self.assertEqual(h["status"], "healthy", h)
        self.assertNotIn("doctor: ✗", s.log_text())

    def test_bad_password_at_start_is_a_warning_not_a_stop(self):
        s = self.server(env=self.env(NOWCERTS_PASSWORD="wrong-password"))
        h = wait_until(lambda: (lambda h: h if h["status"] == "degraded" else None)(self.health(s)),
                       what="/health degraded")
        self.assertTrue(any("NowCerts login as it-user failed" in r for r in h["reasons"]), h)
        self.assertTrue(s.running())


if __name__ == "__main__":
    harness.main()
