"""SPEC section 4: secrets (passwords, tokens, API keys, Authorization
headers) never appear in any log line, at any level."""

import json
import re
import shutil
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import ROOT, IntegTest, ghl_event, insured_data, nowcerts_event, req_body, uniq  # noqa: E402

CREATE_CONTACT = r"^/contacts/?$"


def tokens_in(obj, out):
    """Every value under a key that names a token or secret, recursively."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, str) and re.search(r"(access|refresh|id)_token|secret|password|authorization", k, re.I):
                out.add(re.sub(r"^(?i:bearer)\s+", "", v))
            else:
                tokens_in(v, out)
    elif isinstance(obj, list):
        for v in obj:
            tokens_in(v, out)
    return out


class Secrets(IntegTest):
    # Two-second tokens: a few seconds of traffic renew them several times,
    # so several rotated refresh tokens pass through the process.
    FAKE_ARGS = ("--token-ttl", "2")

    def test_no_secret_reaches_the_log_or_stderr(self):
        password = "PwD-%s-Zq7x" % uniq(16)
        api_key = "pit-%s-Vt9w" % uniq(24)
        # NowCerts is reached through a recording proxy, so every token the
        # fake issued is known, even the last refresh token that is never sent.
        proxy = harness.RecordingProxy(self.fakes.nc_base)
        self.addCleanup(proxy.close)
        s = self.server({"NOWCERTS_PASSWORD": password, "GHL_API_KEY": api_key,
                         "NOWCERTS_BASE_URL": proxy.base + "/api",
                         "LOG_LEVEL": "DEBUG", "TOKEN_REFRESH_MARGIN": 1, "MAX_RETRIES": 1})

        ok = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 200)
        self.assertIs(ok.get("success"), True, ok)
        ok = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", self.seed_contact())), 200)
        self.assertIs(ok.get("success"), True, ok)
        self.fakes.revoke()
        ok = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", self.seed_contact())), 200)
        self.assertIs(ok.get("success"), True, ok)

        def renewed_twice_more():
            ok = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", self.seed_contact())), 200)
            self.assertIs(ok.get("success"), True, ok)
            return len([a for a in proxy.answers if a[1].endswith("/token")]) >= 4
        harness.wait_until(renewed_twice_more, 30, 0.3, "token renewals")
        ok = self.assertJSONAnswer(s.manual({"source": "nowcerts", "entity_type": "contact",
                                             "direction": "to_ghl", "data": insured_data()}), 200)
        self.assertIs(ok.get("success"), True, ok)
        # A failing call: its error is logged, the request's headers must not be.
        self.fakes.fault("ghl", status=401, count=5, path=CREATE_CONTACT, method="POST",
                         body={"statusCode": 401, "message": "Invalid token: access token is invalid"})
        s.nowcerts(nowcerts_event("INSURED_INSERT"))
        s.stop()

        nc = self.fakes.requests("nowcerts")
        ghl = self.fakes.requests("ghl")
        self.assertTrue(any(r.get("status") == 401 for r in nc), "no 401 refresh path exercised")
        secrets = {password, api_key}
        for r in nc + ghl:
            auth = (r.get("headers") or {}).get("authorization")
            if auth:
                secrets.add(re.sub(r"^(?i:bearer)\s+", "", auth))
            if r.get("path", "").endswith("/token"):
                body = req_body(r)
                if isinstance(body, dict):
                    for k in ("refresh_token", "password"):
                        if body.get(k):
                            secrets.add(body[k])
        issued = set()
        for method, path, status, text, _ in proxy.answers:
            if path.split("?")[0].endswith("/token") and status == 200:
                tokens_in(json.loads(text), issued)
        self.assertGreaterEqual(len(issued), 4, "too few issued tokens seen by the proxy")
        secrets |= issued
        secrets = {x for x in secrets if len(x) >= 6}
        refresh = [req_body(r).get("refresh_token") for r in nc
                   if r.get("path", "").endswith("/token")]
        self.assertTrue([x for x in refresh if x], "no refresh token passed through the process")
        self.assertGreaterEqual(len(secrets), 5, "too few secrets collected to mean anything")

        log = s.log_text()
        err = s.stderr_text()
        self.assertIn("DEBUG", log.upper(), "LOG_FILE has no debug lines")
        for secret in sorted(secrets):
            kind = ("password" if secret == password else "api key" if secret == api_key
                    else "token")
            self.assertNotIn(secret, log, "a %s appears in LOG_FILE" % kind)
            self.assertNotIn(secret, err, "a %s appears on stderr" % kind)


# A route that logs what it was sent, as agencies do while they debug: the
# raw body (the secret JSON-escaped in it), the secret URL-encoded, and the
# plain secret pushed across the line limit at many offsets.
LOGS_ITS_INPUT = r'''
nowcerts.LOG_INPUT = function(ev)
  ncghl.log("info", "raw " .. ev.raw)
  ncghl.log("info", "url-encoded " .. ev.data.url)
  for pad = 7950, 8250, 7 do
    ncghl.log("info", string.rep("y", pad) .. ev.data.plain .. " end")
  end
  return {action = "logged"}
end
'''


class EncodedSecrets(IntegTest):
    def test_secret_encoded_or_cut_never_reaches_the_log(self):
        key = "pit/%s+=Kq%s" % (uniq(12), uniq(12))
        copy = self.tmp / "mappings"
        shutil.copytree(ROOT / "mappings", copy)
        routes = copy / "routes.lua"
        text = routes.read_text()
        cut = text.rstrip().rfind("\nreturn")
        routes.write_text(text[:cut] + "\n" + LOGS_ITS_INPUT + text[cut:])
        s = self.server({"GHL_API_KEY": key, "MAPPINGS_DIR": copy, "LOG_LEVEL": "DEBUG"})
        url = urllib.parse.quote(key, safe="")
        # JSON escapes as another encoder may write them: "\/" and "\u00XX".
        escaped = key.replace("/", "\\/").replace("K", "\\u004B").replace("+", "\\u002b")
        raw = ('{"event_type":"LOG_INPUT","timestamp":"2024-01-15T10:30:00Z",'
               '"data":{"url":"%s","plain":"%s","escaped":"%s"}}' % (url, escaped, escaped))
        ans = self.assertJSONAnswer(s.nowcerts(raw), 200)
        self.assertEqual(ans["data"].get("action"), "logged", ans)
        s.stop()
        log = s.log_text()
        err = s.stderr_text()
        self.assertIn("url-encoded ***", log)
        self.assertIn("raw ", log)
        cut_lines = [x for x in log.splitlines() if "yyyyyyyy" in x]
        self.assertEqual(len(cut_lines), 43, "the padded lines did not all reach the log")
        half = key[:len(key) // 2]
        for form in (key, url, escaped, half, urllib.parse.quote(half, safe=""), key[:6],
                     escaped[:len(escaped) // 2]):
            self.assertNotIn(form, log, "part of the key reaches LOG_FILE: %r" % form)
            self.assertNotIn(form, err, "part of the key reaches stderr: %r" % form)


if __name__ == "__main__":
    harness.main()
