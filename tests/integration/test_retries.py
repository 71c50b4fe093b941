"""SPEC section 6: upstream retries, NowCerts tokens, GHL's rate limit.

Spacing assertions check that retries waited AT LEAST the configured backoff
(behaviour); nothing here asserts that anything was fast."""

import json
import sys
import threading
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import (IntegTest, Slammer, ghl_event, insured_data, nowcerts_event,  # noqa: E402
                     req_at, req_body)

CREATE_CONTACT = r"^/contacts/?$"
NC_CREATE_INSURED = r".*/Insured/(OnlyInsertInsured|Insert)"
# Arrival stamps of two requests are taken by the fake; allow for clock
# granularity only.
SLOP = 0.005


def statuses(calls):
    return [c.get("status") for c in calls]


class CallRetries(IntegTest):
    def test_5xx_is_retried_with_exponential_backoff(self):
        s = self.server({"MAX_RETRIES": 3, "RETRY_INITIAL_DELAY": 0.1, "RETRY_BACKOFF_FACTOR": 2})
        self.fakes.fault("ghl", status=503, count=2, path=CREATE_CONTACT, method="POST")
        ev = nowcerts_event("INSURED_INSERT")
        ans = self.assertJSONAnswer(s.nowcerts(ev), 200)
        self.assertEqual(ans["data"].get("action"), "created", ans)
        creates = self.fakes.calls("ghl", "POST", CREATE_CONTACT)
        self.assertEqual(statuses(creates)[:2], [503, 503], creates)
        self.assertEqual(len(creates), 3, statuses(creates))
        self.assertGreaterEqual(req_at(creates[1]) - req_at(creates[0]), 0.1 - SLOP)
        self.assertGreaterEqual(req_at(creates[2]) - req_at(creates[1]), 0.2 - SLOP)
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)

    def test_nowcerts_5xx_is_retried_too(self):
        s = self.server({"MAX_RETRIES": 3})
        self.fakes.fault("nowcerts", status=500, count=2, path=NC_CREATE_INSURED, method="POST")
        c = self.seed_contact()
        ans = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c)), 200)
        self.assertEqual(ans.get("data", {}).get("action"), "created", ans)
        creates = self.fakes.calls("nowcerts", "POST", NC_CREATE_INSURED)
        self.assertEqual(statuses(creates), [500, 500, 200])
        self.assertGreaterEqual(req_at(creates[1]) - req_at(creates[0]), 0.1 - SLOP)
        self.assertGreaterEqual(req_at(creates[2]) - req_at(creates[1]), 0.2 - SLOP)
        self.assertEqual(len(self.insureds_with_email(c["email"])), 1)

    def test_429_retry_after_is_honoured(self):
        s = self.server({"MAX_RETRIES": 3, "RETRY_INITIAL_DELAY": 0.1})
        self.fakes.fault("ghl", status=429, count=1, path=CREATE_CONTACT, method="POST",
                         retry_after=1)
        ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 200)
        self.assertEqual(ans["data"].get("action"), "created", ans)
        creates = self.fakes.calls("ghl", "POST", CREATE_CONTACT)
        self.assertEqual(statuses(creates)[0], 429)
        self.assertEqual(len(creates), 2, statuses(creates))
        self.assertGreaterEqual(req_at(creates[1]) - req_at(creates[0]), 1.0 - SLOP)

    def test_4xx_is_not_retried(self):
        for status in (400, 404, 422):
            with self.subTest(status=status):
                self.fakes.reset()
                s = self.server({"MAX_RETRIES": 3}, workdir=self.tmp / str(status))
                self.fakes.fault("ghl", status=status, count=10, path=CREATE_CONTACT,
                                 method="POST")
                ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 502)
                self.assertEqual(ans.get("status"), "dead", ans)
                self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 1)
                self.assertEqual(s.event(ans["event_id"]).get("status"), "dead")
                s.stop()

    def test_retries_exhausted_leave_the_event_in_retry_wait(self):
        s = self.server({"MAX_RETRIES": 2})
        self.fakes.fault("ghl", status=503, count=1000, path=CREATE_CONTACT, method="POST")
        ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 202)
        self.assertIs(ans.get("success"), True, ans)
        self.assertEqual(ans.get("status"), "queued", ans)
        ev = s.wait_event(ans["event_id"], ("retry_wait",))
        self.assertEqual(int(ev.get("attempts")), 1, ev)
        self.assertTrue(ev.get("last_error"), ev)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 3)

    def test_connection_errors_are_retried(self):
        slam = Slammer()
        self.addCleanup(slam.close)
        s = self.server({"MAX_RETRIES": 2, "GHL_BASE_URL": slam.url, "UPSTREAM_TIMEOUT": 5})
        ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 202)
        self.assertEqual(ans.get("status"), "queued", ans)
        ev = s.wait_event(ans["event_id"], ("retry_wait",))
        self.assertTrue(ev.get("last_error"), ev)
        self.assertEqual(slam.count, 3, "connections made to the dead upstream")

    def test_dead_upstream_on_ghl_route_is_still_queued(self):
        slam = Slammer()
        self.addCleanup(slam.close)
        s = self.server({"MAX_RETRIES": 1, "NOWCERTS_BASE_URL": slam.url + "/api"})
        ans = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", self.seed_contact())), 202)
        self.assertEqual(ans.get("status"), "queued", ans)
        ev = s.wait_event(ans["event_id"], ("retry_wait",))
        self.assertTrue(ev.get("last_error"), ev)
        self.assertGreaterEqual(slam.count, 1)

    def test_a_hung_upstream_times_out_and_is_retried(self):
        s = self.server({"MAX_RETRIES": 2, "UPSTREAM_TIMEOUT": 1})
        self.fakes.fault("ghl", hang=True, count=1, path=CREATE_CONTACT, method="POST")
        ev = nowcerts_event("INSURED_INSERT")
        ans = s.nowcerts(ev)
        self.assertIn(ans.status, (200, 202), ans)
        s.wait_event(ans.json()["event_id"])
        creates = self.fakes.calls("ghl", "POST", CREATE_CONTACT)
        self.assertEqual(len(creates), 2, statuses(creates))
        self.assertGreaterEqual(req_at(creates[1]) - req_at(creates[0]), 1.0 - SLOP)
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)


