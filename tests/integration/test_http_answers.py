"""SPEC section 5: what each HTTP route answers, and when."""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, ghl_event, insured_data, nowcerts_event, uniq  # noqa: E402

CREATE_CONTACT = r"^/contacts/?$"
NC_CREATE_INSURED = r".*/Insured/(OnlyInsertInsured|Insert)"


class Health(IntegTest):
    def test_health_answers_healthy(self):
        s = self.server()
        body = self.assertJSONAnswer(s.get("/health"), 200)
        self.assertEqual(body.get("status"), "healthy", body)
        self.assertEqual(body.get("service"), "NowCerts GHL Integration API", body)
        self.assertIsInstance(body.get("version"), str, body)
        self.assertTrue(body["version"], body)


class NowCertsWebhook(IntegTest):
    def test_insured_insert_creates_ghl_contact(self):
        s = self.server()
        data = insured_data()
        r = s.nowcerts(nowcerts_event("INSURED_INSERT", data))
        body = self.assertJSONAnswer(r, 200)
        self.assertIs(body.get("success"), True, body)
        self.assertIsInstance(body.get("message"), str, body)
        self.assertEventId(body.get("event_id"), "nowcerts")
        self.assertIsInstance(body.get("data"), dict, body)
        self.assertEqual(body["data"].get("action"), "created", body)

        contacts = self.contacts_with_email(data["email"])
        self.assertEqual(len(contacts), 1, contacts)
        c = contacts[0]
        self.assertEqual(body["data"].get("contact_id"), c.get("id"), (body, c))
        # The source design's mapping table (SPEC section 9).
        self.assertEqual(c.get("firstName"), data["firstName"])
        self.assertEqual(c.get("lastName"), data["lastName"])
        self.assertEqual(c.get("address1"), data["address"]["street"])
        self.assertEqual(c.get("city"), data["address"]["city"])
        self.assertEqual(c.get("state"), data["address"]["state"])
        self.assertEqual(c.get("postalCode"), data["address"]["zip"])
        self.assertTrue(c.get("phone"), c)

        creates = self.fakes.calls("ghl", "POST", CREATE_CONTACT)
        self.assertEqual(len(creates), 1, creates)
        h = creates[0]["headers"]
        self.assertEqual(h.get("authorization"), "Bearer " + s.env["GHL_API_KEY"])
        self.assertEqual(h.get("version"), harness.GHL_VERSION)
        self.assertEqual(harness.req_body(creates[0]).get("locationId"), s.env["GHL_LOCATION_ID"])

    def test_nowcerts_real_field_names_are_mapped(self):
        s = self.server()
        email = "real.%s@example.com" % uniq()
        data = {"id": "f7d8502a-c266-4ccd-834a-%012x" % int(uniq(12), 16),
                "firstName": "Rhea", "lastName": "L" + uniq(6), "eMail": email,
                "phone": "+15550001111", "addressLine1": "9 Bay Rd", "city": "Miami",
                "state": "FL", "zipCode": "33101"}
        body = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT", data)), 200)
        self.assertIs(body.get("success"), True, body)
        contacts = self.contacts_with_email(email)
        self.assertEqual(len(contacts), 1, self.fakes.records("ghl", "contacts"))
        self.assertEqual(contacts[0].get("address1"), "9 Bay Rd")
        self.assertEqual(contacts[0].get("postalCode"), "33101")
        self.assertEqual(contacts[0].get("lastName"), data["lastName"])

    def test_unknown_event_type_is_ignored(self):
        s = self.server()
        body = self.assertJSONAnswer(s.nowcerts(nowcerts_event("FOO_BAR")), 200)
        self.assertEqual(body.get("status"), "ignored", body)
        self.assertEqual(self.fakes.calls("ghl"), [])

    def test_dead_event_answers_502(self):
        s = self.server()
        self.fakes.fault("ghl", status=400, count=1, path=CREATE_CONTACT, method="POST",
                         body={"statusCode": 400, "message": "Bad Request"})
        r = s.nowcerts(nowcerts_event("INSURED_INSERT"))
        body = self.assertJSONAnswer(r, 502)
        self.assertIs(body.get("success"), False, body)
        self.assertEqual(body.get("status"), "dead", body)
        self.assertEventId(body.get("event_id"), "nowcerts")
        self.assertIsInstance(body.get("error"), str, body)
        self.assertTrue(body["error"], body)
        ev = s.event(body["event_id"])
        self.assertIsNotNone(ev, "dead event not listed by `ncghl events`")
        self.assertEqual(ev.get("status"), "dead", ev)

    def test_resending_a_dead_event_processes_it_again(self):
        s = self.server()
        self.fakes.fault("ghl", status=400, count=1, path=CREATE_CONTACT, method="POST")
        ev = nowcerts_event("INSURED_INSERT")
        first = self.assertJSONAnswer(s.nowcerts(ev), 502)
        second = self.assertJSONAnswer(s.nowcerts(ev), 200)
        self.assertIs(second.get("success"), True, second)
        self.assertEqual(second.get("event_id"), first.get("event_id"))
        self.assertEqual(second["data"].get("action"), "created", second)
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)
        stored = s.event(first["event_id"])
        self.assertEqual(stored.get("status"), "done", stored)
        self.assertGreaterEqual(int(stored.get("attempts")), 2, stored)


