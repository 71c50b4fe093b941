"""SPEC section 13: GHL's Marketplace install (OAuth authorization code for a
location) adds or refreshes the GHL tokens without a restart
(docs/install.md).

The fake GHL's POST /oauth/token is as strict as ref/ghl/NOTES.md says the
real one is: form body only, client id and secret checked, a code works once
and briefly, and an install again revokes the location's earlier tokens.
Only the static token given to the fake (--ghl-token) and tokens it issued
are accepted, so a call made with any other token fails."""

import json
import socket
import threading
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, nowcerts_event, insured_data, uniq  # noqa: E402

STATIC = "it-static-" + uniq(12)
CLIENT_ID = "it-install-client-" + uniq(8)
CLIENT_SECRET = "it-install-secret-" + uniq(16)
LOCATION = "it-location-1"
CREATE_CONTACT = r"^/contacts/?$"


class InstallTest(IntegTest):
    FAKE_ARGS = ("--ghl-token", STATIC)

    def setUp(self):
        super().setUp()
        self.fakes.config("ghl", oauth_client_id=CLIENT_ID, oauth_client_secret=CLIENT_SECRET)
        self.secrets = [CLIENT_SECRET]

    def env(self, **extra):
        """OAuth configured, no token yet: a deployment waiting for its install."""
        e = {"GHL_CLIENT_ID": CLIENT_ID, "GHL_CLIENT_SECRET": CLIENT_SECRET, "GHL_API_KEY": None,
             "GHL_REFRESH_TOKEN": None, "GHL_LOCATION_ID": LOCATION}
        e.update(extra)
        return e

    def code(self, location=LOCATION, **extra):
        c = self.fakes.ghl_oauth_code(location, **extra)
        self.secrets.append(c)
        return c

    def callback(self, s, code):
        return s.get("/oauth/callback?code=" + urllib.parse.quote(code))

    def assertPage(self, r, status, *words):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.content_type.startswith("text/html"), r.content_type)
        for w in words:
            self.assertIn(w, r.text, r.text)

    def stored(self, s):
        """The GHL OAuth tokens in the store (kv ghl_oauth), None if none."""
        try:
            rows = s.db_query("SELECT value FROM kv WHERE key = 'ghl_oauth'")
        except harness.DBError:
            rows = []
        if rows:
            v = json.loads(rows[0][0])
            self.secrets += [v["access_token"], v["refresh_token"]]
            return v
        return None

    def token_requests(self):
        return [harness.req_body(r) for r in self.fakes.calls("ghl", "POST", r"^/oauth/token$")]

    def sync_one(self, s):
        """A NowCerts insured becomes a GHL contact; returns the create call."""
        email = "install.%s@example.com" % uniq()
        before = len(self.fakes.calls("ghl", "POST", CREATE_CONTACT))
        ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT", insured_data(email=email))), 200)
        self.assertEqual(ans["data"].get("action"), "created", ans)
        self.assertEqual(len(self.contacts_with_email(email)), 1)
        creates = self.fakes.calls("ghl", "POST", CREATE_CONTACT)
        self.assertEqual(len(creates), before + 1, creates)
        return creates[-1]

    def assertNoSecretsLogged(self, *servers):
        for s in servers:
            text = s.log_text() + s.stderr_text()
            for secret in self.secrets:
                self.assertNotIn(secret, text, "a secret reached the log")