class Tokens(IntegTest):
    ENV = {"TOKEN_REFRESH_MARGIN": 5}

    def _sync(self, s):
        ans = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", self.seed_contact())), 200)
        self.assertIs(ans.get("success"), True, ans)
        return ans

    def test_login_is_a_form_encoded_password_grant(self):
        s = self.server(self.ENV)
        self._sync(s)
        tokens = self.fakes.token_calls()
        self.assertEqual(len(tokens), 1, tokens)
        t = tokens[0]
        self.assertIn("application/x-www-form-urlencoded",
                      (t.get("headers") or {}).get("content-type", ""))
        body = req_body(t)
        self.assertEqual(body.get("grant_type"), "password", body)
        self.assertEqual(body.get("client_id"), "ngAuthApp", body)
        self.assertEqual(body.get("username"), s.env["NOWCERTS_USERNAME"])
        self.assertEqual(body.get("password"), s.env["NOWCERTS_PASSWORD"])
        for r in self.fakes.calls("nowcerts"):
            if r["path"].endswith("/token"):
                continue
            auth = (r.get("headers") or {}).get("authorization") or ""
            self.assertRegex(auth, r"^(?i:bearer) \S+$", r)
            self.assertNotIn(s.env["NOWCERTS_PASSWORD"], auth)

    def test_token_is_reused_across_events(self):
        s = self.server(self.ENV)
        for _ in range(3):
            self._sync(s)
        self.assertEqual(len(self.fakes.token_calls()), 1)

    def test_401_forces_one_refresh_and_one_retry(self):
        s = self.server(self.ENV)
        self._sync(s)
        n_before = len(self.fakes.requests("nowcerts"))
        self.fakes.revoke()
        self._sync(s)
        after = [r for r in self.fakes.requests("nowcerts")[n_before:]
                 if not r["path"].startswith("/_")]
        rejected = [i for i, r in enumerate(after) if r.get("status") == 401]
        self.assertEqual(len(rejected), 1, statuses(after))
        first = rejected[0]
        failed = after[first]
        rest = after[first + 1:]
        self.assertTrue(rest and rest[0]["path"].endswith("/token"),
                        "the 401 was not followed by a token request: %r"
                        % [(r["method"], r["path"], r.get("status")) for r in after])
        self.assertEqual(req_body(rest[0]).get("grant_type"), "refresh_token", req_body(rest[0]))
        retried = [r for r in rest[1:] if r["path"] == failed["path"]
                   and r["method"] == failed["method"]]
        self.assertGreaterEqual(len(retried), 1, "the rejected call was not retried")
        self.assertEqual(retried[0].get("status"), 200, retried[0])
        self.assertNotEqual(retried[0]["headers"].get("authorization"),
                            failed["headers"].get("authorization"))
        # The refreshed token serves the next event without another refresh.
        n_tokens = len(self.fakes.token_calls())
        self._sync(s)
        self.assertEqual(len(self.fakes.token_calls()), n_tokens)

    def test_persistent_401_gives_up_after_one_refresh(self):
        s = self.server(dict(self.ENV, MAX_RETRIES=3))
        self._sync(s)
        n_tokens = len(self.fakes.token_calls())
        self.fakes.fault("nowcerts", status=401, count=100, path=NC_CREATE_INSURED, method="POST",
                         body={"Message": "Authorization has been denied for this request."})
        ans = s.ghl(ghl_event("ContactCreate", self.seed_contact()))
        self.assertIn(ans.status, (200, 202), ans)
        eid = ans.json()["event_id"]
        ev = s.wait_event(eid, ("dead", "retry_wait"))
        self.assertTrue(ev.get("last_error"), ev)
        creates = [r for r in self.fakes.calls("nowcerts", "POST", NC_CREATE_INSURED)
                   if r.get("status") == 401]
        self.assertEqual(len(creates), 2, "a 401 gets one refresh and ONE retry")
        self.assertEqual(len(self.fakes.token_calls()), n_tokens + 1)

    def test_concurrent_events_share_one_login(self):
        s = self.server(dict(self.ENV, WEBHOOK_WAIT_MS=0))
        self.fakes.config("nowcerts", latency_ms=200)
        self.addCleanup(self.fakes.config, "nowcerts", latency_ms=0)
        contacts = [self.seed_contact() for _ in range(8)]
        answers = [None] * len(contacts)

        def post(i):
            answers[i] = s.ghl(ghl_event("ContactCreate", contacts[i]))

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(contacts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for a in answers:
            self.assertEqual(a.status, 202, a)
        for a in answers:
            s.wait_event(a.json()["event_id"])
        self.assertEqual(len(self.fakes.token_calls()), 1,
                         [req_body(t).get("grant_type") for t in self.fakes.token_calls()])


class TokenRefresh(IntegTest):
    # Two-second tokens: within a few seconds of traffic ncghl must renew
    # its token several times, and each renewal rotates the refresh token.
    FAKE_ARGS = ("--token-ttl", "2")

    def test_refresh_uses_the_latest_rotated_refresh_token(self):
        # NowCerts through a recording proxy: each refresh must send the
        # refresh token of the answer before it (the fake rotates them).
        proxy = harness.RecordingProxy(self.fakes.nc_base)
        self.addCleanup(proxy.close)
        s = self.server({"TOKEN_REFRESH_MARGIN": 1, "NOWCERTS_BASE_URL": proxy.base + "/api"})

        def grants():
            return [a for a in proxy.answers if a[1].split("?")[0].endswith("/token")]

        def sync_until_renewed_twice():
            ans = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", self.seed_contact())), 200)
            self.assertIs(ans.get("success"), True, ans)
            return len(grants()) >= 3

        harness.wait_until(sync_until_renewed_twice, 30, 0.3, "two token renewals")
        seen = grants()
        sent = [dict(urllib.parse.parse_qsl(a[4])) for a in seen]
        self.assertEqual(sent[0].get("grant_type"), "password", sent)
        for i in range(1, len(seen)):
            self.assertEqual(seen[i - 1][2], 200, seen[i - 1])
            # A password grant here would mean a refresh failed, e.g. because
            # a spent refresh token was sent again.
            self.assertEqual(sent[i].get("grant_type"), "refresh_token", sent)
            self.assertEqual(sent[i].get("client_id"), "ngAuthApp", sent[i])
            issued = json.loads(seen[i - 1][3]).get("refresh_token")
            self.assertEqual(sent[i].get("refresh_token"), issued,
                             "refresh %d did not send the latest refresh token" % i)


class GhlRateLimit(IntegTest):
    # The fake allows one more than ncghl is told, so arrival jitter at the
    # window's edge cannot make a correct client look wrong.
    FAKE_ARGS = ("--ghl-rate-limit", "5", "--ghl-rate-window", "10")
    LIMIT = 4

    def test_outbound_limit_keeps_ghl_from_answering_429(self):
        s = self.server({"GHL_RATE_LIMIT": self.LIMIT, "WEBHOOK_WAIT_MS": 0})
        events = [nowcerts_event("INSURED_INSERT", insured_data()) for _ in range(2)]
        ids = []
        for ev in events:
            ans = self.assertJSONAnswer(s.nowcerts(ev), 202)
            ids.append(ans["event_id"])
        for eid in ids:
            s.wait_event(eid, timeout=60)
        calls = self.fakes.calls("ghl")
        self.assertGreater(len(calls), self.LIMIT, "too few calls to exercise the limit")
        self.assertNotIn(429, statuses(calls))
        for ev in events:
            self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)


if __name__ == "__main__":
    harness.main()