class Idempotency(IntegTest):
    def test_same_event_reordered_and_respaced_is_409(self):
        s = self.server()
        ev = nowcerts_event("INSURED_INSERT")
        first = self.assertJSONAnswer(s.nowcerts(ev), 200)
        eid = first["event_id"]
        reordered = dict(reversed(list(ev.items())))
        reordered["data"] = dict(reversed(list(ev["data"].items())))
        raw = json.dumps(reordered, indent=3)
        self.assertNotEqual(raw, json.dumps(ev))
        second = self.assertJSONAnswer(s.nowcerts(raw), 409)
        self.assertEqual(second, {"detail": "Event already processed: %s" % eid})
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 1)
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)

    def test_event_id_is_sha256_of_source_and_canonical_payload(self):
        s = self.server()
        ev = nowcerts_event("FOO_BAR", {"b": 1, "a": [1, "x", None, True], "c": {"z": "é", "y": ""}})
        body = self.assertJSONAnswer(s.nowcerts(json.dumps(ev, indent=2)), 200)
        self.assertEqual(body.get("event_id"), harness.expected_event_id("nowcerts", ev))

    def test_different_payloads_have_different_ids(self):
        s = self.server()
        a = self.assertJSONAnswer(s.nowcerts(nowcerts_event("FOO_BAR", {"n": 1})), 200)
        b = self.assertJSONAnswer(s.nowcerts(nowcerts_event("FOO_BAR", {"n": 2})), 200)
        self.assertEventId(a["event_id"], "nowcerts")
        self.assertEventId(b["event_id"], "nowcerts")
        self.assertNotEqual(a["event_id"], b["event_id"])

    def test_after_idempotency_ttl_the_same_event_is_new_again(self):
        s = self.server({"IDEMPOTENCY_TTL": 1})
        ev = nowcerts_event("INSURED_INSERT")
        first = self.assertJSONAnswer(s.nowcerts(ev), 200)
        time.sleep(1.5)  # let the idempotency window pass (not a speed check)
        again = self.assertJSONAnswer(s.nowcerts(ev), 200)
        self.assertIs(again.get("success"), True, again)
        self.assertEqual(again.get("event_id"), first["event_id"])
        # Processed again, and still an upsert: the contact is not doubled.
        self.assertEqual(again["data"].get("action"), "updated", again)
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)

    def test_duplicate_of_in_progress_event_is_409(self):
        s = self.server({"WEBHOOK_WAIT_MS": 0})
        self.fakes.config("ghl", latency_ms=1500)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0)
        ev = nowcerts_event("INSURED_INSERT")
        first = self.assertJSONAnswer(s.nowcerts(ev), 202)
        second = self.assertJSONAnswer(s.nowcerts(ev), 409)
        self.assertEqual(second, {"detail": "Event already processed: %s" % first["event_id"]})
        s.wait_event(first["event_id"])
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)


class Queued(IntegTest):
    def test_wait_zero_answers_202_and_finishes_in_background(self):
        s = self.server({"WEBHOOK_WAIT_MS": 0})
        self.fakes.config("ghl", latency_ms=300)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0)
        ev = nowcerts_event("INSURED_INSERT")
        body = self.assertJSONAnswer(s.nowcerts(ev), 202)
        self.assertIs(body.get("success"), True, body)
        self.assertEqual(body.get("status"), "queued", body)
        self.assertEventId(body.get("event_id"), "nowcerts")
        # Stored (committed) before the answer: another process sees it now.
        self.assertIsNotNone(s.event(body["event_id"]), "acknowledged event not in the store")
        s.wait_event(body["event_id"])
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)

    def test_slow_upstream_answers_202_within_wait(self):
        s = self.server({"WEBHOOK_WAIT_MS": 200})
        self.fakes.config("ghl", latency_ms=1500)
        self.addCleanup(self.fakes.config, "ghl", latency_ms=0)
        ev = nowcerts_event("INSURED_INSERT")
        body = self.assertJSONAnswer(s.nowcerts(ev), 202)
        self.assertEqual(body.get("status"), "queued", body)
        s.wait_event(body["event_id"])
        self.assertEqual(len(self.contacts_with_email(ev["data"]["email"])), 1)