class Install(InstallTest):
    def test_install_then_sync_and_refresh_use_the_installed_tokens(self):
        s = self.server(self.env())
        code = self.code()
        self.assertPage(self.callback(s, code), 200, "Installed", LOCATION)
        # Exactly the fields NOTES §1 names, form-encoded.
        reqs = self.token_requests()
        self.assertEqual(reqs, [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                 "grant_type": "authorization_code", "code": code,
                                 "user_type": "Location"}])
        first = self.stored(s)
        self.assertIsNotNone(first, "the installed tokens are not in the store")

        # The very next GHL call carries the installed access token.
        create = self.sync_one(s)
        self.assertEqual(create["headers"]["authorization"], "Bearer " + first["access_token"])

        # A day later the access token expires: the refresh presents the
        # installed refresh token, and its successor is stored.
        self.assertEqual(self.fakes.ghl_oauth_expire(LOCATION), 1)
        create = self.sync_one(s)
        reqs = self.token_requests()
        self.assertEqual(len(reqs), 2, reqs)
        self.assertEqual(reqs[1].get("grant_type"), "refresh_token")
        self.assertEqual(reqs[1].get("refresh_token"), first["refresh_token"])
        second = self.stored(s)
        self.assertNotEqual(second["refresh_token"], first["refresh_token"])
        self.assertEqual(create["headers"]["authorization"], "Bearer " + second["access_token"])
        s.stop()
        self.assertNoSecretsLogged(s)

    def test_a_restart_keeps_the_installed_tokens(self):
        s = self.server(self.env())
        self.assertPage(self.callback(s, self.code()), 200, "Installed")
        installed = self.stored(s)
        s.stop()
        s2 = self.server(self.env(), workdir=self.tmp)
        create = self.sync_one(s2)
        self.assertEqual(create["headers"]["authorization"], "Bearer " + installed["access_token"])
        self.assertEqual(len(self.token_requests()), 1, "a token request after the restart")
        s2.stop()
        self.assertNoSecretsLogged(s, s2)

    def test_installing_again_replaces_the_tokens_without_a_restart(self):
        # Running on a static token first; then installed twice.
        s = self.server(self.env(GHL_API_KEY=STATIC))
        create = self.sync_one(s)
        self.assertEqual(create["headers"]["authorization"], "Bearer " + STATIC)
        self.assertPage(self.callback(s, self.code()), 200, "Installed")
        first = self.stored(s)
        self.assertEqual(self.sync_one(s)["headers"]["authorization"], "Bearer " + first["access_token"])
        # The fake revokes the first install's tokens when the second happens.
        self.assertPage(self.callback(s, self.code()), 200, "Installed")
        second = self.stored(s)
        self.assertNotEqual(second["access_token"], first["access_token"])
        self.assertEqual(self.sync_one(s)["headers"]["authorization"], "Bearer " + second["access_token"])
        s.stop()
        self.assertNoSecretsLogged(s)

    def test_events_before_the_install_wait_for_it(self):
        auth_token = "adm-" + uniq(16)
        s = self.server(self.env(ADMIN_TOKEN=auth_token, WEBHOOK_WAIT_MS=200, MAX_RETRIES=0))
        ans = s.nowcerts(nowcerts_event("INSURED_INSERT"))
        self.assertIn(ans.status, (202, 503), ans)
        eid = ans.json()["event_id"]
        ev = s.wait_event(eid, ("retry_wait", "dead"))
        self.assertEqual(ev["status"], "retry_wait", ev)
        self.assertIn("not installed", ev.get("last_error") or "", ev)
        self.assertEqual(self.fakes.calls("ghl", "POST", CREATE_CONTACT), [])
        self.assertPage(self.callback(s, self.code()), 200, "Installed")
        r = s.post("/api/v1/events/%s/replay" % eid, {}, {"Authorization": "Bearer " + auth_token})
        self.assertIn(r.status, (200, 202), r)
        self.assertEqual(s.wait_event(eid)["status"], "done")
        installed = self.stored(s)
        creates = self.fakes.calls("ghl", "POST", CREATE_CONTACT)
        self.assertEqual([c["headers"]["authorization"] for c in creates],
                         ["Bearer " + installed["access_token"]])

    def test_doctor_says_to_install_then_uses_the_installed_tokens(self):
        s = self.server(self.env())
        p = s.cli("doctor", timeout=60)
        lines = [l for l in p.stdout.splitlines() if "GHL token" in l]
        self.assertTrue(lines and lines[0].startswith("✗"), p.stdout)
        self.assertIn("install the Marketplace app", lines[0])
        self.assertPage(self.callback(s, self.code()), 200, "Installed")
        installed = self.stored(s)
        p = s.cli("doctor", timeout=60)
        self.assertIn("✓ GHL token works for location " + LOCATION, p.stdout)
        # It used the stored access token; nothing was refreshed.
        self.assertEqual(len(self.token_requests()), 1)
        doctor_calls = self.fakes.calls("ghl", "GET", r"^/locations/" + LOCATION + "$")
        self.assertEqual(doctor_calls[-1]["headers"]["authorization"],
                         "Bearer " + installed["access_token"])
        self.assertNotIn(installed["access_token"], p.stdout + p.stderr)

    def test_redirect_uri_and_the_install_link(self):
        redirect = "https://ncghl.example.test/oauth/callback"
        s = self.server(self.env(GHL_REDIRECT_URI=redirect,
                                 GHL_OAUTH_SCOPES="contacts.readonly contacts.write"))
        r = s.get("/oauth/install")
        self.assertEqual(r.status, 302, r)
        loc = urllib.parse.urlsplit(r.headers["location"])
        self.assertEqual((loc.scheme, loc.netloc, loc.path),
                         ("https", "marketplace.gohighlevel.com", "/v2/oauth/chooselocation"))
        self.assertEqual(urllib.parse.parse_qs(loc.query),
                         {"response_type": ["code"], "redirect_uri": [redirect],
                          "client_id": [CLIENT_ID], "scope": ["contacts.readonly contacts.write"]})
        # A code issued for that redirect URI is exchanged with it.
        code = self.code(redirect_uri=redirect)
        self.assertPage(self.callback(s, code), 200, "Installed")
        self.assertEqual(self.token_requests()[0].get("redirect_uri"), redirect)


