#!/usr/bin/env python3
"""Self-test of fake_upstreams.py: starts the fakes on free ports and checks
the behaviour ncghl's tests rely on, one line per check, then a closing line
"N passed, N failed". Exits 1 if any check failed. Standard library only."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
FAKES = os.path.join(HERE, "fake_upstreams.py")
RATE_LIMIT = 40
USER, PASSWORD, GHL_TOKEN, LOCATION = "agent@example.com", "s3cret", "pit-test-token", "LOC123"
GHL_HEADERS = {"Authorization": "Bearer " + GHL_TOKEN, "Version": "2021-07-28"}


class Response:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<{self.status} {self.raw[:300]!r}>"


def call(port, method, path, body=None, headers=None, form=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    hdrs = dict(headers or {})
    data = None
    if form is not None:
        data = form.encode()
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        data = data.encode() if isinstance(data, str) else data
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode())
    finally:
        conn.close()


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, fn):
        try:
            fn()
        except AssertionError as e:
            self.failed += 1
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # a crash in a check is a failure too
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        else:
            self.passed += 1
            print(f"ok   {name}", flush=True)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


class HookTarget:
    """A loopback HTTP server that keeps every POST it receives (a REST-hook
    target), answering 200."""

    def __init__(self):
        self.received = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                target.received.append((self.path, self.headers.get("Content-Type"),
                                        self.rfile.read(n).decode()))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def start_fakes():
    proc = subprocess.Popen(
        [sys.executable, FAKES, "--nowcerts-port", "0", "--ghl-port", "0", "--quiet",
         "--nowcerts-user", USER, "--nowcerts-pass", PASSWORD, "--ghl-token", GHL_TOKEN,
         "--ghl-rate-limit", str(RATE_LIMIT), "--ghl-rate-window", "600", "--ghl-locations", LOCATION + ",LOC2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.fullmatch(r"READY nowcerts=(\d+) ghl=(\d+)\n", line)
    if not m:
        proc.kill()
        raise SystemExit(f"fakes did not start: {line!r} {proc.stderr.read()!r}")
    return proc, int(m.group(1)), int(m.group(2))


def main():
    proc, nc, ghl = start_fakes()
    c = Checker()
    state = {}

    def login(username=USER, password=PASSWORD, client_id="ngAuthApp"):
        return call(nc, "POST", "/api/token", form=urlencode(
            {"grant_type": "password", "username": username, "password": password, "client_id": client_id}))

    def refresh(token):
        return call(nc, "POST", "/api/token", form=urlencode(
            {"grant_type": "refresh_token", "refresh_token": token, "client_id": "ngAuthApp"}))

    def nc_auth():
        return {"Authorization": "Bearer " + state["access"]}

    def nc_get(path, params):
        return call(nc, "GET", path + "?" + urlencode(params), headers=nc_auth())

    def nc_post(path, body):
        return call(nc, "POST", path, body=body, headers=nc_auth())

    def ghl_call(method, path, body=None, headers=GHL_HEADERS):
        return call(ghl, method, path, body=body, headers=headers)

    # ---- NowCerts: tokens ---------------------------------------------------
    def t_login():
        r = login()
        expect(r.status == 200, f"login answered {r}")
        b = r.json
        expect(b["token_type"] == "bearer" and b["expires_in"] == 3600, f"token fields {b}")
        expect(re.fullmatch(r"[0-9a-f]{32}", b["refresh_token"]), "refresh_token is not 32 hex")
        expect(b["as:client_id"] == "ngAuthApp" and b["userName"] == USER, "client id / userName")
        expect(re.fullmatch(r"[0-9a-f-]{36}", b["userId"]), "userId is not a lowercase guid")
        expect(login().json["userId"] == b["userId"], "userId is not fixed per username")
        expect(b[".expires"].endswith("GMT") and "agencyId" in b, "RFC1123 .expires / agencyId")
        state.update(access=b["access_token"], refresh=b["refresh_token"], user_id=b["userId"])
    c.check("nowcerts: password login returns the documented token fields", t_login)

    def t_login_errors():
        r = login(client_id="other")
        expect(r.status == 400 and r.json == {"error": "invalid_client",
                                              "error_description": "Client id is not set."}, f"{r}")
        r = login(password="wrong")
        expect(r.status == 400 and r.json["error"] == "invalid_grant"
               and r.json["error_description"] == "The user name or password is incorrect.", f"{r}")
        # The form is parsed whatever the Content-Type says.
        r = call(nc, "POST", "/api/token", body=urlencode({"grant_type": "password", "username": USER,
                                                          "password": PASSWORD, "client_id": "ngAuthApp"}),
                 headers={"Content-Type": "application/json"})
        expect(r.status == 200, f"form sent as application/json refused: {r}")
    c.check("nowcerts: bad client_id and bad credentials are 400 OAuth errors", t_login_errors)

    def t_rotation():
        first = state["refresh"]
        r = refresh(first)
        expect(r.status == 200, f"refresh answered {r}")
        second = r.json["refresh_token"]
        expect(second != first, "refresh token did not rotate")
        r = refresh(first)
        expect(r.status == 400 and r.json == {"error": "invalid_grant",
                                              "error_description": "invalid refresh token"}, f"old token: {r}")
        r = refresh(second)
        expect(r.status == 200, f"latest refresh token refused: {r}")
        state.update(access=r.json["access_token"], refresh=r.json["refresh_token"])
    c.check("nowcerts: refresh tokens rotate; only the latest works", t_rotation)

    def t_bearer():
        r = call(nc, "GET", "/api/InsuredDetailList")
        expect(r.status == 401 and r.json == {"Message": "Authorization has been denied for this request."}, f"{r}")
        r = call(nc, "GET", "/api/InsuredDetailList", headers={"Authorization": "bearer " + state["access"]})
        expect(r.status == 200, f"lowercase bearer scheme refused: {r}")
        r = call(nc, "GET", "/api/InsuredDetailList", headers={"Authorization": "Bearer nope"})
        expect(r.status == 401, f"unknown token accepted: {r}")
    c.check("nowcerts: API routes need a live Bearer token (scheme in any case)", t_bearer)

    def t_revoke():
        expect(call(nc, "POST", "/_revoke").status == 200, "/_revoke failed")
        r = call(nc, "GET", "/api/InsuredDetailList", headers=nc_auth())
        expect(r.status == 401, f"revoked token still works: {r}")
        r = refresh(state["refresh"])
        expect(r.status == 200, f"refresh after revoke failed: {r}")
        state.update(access=r.json["access_token"], refresh=r.json["refresh_token"])
        expect(nc_get("/api/InsuredDetailList", {}).status == 200, "new token refused")
    c.check("nowcerts: /_revoke kills access tokens, refresh still works", t_revoke)

    # ---- NowCerts: insureds ----------------------------------------------------
    def t_overwrite():
        a = nc_post("/api/Insured/Insert", {"firstName": "Jane", "lastName": "Doe", "type": 1,
                                            "insuredType": 1, "active": True, "eMail": "jane@one.com"})
        expect(a.status == 200 and a.json["status"] == 1, f"create: {a}")
        expect(a.json["message"] == "Insured 'Doe, Jane' has been imported", f"create message: {a.json}")
        b = nc_post("/api/Insured/Insert", {"firstName": "JANE", "lastName": "doe", "type": 0,
                                            "insuredType": 1, "active": True, "eMail": "other@two.com"})
        expect(b.json["insuredDatabaseId"] == a.json["insuredDatabaseId"], "same name did not match")
        expect("exists in database and has been overridden." in b.json["message"], f"message: {b.json}")
        rows = json.loads(call(nc, "GET", "/_records/insureds").raw)
        expect(len(rows) == 1, f"{len(rows)} insureds, want 1")
        row = rows[0]
        expect(row["eMail"] == "other@two.com" and row["type"] == "Insured"
               and row["insuredType"] == "Personal", f"record not overwritten / enums not names: {row}")
        expect(row["changeDate"].endswith("Z") and row["lastChangeUserId"] == state["user_id"], f"{row}")
        state["jane"] = a.json["insuredDatabaseId"]
    c.check("nowcerts: Insured/Insert overwrites a same-name record", t_overwrite)

    def t_insert_replaces():
        jane = state["jane"]
        full = {"firstName": "Jane", "lastName": "Doe", "type": 0, "insuredType": 1, "active": True,
                "eMail": "other@two.com"}

        def row():
            return next(x for x in json.loads(call(nc, "GET", "/_records/insureds").raw) if x["id"] == jane)
        created = row()["createDate"]
        r = nc_post("/api/Insured/Insert", dict(full, databaseId=jane, city="Tampa", eMail2="two@x.com",
                                                dateOfBirth="1980-02-03T00:00:00Z"))
        expect(r.json["status"] == 1 and r.json["insuredDatabaseId"] == jane, f"{r}")
        got = row()
        expect(got["city"] == "Tampa" and got["eMail2"] == "two@x.com", f"fields not written: {got}")
        # By databaseId: what the body leaves out is blanked.
        r = nc_post("/api/Insured/Insert", dict(full, databaseId=jane.upper()))
        expect(r.json["status"] == 1 and "has been overridden" in r.json["message"], f"{r}")
        got = row()
        expect(got["city"] is None and got["eMail2"] is None and got["dateOfBirth"] is None,
               f"fields left out of the Insert were kept: {got}")
        expect(got["id"] == jane and got["createDate"] == created and got["eMail"] == "other@two.com"
               and got["insuredType"] == "Personal" and got["lastChangeUserId"] == state["user_id"], f"{got}")
        # By the name-match quirk, the same: type/insuredType/active left out
        # fall back to their defaults.
        nc_post("/api/Insured/Insert", dict(full, databaseId=jane, city="Tampa"))
        r = nc_post("/api/Insured/Insert", {"firstName": "jane", "lastName": "DOE", "eMail": "other@two.com"})
        got = row()
        expect(r.json["insuredDatabaseId"] == jane and got["city"] is None and got["active"] is False
               and got["insuredType"] == "Commercial" and got["firstName"] == "jane", f"name match: {got}")
        nc_post("/api/Insured/Insert", dict(full, databaseId=jane))
    c.check("nowcerts: a matched Insured/Insert replaces the record (left-out fields blanked)",
            t_insert_replaces)

    def t_status0():
        r = nc_post("/api/Insured/Insert", {"eMail": "x@y.com", "type": 1})
        expect(r.status == 200 and r.json == {"status": 0, "message":
               "At least CommercialName or FirstName and LastName or Id should be entered"}, f"{r}")
        r = nc_post("/api/Insured/Insert", {"insured": {"firstName": "A", "lastName": "B"}})
        expect(r.json["status"] == 0, f"wrapped body accepted: {r}")
        r = nc_post("/api/Insured/Insert", {"databaseId": "11111111-2222-3333-4444-555555555555",
                                            "firstName": "Jane", "lastName": "Doe"})
        expect(r.status == 200 and r.json == {"status": 0, "message": "Insured not found"}, f"{r}")
        r = nc_post("/api/Insured/Insert", b"{not json")
        expect(r.status == 400 and "Message" in r.json, f"non-JSON body: {r}")
    c.check("nowcerts: failures are HTTP 200 with status 0", t_status0)

    def t_only_insert():
        r = nc_post("/api/Insured/OnlyInsertInsured", {"firstName": "Jane", "lastName": "Doe", "type": 1,
                                                       "insuredType": 1, "active": True,
                                                       "eMail": "o'brien@three.com"})
        expect(r.json["status"] == 1 and r.json["insuredDatabaseId"] != state["jane"], f"{r}")
        state["jane2"] = r.json["insuredDatabaseId"]
        expect(len(json.loads(call(nc, "GET", "/_records/insureds").raw)) == 2, "no second record")
    c.check("nowcerts: Insured/OnlyInsertInsured always creates", t_only_insert)

    def t_odata_filter():
        r = nc_get("/api/InsuredDetailList", {"$filter": "eMail eq 'o''brien@three.com'", "$count": "true"})
        expect(r.status == 200 and r.json["@odata.count"] == 1
               and r.json["value"][0]["id"] == state["jane2"], f"email filter: {r}")
        expect(r.json["@odata.context"].endswith("/api/$metadata#InsuredDetailList"), "context")
        r = nc_get("/api/InsuredDetailList", {"$filter": "tolower(eMail) eq 'other@two.com'"})
        expect([x["id"] for x in r.json["value"]] == [state["jane"]], f"tolower: {r}")
        expect("@odata.count" not in r.json, "count without $count=true")
        r = nc_get("/api/InsuredDetailList", {"$filter": f"id eq {state['jane']}"})
        expect(len(r.json["value"]) == 1, f"id eq guid: {r}")
        r = nc_get("/api/InsuredDetailList", {"$filter": f"id eq '{state['jane']}'"})
        expect(r.status == 400 and r.json["Message"].startswith(
            "The query specified in the URI is not valid."), f"quoted guid accepted: {r}")
        r = nc_get("/api/InsuredDetailList", {"$filter": "eMail eq"})
        expect(r.status == 400, f"bad filter: {r}")
        r = nc_get("/api/InsuredDetailList", {"$filter": "changeDate ge 2000-01-01T00:00:00Z and "
                                                         "changeDate lt 2999-01-01T00:00:00Z"})
        expect(len(r.json["value"]) == 2, f"changeDate window: {r}")
        r = nc_get("/api/InsuredDetailList", {"$filter": "changeDate gt 2999-01-01T00:00:00Z"})
        expect(r.json["value"] == [], f"future changeDate: {r}")
    c.check("nowcerts: OData $filter (eq, tolower, guid, changeDate, errors)", t_odata_filter)

    def t_email_search():
        ids = {}
        for key, rec in (("a", {"commercialName": "Mail A", "eMail": "Ann.Lee@Example.com"}),
                         ("b", {"commercialName": "Mail B", "eMail": "x@y.com", "eMail2": "ANN.LEE@example.COM"}),
                         ("c", {"commercialName": "Mail C", "eMail3": "ann.lee@example.com",
                                "phone": "(813) 555-0101"}),
                         ("d", {"commercialName": "Mail D", "cellPhone": "8135550101", "smsPhone": "+18135550199"})):
            ids[key] = call(nc, "POST", "/_records/insureds", body=rec).json["id"]

        def hits(flt):
            r = nc_get("/api/InsuredDetailList", {"$filter": flt})
            expect(r.status == 200, f"{flt}: {r}")
            return sorted(k for k, v in ids.items() if v in {x["id"] for x in r.json["value"]})
        expect(hits("eMail eq 'ann.lee@example.com'") == [], "eq must be case-sensitive")
        expect(hits("eMail eq 'Ann.Lee@Example.com'") == ["a"], "eq exact")
        expect(hits("eMail ne 'Ann.Lee@Example.com' and startswith(commercialName,'Mail')") == ["b", "c", "d"], "ne")
        email = "ann.lee@example.com"
        flt = " or ".join(f"tolower({f}) eq '{email}'" for f in ("eMail", "eMail2", "eMail3"))
        expect(hits(flt) == ["a", "b", "c"], f"tolower across the e-mail fields: {hits(flt)}")
        expect(hits("toupper(eMail2) eq 'ANN.LEE@EXAMPLE.COM'") == ["b"], "toupper")
        expect(hits("contains(eMail,'Lee@')") == ["a"] and hits("contains(eMail,'lee@')") == [],
               "contains is case-sensitive")
        expect(hits("contains(tolower(eMail),'lee@')") == ["a"], "contains(tolower())")
        expect(hits("eMail in ('x@y.com','ann.lee@example.com')") == ["b"], "in is case-sensitive")
        flt = ("phone eq '(813) 555-0101' or cellPhone eq '8135550101' or smsPhone eq '+18135550199'")
        expect(hits(flt) == ["c", "d"], f"phones: {hits(flt)}")
        expect(hits("contains(cellPhone,'5550101') or contains(phone,'555-0101')") == ["c", "d"], "phone contains")
        expect(hits("phone eq '8135550101'") == [], "phones compare as typed")
        r = nc_get("/api/InsuredDetailList", {"$filter": "tolower(eMail, eMail2) eq 'x'"})
        expect(r.status == 400, f"tolower with two arguments: {r}")
        r = nc_get("/api/InsuredDetailList", {"$filter": "email eq 'x'"})
        expect(r.status == 400, f"field names are case-sensitive: {r}")
        for v in ids.values():
            call(nc, "DELETE", f"/_records/insureds/{v}")
    c.check("nowcerts: e-mail and phone search (tolower, or, contains; eq is case-sensitive)", t_email_search)

    def t_odata_paging():
        for i, minute in enumerate((5, 1, 3, 1)):
            call(nc, "POST", "/_records/insureds", body={
                "id": f"00000000-0000-0000-0000-00000000000{i}", "commercialName": f"Seed {i}",
                "changeDate": f"2024-05-01T10:0{minute}:00Z"})
        base = {"$filter": "changeDate ge 2024-05-01T10:00:00Z and changeDate le 2024-05-01T10:10:00Z",
                "$orderby": "changeDate asc, id asc", "$count": "true", "$top": "2"}
        p1 = nc_get("/api/InsuredDetailList", dict(base, **{"$skip": "0"})).json
        p2 = nc_get("/api/InsuredDetailList", dict(base, **{"$skip": "2"})).json
        ids = [x["id"][-1] for x in p1["value"] + p2["value"]]
        expect(p1["@odata.count"] == 4 and ids == ["1", "3", "2", "0"], f"order/paging: {ids} {p1}")
        r = nc_get("/api/InsuredDetailList", {"$top": "-1"})
        expect(r.status == 400, f"$top=-1 accepted: {r}")
    c.check("nowcerts: OData $orderby/$top/$skip/$count paging", t_odata_paging)

    def t_policies():
        r = nc_post("/api/Policy/Insert", {"insuredDatabaseId": state["jane"], "number": "POL-1",
                                           "effectiveDate": "2024-01-01T00:00:00Z",
                                           "expirationDate": "2025-01-01T00:00:00Z",
                                           "lineOfBusinessName": "Auto", "carrierName": "Acme", "premium": 1200.5})
        expect(r.json["status"] == 1 and r.json["insuredDatabaseId"] == state["jane"], f"{r}")
        pid = r.json["policiesOrQuotes"][0]["policyOrQuoteId"]
        r = nc_post("/api/Quote/Insert", {"insuredFirstName": "jane", "insuredLastName": "doe",
                                          "number": "POL-1", "lineOfBusinessName": "Home", "premium": 50})
        expect(r.json["status"] == 1 and r.json["policiesOrQuotes"][0]["isQuote"] is True, f"quote: {r}")
        r = nc_post("/api/Policy/Insert", {"insuredDatabaseId": state["jane"], "number": "pol-1", "premium": 99})
        expect(r.json["policiesOrQuotes"][0]["policyOrQuoteId"] == pid, f"number upsert: {r}")
        r = nc_get("/api/PolicyDetailList", {"$filter": f"insuredDatabaseId eq {state['jane']} and isQuote eq false"})
        rows = r.json["value"]
        expect(len(rows) == 1 and rows[0]["id"] == rows[0]["databaseId"] == pid, f"{r}")
        expect(rows[0]["totalPremium"] == 99 and rows[0]["lineOfBusinesses"] == [{"lineOfBusinessName": "Auto"}]
               and rows[0]["insuredEmail"] == "other@two.com", f"read-back: {rows[0]}")
        r = nc_get("/api/PolicyDetailList", {"$filter": "isQuote eq true and number eq 'POL-1'"})
        expect(len(r.json["value"]) == 1, f"quote filter: {r}")
        r = nc_post("/api/Policy/Insert", {"insuredDatabaseId": state["jane"]})
        expect(r.status == 200 and r.json == {"status": 0, "message": "Policy number is required"}, f"{r}")
    c.check("nowcerts: Policy/Quote Insert upsert and PolicyDetailList", t_policies)

    def t_odata_large():
        # Paging the way the poller and backfill do, over thousands of records
        # with second-precision changeDates and many ties.
        n = 2500
        rows = [{"id": "%08x-0000-4000-8000-%012x" % (i * 7919 % n, i), "commercialName": f"Big {i}",
                 "changeDate": "2024-06-01T10:%02d:%02dZ" % (i // 60 % 60, i % 60 // 3)}
                for i in range(n)]
        rows.append({"commercialName": "Too old", "changeDate": "2024-06-01T09:59:59Z"})
        call(nc, "POST", "/_records/insureds", body=rows)
        seen, skip = [], 0
        base = {"$filter": "changeDate ge 2024-06-01T10:00:00Z and changeDate lt 2024-06-02T00:00:00Z",
                "$orderby": "changeDate asc, id asc", "$top": "100", "$count": "true"}
        while True:
            r = nc_get("/api/InsuredDetailList", dict(base, **{"$skip": str(skip)}))
            expect(r.status == 200 and r.json["@odata.count"] == n, f"page at {skip}: {r}")
            seen += [(x["changeDate"], x["id"]) for x in r.json["value"]]
            skip += 100
            if len(r.json["value"]) < 100:
                break
        expect(len(seen) == n and len(set(seen)) == n, f"{len(seen)} rows, {len(set(seen))} distinct")
        expect(seen == sorted(seen), "pages are not in (changeDate, id) order")
        r = nc_get("/api/InsuredDetailList", {"$filter": "changeDate ge 2024-06-01T10:59:59Z"})
        expect(r.json["value"] == [] or all(x["changeDate"] >= "2024-06-01T10:59:59Z" for x in r.json["value"]),
               "second-precision filter")
        r = nc_get("/api/InsuredDetailList", {"$filter": "changeDate ge 2024-06-01T10:00:19Z and "
                                                         "changeDate le 2024-06-01T10:00:19Z", "$count": "true"})
        expect(r.json["@odata.count"] == 3 and {x["changeDate"] for x in r.json["value"]}
               == {"2024-06-01T10:00:19Z"}, f"one second: {r.json['@odata.count']}")
    c.check("nowcerts: paging 2,500 insureds by changeDate with second precision", t_odata_large)

    def t_zapier_hooks():
        call(nc, "POST", "/_reset")
        state.update(access=login().json["access_token"])
        hook = HookTarget()
        try:
            url = hook.url + "/api/v1/webhooks/nowcerts?hook=CreateInsured"
            r = nc_post("/api/Zapier/Subscribe", {"target_url": url, "event": 0})
            expect(r.status == 200 and r.json["status"] == 1 and r.json["event"] == 0 and r.json["id"], f"{r}")
            again = nc_post("/api/Zapier/Subscribe", {"target_url": url, "event": 0})
            expect(again.json["id"] == r.json["id"], "the same subscription twice made two")
            upd = hook.url + "/api/v1/webhooks/nowcerts?hook=UpdateInsured"
            expect(nc_post("/api/Zapier/Subscribe", {"target_url": upd, "event": 32}).status == 200, "update")
            subs = json.loads(call(nc, "GET", "/_records/subscriptions").raw)
            expect(sorted(x["event"] for x in subs) == [0, 32], f"subscriptions: {subs}")
            for bad in ({"target_url": "not a url", "event": 0}, {"target_url": url, "event": 99},
                        {"target_url": url}):
                r = nc_post("/api/Zapier/Subscribe", bad)
                expect(r.status == 400, f"{bad} accepted: {r}")
            # A write through the API, then a seeded change: one delivery each.
            r = nc_post("/api/Insured/Insert", {"firstName": "Hook", "lastName": "Ed", "type": 0,
                                                "insuredType": 1, "active": True, "eMail": "hook@x.com"})
            iid = r.json["insuredDatabaseId"]
            got = hook.wait(1)
            expect(len(got) == 1, f"deliveries after the insert: {got}")
            path, ctype, raw = got[0]
            body = json.loads(raw)
            expect(path == "/api/v1/webhooks/nowcerts?hook=CreateInsured" and ctype == "application/json",
                   f"{path} {ctype}")
            expect(body["database_id"] == iid and body["first_name"] == "Hook" and body["email"] == "hook@x.com"
                   and body["last_change_user_id"] == state["user_id"] and "change_date" in body, f"{body}")
            row = dict(json.loads(call(nc, "GET", "/_records/insureds").raw)[0], city="Tampa",
                       changeDate="2030-01-01T00:00:00Z")
            call(nc, "POST", "/_records/insureds", body=row)
            got = hook.wait(2)
            expect(len(got) == 2 and got[1][0].endswith("hook=UpdateInsured")
                   and json.loads(got[1][2])["city"] == "Tampa", f"seeded update: {got}")
            # The fake logs a delivery once its answer is in, which can be a
            # moment after the listener above has the request.
            for _ in range(100):
                log = call(nc, "GET", "/_deliveries").json
                if len(log) >= 2:
                    break
                time.sleep(0.05)
            expect([(x["name"], x["status"]) for x in log] == [("CreateInsured", 200), ("UpdateInsured", 200)],
                   f"/_deliveries: {log}")
            # Unsubscribed: no more deliveries; a prospect is not an insured.
            r = nc_post("/api/Zapier/Unsubscribe", {"target_url": upd, "event": 32})
            expect(r.status == 200 and r.json["status"] == 1 and r.json["removed"] == 1, f"{r}")
            call(nc, "POST", "/_records/insureds", body=dict(row, city="Miami", changeDate="2030-01-01T00:00:01Z"))
            nc_post("/api/Insured/OnlyInsertInsured", {"firstName": "Pro", "lastName": "Spect", "type": 1})
            time.sleep(0.3)
            expect(len(hook.received) == 2, f"delivered after unsubscribing: {hook.received[2:]}")
            call(nc, "POST", "/_records/subscriptions", body={"target_url": hook.url + "/p", "event": 1})
            nc_post("/api/Policy/Insert", {"insuredDatabaseId": iid, "number": "H-1", "premium": 10,
                                           "lineOfBusinessName": "Auto"})
            got = hook.wait(3)
            pol = json.loads(got[2][2]) if len(got) == 3 else {}
            expect(pol.get("number") == "H-1" and pol.get("insured_database_id") == iid
                   and pol.get("line_of_business_name") == "Auto" and pol.get("premium") == 10, f"{got[2:]}")
        finally:
            hook.close()
    c.check("nowcerts: Zapier/Subscribe and Unsubscribe, REST-hook deliveries on writes and seeds",
            t_zapier_hooks)

    def t_nc_agent_edits():
        call(nc, "POST", "/_reset")
        state.update(access=login().json["access_token"])
        hook = HookTarget()
        try:
            nc_post("/api/Zapier/Subscribe", {"target_url": hook.url + "/u", "event": "UpdateInsured"})
            nc_post("/api/Zapier/Subscribe", {"target_url": hook.url + "/c", "event": "ConvertProspectToInsured"})
            iid = "0a0a0a0a-0000-4000-8000-000000000001"
            call(nc, "POST", "/_records/insureds", body={
                "id": iid, "firstName": "Ann", "lastName": "Lee", "city": "Tampa", "eMail": "ann@x.com", "type": 0,
                "active": True, "createDate": "2024-01-01T00:00:00Z", "changeDate": "2024-01-01T00:00:00Z",
                "lastChangeUserId": state["user_id"]})
            r = call(nc, "PATCH", f"/_records/insureds/{iid.upper()}", body={"city": "Miami", "eMail": None,
                                                                             "active": False})
            expect(r.status == 200, f"edit: {r}")
            got = r.json
            expect(got["city"] == "Miami" and got["eMail"] is None and got["active"] is False
                   and got["type"] == "Insured" and got["firstName"] == "Ann", f"edited record: {got}")
            expect(got["changeDate"] > "2024-01-01T00:00:00Z" and got["createDate"] == "2024-01-01T00:00:00Z",
                   f"changeDate not bumped: {got}")
            expect(re.fullmatch(r"[0-9a-f-]{36}", got["lastChangeUserId"])
                   and got["lastChangeUserId"] != state["user_id"] and got["lastChangeUserName"], f"{got}")
            r = nc_get("/api/InsuredDetailList", {"$filter": "active eq false"})
            expect([x["id"] for x in r.json["value"]] == [iid], f"inactive: {r}")
            row = nc_get("/api/InsuredDetailList", {"$filter": f"id eq {iid}"}).json["value"][0]
            expect(row["city"] == "Miami" and row["changeDate"] == got["changeDate"], f"list: {row}")
            # The hooks fire as for an API write: UpdateInsured above; made a
            # prospect (UpdateProspect, not subscribed), then converted back.
            expect(call(nc, "PATCH", f"/_records/insureds/{iid}", body={"type": 1}).json["type"] == "Prospect",
                   "type by number")
            other = "11111111-2222-4333-8444-555555555555"
            r = call(nc, "PATCH", f"/_records/insureds/{iid}", body={"type": "Insured", "_user": other})
            expect(r.status == 200 and r.json["lastChangeUserId"] == other, f"_user: {r}")
            got = hook.wait(2)
            expect(len(got) == 2 and got[0][0] == "/u" and got[1][0] == "/c"
                   and json.loads(got[0][2])["email"] is None
                   and json.loads(got[1][2])["last_change_user_id"] == other
                   and json.loads(got[1][2])["city"] == "Miami", f"deliveries: {got}")
            for bad in ({"changeDate": "2030-01-01T00:00:00Z"}, {"nope": 1}, {"type": 42}, {"active": "x"},
                        {"_user": "not-a-guid"}):
                r = call(nc, "PATCH", f"/_records/insureds/{iid}", body=bad)
                expect(r.status == 400 and "error" in r.json, f"{bad} accepted: {r}")
            r = call(nc, "PATCH", "/_records/insureds/99999999-0000-4000-8000-000000000000", body={"city": "X"})
            expect(r.status == 404, f"unknown id: {r}")
            # An agent deletes the insured: it leaves the list, its policies go.
            nc_post("/api/Policy/Insert", {"insuredDatabaseId": iid, "number": "D-1", "premium": 1})
            pid = nc_get("/api/PolicyDetailList", {}).json["value"][0]["id"]
            r = call(nc, "DELETE", f"/_records/insureds/{iid}")
            expect(r.status == 200 and r.json == {"insuredDatabaseId": iid, "deleted": True,
                                                  "policies": [{"policyDatabaseId": pid}],
                                                  "insuredContacts": []}, f"delete: {r}")
            expect(nc_get("/api/InsuredDetailList", {}).json["value"] == [], "deleted insured still listed")
            expect(nc_get("/api/PolicyDetailList", {}).json["value"] == [], "its policy still listed")
            expect(call(nc, "DELETE", f"/_records/insureds/{iid}").status == 404, "second delete")
            # DeletedInsuredList: OData over the deleted rows.
            r = nc_get("/api/DeletedInsuredList", {"$filter": f"insuredDatabaseId eq {iid}", "$count": "true"})
            expect(r.status == 200 and r.json["@odata.count"] == 1
                   and r.json["@odata.context"].endswith("/api/$metadata#DeletedInsuredList")
                   and r.json["value"] == [{"insuredDatabaseId": iid, "deleted": True,
                                            "policies": [{"policyDatabaseId": pid}], "insuredContacts": []}],
                   f"deleted list: {r}")
            call(nc, "POST", "/_records/deletedInsureds", body=[
                {"insuredDatabaseId": "0a0a0a0a-0000-4000-8000-00000000000%d" % i} for i in (5, 3, 4)])
            r = nc_get("/api/DeletedInsuredList", {"$orderby": "insuredDatabaseId asc", "$skip": "1",
                                                   "$top": "2", "$count": "true"})
            expect(r.json["@odata.count"] == 4 and [x["insuredDatabaseId"][-1] for x in r.json["value"]]
                   == ["3", "4"], f"paging: {r}")
            r = nc_get("/api/DeletedInsuredList", {"$filter": f"insuredDatabaseId eq '{iid}'"})
            expect(r.status == 400, f"quoted guid: {r}")
            r = nc_get("/api/DeletedInsuredList", {"$filter": "deletedAt ge 2020-01-01T00:00:00Z"})
            expect(r.status == 400, f"a field the notes do not name: {r}")
            expect(call(nc, "POST", "/_records/deletedInsureds", body={"deleted": True}).status == 400, "no id")
            expect(call(nc, "PATCH", "/_records/policies/x", body={}).status == 404, "policy edits")
        finally:
            hook.close()
    c.check("nowcerts: agent edits and deletes through PATCH/DELETE /_records/insureds/<id>", t_nc_agent_edits)

    # ---- GHL ------------------------------------------------------------------
    call(ghl, "POST", "/_reset")

    def t_ghl_agent_edits():
        seeded = call(ghl, "POST", "/_records/contacts", body={
            "locationId": LOCATION, "firstName": "Bo", "lastName": "Day", "email": "Bo@X.com",
            "tags": ["t1"], "dateAdded": "2024-01-01T00:00:00.000Z", "dateUpdated": "2024-01-01T00:00:00.000Z"}).json
        cid = seeded["id"]
        r = call(ghl, "PATCH", f"/_records/contacts/{cid}", body={
            "firstName": "BOB", "phone": "(555) 222-3333", "email": None, "tags": ["t2"],
            "customFields": [{"id": "cf1", "value": "x"}]})
        expect(r.status == 200, f"edit: {r}")
        got = r.json
        expect(got["firstName"] == "BOB" and got["firstNameLowerCase"] == "bob"
               and got["fullNameLowerCase"] == "bob day" and got["phone"] == "+15552223333"
               and got["email"] is None and got["emailLowerCase"] is None and got["tags"] == ["t2"]
               and got["customFields"] == [{"id": "cf1", "value": "x"}], f"edited: {got}")
        expect(got["dateUpdated"] > "2024-01-01T00:00:00.000Z" and got["dateAdded"] == "2024-01-01T00:00:00.000Z",
               f"dateUpdated not bumped: {got}")
        expect(ghl_call("GET", f"/contacts/{cid}").json["contact"]["phone"] == "+15552223333", "not stored")
        for bad in ({"locationId": "x"}, {"bogus": 1}, {"dnd": "yes"}, {"tags": "a"}):
            r = call(ghl, "PATCH", f"/_records/contacts/{cid}", body=bad)
            expect(r.status == 400, f"{bad} accepted: {r}")
        expect(call(ghl, "PATCH", "/_records/contacts/nope", body={"city": "x"}).status == 404, "unknown id")
        r = call(ghl, "DELETE", f"/_records/contacts/{cid}")
        expect(r.status == 200 and r.json["id"] == cid, f"delete: {r}")
        expect(ghl_call("GET", f"/contacts/{cid}").status == 400, "deleted contact still there")
        expect(call(ghl, "DELETE", f"/_records/contacts/{cid}").status == 404, "second delete")
    c.check("ghl: agent edits and deletes through PATCH/DELETE /_records/contacts/<id>", t_ghl_agent_edits)

    def t_ghl_headers():
        r = ghl_call("GET", "/contacts/abc", headers={"Version": "2021-07-28"})
        expect(r.status == 401 and r.json == {"statusCode": 401, "message": "Invalid token: access token is invalid",
                                              "error": "Unauthorized"}, f"no token: {r}")
        r = ghl_call("GET", "/contacts/abc", headers={"Authorization": "Bearer wrong", "Version": "2021-07-28"})
        expect(r.status == 401, f"wrong token accepted: {r}")
        r = ghl_call("GET", "/contacts/abc", headers={"Authorization": "Bearer " + GHL_TOKEN})
        expect(r.status == 400 and r.json == {"statusCode": 400,
                                              "message": "Version header is missing or invalid"}, f"{r}")
        r = ghl_call("GET", "/contacts/abc", headers=dict(GHL_HEADERS, Version="2021-04-15"))
        expect(r.status == 400, f"wrong Version accepted: {r}")
        r = ghl_call("GET", "/nope")
        expect(r.status == 404 and r.json["statusCode"] == 404, f"unknown route: {r}")
    c.check("ghl: Bearer and Version headers are checked", t_ghl_headers)

    def t_ghl_contacts():
        r = ghl_call("POST", "/contacts/", {"locationId": LOCATION, "firstName": "Jane", "lastName": "Doe",
                                            "email": "Jane@Example.com", "phone": "(555) 123-4567",
                                            "tags": ["a", "b"], "companyName": "Doe LLC"})
        expect(r.status == 201 and len(r.json["contact"]["id"]) == 20, f"create: {r}")
        cid = r.json["contact"]["id"]
        state["cid"] = cid
        r = ghl_call("POST", "/contacts/", {"firstName": "NoLoc"})
        expect(r.status == 422 and isinstance(r.json["message"], list), f"missing locationId: {r}")
        r = ghl_call("POST", "/contacts/", {"locationId": LOCATION, "additionalEmails": []})
        expect(r.status == 422 and "property additionalEmails should not exist" in r.json["message"], f"{r}")
        r = ghl_call("PUT", f"/contacts/{cid}", {"gender": "female"})
        expect(r.status == 422 and r.json == {"statusCode": 422, "message": ["property gender should not exist"],
                                              "error": "Unprocessable Entity"}, f"gender on update: {r}")
        r = ghl_call("PUT", f"/contacts/{cid}", {"locationId": LOCATION})
        expect(r.status == 422, f"locationId on update: {r}")
        r = ghl_call("PUT", f"/contacts/{cid}", {"tags": ["c"], "city": "Tampa"})
        expect(r.status == 200 and r.json["succeded"] is True and r.json["contact"]["tags"] == ["c"]
               and r.json["contact"]["firstName"] == "Jane" and r.json["contact"]["city"] == "Tampa", f"{r}")
        r = ghl_call("PUT", "/contacts/doesnotexist00000000", {"city": "X"})
        expect(r.status == 400 and r.json == {"statusCode": 400, "message": "Contact not found"}, f"{r}")
        r = ghl_call("GET", f"/contacts/{cid}")
        expect(r.status == 200 and r.json["contact"]["companyName"] == "Doe LLC", f"get: {r}")
    c.check("ghl: contact create/update/get with 422 for undeclared properties", t_ghl_contacts)

    def t_ghl_search():
        r = ghl_call("POST", "/contacts/search", {"locationId": LOCATION, "pageLimit": 10, "page": 1,
                                                  "filters": [{"field": "email", "operator": "eq",
                                                               "value": "jane@EXAMPLE.com"}]})
        expect(r.status == 200 and r.json["total"] == 1 and "traceId" in r.json, f"email search: {r}")
        r = ghl_call("POST", "/contacts/search", {"locationId": LOCATION, "pageLimit": 10,
                                                  "filters": [{"field": "phone", "operator": "eq",
                                                               "value": "+1 555-123-4567"}]})
        expect(r.json["total"] == 1 and r.json["contacts"][0]["id"] == state["cid"], f"phone search: {r}")
        r = ghl_call("POST", "/contacts/search", {"locationId": LOCATION})
        expect(r.status == 422, f"search without pageLimit: {r}")
        r = ghl_call("GET", "/contacts/search/duplicate?" + urlencode({"locationId": LOCATION,
                                                                       "email": "JANE@example.com"}))
        expect(r.status == 200 and r.json["contact"]["id"] == state["cid"], f"duplicate: {r}")
        r = ghl_call("GET", "/contacts/search/duplicate?" + urlencode({"locationId": LOCATION,
                                                                       "email": "nobody@x.com"}))
        expect(r.status == 200 and r.json == {"contact": None}, f"duplicate miss: {r}")
        r = ghl_call("POST", "/contacts/upsert", {"locationId": LOCATION, "email": "jane@example.com",
                                                  "lastName": "Smith"})
        expect(r.json["new"] is False and r.json["contact"]["id"] == state["cid"]
               and r.json["contact"]["lastName"] == "Smith", f"upsert existing: {r}")
        r = ghl_call("POST", "/contacts/upsert", {"locationId": LOCATION, "email": "new@example.com"})
        expect(r.status == 200 and r.json["new"] is True, f"upsert new: {r}")
    c.check("ghl: contact search (email/phone), duplicate and upsert", t_ghl_search)

    def t_ghl_opportunities():
        r = ghl_call("GET", "/opportunities/pipelines?locationId=" + LOCATION)
        pls = r.json["pipelines"]
        expect(r.status == 200 and [p["name"] for p in pls] == ["Personal Lines", "Commercial Lines"], f"{r}")
        expect([s["name"] for s in pls[0]["stages"]] == ["New", "Quoted", "Bound"], f"stages: {pls[0]}")
        r = ghl_call("POST", "/opportunities/", {"locationId": LOCATION, "name": "x"})
        expect(r.status == 422 and "pipelineId should not be empty" in r.json["message"], f"{r}")
        r = ghl_call("POST", "/opportunities/", {"pipelineId": pls[0]["id"], "locationId": LOCATION,
                                                 "name": "Auto Policy - POL-1", "status": "open",
                                                 "contactId": state["cid"], "monetaryValue": 1200.5,
                                                 "pipelineStageId": pls[0]["stages"][1]["id"]})
        expect(r.status == 201 and r.json["opportunity"]["contact"]["id"] == state["cid"], f"create: {r}")
        oid = r.json["opportunity"]["id"]
        r = ghl_call("PUT", f"/opportunities/{oid}", {"contactId": state["cid"]})
        expect(r.status == 422, f"contactId on update: {r}")
        r = ghl_call("PUT", f"/opportunities/{oid}", {"monetaryValue": 99, "status": "won"})
        expect(r.status == 200 and r.json["opportunity"]["monetaryValue"] == 99, f"update: {r}")
        r = ghl_call("GET", "/opportunities/search?" + urlencode({"location_id": LOCATION,
                                                                  "contact_id": state["cid"]}))
        expect(r.status == 200 and r.json["meta"]["total"] == 1
               and r.json["opportunities"][0]["id"] == oid, f"search: {r}")
        r = ghl_call("GET", "/opportunities/search?locationId=" + LOCATION)
        expect(r.status == 422, f"camelCase locationId accepted on search: {r}")
    c.check("ghl: pipelines and opportunities", t_ghl_opportunities)

    def t_ghl_paging():
        call(ghl, "POST", "/_reset")
        call(ghl, "POST", "/_records/contacts", body=[{"locationId": LOCATION, "email": f"p{i}@x.com"}
                                                      for i in range(250)])
        call(ghl, "POST", "/_records/contacts", body={"locationId": "OTHER", "email": "other@x.com"})
        seen = []
        for page in (1, 2, 3, 4):
            r = ghl_call("POST", "/contacts/search", {"locationId": LOCATION, "page": page, "pageLimit": 100})
            expect(r.status == 200 and r.json["total"] == 250, f"contacts page {page}: {r}")
            seen += [x["email"] for x in r.json["contacts"]]
        expect(len(seen) == 250 and len(set(seen)) == 250, f"contacts: {len(seen)} rows")
        pls = ghl_call("GET", "/opportunities/pipelines?locationId=" + LOCATION).json["pipelines"]
        call(ghl, "POST", "/_records/opportunities", body=[
            {"name": f"O{i}", "locationId": LOCATION, "pipelineId": pls[0]["id"]} for i in range(230)])
        ids, page = [], 1
        while page:
            r = ghl_call("GET", "/opportunities/search?" + urlencode({"location_id": LOCATION, "page": page,
                                                                      "limit": 100}))
            expect(r.status == 200 and r.json["meta"]["total"] == 230, f"opportunities page {page}: {r}")
            ids += [x["id"] for x in r.json["opportunities"]]
            page = r.json["meta"]["nextPage"]
        expect(len(ids) == 230 and len(set(ids)) == 230, f"opportunities: {len(ids)} rows")
    c.check("ghl: contacts search and opportunities search page through hundreds", t_ghl_paging)

    def t_ghl_webhooks():
        call(ghl, "POST", "/_reset")
        hook = HookTarget()
        try:
            ghl_call("POST", "/contacts/", {"locationId": LOCATION, "firstName": "Quiet"})
            time.sleep(0.2)
            expect(call(ghl, "GET", "/_webhooks").json == [] and hook.received == [], "sent without webhook_url")
            url = hook.url + "/api/v1/webhooks/ghl"
            expect(call(ghl, "POST", "/_config", body={"webhook_url": url}).status == 200, "config")
            r = ghl_call("POST", "/contacts/", {"locationId": LOCATION, "firstName": "Web", "lastName": "Hook",
                                                "email": "wh@x.com", "phone": "555 111 2222"})
            cid = r.json["contact"]["id"]
            got = hook.wait(1)
            expect(len(got) == 1 and got[0][0] == "/api/v1/webhooks/ghl" and got[0][1] == "application/json",
                   f"create: {got}")
            b = json.loads(got[0][2])
            expect(b["type"] == "ContactCreate" and b["locationId"] == LOCATION and b["id"] == cid
                   and b["email"] == "wh@x.com" and b["phone"] == "+15551112222" and b["firstName"] == "Web"
                   and b["dateUpdated"] == r.json["contact"]["dateUpdated"], f"body: {b}")
            expect(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", b["timestamp"])
                   and re.fullmatch(r"[0-9a-f-]{36}", b["webhookId"]), f"envelope: {b}")
            expect("city" not in b and "tags" not in b and "customFields" not in b and "dndSettings" not in b,
                   f"empty fields sent: {b}")
            r = ghl_call("PUT", f"/contacts/{cid}", {"city": "Tampa"})
            call(ghl, "PATCH", f"/_records/contacts/{cid}", body={"email": None})
            ghl_call("POST", f"/contacts/{cid}/tags", {"tags": ["vip"]})
            call(ghl, "PATCH", f"/_records/contacts/{cid}", body={
                "dnd": True, "dndSettings": {"SMS": {"status": "active"}}})
            ghl_call("PUT", f"/contacts/{cid}", {"city": "Tampa"})     # no change: no webhook
            ghl_call("DELETE", f"/contacts/{cid}")
            got = [json.loads(x[2]) for x in hook.wait(6)]
            expect([x["type"] for x in got] == ["ContactCreate", "ContactUpdate", "ContactUpdate",
                                                "ContactTagUpdate", "ContactDndUpdate", "ContactDelete"],
                   f"events: {[x['type'] for x in got]}")
            expect(got[1]["city"] == "Tampa" and got[1]["dateUpdated"] == r.json["contact"]["dateUpdated"],
                   f"update: {got[1]}")
            expect("email" not in got[2] and got[2]["city"] == "Tampa", f"a cleared field is absent: {got[2]}")
            expect(got[3]["tags"] == ["vip"] and got[4]["dnd"] is True
                   and got[4]["dndSettings"] == {"SMS": {"status": "active"}}
                   and "dndSettings" not in got[3], f"tag/dnd: {got[3:5]}")
            expect(len({x["webhookId"] for x in got}) == 6, "webhookIds repeat")
            for _ in range(400):
                log = call(ghl, "GET", "/_webhooks").json
                if len(log) >= 6:
                    break
                time.sleep(0.05)
            expect([(x["type"], x["status"]) for x in log][-1] == ("ContactDelete", 200)
                   and log[0]["body"] == got[0] and isinstance(log[0]["at"], float), f"/_webhooks: {log}")
            # Hold, then flush last-in first-out.
            hook.received.clear()
            cid = call(ghl, "POST", "/_records/contacts", body={"locationId": LOCATION, "firstName": "H"}).json["id"]
            expect(call(ghl, "POST", "/_webhooks/hold").status == 200, "hold")
            for city in ("A", "B", "C"):
                call(ghl, "PATCH", f"/_records/contacts/{cid}", body={"city": city})
            time.sleep(0.3)
            expect(hook.received == [], f"sent while held: {hook.received}")
            r = call(ghl, "POST", "/_webhooks/flush", body={"order": "lifo"})
            expect(r.status == 200 and r.json["flushed"] == 3, f"flush: {r}")
            expect([json.loads(x[2])["city"] for x in hook.wait(3)] == ["C", "B", "A"], f"{hook.received}")
            expect(call(ghl, "POST", "/_webhooks/flush", body={"order": "random"}).status == 400, "bad order")
            # Duplicates: the same delivery (same webhookId) twice.
            hook.received.clear()
            call(ghl, "POST", "/_config", body={"webhook_duplicate": 1})
            call(ghl, "PATCH", f"/_records/contacts/{cid}", body={"city": "D"})
            got = [json.loads(x[2]) for x in hook.wait(2)]
            expect(len(got) == 2 and got[0] == got[1] and got[0]["city"] == "D", f"duplicate: {got}")
            # Shuffle: buffered until a flush, then all of them in some order.
            hook.received.clear()
            call(ghl, "POST", "/_config", body={"webhook_duplicate": 0, "webhook_shuffle": True})
            for city in "EFGHIJ":
                call(ghl, "PATCH", f"/_records/contacts/{cid}", body={"city": city})
            time.sleep(0.3)
            expect(hook.received == [], "shuffled deliveries sent before a flush")
            expect(call(ghl, "POST", "/_webhooks/flush").json["order"] == "shuffle", "default order")
            expect(sorted(json.loads(x[2])["city"] for x in hook.wait(6)) == list("EFGHIJ"), f"{hook.received}")
            # Delay: each delivery is sent no sooner than webhook_delay_ms
            # after it was queued (the fake's own stamps, not a stopwatch).
            hook.received.clear()
            call(ghl, "POST", "/_config", body={"webhook_shuffle": False, "webhook_delay_ms": 300})
            call(ghl, "PATCH", f"/_records/contacts/{cid}", body={"city": "K"})
            hook.wait(1)
            for _ in range(400):
                last = call(ghl, "GET", "/_webhooks").json[-1]
                if last["body"].get("city") == "K":
                    break
                time.sleep(0.05)
            expect(len(hook.received) == 1 and last["body"]["city"] == "K"
                   and last["at"] - last["queued_at"] >= 0.3, f"delay: {last}")
            # A reset drops what is queued, keeps the URL.
            call(ghl, "POST", "/_config", body={"webhook_delay_ms": 0})
            call(ghl, "POST", "/_webhooks/hold")
            call(ghl, "PATCH", f"/_records/contacts/{cid}", body={"city": "L"})
            call(ghl, "POST", "/_reset")
            expect(call(ghl, "GET", "/_config").json["webhook_url"] == url, "reset dropped webhook_url")
            expect(call(ghl, "POST", "/_webhooks/flush").json["flushed"] == 0, "queued delivery survived reset")
            expect(call(ghl, "GET", "/_webhooks").json == [], "log survived reset")
            for bad in ({"webhook_duplicate": 2}, {"webhook_url": "nope"}, {"webhook_shuffle": "yes"},
                        {"webhook_delay_ms": -1}):
                expect(call(ghl, "POST", "/_config", body=bad).status == 400, f"{bad} accepted")
            call(ghl, "POST", "/_config", body={"webhook_url": None})
        finally:
            hook.close()
    c.check("ghl: contact webhooks (create/update/tag/dnd/delete), hold/flush, duplicate, shuffle, delay",
            t_ghl_webhooks)

    def t_ghl_locations():
        call(ghl, "POST", "/_reset")
        expect(call(ghl, "GET", "/_config").json["locations"] == [LOCATION, "LOC2"], "--ghl-locations")
        forbidden = {"statusCode": 403, "message": "The token does not have access to this location.",
                     "error": "Forbidden"}
        r = ghl_call("POST", "/contacts/", {"locationId": "ELSEWHERE", "email": "a@x.com"})
        expect(r.status == 403 and r.json == forbidden, f"create elsewhere: {r}")
        expect(ghl_call("POST", "/contacts/", {"email": "a@x.com"}).status == 422, "no locationId")
        mine = ghl_call("POST", "/contacts/", {"locationId": LOCATION, "email": "same@x.com",
                                               "phone": "5550001111"}).json["contact"]
        two = ghl_call("POST", "/contacts/", {"locationId": "LOC2", "email": "same@x.com"}).json["contact"]
        # Another sub-account's contact, seeded: the token cannot see it.
        other = call(ghl, "POST", "/_records/contacts", body={"locationId": "ELSEWHERE", "email": "same@x.com",
                                                              "phone": "5550001111"}).json
        expect(other["locationId"] == "ELSEWHERE", f"seed elsewhere: {other}")
        default = call(ghl, "POST", "/_records/contacts", body={"email": "d@x.com"}).json
        expect(default["locationId"] == LOCATION, f"seed without a location: {default}")
        r = ghl_call("POST", "/contacts/search", {"locationId": LOCATION, "pageLimit": 10, "filters": [
            {"field": "email", "operator": "eq", "value": "same@x.com"}]})
        expect([x["id"] for x in r.json["contacts"]] == [mine["id"]], f"search sees other locations: {r}")
        r = ghl_call("POST", "/contacts/search", {"locationId": "ELSEWHERE", "pageLimit": 10})
        expect(r.status == 403, f"search elsewhere: {r}")
        r = ghl_call("GET", "/contacts/search/duplicate?" + urlencode({"locationId": "LOC2", "number": "5550001111"}))
        expect(r.json == {"contact": None}, f"duplicate by phone crossed locations: {r}")
        r = ghl_call("GET", "/contacts/search/duplicate?" + urlencode({"locationId": "LOC2", "email": "same@x.com"}))
        expect(r.json["contact"]["id"] == two["id"], f"duplicate: {r}")
        r = ghl_call("GET", "/contacts/search/duplicate?" + urlencode({"locationId": "ELSEWHERE", "email": "a@x"}))
        expect(r.status == 403, f"duplicate elsewhere: {r}")
        r = ghl_call("POST", "/contacts/upsert", {"locationId": "LOC2", "phone": "+1 555 000 1111"})
        expect(r.json["new"] is True and r.json["contact"]["locationId"] == "LOC2", f"upsert crossed: {r}")
        expect(ghl_call("POST", "/contacts/upsert", {"locationId": "ELSEWHERE", "email": "z@x.com"}).status == 403,
               "upsert elsewhere")
        for method, path, body in (("GET", f"/contacts/{other['id']}", None),
                                   ("PUT", f"/contacts/{other['id']}", {"city": "X"}),
                                   ("POST", f"/contacts/{other['id']}/tags", {"tags": ["x"]}),
                                   ("DELETE", f"/contacts/{other['id']}", None)):
            r = ghl_call(method, path, body)
            expect(r.status == 400 and r.json == {"statusCode": 400, "message": "Contact not found"},
                   f"{method} {path}: {r}")
        expect(ghl_call("GET", f"/contacts/{two['id']}").status == 200, "second known location")
        pls = ghl_call("GET", "/opportunities/pipelines?locationId=" + LOCATION).json["pipelines"]
        expect(ghl_call("GET", "/opportunities/pipelines?locationId=ELSEWHERE").status == 403, "pipelines")
        r = ghl_call("POST", "/opportunities/", {"pipelineId": pls[0]["id"], "locationId": LOCATION, "name": "o",
                                                 "status": "open", "contactId": two["id"]})
        expect(r.status == 400, f"opportunity for another location's contact: {r}")
        expect(len(call(ghl, "GET", "/_records/contacts").json) == 5, "a refused create stored something")
    c.check("ghl: contacts belong to locations; other locations are refused (403) or not found",
            t_ghl_locations)

    def t_ghl_field_types():
        call(ghl, "POST", "/_reset")
        seeded = call(ghl, "POST", "/_records/customFields", body=[
            {"name": "Age", "dataType": "NUMERICAL"}, {"name": "Hobbies", "dataType": "CHECKBOX"},
            {"name": "Nick"}, {"name": "Policy Number", "model": "opportunity"},
            {"name": "Elsewhere", "locationId": "LOC2"}]).json
        age, hobbies, nick, polno = (x["id"] for x in seeded[:4])
        expect(seeded[1]["fieldKey"] == "contact.hobbies" and seeded[2]["dataType"] == "TEXT"
               and seeded[3]["fieldKey"] == "opportunity.policy_number", f"seed: {seeded}")
        r = ghl_call("GET", f"/locations/{LOCATION}/customFields?model=contact")
        expect(r.status == 200 and sorted(x["name"] for x in r.json["customFields"]) == ["Age", "Hobbies", "Nick"]
               and all({"id", "name", "fieldKey", "dataType", "model"} <= set(x) for x in r.json["customFields"]),
               f"contact fields: {r}")
        r = ghl_call("GET", f"/locations/{LOCATION}/customFields")
        # The four seeded here, and the four opportunity fields every
        # location starts with (the shipped policies.lua names them).
        expect(len(r.json["customFields"]) == 8
               and sum(x["model"] == "opportunity" for x in r.json["customFields"]) == 5, f"all: {r}")
        expect(ghl_call("GET", f"/locations/{LOCATION}/customFields?model=lead").status == 422, "bad model")
        expect(ghl_call("GET", "/locations/ELSEWHERE/customFields").status == 403, "other location")

        def create(cfs, **extra):
            return ghl_call("POST", "/contacts/", dict({"locationId": LOCATION, "firstName": "Cf",
                                                        "customFields": cfs}, **extra))
        r = create([{"id": age, "field_value": "12"}])
        expect(r.status == 422 and r.json["message"] == [
            "customFields.0.field_value must be a number conforming to the specified constraints"], f"{r}")
        r = create([{"id": nick, "field_value": "N"}, {"key": "hobbies", "field_value": "golf"}])
        expect(r.status == 422 and r.json["message"] == ["customFields.1.field_value must be an array"], f"{r}")
        r = create([{"key": "contact.hobbies", "field_value": ["golf", 3]}])
        expect(r.status == 422 and r.json["message"] == ["each value in customFields.0.field_value must be a string"],
               f"{r}")
        r = create([{"id": "unknownField00000000", "field_value": 5}])
        expect(r.status == 422 and r.json["message"] == ["customFields.0.field_value must be a string"], f"{r}")
        r = create([{"id": age, "field_value": 12}, {"key": "hobbies", "field_value": ["golf"]},
                    {"id": nick, "field_value": "N"}], phone="813 555 0100")
        expect(r.status == 201 and r.json["contact"]["phone"] == "+18135550100", f"valid: {r}")
        cid = r.json["contact"]["id"]
        r = ghl_call("PUT", f"/contacts/{cid}", {"customFields": [{"id": nick, "field_value": 7}]})
        expect(r.status == 422 and r.json["message"] == ["customFields.0.field_value must be a string"], f"{r}")
        r = ghl_call("POST", "/contacts/upsert", {"locationId": LOCATION, "email": "u@x.com",
                                                  "customFields": [{"id": age, "field_value": "x"}]})
        expect(r.status == 422, f"upsert: {r}")
        expect(len(call(ghl, "GET", "/_records/contacts").json) == 1, "a refused write stored a contact")
        # DND.
        for bad, msg in (({"dnd": "yes"}, "dnd must be a boolean value"),
                         ({"dndSettings": {"SMS": {"status": "paused"}}},
                          "dndSettings.SMS.status must be one of the following values: active, inactive, permanent"),
                         ({"dndSettings": {"Fax": {"status": "active"}}}, "property dndSettings.Fax should not exist"),
                         ({"dndSettings": {"Email": {}}},
                          "dndSettings.Email.status must be one of the following values: active, inactive, permanent"),
                         ({"inboundDndSettings": {"all": {"status": "permanent"}}},
                          "inboundDndSettings.all.status must be one of the following values: active, inactive")):
            r = ghl_call("PUT", f"/contacts/{cid}", bad)
            expect(r.status == 422 and msg in r.json["message"], f"{bad}: {r}")
        r = ghl_call("PUT", f"/contacts/{cid}", {"dnd": True, "dndSettings": {
            "SMS": {"status": "permanent", "message": "asked", "code": "101"}, "Email": {"status": "inactive"}}})
        expect(r.status == 200 and r.json["contact"]["dndSettings"]["SMS"]["status"] == "permanent", f"{r}")
        # Opportunities: string | string[] | object.
        pls = ghl_call("GET", "/opportunities/pipelines?locationId=" + LOCATION).json["pipelines"]
        base = {"pipelineId": pls[0]["id"], "locationId": LOCATION, "name": "o", "status": "open", "contactId": cid}
        r = ghl_call("POST", "/opportunities/", dict(base, customFields=[{"key": "policy_number", "field_value": 5}]))
        expect(r.status == 422 and r.json["message"] == ["customFields.0.field_value must be a string"], f"{r}")
        r = ghl_call("POST", "/opportunities/", dict(base, customFields=[
            {"key": "policy_number", "field_value": "P-1"}, {"id": polno, "field_value": ["a"]},
            {"id": "x", "field_value": {}}]))
        expect(r.status == 201, f"valid opportunity: {r}")
        r = ghl_call("PUT", f"/opportunities/{r.json['opportunity']['id']}",
                     {"customFields": [{"id": polno, "field_value": True}]})
        expect(r.status == 422, f"opportunity update: {r}")
    c.check("ghl: custom field value types, custom field list, dnd settings validated as the OpenAPI says",
            t_ghl_field_types)

    def t_ghl_oauth():
        call(ghl, "POST", "/_reset")
        call(ghl, "POST", "/_config", body={"oauth_client_id": "cid-1", "oauth_client_secret": "sec-1"})

        def token(**form):
            base = {"client_id": "cid-1", "client_secret": "sec-1", "user_type": "Location"}
            return call(ghl, "POST", "/oauth/token", form=urlencode(dict(base, **form)))
        code = call(ghl, "POST", "/_oauth/code", body={"locationId": LOCATION}).json["code"]
        r = token(grant_type="authorization_code", code=code, client_secret="wrong")
        expect(r.status == 401 and r.json["statusCode"] == 401, f"bad secret: {r}")
        r = token(grant_type="authorization_code", code=code, client_id="other")
        expect(r.status == 401, f"bad client id: {r}")
        r = token(grant_type="authorization_code", code=code, redirect_uri="https://app.example/cb")
        expect(r.status == 200, f"code exchange: {r}")
        b = r.json
        expect(b["token_type"] == "Bearer" and b["expires_in"] == 86399 and b["locationId"] == LOCATION
               and b["userType"] == "Location" and b["approvedLocations"] == [LOCATION] and b["userId"]
               and b["access_token"] and b["refresh_token"] and "companyId" in b and "scope" in b, f"{b}")
        r = token(grant_type="authorization_code", code=code)
        expect(r.status == 400 and r.json["statusCode"] == 400, f"code used twice: {r}")
        # The access token works on its own location's routes, and only there.
        auth = {"Authorization": "Bearer " + b["access_token"], "Version": "2021-07-28"}
        r = call(ghl, "POST", "/contacts/", body={"locationId": LOCATION, "email": "oa@x.com"}, headers=auth)
        expect(r.status == 201, f"create with an OAuth token: {r}")
        r = call(ghl, "POST", "/contacts/", body={"locationId": "LOC2", "email": "oa@x.com"}, headers=auth)
        expect(r.status == 403, f"another location with an OAuth token: {r}")
        two = ghl_call("POST", "/contacts/", {"locationId": "LOC2", "email": "two@x.com"})
        expect(two.status == 201, f"the static token still works: {two}")
        r = call(ghl, "GET", f"/contacts/{two.json['contact']['id']}", headers=auth)
        expect(r.status == 400, f"another location's contact: {r}")
        r = call(ghl, "GET", "/opportunities/pipelines?locationId=" + LOCATION, headers=auth)
        expect(r.status == 200, f"opportunity routes: {r}")
        expect(call(ghl, "GET", "/contacts/x", headers={"Authorization": "Bearer " + b["access_token"]}).status
               == 400, "Version still required on API routes")
        # Refresh tokens rotate: the old one stops working.
        r = token(grant_type="refresh_token", refresh_token=b["refresh_token"])
        expect(r.status == 200 and r.json["refresh_token"] != b["refresh_token"]
               and r.json["locationId"] == LOCATION, f"refresh: {r}")
        newer = r.json
        r = token(grant_type="refresh_token", refresh_token=b["refresh_token"])
        expect(r.status == 400 and r.json["statusCode"] == 400, f"used refresh token: {r}")
        r = token(grant_type="refresh_token", refresh_token=newer["refresh_token"], user_type="Company")
        expect(r.status == 400, f"user_type mismatch: {r}")
        r = token(grant_type="refresh_token", refresh_token=newer["refresh_token"])
        expect(r.status == 200, f"latest refresh token refused: {r}")
        # Validation: a form body is required.
        r = call(ghl, "POST", "/oauth/token", body={"client_id": "cid-1", "client_secret": "sec-1",
                                                    "grant_type": "refresh_token"})
        expect(r.status == 422 and "client_id should not be empty" in r.json["message"], f"JSON body: {r}")
        r = token(grant_type="password")
        expect(r.status == 422, f"bad grant_type: {r}")
        # Expired access tokens are refused.
        call(ghl, "POST", "/_config", body={"oauth_token_ttl": 0})
        code = call(ghl, "POST", "/_oauth/code", body={"locationId": LOCATION}).json["code"]
        r = token(grant_type="authorization_code", code=code)
        expect(r.status == 200 and r.json["expires_in"] == 0, f"{r}")
        r = call(ghl, "GET", "/contacts/x", headers={"Authorization": "Bearer " + r.json["access_token"],
                                                      "Version": "2021-07-28"})
        expect(r.status == 401, f"expired token accepted: {r}")
        expect(call(ghl, "POST", "/_oauth/code", body={}).status == 400, "code without a location")
        # An install again revokes the earlier install's tokens of that location.
        call(ghl, "POST", "/_config", body={"oauth_token_ttl": 86399})
        first = token(grant_type="authorization_code",
                      code=call(ghl, "POST", "/_oauth/code", body={"locationId": LOCATION}).json["code"]).json
        second = token(grant_type="authorization_code",
                       code=call(ghl, "POST", "/_oauth/code", body={"locationId": LOCATION}).json["code"]).json
        r = call(ghl, "GET", "/opportunities/pipelines?locationId=" + LOCATION,
                 headers={"Authorization": "Bearer " + first["access_token"], "Version": "2021-07-28"})
        expect(r.status == 401, f"the replaced install's access token: {r}")
        r = token(grant_type="refresh_token", refresh_token=first["refresh_token"])
        expect(r.status == 400, f"the replaced install's refresh token: {r}")
        r = call(ghl, "GET", "/opportunities/pipelines?locationId=" + LOCATION,
                 headers={"Authorization": "Bearer " + second["access_token"], "Version": "2021-07-28"})
        expect(r.status == 200, f"the new install's access token: {r}")
        # A day passing: the location's access tokens expire, its refresh token still works.
        expect(call(ghl, "POST", "/_oauth/expire", body={"locationId": LOCATION}).json["expired"] == 1,
               "expire control")
        r = call(ghl, "GET", "/opportunities/pipelines?locationId=" + LOCATION,
                 headers={"Authorization": "Bearer " + second["access_token"], "Version": "2021-07-28"})
        expect(r.status == 401, f"an expired access token: {r}")
        r = token(grant_type="refresh_token", refresh_token=second["refresh_token"])
        expect(r.status == 200, f"refresh after expiry: {r}")
        # Codes expire.
        call(ghl, "POST", "/_config", body={"oauth_code_ttl": 0})
        code = call(ghl, "POST", "/_oauth/code", body={"locationId": LOCATION}).json["code"]
        r = token(grant_type="authorization_code", code=code)
        expect(r.status == 400 and "expired" in r.json["message"], f"expired code: {r}")
        # Faults on the token endpoint: 5xx, garbage, a hang.
        call(ghl, "POST", "/_fault", body={"status": 503, "path": "^/oauth/token"})
        expect(token(grant_type="refresh_token", refresh_token="x").status == 503, "5xx fault")
        call(ghl, "POST", "/_fault", body={"status": 200, "raw_body": "<html>oops", "path": "^/oauth/token"})
        r = token(grant_type="refresh_token", refresh_token="x")
        expect(r.status == 200 and r.raw == "<html>oops" and r.json is None, f"garbage fault: {r}")
        expect(call(ghl, "POST", "/_fault", body={"status": 200, "raw_body": 5}).status == 400, "raw_body type")
        call(ghl, "POST", "/_fault", body={"hang": True, "path": "^/oauth/token"})
        try:
            call(ghl, "POST", "/oauth/token", form="grant_type=refresh_token", timeout=1)
            raise AssertionError("hanging fault answered")
        except (socket.timeout, TimeoutError):
            pass
    c.check("ghl: OAuth token endpoint (code, rotating refresh, location-scoped tokens, faults)", t_ghl_oauth)

    def t_ghl_rate_limit():
        call(ghl, "POST", "/_reset")
        statuses = [ghl_call("GET", "/contacts/none").status for _ in range(RATE_LIMIT)]
        expect(statuses == [400] * RATE_LIMIT, f"within the limit: {sorted(set(statuses))}")
        r = ghl_call("GET", "/contacts/none")
        expect(r.status == 429 and r.json == {"statusCode": 429, "message": "Too many requests"}, f"{r}")
        expect(int(r.headers.get("retry-after", "0")) >= 1, f"Retry-After missing: {r.headers}")
        expect(r.headers.get("x-ratelimit-max") == str(RATE_LIMIT)
               and r.headers.get("x-ratelimit-remaining") == "0"
               and r.headers.get("x-ratelimit-interval-milliseconds") == "600000"
               and "x-ratelimit-daily-remaining" in r.headers
               and "x-ratelimit-limit-daily" in r.headers, f"rate headers: {r.headers}")
        call(ghl, "POST", "/_reset")
        r = ghl_call("GET", "/contacts/none")
        expect(r.status == 400 and r.headers.get("x-ratelimit-remaining") == str(RATE_LIMIT - 1),
               f"after reset: {r} {r.headers}")
    c.check(f"ghl: rate limit {RATE_LIMIT} per window, then 429 with Retry-After", t_ghl_rate_limit)

    # ---- faults and the request log ----------------------------------------------
    def t_faults():
        call(ghl, "POST", "/_reset")
        r = call(ghl, "POST", "/_fault", body={"status": 503, "count": 2, "path": "^/contacts", "method": "POST"})
        expect(r.status == 200 and r.json["pending"] == 2, f"queue fault: {r}")
        body = {"locationId": LOCATION, "firstName": "F"}
        expect(ghl_call("GET", "/opportunities/pipelines?locationId=" + LOCATION).status == 200,
               "a fault matched the wrong method")
        got = [ghl_call("POST", "/contacts/", body) for _ in range(3)]
        expect([x.status for x in got] == [503, 503, 201], f"fault order: {[x.status for x in got]}")
        # Faults without a path match any request, first queued first used.
        call(ghl, "POST", "/_fault", body={"status": 429, "count": 1, "retry_after": 3})
        call(ghl, "POST", "/_fault", body={"status": 502, "count": 1})
        r = ghl_call("GET", "/opportunities/pipelines?locationId=" + LOCATION)
        expect(r.status == 429 and r.headers.get("retry-after") == "3", f"429 fault: {r} {r.headers}")
        expect(ghl_call("GET", "/opportunities/pipelines?locationId=" + LOCATION).status == 502, "second fault")
        expect(ghl_call("GET", "/opportunities/pipelines?locationId=" + LOCATION).status == 200, "fault not used up")
        statuses = [x["status"] for x in json.loads(call(ghl, "GET", "/_requests").raw)]
        expect(statuses == [200, 503, 503, 201, 429, 502, 200], f"faulted requests not logged: {statuses}")
        call(nc, "POST", "/_fault", body={"status": 500, "body": {"Message": "boom"}, "path": "DetailList"})
        r = nc_get("/api/PolicyDetailList", {})
        expect(r.status == 500 and r.json == {"Message": "boom"}, f"custom body: {r}")
        # A hanging fault never answers; the client's own time-out ends it.
        call(nc, "POST", "/_fault", body={"hang": True, "path": "InsuredDetailList"})
        try:
            call(nc, "GET", "/api/InsuredDetailList", headers=nc_auth(), timeout=1)
            raise AssertionError("hanging fault answered")
        except (socket.timeout, TimeoutError):
            pass
        expect(nc_get("/api/InsuredDetailList", {}).status == 200, "after the hang")
    c.check("faults: queued in order, consumed per request, custom body, hang", t_faults)

    def t_requests():
        call(ghl, "POST", "/_reset")
        ghl_call("POST", "/contacts/", {"locationId": LOCATION, "email": "log@x.com"})
        ghl_call("GET", "/contacts/missing")
        call(ghl, "GET", "/_stats")   # control requests are not logged
        log = json.loads(call(ghl, "GET", "/_requests").raw)
        expect([(x["method"], x["path"], x["status"]) for x in log]
               == [("POST", "/contacts/", 201), ("GET", "/contacts/missing", 400)], f"log: {log}")
        first = log[0]
        expect(first["headers"] == {"authorization": "Bearer " + GHL_TOKEN, "version": "2021-07-28",
                                    "content-type": "application/json"}, f"headers: {first['headers']}")
        expect(json.loads(first["body"]) == {"locationId": LOCATION, "email": "log@x.com"}
               and isinstance(first["at"], float) and first["query"] == "", f"entry: {first}")
        stats = call(ghl, "GET", "/_stats").json
        expect(stats["requests"] == 2 and stats["by_status"] == {"201": 1, "400": 1}
               and stats["by_route"].get("POST /contacts/") == 1, f"stats: {stats}")
        seeded = call(ghl, "POST", "/_records/contacts", body={"locationId": LOCATION, "email": "s@x.com"}).json
        expect(len(seeded["id"]) == 20 and "dateAdded" in seeded, f"seed: {seeded}")
        expect(len(json.loads(call(ghl, "GET", "/_records/contacts").raw)) == 2, "records after seed")
        r = call(ghl, "POST", "/_config", body={"rate_limit": 7})
        expect(r.status == 200 and r.json["rate_limit"] == 7, f"config: {r}")
        expect(ghl_call("GET", "/contacts/x").headers.get("x-ratelimit-max") == "7", "config not applied")
        expect(call(ghl, "POST", "/_config", body={"token_ttl": 5}).status == 400, "foreign setting accepted")
    c.check("control: /_requests, /_stats, /_records seeding, /_config", t_requests)

    def t_shutdown():
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        expect(rc == 0, f"exit status {rc} after SIGTERM")
    c.check("process: SIGTERM exits cleanly", t_shutdown)

    if proc.poll() is None:
        proc.kill()
        proc.wait()
    print(f"{c.passed} passed, {c.failed} failed", flush=True)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