class GhlWebhook(IntegTest):
    def _created_insured(self, s, body, email):
        ans = self.assertJSONAnswer(s.ghl(body), 200)
        self.assertIs(ans.get("success"), True, ans)
        self.assertEventId(ans.get("event_id"), "ghl")
        self.assertEqual(ans.get("data", {}).get("action"), "created", ans)
        ins = self.insureds_with_email(email)
        self.assertEqual(len(ins), 1, self.fakes.records("nowcerts", "insureds"))
        ins_id = ins[0].get("id") or ins[0].get("databaseId")
        self.assertEqual(ans["data"].get("insured_id"), ins_id, (ans, ins))
        return ans, ins[0]

    def test_flat_contact_create_creates_insured(self):
        s = self.server()
        c = self.seed_contact()
        _, ins = self._created_insured(s, ghl_event("ContactCreate", c), c["email"])
        self.assertEqual(ins.get("firstName"), c["firstName"])
        self.assertEqual(ins.get("lastName"), c["lastName"])

    def test_contact_nested_under_data(self):
        s = self.server()
        c = self.seed_contact()
        body = {"type": "ContactCreate", "locationId": "it-location-1",
                "timestamp": "2025-01-28T14:35:00.000Z", "webhookId": "test-" + uniq(), "data": c}
        self._created_insured(s, body, c["email"])

    def test_source_design_format(self):
        s = self.server()
        c = self.seed_contact()
        body = {"event": "contact.created", "contact": c, "locationId": "it-location-1"}
        self._created_insured(s, body, c["email"])

    def test_duplicate_is_200_duplicate(self):
        s = self.server()
        c = self.seed_contact()
        ev = ghl_event("ContactCreate", c)
        first, _ = self._created_insured(s, ev, c["email"])
        again = self.assertJSONAnswer(s.ghl(json.dumps(ev, indent=1)), 200)
        self.assertEqual(again.get("status"), "duplicate", again)
        self.assertEqual(again.get("event_id"), first["event_id"], again)
        self.assertEqual(len(self.insureds_with_email(c["email"])), 1)

    def test_dead_event_is_answered_200(self):
        s = self.server()
        self.fakes.fault("nowcerts", status=400, count=1, path=NC_CREATE_INSURED, method="POST",
                         body={"Message": "The request is invalid."})
        body = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", self.seed_contact())), 200)
        self.assertIs(body.get("success"), False, body)
        self.assertEqual(body.get("status"), "dead", body)
        self.assertEventId(body.get("event_id"), "ghl")
        self.assertTrue(body.get("error"), body)

    def test_unknown_type_is_ignored(self):
        s = self.server()
        body = {"type": "NoteCreate", "locationId": "it-location-1", "id": "n" + uniq(),
                "body": "hello", "contactId": "c1"}
        ans = self.assertJSONAnswer(s.ghl(body), 200)
        self.assertEqual(ans.get("status"), "ignored", ans)
        self.assertEqual(self.fakes.calls("nowcerts", "POST", NC_CREATE_INSURED), [])

    def test_nowcerts_status_0_is_a_failure_not_a_success(self):
        # NowCerts answers many failures as HTTP 200 with "status":0.
        s = self.server({"MAX_RETRIES": 0})
        self.fakes.fault("nowcerts", status=200, count=20, path=NC_CREATE_INSURED, method="POST",
                         body={"status": 0, "message": "At least CommercialName or FirstName "
                                                       "and LastName are required"})
        ans = s.ghl(ghl_event("ContactCreate", self.seed_contact()))
        self.assertIn(ans.status, (200, 202), ans)
        body = ans.json()
        self.assertNotEqual(body.get("status"), None, body)
        self.assertIn(body.get("status"), ("dead", "queued"), body)
        ev = s.event(body["event_id"])
        self.assertNotEqual(ev.get("status"), "done", ev)


