"""SPEC section 5: webhook signatures. GHL's X-GHL-Signature (Ed25519) and
legacy x-wh-signature (RSA-SHA256) over the raw body, checked against public
keys configured with GHL_WEBHOOK_ED25519_KEY / GHL_WEBHOOK_RSA_KEY (here key
pairs this test makes with the openssl command line), the 5-minute replay
window on `timestamp`, and our own X-NCGHL-Signature HMAC on the NowCerts
routes when NOWCERTS_WEBHOOK_SECRET is set. A refused request stores
nothing."""

import base64
import datetime
import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, ghl_contact, ghl_event, nowcerts_event  # noqa: E402

OPENSSL = shutil.which("openssl")


def openssl(*args, data=None):
    p = subprocess.run([OPENSSL] + [str(a) for a in args], input=data, capture_output=True,
                       timeout=60)
    if p.returncode != 0:
        raise AssertionError("openssl %s failed: %s" % (" ".join(map(str, args)),
                                                        p.stderr.decode("utf-8", "replace")))
    return p.stdout


class Keys:
    """Ed25519 and RSA key pairs in a directory: private keys to sign with,
    public PEMs for ncghl."""

    def __init__(self, d):
        self.dir = Path(d)
        self.ed_key, self.ed_pub = self.dir / "ed.key", self.dir / "ed.pub.pem"
        self.rsa_key, self.rsa_pub = self.dir / "rsa.key", self.dir / "rsa.pub.pem"
        self.other_key = self.dir / "other-ed.key"
        openssl("genpkey", "-algorithm", "ed25519", "-out", self.ed_key)
        openssl("genpkey", "-algorithm", "ed25519", "-out", self.other_key)
        openssl("pkey", "-in", self.ed_key, "-pubout", "-out", self.ed_pub)
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                "-out", self.rsa_key)
        openssl("pkey", "-in", self.rsa_key, "-pubout", "-out", self.rsa_pub)

    def _body_file(self, body):
        f = self.dir / ("body-%s.bin" % harness.uniq())
        f.write_bytes(body)
        return f

    def ed25519(self, body, key=None):
        """X-GHL-Signature: base64 of the Ed25519 signature of the raw bytes."""
        f = self._body_file(body)
        sig = openssl("pkeyutl", "-sign", "-inkey", key or self.ed_key, "-rawin", "-in", f)
        return base64.b64encode(sig).decode()

    def rsa(self, body):
        """x-wh-signature: base64 of RSA-SHA256 (PKCS#1 v1.5) of the raw bytes."""
        f = self._body_file(body)
        sig = openssl("dgst", "-sha256", "-sign", self.rsa_key, f)
        return base64.b64encode(sig).decode()