class Interrupted(InstallTest):
    def test_a_browser_that_leaves_early_still_gets_its_install(self):
        # GHL may already have spent the code: the exchange goes on and its
        # tokens are used even though nobody is left to see the page.
        s = self.server(self.env())
        self.fakes.fault("ghl", path="^/oauth/token", count=1, latency_ms=1500)
        with self.assertRaises((socket.timeout, TimeoutError)):
            harness.http("GET", "%s/oauth/callback?code=%s" % (s.base, self.code()), timeout=0.3)
        harness.wait_until(lambda: self.stored(s) is not None, what="the install to be stored")
        installed = self.stored(s)
        self.assertEqual(self.sync_one(s)["headers"]["authorization"],
                         "Bearer " + installed["access_token"])
        s.stop()
        self.assertNoSecretsLogged(s)

    def test_a_graceful_stop_waits_for_an_exchange_in_flight(self):
        s = self.server(self.env())
        self.fakes.fault("ghl", path="^/oauth/token", count=1, latency_ms=1000)
        got = {}

        def browse():
            try:
                got["r"] = self.callback(s, self.code())
            except (OSError, harness.httplib.HTTPException) as e:
                got["error"] = e
        t = threading.Thread(target=browse)
        t.start()
        harness.wait_until(lambda: len(self.fakes.calls("ghl", "POST", r"^/oauth/token$")) == 1,
                           what="the exchange to reach GHL")
        self.assertEqual(s.stop(), 0)
        t.join(30)
        self.assertIn("r", got, got)
        self.assertPage(got["r"], 200, "Installed")
        self.assertIsNotNone(self.stored(s))
        self.assertNoSecretsLogged(s)


