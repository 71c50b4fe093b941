"""SPEC section 11, tokens: a rotated GHL OAuth refresh token is stored (in
the store, not in a log) and survives a restart; a token endpoint that fails
(5xx, time-out, garbage) or refuses the refresh token (invalid_grant, as
after an uninstall) delays events (retry_wait), never kills them.

The fake GHL's own /oauth/token starts from an install (test_install.py), so
GHL is mostly reached through OAuthGHL below: it answers /oauth/token as GHL
does (form-encoded refresh grant, a refresh token is good once and rotates)
and passes every other request to the fake, refusing any bearer it did not
issue. RefusedRefreshToken also uses the fake's own install and revocation."""

import http.client
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, insured_data, nowcerts_event, uniq  # noqa: E402

CLIENT_ID = "it-client-" + uniq(8)
CLIENT_SECRET = "it-secret-" + uniq(16)


class OAuthGHL:
    def __init__(self, target_base, seed):
        self.target = urllib.parse.urlsplit(target_base)
        self.lock = threading.Lock()
        self.valid_refresh = {seed}
        self.issued_access = set()
        self.token_requests = []  # the refresh tokens presented, in order
        self.faults = []          # "503", "hang" or "garbage", one per token request
        self.unhang = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _answer(self, status, body, ctype="application/json", headers=()):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _token(self):
                form = dict(urllib.parse.parse_qsl(self._body().decode()))
                with proxy.lock:
                    proxy.token_requests.append(form.get("refresh_token"))
                    fault = proxy.faults.pop(0) if proxy.faults else None
                if fault == "503":
                    return self._answer(503, {"error": "temporarily_unavailable"})
                if fault == "hang":
                    proxy.unhang.wait(30)
                    return self._answer(503, {"error": "too late"})
                if fault == "garbage":
                    return self._answer(200, b"<html>upstream proxy error</html>", "text/html")
                if (form.get("grant_type") != "refresh_token" or form.get("client_id") != CLIENT_ID
                        or form.get("client_secret") != CLIENT_SECRET):
                    return self._answer(401, {"error": "invalid_client"})
                with proxy.lock:
                    if form.get("refresh_token") not in proxy.valid_refresh:
                        return self._answer(400, {"error": "invalid_grant",
                                                  "error_description": "refresh token used or unknown"})
                    proxy.valid_refresh.discard(form["refresh_token"])
                    access, refresh = "at-" + uniq(24), "rt-" + uniq(24)
                    proxy.issued_access.add(access)
                    proxy.valid_refresh.add(refresh)
                return self._answer(200, {"access_token": access, "refresh_token": refresh,
                                          "token_type": "Bearer", "expires_in": 86399,
                                          "userType": "Location", "locationId": "it-location-1"})

            def _relay(self):
                if self.path.split("?")[0] == "/oauth/token" and self.command == "POST":
                    return self._token()
                body = self._body()
                auth = self.headers.get("Authorization") or ""
                with proxy.lock:
                    known = auth[7:] in proxy.issued_access if auth.lower().startswith("bearer ") else False
                if not known:
                    return self._answer(401, {"statusCode": 401, "message": "Invalid JWT"})
                conn = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=30)
                try:
                    hdrs = {k: v for k, v in self.headers.items()
                            if k.lower() not in ("host", "content-length", "connection")}
                    conn.request(self.command, self.path, body=body or None, headers=hdrs)
                    r = conn.getresponse()
                    data = r.read()
                    self._answer(r.status, data, r.getheader("Content-Type") or "application/json")
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = _relay

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None
        self.base = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.unhang.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class TokenTest(IntegTest):
    def oauth(self, seed=None):
        seed = seed or "rt-seed-" + uniq(16)
        proxy = OAuthGHL(self.fakes.ghl_base, seed)
        self.addCleanup(proxy.close)
        env = {"GHL_BASE_URL": proxy.base, "GHL_API_KEY": None, "GHL_CLIENT_ID": CLIENT_ID,
               "GHL_CLIENT_SECRET": CLIENT_SECRET, "GHL_REFRESH_TOKEN": seed}
        return proxy, env

    def admin(self, env):
        env["ADMIN_TOKEN"] = "adm-" + uniq(16)
        return {"Authorization": "Bearer " + env["ADMIN_TOKEN"]}

    def replay(self, s, auth, eid):
        r = s.post("/api/v1/events/%s/replay" % eid, {}, auth)
        self.assertIn(r.status, (200, 202), r)
        return s.wait_event(eid)