def now_iso(delta_s=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=delta_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def raw(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


class SignedTest(IntegTest):
    @classmethod
    def setUpClass(cls):
        if OPENSSL is None:
            raise AssertionError("the openssl command line is needed to make test keys")
        super().setUpClass()
        cls.keys = Keys(tempfile.mkdtemp(prefix="keys-", dir=cls._class_tmp))

    def stored_ids(self, s):
        return {e["id"] for e in s.events("--limit", "100000")}

    def assert_refused(self, s, r, why):
        body = self.assertJSONAnswer(r, 401)
        self.assertIsInstance(body.get("detail"), str, body)
        self.assertIn(why.lower(), body["detail"].lower(), body)


class GhlSignatures(SignedTest):
    def ghl_server(self):
        return self.server({"GHL_WEBHOOK_VERIFY": "true",
                            "GHL_WEBHOOK_ED25519_KEY": self.keys.ed_pub,
                            "GHL_WEBHOOK_RSA_KEY": self.keys.rsa_pub})

    def body(self, **kw):
        ev = ghl_event("ContactCreate", ghl_contact(**kw))
        ev["timestamp"] = now_iso()
        return raw(ev)

    def test_ed25519_signed_body_passes_and_tampered_or_foreign_fails(self):
        s = self.ghl_server()
        good = self.body()
        r = s.ghl(good, headers={"X-GHL-Signature": self.keys.ed25519(good)})
        self.assertEqual(r.status, 200, r)
        self.assertEventId(r.json()["event_id"], "ghl")

        other = self.body()
        sig = self.keys.ed25519(other)
        tampered = other.replace(b'"firstName":"John"', b'"firstName":"Johm"')
        self.assertNotEqual(tampered, other)
        self.assert_refused(s, s.ghl(tampered, headers={"X-GHL-Signature": sig}), "invalid")
        # Signed by a key that is not the configured one.
        foreign = self.keys.ed25519(other, key=self.keys.other_key)
        self.assert_refused(s, s.ghl(other, headers={"X-GHL-Signature": foreign}), "invalid")
        self.assert_refused(s, s.ghl(other, headers={"X-GHL-Signature": "bm90IGEgc2lnbmF0dXJl"}),
                            "invalid")
        self.assertEqual(self.stored_ids(s), {r.json()["event_id"]},
                         "a refused webhook was stored")

    def test_missing_signature_and_na_are_refused(self):
        s = self.ghl_server()
        body = self.body()
        self.assert_refused(s, s.ghl(body), "missing")
        self.assert_refused(s, s.ghl(body, headers={"X-GHL-Signature": "N/A"}), "missing")
        self.assert_refused(s, s.ghl(body, headers={"X-GHL-Signature": ""}), "missing")
        self.assertEqual(self.stored_ids(s), set())

    def test_legacy_rsa_signature(self):
        s = self.ghl_server()
        body = self.body()
        sig = self.keys.rsa(body)
        self.assert_refused(s, s.ghl(body + b" ", headers={"x-wh-signature": sig}), "invalid")
        # "N/A" in X-GHL-Signature counts as absent, so the legacy header decides.
        r = s.ghl(body, headers={"X-GHL-Signature": "N/A", "x-wh-signature": sig})
        self.assertEqual(r.status, 200, r)
        # A present X-GHL-Signature wins: a bad one is not rescued by a good legacy one.
        other = self.body()
        self.assert_refused(s, s.ghl(other, headers={"X-GHL-Signature": self.keys.ed25519(body),
                                                     "x-wh-signature": self.keys.rsa(other)}),
                            "invalid")

    def test_old_timestamp_is_a_replay(self):
        s = self.ghl_server()
        ev = ghl_event("ContactCreate", ghl_contact())
        ev["timestamp"] = now_iso(-600)
        body = raw(ev)
        r = s.ghl(body, headers={"X-GHL-Signature": self.keys.ed25519(body)})
        self.assert_refused(s, r, "older than 5 minutes")
        self.assertEqual(self.stored_ids(s), set())
        self.assertEqual(self.contacts_with_email(ev["email"]), [])
        # The same event with a fresh timestamp goes through.
        ev["timestamp"] = now_iso(-5)
        body = raw(ev)
        r = s.ghl(body, headers={"X-GHL-Signature": self.keys.ed25519(body)})
        self.assertEqual(r.status, 200, r)

    def test_refusals_are_counted(self):
        s = self.ghl_server()
        self.assert_refused(s, s.ghl(self.body()), "missing")
        text = s.get("/metrics").text
        self.assertRegex(text, r'(?m)^ncghl_webhook_requests_total\{source="ghl",status="401"\} 1$')


class NowcertsHmac(SignedTest):
    SECRET = "relay-secret-" + harness.uniq(12)

    def hmac_hex(self, body):
        return hmac.new(self.SECRET.encode(), body, hashlib.sha256).hexdigest()

    def test_relay_needs_the_hmac_when_the_secret_is_set(self):
        s = self.server({"NOWCERTS_WEBHOOK_SECRET": self.SECRET})
        body = raw(nowcerts_event("FOO_BAR", {"n": harness.uniq()}))
        self.assert_refused(s, s.nowcerts(body), "missing")
        self.assert_refused(s, s.nowcerts(body, headers={"X-NCGHL-Signature": "sha256=" + "0" * 64}),
                            "invalid")
        sig = "sha256=" + self.hmac_hex(body)
        self.assert_refused(s, s.nowcerts(body + b"\n", headers={"X-NCGHL-Signature": sig}),
                            "invalid")
        wrong = "sha256=" + hmac.new(b"another secret", body, hashlib.sha256).hexdigest()
        self.assert_refused(s, s.nowcerts(body, headers={"X-NCGHL-Signature": wrong}), "invalid")
        self.assertEqual(self.stored_ids(s), set())

        r = s.nowcerts(body, headers={"X-NCGHL-Signature": sig})
        self.assertEqual(r.status, 200, r)
        # The bare hex, in capitals too, is accepted.
        body2 = raw(nowcerts_event("FOO_BAR", {"n": harness.uniq()}))
        r = s.nowcerts(body2, headers={"X-NCGHL-Signature": self.hmac_hex(body2).upper()})
        self.assertEqual(r.status, 200, r)

    def test_the_documented_openssl_command_signs(self):
        """docs/operations.md signs with
        `openssl dgst -sha256 -hmac "$SECRET" -r body.json | cut -d' ' -f1`."""
        s = self.server({"NOWCERTS_WEBHOOK_SECRET": self.SECRET})
        body = raw(nowcerts_event("FOO_BAR", {"n": harness.uniq()}))
        f = self.tmp / "body.json"
        f.write_bytes(body)
        out = openssl("dgst", "-sha256", "-hmac", self.SECRET, "-r", f).decode()
        hexsig = out.split(" ")[0].strip()
        self.assertEqual(hexsig, self.hmac_hex(body))
        r = s.nowcerts(body, headers={"X-NCGHL-Signature": "sha256=" + hexsig})
        self.assertEqual(r.status, 200, r)

    def test_rest_hooks_need_it_too(self):
        s = self.server({"NOWCERTS_WEBHOOK_SECRET": self.SECRET})
        body = raw({"database_id": harness.uniq(), "first_name": "Ann"})
        path = "/api/v1/webhooks/nowcerts?hook=CreateInsured"
        self.assert_refused(s, s.post(path, body), "missing")
        r = s.post(path, body, {"X-NCGHL-Signature": "sha256=" + self.hmac_hex(body)})
        self.assertIn(r.status, (200, 202), r)

    def test_without_a_secret_unsigned_is_accepted(self):
        s = self.server({"NOWCERTS_WEBHOOK_SECRET": None})
        r = s.nowcerts(nowcerts_event("FOO_BAR", {"n": harness.uniq()}))
        self.assertEqual(r.status, 200, r)

    def test_the_secret_does_not_guard_the_other_routes(self):
        s = self.server({"NOWCERTS_WEBHOOK_SECRET": self.SECRET})
        r = s.ghl(ghl_event("FooBar", ghl_contact()))
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    harness.main()