class Refused(InstallTest):
    def test_a_code_used_twice_keeps_the_installed_tokens(self):
        s = self.server(self.env())
        code = self.code()
        self.assertPage(self.callback(s, code), 200, "Installed")
        installed = self.stored(s)
        self.assertPage(self.callback(s, code), 400, "refused the authorization code",
                        "Invalid grant")
        self.assertEqual(self.stored(s), installed)
        self.assertEqual(self.sync_one(s)["headers"]["authorization"],
                         "Bearer " + installed["access_token"])
        s.stop()
        self.assertNoSecretsLogged(s)

    def test_a_token_endpoint_that_fails_or_lies_stores_nothing(self):
        s = self.server(self.env(GHL_API_KEY=STATIC))
        answers = {
            "not JSON": dict(status=200, raw_body="<html>upstream proxy error</html>"),
            "no access_token": dict(status=200, raw_body=json.dumps(
                {"refresh_token": "rt-" + uniq(), "locationId": LOCATION, "userType": "Location"})),
            "no refresh_token": dict(status=200, raw_body=json.dumps(
                {"access_token": "at-" + uniq(), "locationId": LOCATION, "userType": "Location"})),
            "no locationId": dict(status=200, raw_body=json.dumps(
                {"access_token": "at-" + uniq(), "refresh_token": "rt-" + uniq(),
                 "userType": "Location"})),
            "503": dict(status=503),
        }
        for what, fault in answers.items():
            with self.subTest(what=what):
                self.fakes.fault("ghl", path="^/oauth/token", count=1, **fault)
                self.assertPage(self.callback(s, "code-" + uniq()), 502, "nothing was stored")
                self.assertIsNone(self.stored(s))
        # Still on the static token.
        self.assertEqual(self.sync_one(s)["headers"]["authorization"], "Bearer " + STATIC)

    def test_an_agency_install_is_refused(self):
        s = self.server(self.env(GHL_API_KEY=STATIC))
        body = {"access_token": "at-" + uniq(), "refresh_token": "rt-" + uniq(), "expires_in": 86399,
                "userType": "Company", "companyId": "co-1", "isBulkInstallation": True,
                "approvedLocations": [LOCATION, "other-location"], "userId": "u-1"}
        self.secrets += [body["access_token"], body["refresh_token"]]
        self.fakes.fault("ghl", path="^/oauth/token", count=1, status=200, raw_body=json.dumps(body))
        self.assertPage(self.callback(s, "code-" + uniq()), 400, "Install for a single location")
        self.assertIsNone(self.stored(s))
        s.stop()
        self.assertNoSecretsLogged(s)

    def test_another_location_is_refused_in_single_agency_mode(self):
        s = self.server(self.env())
        self.assertPage(self.callback(s, self.code()), 200, "Installed")
        installed = self.stored(s)
        self.assertPage(self.callback(s, self.code("other-location")), 403, "other-location",
                        "not served")
        self.assertEqual(self.stored(s), installed)
        self.assertEqual(self.sync_one(s)["headers"]["authorization"],
                         "Bearer " + installed["access_token"])

    def test_without_app_credentials_the_routes_say_so(self):
        s = self.server({"GHL_API_KEY": STATIC})
        for path in ("/oauth/callback?code=" + uniq(), "/oauth/install"):
            self.assertPage(s.get(path), 503, "GHL_CLIENT_ID", "GHL_CLIENT_SECRET")
        self.assertEqual(self.token_requests(), [])

    def test_missing_code_wrong_method_and_rate_limit(self):
        s = self.server(self.env(RATE_LIMIT_PER_MINUTE=3))
        self.assertPage(s.get("/oauth/callback"), 400, "Missing authorization code")
        self.assertPage(s.get("/oauth/callback?error=access_denied"), 400, "access_denied")
        r = s.post("/oauth/callback?code=x", {})
        self.assertEqual(r.status, 405, r)
        self.assertEqual(r.headers.get("allow"), "GET")
        r = s.get("/oauth/callback?code=" + uniq())
        self.assertEqual(r.status, 429, r)
        self.assertIn("retry-after", r.headers)
        self.assertEqual(self.token_requests(), [])
        self.assertIsNone(self.stored(s))


if __name__ == "__main__":
    harness.main()
