"""SPEC section 5: /metrics, /openapi.json, the admin API and the inbound
rate limit."""

import http.client
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, ghl_event, nowcerts_event  # noqa: E402

CREATE_CONTACT = r"^/contacts/?$"
METRICS = ("ncghl_webhook_requests_total", "ncghl_webhook_duration_seconds", "ncghl_upstream_requests_total",
           "ncghl_upstream_duration_seconds", "ncghl_events", "ncghl_retries_total", "ncghl_token_refreshes_total",
           "ncghl_mapping_reloads_total")
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def samples(text):
    """[(name, {label: value}, float)] from Prometheus text."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            raise AssertionError("not a Prometheus sample line: %r" % line)
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def find_key(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            r = find_key(v, key)
            if r is not None:
                return r
    elif isinstance(obj, list):
        for v in obj:
            r = find_key(v, key)
            if r is not None:
                return r
    return None


class Metrics(IntegTest):
    def test_metrics_count_what_happened(self):
        s = self.server({"MAX_RETRIES": 2})
        self.fakes.fault("ghl", status=503, count=1, path=CREATE_CONTACT, method="POST")
        self.assertEqual(s.nowcerts(nowcerts_event("INSURED_INSERT")).status, 200)
        self.assertEqual(s.ghl(ghl_event("ContactCreate", self.seed_contact())).status, 200)
        r = s.get("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.content_type.startswith("text/plain"), r.content_type)
        text = r.text
        for name in METRICS:
            self.assertRegex(text, r"(?m)^(# TYPE )?%s[\s{_]" % name, "missing metric %s" % name)
        smp = samples(text)
        # SPEC 12: Prometheus naming. Every family has the ncghl_ prefix and
        # every counter ends in _total.
        types = dict(re.findall(r"(?m)^# TYPE (\S+) (\S+)$", text))
        self.assertIn("ncghl_log_dropped_total", types)
        for name, kind in types.items():
            self.assertTrue(name.startswith("ncghl_"), "metric without the ncghl_ prefix: " + name)
            if kind == "counter":
                self.assertTrue(name.endswith("_total"), "counter not ending in _total: " + name)
        for name, _, _ in smp:
            self.assertTrue(name.startswith("ncghl_"), "sample without the ncghl_ prefix: " + name)

        def total(name, **labels):
            return sum(v for n, lab, v in smp
                       if n == name and all(lab.get(k) == val for k, val in labels.items()))

        self.assertGreaterEqual(total("ncghl_webhook_requests_total", source="nowcerts"), 1)
        self.assertGreaterEqual(total("ncghl_webhook_requests_total", source="ghl"), 1)
        self.assertGreaterEqual(total("ncghl_upstream_requests_total", service="ghl"), 2)
        self.assertGreaterEqual(total("ncghl_upstream_requests_total", service="nowcerts"), 1)
        self.assertGreaterEqual(total("ncghl_retries_total", service="ghl"), 1)
        self.assertGreaterEqual(total("ncghl_webhook_duration_seconds_count", source="nowcerts"), 1)
        self.assertGreaterEqual(total("ncghl_events", status="done"), 2)

    def test_series_move_with_traffic_and_histograms_add_up(self):
        s = self.server()
        r = s.get("/metrics")
        self.assertEqual(r.content_type.split(";")[0].strip(), "text/plain", r.content_type)
        self.assertIn("version=0.0.4", r.content_type)
        before = samples(r.text)

        def val(smp, name, **labels):
            return sum(v for n, lab, v in smp
                       if n == name and all(lab.get(k) == x for k, x in labels.items()))

        # Zero series exist from the start, so alerts and rate() see them.
        for name, labels in (("ncghl_retries_total", {"service": "ghl"}),
                             ("ncghl_retries_total", {"service": "nowcerts"}),
                             ("ncghl_mapping_reloads_total", {"result": "ok"}),
                             ("ncghl_mapping_reloads_total", {"result": "error"}),
                             ("ncghl_token_refreshes_total", {"service": "nowcerts", "result": "error"})):
            self.assertTrue([1 for n, lab, _ in before if n == name and
                             all(lab.get(k) == x for k, x in labels.items())],
                            "no %s%r series before any traffic" % (name, labels))
        self.assertEqual(val(before, "ncghl_webhook_requests_total"), 0)

        for i in range(3):
            self.assertEqual(s.nowcerts(nowcerts_event("FOO_BAR", {"n": i})).status, 200)
        self.assertJSONAnswer(s.nowcerts({"event_type": "X"}), 422)
        self.fakes.fault("ghl", status=400, count=1, path=CREATE_CONTACT, method="POST")
        self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 502)

        after = samples(s.get("/metrics").text)
        self.assertEqual(val(after, "ncghl_webhook_requests_total", source="nowcerts", status="200"), 3)
        self.assertEqual(val(after, "ncghl_webhook_requests_total", source="nowcerts", status="422"), 1)
        self.assertEqual(val(after, "ncghl_webhook_requests_total", source="nowcerts", status="502"), 1)
        self.assertEqual(val(after, "ncghl_webhook_duration_seconds_count", source="nowcerts"), 5)
        self.assertGreater(val(after, "ncghl_webhook_duration_seconds_sum", source="nowcerts"), 0)
        self.assertEqual(val(after, "ncghl_events", status="dead"), 1)
        self.assertEqual(val(after, "ncghl_events", status="done"), 3)
        self.assertGreaterEqual(val(after, "ncghl_upstream_requests_total", service="ghl", status="400"), 1)
        # Histogram buckets are cumulative and end in +Inf = _count.
        for name in ("ncghl_webhook_duration_seconds", "ncghl_upstream_duration_seconds"):
            series = {}
            for n, lab, v in after:
                if n == name + "_bucket":
                    key = tuple(sorted((k, x) for k, x in lab.items() if k != "le"))
                    series.setdefault(key, []).append((lab["le"], v))
            self.assertTrue(series, "no %s buckets" % name)
            for key, buckets in series.items():
                counts = [v for _, v in buckets]
                self.assertEqual(counts, sorted(counts), "%s%r not cumulative" % (name, key))
                self.assertEqual(buckets[-1][0], "+Inf")
                self.assertEqual(buckets[-1][1], val(after, name + "_count", **dict(key)))

    def test_token_refreshes_are_counted(self):
        s = self.server()
        self.assertEqual(s.manual({"source": "ghl", "entity_type": "contact",
                                   "direction": "to_nowcerts",
                                   "data": harness.ghl_contact()}).status, 200)
        smp = samples(s.get("/metrics").text)
        ok = sum(v for n, lab, v in smp if n == "ncghl_token_refreshes_total"
                 and lab.get("service") == "nowcerts" and lab.get("result") == "ok")
        self.assertGreaterEqual(ok, 1, "the NowCerts login was not counted")


class OpenApi(IntegTest):
    def test_openapi_describes_the_routes(self):
        s = self.server()
        body = self.assertJSONAnswer(s.get("/openapi.json"), 200)
        self.assertIn("openapi", body)
        paths = body.get("paths", {})
        for p in ("/health", "/metrics", "/api/v1/webhooks/nowcerts", "/api/v1/webhooks/ghl",
                  "/api/v1/sync/manual"):
            self.assertIn(p, paths)
        self.assertIn("post", {k.lower() for k in paths["/api/v1/webhooks/nowcerts"]})
        routes = {"/health": "get", "/metrics": "get", "/openapi.json": "get",
                  "/api/v1/webhooks/nowcerts": "post", "/api/v1/webhooks/ghl": "post",
                  "/api/v1/sync/manual": "post", "/api/v1/events": "get",
                  "/api/v1/events/{id}": "get", "/api/v1/events/{id}/replay": "post",
                  "/oauth/callback": "get", "/oauth/install": "get"}
        for p, method in routes.items():
            with self.subTest(path=p):
                self.assertIn(p, paths)
                self.assertIn(method, paths[p])
                self.assertIn("responses", paths[p][method])
        # The SPEC's answers of the webhook routes, and bearer auth on the admin ones.
        for p in ("/api/v1/webhooks/nowcerts", "/api/v1/webhooks/ghl", "/api/v1/sync/manual"):
            answers = set(paths[p]["post"]["responses"])
            for code in ("200", "202", "413", "422", "429"):
                self.assertIn(code, answers, "%s lacks %s" % (p, code))
            self.assertIn("requestBody", paths[p]["post"])
        for p in ("/api/v1/webhooks/nowcerts", "/api/v1/sync/manual"):
            for code in ("409", "502"):
                self.assertIn(code, paths[p]["post"]["responses"])
        self.assertIn("401", paths["/api/v1/webhooks/ghl"]["post"]["responses"])
        # SPEC 13: the same routes under a tenant's prefix, and the admin
        # API's tenant filter.
        for p in ("/api/v1/webhooks/nowcerts", "/api/v1/webhooks/ghl", "/api/v1/sync/manual",
                  "/api/v1/events"):
            self.assertIn("/t/{tenant}", [v["url"] for v in paths[p].get("servers", [])], p)
        self.assertIn({"$ref": "#/components/parameters/Tenant"},
                      paths["/api/v1/events"]["get"]["parameters"])
        self.assertEqual(body["components"]["parameters"]["Tenant"]["name"], "tenant")
        schemes = body["components"]["securitySchemes"]
        self.assertTrue(any(v.get("scheme") == "bearer" for v in schemes.values()), schemes)
        for p, method in (("/api/v1/events", "get"), ("/api/v1/events/{id}", "get"),
                          ("/api/v1/events/{id}/replay", "post")):
            op = paths[p][method]
            self.assertTrue(op.get("security"), "%s has no security" % p)
            self.assertIn("401", op["responses"])
        # Every $ref points at something that exists.
        refs = re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(body))
        self.assertTrue(refs)
        for ref in refs:
            node = body
            for part in ref.split("/"):
                self.assertIn(part, node, "dangling $ref #/%s" % ref)
                node = node[part]


class Admin(IntegTest):
    def test_admin_routes_are_404_without_admin_token(self):
        s = self.server({"ADMIN_TOKEN": None})
        for method, path in (("GET", "/api/v1/events"), ("GET", "/api/v1/events/x"),
                             ("POST", "/api/v1/events/x/replay")):
            with self.subTest(path=path):
                r = s.request(method, path, {} if method == "POST" else None,
                              {"Authorization": "Bearer anything"})
                self.assertJSONAnswer(r, 404)

    def test_admin_api(self):
        token = "adm-" + harness.uniq(20)
        s = self.server({"ADMIN_TOKEN": token})
        auth = {"Authorization": "Bearer " + token}
        self.fakes.fault("ghl", status=400, count=1, path=CREATE_CONTACT, method="POST")
        ev = nowcerts_event("INSURED_INSERT")
        dead = self.assertJSONAnswer(s.nowcerts(ev), 502)["event_id"]
        done = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 200)["event_id"]

        for hdrs in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            with self.subTest(headers=hdrs):
                self.assertJSONAnswer(s.get("/api/v1/events", hdrs), 401)

        listing = json.dumps(self.assertJSONAnswer(s.get("/api/v1/events", auth), 200))
        self.assertIn(dead, listing)
        self.assertIn(done, listing)
        only = json.dumps(self.assertJSONAnswer(s.get("/api/v1/events?status=dead&limit=10", auth),
                                                200))
        self.assertIn(dead, only)
        self.assertNotIn(done, only)

        one = self.assertJSONAnswer(s.get("/api/v1/events/" + dead, auth), 200)
        self.assertIn(dead, json.dumps(one))
        attempts = find_key(one, "attempts")
        self.assertIsInstance(attempts, list, one)
        self.assertGreaterEqual(len(attempts), 1, one)
        self.assertIn("400", json.dumps(attempts))
        self.assertJSONAnswer(s.get("/api/v1/events/nowcerts_" + "0" * 64, auth), 404)

        self.assertJSONAnswer(s.post("/api/v1/events/%s/replay" % dead, {}), 401)
        self.assertEqual(s.event(dead)["status"], "dead", "a refused replay changed the event")
        r = s.post("/api/v1/events/%s/replay" % dead, {}, auth)
        self.assertIn(r.status, (200, 202), r)
        self.assertEqual(r.json().get("event_id"), dead, r)
        s.wait_event(dead, timeout=15)
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)
        # Same id, the history kept and grown by the second run.
        again = self.assertJSONAnswer(s.get("/api/v1/events/" + dead, auth), 200)
        self.assertEqual(again["event"]["id"], dead)
        self.assertEqual(again["event"]["status"], "done")
        self.assertEqual(again["event"]["attempts"], 2)
        self.assertGreater(len(again["attempts"]), len(attempts))
        self.assertEqual(again["attempts"][:len(attempts)], attempts)
        self.assertEqual({a["event_attempt"] for a in again["attempts"]}, {1, 2})
        self.assertEqual(again["event"]["payload"], ev)
        self.assertJSONAnswer(s.post("/api/v1/events/nowcerts_%s/replay" % ("0" * 64), {}, auth),
                              404)

    def test_listing_fields_filters_and_bad_queries(self):
        token = "adm-" + harness.uniq(20)
        s = self.server({"ADMIN_TOKEN": token})
        auth = {"Authorization": "bearer " + token}  # the scheme is case-insensitive
        ids = [self.assertJSONAnswer(s.nowcerts(nowcerts_event("FOO_BAR", {"n": i})), 200)["event_id"]
               for i in range(3)]
        listing = self.assertJSONAnswer(s.get("/api/v1/events", auth), 200)
        self.assertIsInstance(listing, list)
        self.assertEqual({e["id"] for e in listing}, set(ids))
        for e in listing:
            for k in ("id", "source", "type", "status", "attempts", "last_error", "created_at",
                      "updated_at"):
                self.assertIn(k, e)
            self.assertEqual((e["source"], e["type"], e["status"]), ("nowcerts", "FOO_BAR", "done"))
        self.assertEqual(len(self.assertJSONAnswer(s.get("/api/v1/events?limit=2", auth), 200)), 2)
        self.assertEqual(self.assertJSONAnswer(s.get("/api/v1/events?status=dead", auth), 200), [])
        for q in ("status=sleepy", "limit=0", "limit=x", "limit=-1"):
            with self.subTest(query=q):
                self.assert422(s.get("/api/v1/events?" + q, auth))
        sleepy = self.assert422(s.get("/api/v1/events?status=sleepy", auth))
        self.assertEqual(sleepy["detail"][0]["msg"], "unexpected value; permitted: "
                         "'pending', 'running', 'done', 'retry_wait', 'dead'", sleepy)
        one = self.assertJSONAnswer(s.get("/api/v1/events/" + ids[0], auth), 200)
        self.assertEqual(one["attempts"], [])  # ignored: no upstream call
        self.assertEqual(one["event"]["payload"]["data"], {"n": 0})
        # Wrong methods are 405, unknown sub-paths 404, all JSON.
        self.assertJSONAnswer(s.request("GET", "/api/v1/events/%s/replay" % ids[0], None, auth), 405)
        self.assertJSONAnswer(s.request("DELETE", "/api/v1/events/" + ids[0], None, auth), 405)
        self.assertJSONAnswer(s.get("/api/v1/events/%s/frob" % ids[0], auth), 404)

    def test_replay_of_a_running_event_is_409(self):
        token = "adm-" + harness.uniq(20)
        s = self.server({"ADMIN_TOKEN": token, "WEBHOOK_WAIT_MS": 100})
        auth = {"Authorization": "Bearer " + token}
        # GHL answers slowly, so the event is still running when it is replayed.
        self.fakes.fault("ghl", latency_ms=5000, count=1, path=r"^/contacts")
        eid = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 202)["event_id"]
        s.wait_event(eid, statuses=("running",), timeout=10)
        self.assertJSONAnswer(s.post("/api/v1/events/%s/replay" % eid, {}, auth), 409)
        ev = s.wait_event(eid, timeout=30)
        self.assertEqual(int(ev["attempts"]), 1, "the refused replay started a second run")


class RateLimit(IntegTest):
    def test_over_the_limit_is_429_with_retry_after(self):
        s = self.server({"RATE_LIMIT_PER_MINUTE": 3})
        answers = [s.nowcerts(nowcerts_event("FOO_BAR", {"n": i})) for i in range(4)]
        for a in answers[:3]:
            self.assertEqual(a.status, 200, a)
        r = answers[3]
        self.assertJSONAnswer(r, 429)
        self.assertIn("retry-after", r.headers)
        self.assertGreater(float(r.headers["retry-after"]), 0)

    def test_limit_spares_health_and_metrics_and_stores_nothing(self):
        s = self.server({"RATE_LIMIT_PER_MINUTE": 2})
        # Whatever the mapping makes of it, it was let in and stored.
        r = s.manual({"source": "nowcerts", "entity_type": "quote", "direction": "to_ghl",
                      "data": {"n": 1}})
        self.assertIn(r.status, (200, 202, 502), r)
        self.assertEqual(s.nowcerts(nowcerts_event("FOO_BAR", {"n": 1})).status, 200)
        # The webhook and sync routes share one budget per client address.
        late = nowcerts_event("FOO_BAR", {"n": 2})
        r = s.nowcerts(late)
        body = self.assertJSONAnswer(r, 429)
        self.assertIsInstance(body.get("detail"), str)
        self.assertRegex(r.headers.get("retry-after", ""), r"^[1-9][0-9]*$")
        self.assertJSONAnswer(s.ghl(harness.ghl_event("FooBar")), 429)
        self.assertNotIn(harness.expected_event_id("nowcerts", late),
                         {e["id"] for e in s.events()}, "a rate-limited webhook was stored")
        for _ in range(5):
            self.assertEqual(s.get("/health").status, 200)
            self.assertEqual(s.get("/metrics").status, 200)
            self.assertEqual(s.get("/openapi.json").status, 200)
        text = s.get("/metrics").text
        self.assertRegex(text, r'(?m)^ncghl_webhook_requests_total\{source="nowcerts",status="429"\} 1$')

    def test_the_limit_is_per_client_address(self):
        s = self.server({"RATE_LIMIT_PER_MINUTE": 1})

        def post_from(addr, n):
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30,
                                              source_address=(addr, 0))
            try:
                conn.request("POST", "/api/v1/webhooks/nowcerts",
                             json.dumps(nowcerts_event("FOO_BAR", {"n": n})),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                return r.status
            finally:
                conn.close()

        self.assertEqual(post_from("127.0.0.1", 1), 200)
        self.assertEqual(post_from("127.0.0.1", 2), 429)
        # Another client (loopback has a whole /8 of them) has its own budget.
        self.assertEqual(post_from("127.0.0.2", 3), 200)
        self.assertEqual(post_from("127.0.0.2", 4), 429)

    def test_zero_turns_the_limit_off(self):
        s = self.server({"RATE_LIMIT_PER_MINUTE": 0})
        for i in range(130):
            a = s.nowcerts(nowcerts_event("FOO_BAR", {"n": i}))
            self.assertEqual(a.status, 200, a)


class RestHooks(IntegTest):
    PATH = "/api/v1/webhooks/nowcerts?hook="

    def test_hook_bodies_are_stored_wrapped(self):
        s = self.server()
        body = {"database_id": harness.uniq(), "first_name": "Ann", "last_name": "Lee"}
        r = s.post(self.PATH + "CreateInsured", body)
        self.assertIn(r.status, (200, 202), r)
        eid = r.json()["event_id"]
        wrapped = {"hook": "CreateInsured", "data": body}
        # The id is computed over the wrapper, so it is the same for the same
        # delivery with its keys in another order.
        self.assertEqual(eid, harness.expected_event_id("nowcerts", wrapped))
        e = s.event(eid)
        self.assertEqual((e["source"], e["type"]), ("nowcerts", "hook:CreateInsured"))
        again = dict(reversed(list(body.items())))
        self.assertJSONAnswer(s.post(self.PATH + "CreateInsured", again), 409)
        # Another hook name with the same body is another event.
        r = s.post(self.PATH + "UpdateInsured", body)
        self.assertIn(r.status, (200, 202), r)
        self.assertNotEqual(r.json()["event_id"], eid)
        # Arrays are taken in as they are too (what the mappings then make of
        # them is theirs to say: any of the event answers, never a 422).
        arr = [{"number": "P-1"}, {"number": "P-2"}]
        r = s.post(self.PATH + "CreatePolicy", arr)
        self.assertIn(r.status, (200, 202, 502), r)
        self.assertEqual(r.json()["event_id"],
                         harness.expected_event_id("nowcerts", {"hook": "CreatePolicy", "data": arr}))
        self.assertEqual(s.event(r.json()["event_id"])["type"], "hook:CreatePolicy")

    def test_payload_as_stored(self):
        token = "adm-" + harness.uniq(20)
        s = self.server({"ADMIN_TOKEN": token})
        body = {"insured_database_id": harness.uniq(), "number": "Q-7", "premium": 120.5}
        eid = s.post(self.PATH + "UpdateQuote", body).json()["event_id"]
        one = self.assertJSONAnswer(s.get("/api/v1/events/" + eid,
                                          {"Authorization": "Bearer " + token}), 200)
        self.assertEqual(one["event"]["payload"], {"hook": "UpdateQuote", "data": body})

    def test_unknown_hook_and_bad_bodies_are_422(self):
        s = self.server()
        for hook in ("DeleteInsured", "", "createinsured"):
            with self.subTest(hook=hook):
                body = self.assert422(s.post(self.PATH + hook, {"a": 1}))
                self.assertEqual(body["detail"][0]["loc"], ["query", "hook"])
                self.assertTrue(body["detail"][0]["msg"].startswith(
                    "unexpected value; permitted: 'CreateInsured', 'UpdateInsured'"), body)
                self.assertEqual(body["detail"][0]["type"], "value_error.const")
        for raw in (b'"text"', b"42", b"null", b"{not json"):
            with self.subTest(body=raw):
                self.assert422(s.post(self.PATH + "CreateInsured", raw))
        self.assertEqual(s.events(), [])
        # Without ?hook= the relay format is still required.
        self.assert422(s.nowcerts({"database_id": "1"}))


class Health(IntegTest):
    def test_health_shows_the_last_reload(self):
        s = self.server()
        body = self.assertJSONAnswer(s.get("/health"), 200)
        self.assertEqual(body["status"], "healthy")
        last = body.get("last_reload")
        self.assertIsInstance(last, dict, body)
        self.assertEqual(last.get("result"), "ok", body)
        self.assertRegex(last.get("at", ""), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertIsInstance(last.get("message"), str)


if __name__ == "__main__":
    harness.main()