class RotatedRefreshToken(TokenTest):
    def test_the_rotated_refresh_token_survives_a_restart(self):
        proxy, env = self.oauth()
        seed = env["GHL_REFRESH_TOKEN"]
        s = self.server(env)
        ok = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 200)
        self.assertEqual(ok["data"].get("action"), "created", ok)
        self.assertEqual(proxy.token_requests, [seed])
        self.assertNotIn(seed, proxy.valid_refresh, "the seed should now be used up")
        s.stop()
        log = s.log_text() + s.stderr_text()
        for rt in proxy.valid_refresh:
            self.assertNotIn(rt, log, "a refresh token reached the log")
        for at in proxy.issued_access:
            self.assertNotIn(at, log, "an access token reached the log")

        # The same configuration (the original, used-up seed) and the same store.
        s2 = self.server(env, workdir=self.tmp)
        ok = self.assertJSONAnswer(s2.nowcerts(nowcerts_event("INSURED_INSERT")), 200)
        self.assertEqual(ok["data"].get("action"), "created", ok)
        self.assertEqual(proxy.token_requests.count(seed), 1, "the used-up seed was sent again")

        # Forced refresh (the access token refused): the stored refresh token
        # is the one presented, and its successor is stored in turn.
        with proxy.lock:
            proxy.issued_access.clear()
        ok = self.assertJSONAnswer(s2.nowcerts(nowcerts_event("INSURED_INSERT")), 200)
        self.assertEqual(ok["data"].get("action"), "created", ok)
        self.assertEqual(len(proxy.token_requests), 2, proxy.token_requests)
        s2.stop()
        s3 = self.server(env, workdir=self.tmp)
        with proxy.lock:
            proxy.issued_access.clear()
        ok = self.assertJSONAnswer(s3.nowcerts(nowcerts_event("INSURED_INSERT")), 200)
        self.assertEqual(ok["data"].get("action"), "created", ok)
        self.assertEqual(len(proxy.token_requests), 3, proxy.token_requests)
        self.assertEqual(proxy.token_requests.count(seed), 1)
        s3.stop()
        stored = json.loads(s3.db_query("SELECT value FROM kv WHERE key = 'ghl_oauth'")[0][0])
        self.assertIn(stored["refresh_token"], proxy.valid_refresh)
        for text in (s2.log_text(), s3.log_text()):
            self.assertNotIn(stored["refresh_token"], text)

        # A new seed (the app installed again) wins over what was stored.
        new_seed = "rt-new-seed-" + uniq(16)
        with proxy.lock:
            proxy.valid_refresh.add(new_seed)
            proxy.issued_access.clear()
        env["GHL_REFRESH_TOKEN"] = new_seed
        s4 = self.server(env, workdir=self.tmp)
        ok = self.assertJSONAnswer(s4.nowcerts(nowcerts_event("INSURED_INSERT")), 200)
        self.assertEqual(ok["data"].get("action"), "created", ok)
        self.assertEqual(proxy.token_requests[-1], new_seed)


class TokenEndpointFailures(TokenTest):
    """Each failure is injected once: the event waits (retry_wait), and a
    replay once the endpoint is back finishes it."""

    KINDS = ("503", "hang", "garbage")

    def _nowcerts_fault(self, kind):
        path = r"/token$"
        if kind == "503":
            self.fakes.fault("nowcerts", status=503, count=1, path=path, method="POST")
        elif kind == "hang":
            self.fakes.fault("nowcerts", hang=True, count=1, path=path, method="POST")
        else:
            self.fakes.fault("nowcerts", status=200, count=1, path=path, method="POST",
                             body="<html>upstream proxy error</html>")

    def test_nowcerts_token_endpoint_failures_delay_events(self):
        for kind in self.KINDS:
            with self.subTest(kind=kind):
                self.fakes.reset()
                env = {"MAX_RETRIES": 0, "UPSTREAM_TIMEOUT": 1, "WEBHOOK_WAIT_MS": 200}
                auth = self.admin(env)
                s = self.server(env, workdir=self.tmp / ("nc-" + kind))
                self._nowcerts_fault(kind)
                contact = self.seed_contact()
                ans = s.ghl(harness.ghl_event("ContactCreate", contact))
                self.assertIn(ans.status, (202, 503), ans)
                eid = ans.json()["event_id"]
                ev = s.wait_event(eid, ("retry_wait", "dead"))
                self.assertEqual(ev["status"], "retry_wait", ev)
                self.assertIn("token", ev.get("last_error") or "", ev)
                self.assertTrue(s.running())
                ev = self.replay(s, auth, eid)
                self.assertEqual(ev["status"], "done", ev)
                s.stop()

    def test_ghl_oauth_endpoint_failures_delay_events(self):
        for kind in self.KINDS:
            with self.subTest(kind=kind):
                proxy, env = self.oauth()
                env.update({"MAX_RETRIES": 0, "UPSTREAM_TIMEOUT": 1, "WEBHOOK_WAIT_MS": 200})
                auth = self.admin(env)
                s = self.server(env, workdir=self.tmp / ("ghl-" + kind))
                proxy.faults.append(kind)
                ans = s.nowcerts(nowcerts_event("INSURED_INSERT"))
                self.assertIn(ans.status, (202, 503), ans)
                eid = ans.json()["event_id"]
                ev = s.wait_event(eid, ("retry_wait", "dead"))
                self.assertEqual(ev["status"], "retry_wait", ev)
                self.assertIn("token", ev.get("last_error") or "", ev)
                proxy.unhang.set()
                ev = self.replay(s, auth, eid)
                self.assertEqual(ev["status"], "done", ev)
                s.stop()


