"""SPEC section 12, mapping tooling: the target-field lint with a
did-you-mean and source paths no case body has (`ncghl check`, and
`ncghl doctor`), plus the other mapping tools, run as the real binary on
copies of the shipped mappings."""

import json
import re
import shutil

import harness
from harness import IntegTest, ROOT


class ToolTest(IntegTest):
    NEEDS_FAKES = False

    def mappings_copy(self, edits=(), name="mappings"):
        d = self.tmp / name
        shutil.copytree(ROOT / "mappings", d)
        for fname, old, new in edits:
            f = d / fname
            text = f.read_text()
            self.assertIn(old, text, "the shipped %s changed; update this test" % fname)
            f.write_text(text.replace(old, new, 1))
        return d

    def cli(self, *args, **env):
        s = self.server(env=env, start=False)
        return s.cli(*args, timeout=60)


class Lint(ToolTest):
    def test_target_typo_fails_check_with_did_you_mean(self):
        d = self.mappings_copy([("contacts.lua", "postalCode = {", "postalcode = {")])
        p = self.cli("check", MAPPINGS_DIR=d)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        line = [l for l in (d / "contacts.lua").read_text().splitlines()].index(
            [l for l in (d / "contacts.lua").read_text().splitlines() if "postalcode = {" in l][0]) + 1
        self.assertIn('%s/contacts.lua:%d: contacts.insured_to_contact: "postalcode" is not a field of '
                      'a GHL contact (did you mean "postalCode"?)' % (d, line), p.stderr)
        self.assertNotIn("ok:", p.stdout)

    def test_nowcerts_target_typo(self):
        d = self.mappings_copy([("contacts.lua", "zipCode = { \"postalCode\" }", "zipcod = { \"postalCode\" }")])
        p = self.cli("check", MAPPINGS_DIR=d)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn('contacts.contact_to_insured: "zipcod" is not a field of a NowCerts insured '
                      '(did you mean "zipCode"?)', p.stderr)

    def test_source_path_matching_no_case_body_is_a_warning(self):
        d = self.mappings_copy([("contacts.lua", 'email = { "email", "eMail" }', 'email = { "email", "eMail", "eMial" }')])
        p = self.cli("check", MAPPINGS_DIR=d)
        # A warning, not a failure: the cases still pass.
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stderr, r'contacts\.lua:\d+: warning: contacts\.insured_to_contact\.email: '
                                   r'source path "eMial" matches nothing in any test case body')
        self.assertNotIn('"eMail" matches nothing', p.stderr)

    def test_field_lists_are_generated_from_the_reference(self):
        # The shipped lists are exactly what the generator makes of the reference.
        ref = harness.Path("/work/shared/ref")
        if not (ref / "ghl" / "openapi" / "apps" / "contacts.json").exists():
            self.skipTest("reference material not on this machine")
        out = self.tmp / "fields"
        p = harness.subprocess.run(["python3", str(ROOT / "scripts" / "gen-fields.py"), str(ref), str(out)],
                                   capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        for f in sorted((ROOT / "lua" / "ncghl" / "fields").glob("*.lua")):
            self.assertEqual((out / f.name).read_text(), f.read_text(), f.name)


INSURED = {"event_type": "INSURED_INSERT",
           "data": {"firstName": "Rita", "lastName": "Stone", "eMail": "rita@example.com",
                    "commercialName": "Acme Roofing LLC", "zipCode": "33601"}}


class Overlay(ToolTest):
    """An agency's MAPPINGS_DIR holds only what differs from the shipped
    mappings; the rest falls back to them, and each shipped module is
    reachable as defaults.<name>."""

    def overlay(self, files):
        d = self.tmp / "agency"
        d.mkdir()
        for name, text in files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(text)
        return d

    def dry_run(self, mappings, body=INSURED, **env):
        f = self.tmp / "body.json"
        f.write_text(json.dumps(body))
        p = self.cli("map", "--source", "nowcerts", f, MAPPINGS_DIR=mappings, **env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return json.loads(p.stdout)

    def created_contact(self, out):
        [create] = [r for r in out["requests"] if r["method"] == "POST" and r["path"] == "/contacts/"]
        return create["body"]

    def test_an_overlay_changes_one_field_and_keeps_the_rest(self):
        d = self.overlay({"contacts.lua": (
            'local contacts = require "defaults.contacts"\n'
            'contacts.insured_to_contact.companyName = "commercialName"\n'
            'contacts.insured_to_contact.source = require("ncghl.map").const("Agency overlay")\n'
            'return contacts\n')})
        body = self.created_contact(self.dry_run(d))
        # Changed by the overlay ...
        self.assertEqual(body["companyName"], "Acme Roofing LLC")
        self.assertEqual(body["source"], "Agency overlay")
        # ... and the shipped map's other fields, routes and normaliser as they are.
        self.assertEqual(body["email"], "rita@example.com")
        self.assertEqual(body["postalCode"], "33601")
        self.assertEqual(body["tags"], ["nowcerts"])
        # The same body through the shipped mappings themselves.
        body = self.created_contact(self.dry_run(ROOT / "mappings"))
        self.assertNotIn("companyName", body)
        self.assertEqual(body["source"], "NowCerts")

    def test_an_overlay_file_replaces_the_shipped_one_of_its_name(self):
        # routes.lua of its own: INSURED_INSERT is no longer routed.
        d = self.overlay({"routes.lua": "return { nowcerts = {}, ghl = {} }\n"})
        out = self.dry_run(d)
        self.assertEqual(out["outcome"], "ignored", out)
        self.assertEqual(out["requests"], [])

    def test_overlay_cases_run_against_the_overlay(self):
        d = self.overlay({
            "contacts.lua": ('local contacts = require "defaults.contacts"\n'
                             'contacts.insured_to_contact.source = require("ncghl.map").const("Overlay")\n'
                             'return contacts\n'),
            "tests/cases.lua": (
                'return { { name = "overlay source", source = "nowcerts",\n'
                '  body = { event_type = "INSURED_INSERT", data = { firstName = "A", lastName = "B",\n'
                '    email = "ab@example.com" } },\n'
                '  expect = { outcome = "done", requests = { { service = "ghl", method = "POST",\n'
                '    path = "/contacts/", body = { source = "Overlay" } } } } } }\n')})
        p = self.cli("test", d / "tests")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("1 passed, 0 failed", p.stdout)
        p = self.cli("check", MAPPINGS_DIR=d)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_the_commercial_lines_example_is_an_overlay(self):
        ex = ROOT / "examples" / "commercial-lines"
        lua = sorted(f.name for f in ex.glob("*.lua"))
        self.assertEqual(lua, ["contacts.lua", "policies.lua"])
        for f in lua:
            self.assertIn('require "defaults.', (ex / f).read_text())
        p = self.cli("check", MAPPINGS_DIR=ex)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        body = self.created_contact(self.dry_run(ex))
        self.assertEqual(body["companyName"], "Acme Roofing LLC")
        self.assertIn("commercial", body["tags"])

    def test_defaults_dir_is_configurable_and_checked(self):
        other = self.mappings_copy([("contacts.lua", 'source = map.const("NowCerts")',
                                     'source = map.const("Elsewhere")')], name="shipped")
        d = self.overlay({"contacts.lua": 'return require "defaults.contacts"\n'})
        body = self.created_contact(self.dry_run(d, MAPPINGS_DEFAULTS_DIR=other))
        self.assertEqual(body["source"], "Elsewhere")
        p = self.cli("check", MAPPINGS_DIR=d, MAPPINGS_DEFAULTS_DIR=self.tmp / "nowhere")
        self.assertEqual(p.returncode, 1)
        self.assertIn("MAPPINGS_DEFAULTS_DIR", p.stderr)


class Explain(ToolTest):
    def test_map_explain_lists_the_fields_no_map_read(self):
        f = self.tmp / "body.json"
        f.write_text(json.dumps({"event_type": "INSURED_INSERT", "data": {
            "firstName": "Rita", "lastName": "Stone", "eMail": "rita@example.com", "fein": "59-1234567",
            "customerId": "C-1042", "address": {"zip": "33601", "county": "Hillsborough"}}}))
        p = self.cli("map", "--explain", "--source", "nowcerts", f)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        out = json.loads(p.stdout)
        unread = {u["path"]: u["value"] for u in out["unread"]}
        self.assertEqual(unread, {"fein": "59-1234567", "customerId": "C-1042",
                                  "address.county": "Hillsborough"})
        # Without --explain the dry run is as it was.
        p = self.cli("map", "--source", "nowcerts", f)
        self.assertNotIn("unread", json.loads(p.stdout))


class Coverage(ToolTest):
    def test_coverage_names_the_targets_no_case_filled(self):
        d = self.mappings_copy()
        for f in (d / "tests").glob("*.lua"):
            f.unlink()
        (d / "tests" / "one.lua").write_text(
            'return { { name = "only a name and an email", source = "nowcerts",\n'
            '  body = { event_type = "INSURED_INSERT", data = { firstName = "A", lastName = "B",\n'
            '    email = "ab@example.com" } }, expect = { outcome = "done" } } }\n')
        p = self.cli("test", "--coverage", d / "tests")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[-1], "1 passed, 0 failed")
        cov = {l.split(":")[0]: l for l in lines if l.startswith("coverage ")}
        to_contact = cov["coverage contacts.insured_to_contact"]
        m = re.search(r"(\d+) of (\d+) targets filled by a case; never: (.*)$", to_contact)
        self.assertTrue(m, to_contact)
        never = m.group(3).split(", ")
        for t in ("address1", "city", "phone", "postalCode", "state"):
            self.assertIn(t, never)
        for t in ("email", "firstName", "lastName", "source", "tags"):
            self.assertNotIn(t, never)
        # No case went the other way: nothing of that map was exercised.
        self.assertRegex(cov["coverage contacts.contact_to_insured"], r": 0 of \d+ targets filled")
        # Without --coverage, no coverage lines.
        p = self.cli("test", d / "tests")
        self.assertNotIn("coverage ", p.stdout)


class AsCase(IntegTest):
    def test_a_stored_event_becomes_a_case_that_passes(self):
        s = self.server()
        ev = harness.nowcerts_event("INSURED_INSERT", harness.insured_data(email="asc@example.com"))
        r = s.nowcerts(ev)
        eid = r.json()["event_id"]
        s.wait_event(eid)
        p = s.cli("events", "--as-case", eid)
        self.assertEqual(p.returncode, 0, p.stderr)
        text = p.stdout
        self.assertIn('source = "nowcerts"', text)
        self.assertIn('email = "asc@example.com"', text)
        self.assertIn('outcome = "done"', text)
        self.assertIn('{ service = "ghl", method = "POST", path = "/contacts/search" }', text)
        self.assertIn('{ service = "ghl", method = "POST", path = "/contacts/" }', text)
        # Saved under a mappings directory's tests, it runs as a case and passes.
        d = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", d)
        case = d / "tests" / "from_event.lua"
        case.write_text(text)
        p = s.cli("test", case)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(p.stdout.splitlines()[-1], "1 passed, 0 failed")

    def test_unknown_event(self):
        s = self.server()
        p = s.cli("events", "--as-case", "nowcerts_" + "0" * 64)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no event nowcerts_" + "0" * 64, p.stderr)


class LintInDoctor(IntegTest):
    def test_doctor_passes_the_shipped_targets(self):
        p = self.server(start=False).cli("doctor", timeout=60)
        self.assertIn("✓ map targets: every field the maps write is one its upstream accepts", p.stdout)
        self.assertNotIn("is not a field of", p.stdout + p.stderr)

    def test_doctor_reports_a_wrong_target(self):
        d = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", d)
        f = d / "policies.lua"
        f.write_text(f.read_text().replace("monetaryValue = map.number", "monetaryvalue = map.number", 1))
        s = self.server(env={"MAPPINGS_DIR": d}, start=False)
        p = s.cli("doctor", timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn('✗ policies.opportunity: "monetaryvalue" is not a field of a GHL opportunity '
                      '(did you mean "monetaryValue"?). Fix: correct the field name in policies.lua', p.stdout)


if __name__ == "__main__":
    harness.main()