class ManualSync(IntegTest):
    def test_manual_contact_to_ghl(self):
        s = self.server()
        data = insured_data()
        r = s.manual({"source": "nowcerts", "entity_type": "contact", "direction": "to_ghl",
                      "data": data})
        body = self.assertJSONAnswer(r, 200)
        self.assertIs(body.get("success"), True, body)
        self.assertEventId(body.get("event_id"))
        self.assertEqual(body.get("data", {}).get("action"), "created", body)
        contacts = self.contacts_with_email(data["email"])
        self.assertEqual(len(contacts), 1)
        self.assertEqual(body["data"].get("contact_id"), contacts[0].get("id"))

    def test_manual_contact_to_nowcerts(self):
        s = self.server()
        c = self.seed_contact()
        r = s.manual({"source": "ghl", "entity_type": "contact", "direction": "to_nowcerts",
                      "data": c})
        body = self.assertJSONAnswer(r, 200)
        self.assertIs(body.get("success"), True, body)
        self.assertEqual(body.get("data", {}).get("action"), "created", body)
        self.assertEqual(len(self.insureds_with_email(c["email"])), 1)

    def test_manual_missing_field_is_422(self):
        s = self.server()
        self.assert422(s.manual({"source": "nowcerts", "entity_type": "contact",
                                 "direction": "to_ghl"}))


class BadRequests(IntegTest):
    def test_not_json_is_422_on_every_route(self):
        s = self.server()
        for route in ("/api/v1/webhooks/nowcerts", "/api/v1/webhooks/ghl", "/api/v1/sync/manual"):
            with self.subTest(route=route):
                self.assert422(s.post(route, b'{"event_type": "INSURED_INSERT", data: }'))

    def test_not_an_object_is_422(self):
        s = self.server()
        for raw in (b"[1, 2]", b'"INSURED_INSERT"', b"null", b"42"):
            with self.subTest(body=raw):
                self.assert422(s.nowcerts(raw))
                self.assert422(s.ghl(raw))

    def test_missing_event_type_is_422(self):
        s = self.server()
        body = self.assert422(s.nowcerts({"timestamp": "2024-01-15T10:30:00Z", "data": {}}))
        self.assertTrue(any("event_type" in d["loc"] for d in body["detail"]), body)

    def test_data_not_an_object_is_422(self):
        s = self.server()
        for data in ("x", [1], 3, None):
            with self.subTest(data=data):
                self.assert422(s.nowcerts({"event_type": "INSURED_INSERT", "data": data}))

    def test_missing_data_is_422(self):
        s = self.server()
        self.assert422(s.nowcerts({"event_type": "INSURED_INSERT"}))

    def test_body_over_max_body_bytes_is_413(self):
        s = self.server({"MAX_BODY_BYTES": 1000})
        big = nowcerts_event("FOO_BAR", {"pad": "x" * 2000})
        r = s.nowcerts(big)
        self.assertEqual(r.status, 413, r)
        self.assertTrue(r.content_type.startswith("application/json"), r.content_type)
        self.assertIsInstance(r.json(), dict)
        small = nowcerts_event("FOO_BAR", {"pad": "x" * 700})
        self.assertLess(len(json.dumps(small)), 1000)
        self.assertEqual(s.nowcerts(small).status, 200)

    def test_unknown_route_is_404_json(self):
        s = self.server()
        for method, path in (("GET", "/nope"), ("POST", "/api/v1/webhooks/zoho"),
                             ("GET", "/api/v2/health")):
            with self.subTest(path=path):
                r = s.request(method, path, {} if method == "POST" else None)
                self.assertJSONAnswer(r, 404)
                self.assertIsInstance(r.json(), dict)

    def test_wrong_method_is_405_json(self):
        s = self.server()
        for method, path in (("GET", "/api/v1/webhooks/nowcerts"), ("GET", "/api/v1/webhooks/ghl"),
                             ("GET", "/api/v1/sync/manual"), ("POST", "/health"),
                             ("PUT", "/api/v1/webhooks/nowcerts")):
            with self.subTest(method=method, path=path):
                r = s.request(method, path, {} if method != "GET" else None)
                self.assertJSONAnswer(r, 405)
                self.assertIsInstance(r.json(), dict)

    def test_trace_is_405_json(self):
        # Past libevent's own page (501 text/html) since TRACE reaches ours.
        s = self.server()
        r = s.request("TRACE", "/api/v1/webhooks/nowcerts", None)
        self.assertJSONAnswer(r, 405)
        self.assertEqual(r.headers.get("allow"), "POST")

    def test_head_answers_headers_only_on_a_kept_connection(self):
        # A HEAD answer carries the GET body's length and no body, so the
        # next answer on the same connection is read from its first byte.
        s = self.server()
        import socket
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(b"HEAD /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /openapi.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = harness.recv_all(c)
        head, rest = data.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        head_len = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
        self.assertEqual(len(head_len), 1, head)
        self.assertTrue(rest.startswith(b"HTTP/1.1 200"), rest[:80])
        get_head, get_body = rest.split(b"\r\n\r\n", 1)
        self.assertEqual(int(head_len[0].split(b":")[1]), len(get_body))
        self.assertIsInstance(json.loads(get_body), dict)


if __name__ == "__main__":
    harness.main()