class RefusedRefreshToken(TokenTest):
    """GHL refusing the refresh token (invalid_grant: the app was uninstalled,
    or installed again elsewhere) delays events like any other token failure
    (SPEC 11, docs/install.md): retry_wait with what to do, also at their next
    run while it lasts, and delivered once GHL takes a grant again."""

    def env_wait(self, env):
        env.update({"MAX_RETRIES": 0, "UPSTREAM_TIMEOUT": 5, "WEBHOOK_WAIT_MS": 200})
        return self.admin(env)

    def insured_event(self, s):
        email = "refused.%s@example.com" % uniq()
        ans = s.nowcerts(nowcerts_event("INSURED_INSERT", insured_data(email=email)))
        self.assertIn(ans.status, (202, 503), ans)
        return ans.json()["event_id"], email

    def assertWaitsForInstall(self, s, auth, eid, email):
        ev = s.wait_event(eid, ("retry_wait", "dead"))
        self.assertEqual(ev["status"], "retry_wait", ev)
        self.assertIn("refused the refresh token", ev.get("last_error") or "", ev)
        self.assertIn("install the app again", ev.get("last_error") or "", ev)
        # Its next run, GHL still refusing: it waits again, it does not die.
        runs = ev["attempts"]
        r = s.post("/api/v1/events/%s/replay" % eid, {}, auth)
        self.assertIn(r.status, (200, 202), r)

        def ran_again():
            e = s.event(eid)
            return e if e["attempts"] > runs and e["status"] in ("retry_wait", "dead", "done") else None
        ev = harness.wait_until(ran_again, what="the replayed event's run to end")
        self.assertEqual(ev["status"], "retry_wait", ev)
        self.assertIn("install the app again", ev.get("last_error") or "", ev)
        self.assertEqual(self.contacts_with_email(email), [])

    def test_events_wait_while_the_refresh_token_is_refused(self):
        # The OAuth error body ({"error":"invalid_grant"}), then GHL takes
        # the same refresh token again.
        proxy, env = self.oauth()
        seed = env["GHL_REFRESH_TOKEN"]
        auth = self.env_wait(env)
        s = self.server(env)
        with proxy.lock:
            proxy.valid_refresh.discard(seed)
        eid, email = self.insured_event(s)
        self.assertWaitsForInstall(s, auth, eid, email)
        self.assertEqual(proxy.token_requests, [seed, seed])
        # doctor says the same, not that the location is wrong.
        p = s.cli("doctor", timeout=60)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("install the app again", p.stdout)
        self.assertNotIn("copy the sub-account's id", p.stdout)
        with proxy.lock:
            del proxy.token_requests[2:]
        with proxy.lock:
            proxy.valid_refresh.add(seed)
        ev = self.replay(s, auth, eid)
        self.assertEqual(ev["status"], "done", ev)
        self.assertEqual(len(self.contacts_with_email(email)), 1)
        self.assertTrue(s.running())

    def test_events_wait_for_the_app_to_be_installed_again(self):
        # The fake GHL's own OAuth: installed through ncghl, then installed
        # again elsewhere (its tokens revoked, the refresh refused), then
        # installed through ncghl once more.
        self.fakes.config("ghl", oauth_client_id=CLIENT_ID, oauth_client_secret=CLIENT_SECRET)
        env = {"GHL_CLIENT_ID": CLIENT_ID, "GHL_CLIENT_SECRET": CLIENT_SECRET, "GHL_API_KEY": None,
               "GHL_REFRESH_TOKEN": None, "GHL_LOCATION_ID": "it-location-1"}
        auth = self.env_wait(env)
        s = self.server(env)

        def install():
            code = urllib.parse.quote(self.fakes.ghl_oauth_code("it-location-1"))
            r = s.get("/oauth/callback?code=" + code)
            self.assertEqual(r.status, 200, r)

        install()
        form = urllib.parse.urlencode({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                       "grant_type": "authorization_code", "user_type": "Location",
                                       "code": self.fakes.ghl_oauth_code("it-location-1")})
        r = harness.http("POST", self.fakes.ghl_base + "/oauth/token", form,
                         {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 200, r)

        eid, email = self.insured_event(s)
        self.assertWaitsForInstall(s, auth, eid, email)
        install()
        ev = self.replay(s, auth, eid)
        self.assertEqual(ev["status"], "done", ev)
        stored = json.loads(s.db_query("SELECT value FROM kv WHERE key = 'ghl_oauth'")[0][0])
        creates = [c for c in self.fakes.calls("ghl", "POST", r"^/contacts/?$")
                   if harness.req_body(c).get("email") == email]
        self.assertEqual([c["headers"]["authorization"] for c in creates],
                         ["Bearer " + stored["access_token"]])
        self.assertEqual(len(self.contacts_with_email(email)), 1)


if __name__ == "__main__":
    harness.main()
