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
    def test_shipped_mappings_have_no_wrong_target(self):
        p = self.cli("check")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertNotRegex(p.stderr, r"is not a field of")

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


class LintInDoctor(IntegTest):
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
