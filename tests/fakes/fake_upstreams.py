#!/usr/bin/env python3
"""Fake NowCerts and GoHighLevel APIs for ncghl's integration tests and sandbox.

Both fakes run in one process (Python 3.11 standard library only), each on its
own loopback port. They answer in the real APIs' shapes (ref/nowcerts/NOTES.md,
ref/ghl/NOTES.md) and reproduce the documented quirks, so that a test that
passes against them says something about the real thing: NowCerts' HTTP 200
with "status":0, Insured/Insert replacing a matched (even same-name) record,
rotating refresh tokens, OData filters (case-sensitive) and paging on
changeDate, DeletedInsuredList; GHL's 422 for undeclared properties and
mistyped custom fields, the Version header, 100 requests per 10 s then 429,
locations, OAuth with rotating refresh tokens, and a webhook for every
contact change (late, twice or out of order on demand). Where the notes are
unsure, the fakes take the worse case for a client.

Every path starting with "/_" is the control API (no auth); see README.md.

    python3 fake_upstreams.py --nowcerts-port P1 --ghl-port P2 [--latency-ms N]
        [--token-ttl S] [--nowcerts-user U --nowcerts-pass P] [--ghl-token T]
        [--ghl-rate-limit N --ghl-rate-window S] [--quiet]

Once both ports listen it prints exactly one line, "READY nowcerts=<port>
ghl=<port>", to stdout. SIGTERM or SIGINT stops it with exit status 0.
"""

import argparse
import copy
import http.client
import queue
import hashlib
import random
import json
import math
import os
import re
import secrets
import select
import signal
import socket
import string
import struct
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from datetime import datetime, timezone
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

# A hanging fault holds its connection at most this long, so a client with no
# time-out of its own cannot pin a thread for ever.
HANG_LIMIT_S = 120.0
MAX_BODY_BYTES = 16 * 1024 * 1024
GHL_VERSION = "2021-07-28"
GHL_DAILY_LIMIT = 200000

# Fixed namespace so that ids derived from names (a user's userId, the seeded
# pipelines) are the same on every run and in every test.
_NS = uuid.UUID("6f1f6a5e-2b8e-4d8e-9a57-0c9a1f0e5c11")


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

# Faults that break the wire instead of answering (Handler._wire_fault).
WIRE_FAULT_KEYS = {"reset", "raw", "truncate"}


def parse_wire_fault(body, status):
    """The wire-breaking keys of a /_fault body, checked."""
    reset = bool(body.get("reset", False))
    raw = body.get("raw")
    if raw is not None and not isinstance(raw, str):
        raise ValueError("raw must be a string (the answer's body, sent as is)")
    truncate = bool(body.get("truncate", False))
    if reset and (raw is not None or truncate):
        raise ValueError("reset sends nothing, so it takes neither raw nor truncate")
    return {"reset": reset, "raw": raw, "truncate": truncate}


def iso_now_ms():
    """GHL's timestamps: UTC, milliseconds, Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso_now_nowcerts(precision):
    """NowCerts' changeDate/createDate. The real API shows minute precision;
    the fake defaults to seconds and can be switched to minutes (/_config)."""
    now = datetime.now(timezone.utc)
    if precision == "minute":
        return now.strftime("%Y-%m-%dT%H:%M:00Z")
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value):
    """An aware datetime from an ISO-8601 string, or None. A value without an
    offset (some NowCerts samples) is taken as UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


_ID_ALPHABET = string.ascii_letters + string.digits


def ghl_id():
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def stable_ghl_id(name):
    """A 20-character GHL-style id that depends only on name."""
    digest = hashlib.sha256(name.encode()).digest()
    return "".join(_ID_ALPHABET[b % len(_ID_ALPHABET)] for b in digest[:20])


def stable_guid(name):
    return str(uuid.uuid5(_NS, name))


def digits_tail(value, n=10):
    """Phones compare on their last ten digits, so "+1 (555) 123-4567" and
    "5551234567" are the same number."""
    if value is None:
        return ""
    return re.sub(r"\D", "", str(value))[-n:]


def e164(phone):
    """GHL stores phones in E.164; US numbers without a country code get +1."""
    if not isinstance(phone, str) or not phone.strip():
        return phone
    digits = re.sub(r"\D", "", phone)
    if phone.strip().startswith("+") and digits:
        return "+" + digits
    if len(digits) == 10:
        return "+1" + digits
    if len(digits) == 11 and digits.startswith("1"):
        return "+" + digits
    return phone


def fold(value):
    return value.casefold() if isinstance(value, str) else value


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Reply:
    """One HTTP answer: status, a JSON-able body (None: empty) and headers."""

    def __init__(self, status, body=None, headers=None, route=None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.route = route


class Request:
    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.params = dict(parse_qsl(query, keep_blank_values=True))
        self.text = body.decode("utf-8", errors="replace")

    def bearer(self):
        """The token of an "Authorization: Bearer x" header, scheme in any case."""
        value = self.headers.get("Authorization") or ""
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            return ""
        return token.strip()


class BadJson(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


def json_object(req):
    """The body as a JSON object; an empty body counts as {} (as the real
    frameworks bind it), anything else that is not an object is BadJson."""
    if not req.body.strip():
        return {}
    try:
        value = json.loads(req.text)
    except ValueError as e:
        pos = getattr(e, "pos", 0)
        raise BadJson(f"Unexpected token in JSON at position {pos}") from None
    if not isinstance(value, dict):
        raise BadJson("Request body must be a JSON object")
    return value


# --------------------------------------------------------------------------
# The part both fakes share: routing, the request log, faults, control API
# --------------------------------------------------------------------------

class Fake:
    label = "fake"
    collections = ()
    config_keys = {"latency_ms"}
    # NowCerts (ASP.NET) routes are case-insensitive; GHL's are matched as
    # written.
    route_flags = 0

    def __init__(self, config, request_log_max, quiet):
        self.lock = threading.RLock()
        self.startup_config = dict(config)
        self.config = dict(config)
        self.quiet = quiet
        self.request_log_max = request_log_max
        self.port = 0
        self._compiled = []
        for method, pattern, name in self.routes():
            rx = re.sub(r"\{[a-zA-Z]+\}", "([^/]+)", pattern.rstrip("/")) + "/?"
            self._compiled.append((method, re.compile(rx, self.route_flags),
                                   f"{method} {pattern}", name))
        self.reset()

    # ---- state ----------------------------------------------------------
    def reset(self):
        with self.lock:
            self.config = dict(self.startup_config)
            self.requests = deque(maxlen=self.request_log_max)
            self.total = 0
            self.by_route = Counter()
            self.by_status = Counter()
            self.faults = []
            self.records = {c: {} for c in self.collections}
            self.reset_upstream_state()

    def reset_upstream_state(self):
        pass

    def log(self, msg):
        if not self.quiet:
            sys.stderr.write(f"[{self.label}] {msg}\n")
            sys.stderr.flush()

    # ---- routing ----------------------------------------------------------
    def routes(self):
        return []

    def match(self, method, path):
        """(route name, handler, path params), or (None, None, allowed) when
        the path exists under other methods, or None."""
        other_methods = []
        for m, rx, route, name in self._compiled:
            hit = rx.fullmatch(path)
            if not hit:
                continue
            if m == method:
                return route, getattr(self, name), hit.groups()
            other_methods.append(m)
        if other_methods:
            return None, None, other_methods
        return None

    def route_name(self, method, path):
        m = self.match(method, path)
        if m and m[0]:
            return m[0]
        return f"{method} <unknown>"

    # ---- request log and stats --------------------------------------------
    def log_arrival(self, req):
        headers = req.headers
        entry = {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "headers": {
                "authorization": headers.get("Authorization"),
                "version": headers.get("Version"),
                "content-type": headers.get("Content-Type"),
            },
            "body": req.text,
            "at": time.time(),
            "status": None,
            "route": None,
        }
        with self.lock:
            self.requests.append(entry)
        return entry

    def log_answer(self, entry, status, route):
        with self.lock:
            entry["status"] = status
            entry["route"] = route
            self.total += 1
            self.by_route[route] += 1
            self.by_status[str(status)] += 1

    # ---- faults -----------------------------------------------------------
    def take_fault(self, method, path):
        with self.lock:
            for fault in self.faults:
                if fault["method"] and fault["method"] != method:
                    continue
                if fault["path_rx"] is not None and not fault["path_rx"].search(path):
                    continue
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self.faults.remove(fault)
                return dict(fault)
        return None

    def fault_reply(self, fault, req):
        status = fault["status"]
        if fault.get("raw_body") is not None:
            body = fault["raw_body"].encode()
        elif fault["body"] is not None:
            body = fault["body"]
        else:
            body = self.default_error_body(status)
        headers = {}
        if fault["retry_after"] is not None:
            headers["Retry-After"] = fault["retry_after"]
        return Reply(status, body, headers)

    def default_error_body(self, status):
        return {"message": HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"}

    # ---- the API proper ------------------------------------------------------
    def dispatch(self, req):
        raise NotImplementedError

    def finish_reply(self, reply, req):
        """Last touch on every non-control answer (GHL adds its rate headers)."""
        return reply

    # ---- control API ---------------------------------------------------------
    def control(self, req):
        path = req.path.rstrip("/") or "/"
        method = req.method
        edit = re.fullmatch(r"/_records/([^/]+)/([^/]+)", path)
        if edit:
            return self.c_record_edit(method, edit.group(1), edit.group(2), req)
        try:
            body = json_object(req) if method == "POST" else {}
        except BadJson as e:
            # /_records takes arrays too, so it parses its own body.
            if not path.startswith("/_records/"):
                return Reply(400, {"error": e.message})
            body = None

        if path.startswith("/_records/"):
            collection = path[len("/_records/"):]
            if collection not in self.collections:
                return Reply(404, {"error": f"unknown collection {collection!r}",
                                   "collections": list(self.collections)})
            if method == "GET":
                with self.lock:
                    return Reply(200, copy.deepcopy(list(self.records[collection].values())))
            if method == "POST":
                try:
                    value = json.loads(req.text) if req.body.strip() else None
                except ValueError:
                    return Reply(400, {"error": "body is not JSON"})
                items = value if isinstance(value, list) else [value]
                if not all(isinstance(x, dict) for x in items):
                    return Reply(400, {"error": "body must be a record (JSON object) or an array of them"})
                try:
                    with self.lock:
                        seeded = [copy.deepcopy(self.seed(collection, dict(x))) for x in items]
                except ValueError as e:
                    return Reply(400, {"error": str(e)})
                return Reply(200, seeded if isinstance(value, list) else seeded[0])
            return Reply(405, {"error": "use GET or POST"})

        routes = {
            ("GET", "/_requests"): self.c_requests,
            ("POST", "/_reset"): self.c_reset,
            ("POST", "/_fault"): self.c_fault,
            ("GET", "/_fault"): self.c_faults,
            ("GET", "/_faults"): self.c_faults,
            ("DELETE", "/_fault"): self.c_clear_faults,
            ("POST", "/_config"): self.c_config,
            ("GET", "/_config"): self.c_get_config,
            ("GET", "/_stats"): self.c_stats,
            ("POST", "/_revoke"): getattr(self, "c_revoke", None),
            ("GET", "/_deliveries"): getattr(self, "c_deliveries", None),
            ("GET", "/_webhooks"): getattr(self, "c_webhooks", None),
            ("POST", "/_webhooks/hold"): getattr(self, "c_webhooks_hold", None),
            ("POST", "/_webhooks/flush"): getattr(self, "c_webhooks_flush", None),
            ("POST", "/_oauth/code"): getattr(self, "c_oauth_code", None),
            ("POST", "/_oauth/expire"): getattr(self, "c_oauth_expire", None),
        }
        fn = routes.get((method, path))
        if fn is None:
            if any(p == path and f is not None for (_, p), f in routes.items()):
                return Reply(405, {"error": f"{method} not allowed on {path}"})
            return Reply(404, {"error": f"no control route {method} {path}"})
        return fn(body)

    def c_record_edit(self, method, collection, rid, req):
        """PATCH/DELETE /_records/<collection>/<id>: a person editing or
        deleting a record in the product's own UI. Each fake says which
        collections take it."""
        editable = self.editable_collections()
        if collection not in editable:
            return Reply(404, {"error": f"{collection!r} records cannot be edited one by one",
                               "editable": list(editable)})
        if method not in ("PATCH", "DELETE"):
            return Reply(405, {"error": "use PATCH (set fields) or DELETE"})
        if method == "DELETE":
            return self.agent_delete(collection, rid)
        try:
            body = json_object(req)
        except BadJson as e:
            return Reply(400, {"error": e.message})
        return self.agent_edit(collection, rid, body)

    def editable_collections(self):
        return ()

    def c_requests(self, body):
        with self.lock:
            return Reply(200, copy.deepcopy(list(self.requests)))

    def c_reset(self, body):
        self.reset()
        return Reply(200, {"reset": True})

    def c_fault(self, body):
        try:
            fault = self.parse_fault(body)
        except ValueError as e:
            return Reply(400, {"error": str(e)})
        with self.lock:
            self.faults.append(fault)
            pending = sum(f["count"] for f in self.faults)
        return Reply(200, {"queued": self.fault_view(fault), "pending": pending})

    def c_clear_faults(self, body):
        """Drops the pending faults and nothing else (records stay), so a
        test can end a fault storm of unknown length mid-way."""
        with self.lock:
            dropped = sum(f["count"] for f in self.faults)
            self.faults = []
        return Reply(200, {"dropped": dropped})

    def c_faults(self, body):
        with self.lock:
            return Reply(200, [self.fault_view(f) for f in self.faults])

    @staticmethod
    def fault_view(fault):
        return {k: v for k, v in fault.items() if k != "path_rx"}

    @staticmethod
    def parse_fault(body):
        known = {"status", "count", "path", "method", "retry_after", "body", "raw_body", "latency_ms", "hang",
                 "after_write"}
        known |= WIRE_FAULT_KEYS
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        status = body.get("status", 0)
        if not isinstance(status, int) or isinstance(status, bool) or not (status == 0 or 100 <= status <= 599):
            raise ValueError("status must be 0 or an HTTP status code")
        count = body.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError("count must be a positive integer")
        latency = body.get("latency_ms", 0)
        if not is_number(latency) or latency < 0:
            raise ValueError("latency_ms must be a non-negative number")
        hang = bool(body.get("hang", False))
        wire = parse_wire_fault(body, status)
        breaks = wire["reset"] or wire["raw"] is not None or wire["truncate"]
        if status == 0 and not hang and latency == 0 and not breaks:
            raise ValueError("a fault needs a status, latency_ms, hang, reset, raw or truncate")
        path = body.get("path")
        path_rx = None
        if path is not None:
            if not isinstance(path, str):
                raise ValueError("path must be a regular expression string")
            try:
                path_rx = re.compile(path)
            except re.error as e:
                raise ValueError(f"path is not a valid regular expression: {e}") from None
        method = body.get("method")
        if method is not None and not isinstance(method, str):
            raise ValueError("method must be a string")
        raw_body = body.get("raw_body")
        if raw_body is not None and not isinstance(raw_body, str):
            raise ValueError("raw_body must be a string (sent as is, not as JSON)")
        if raw_body is not None and body.get("body") is not None:
            raise ValueError("give body or raw_body, not both")
        retry_after = body.get("retry_after")
        if retry_after is not None and (not is_number(retry_after) or retry_after < 0):
            raise ValueError("retry_after must be a non-negative number of seconds")
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        return {
            "status": status, "count": count, "path": path, "path_rx": path_rx,
            "method": method.upper() if method else None, "retry_after": retry_after,
            "body": body.get("body"), "raw_body": raw_body, "latency_ms": latency, "hang": hang, **wire,
            "after_write": bool(body.get("after_write", False)),
        }

    def c_config(self, body):
        unknown = set(body) - self.config_keys
        if unknown:
            return Reply(400, {"error": f"not a setting of this fake: {sorted(unknown)}",
                               "settings": sorted(self.config_keys)})
        try:
            for key, value in body.items():
                self.validate_config(key, value)
        except ValueError as e:
            return Reply(400, {"error": str(e)})
        with self.lock:
            self.config.update(body)
            return Reply(200, dict(self.config))

    def c_get_config(self, body):
        with self.lock:
            return Reply(200, dict(self.config))

    def validate_config(self, key, value):
        if key == "latency_ms" and (not is_number(value) or value < 0):
            raise ValueError("latency_ms must be a non-negative number")

    def c_stats(self, body):
        with self.lock:
            return Reply(200, {"requests": self.total, "by_route": dict(self.by_route),
                               "by_status": dict(self.by_status)})

    def seed(self, collection, record):
        raise NotImplementedError


# --------------------------------------------------------------------------
# OData v4 $filter / $orderby / $top / $skip / $count / $select
# --------------------------------------------------------------------------

class ODataError(Exception):
    pass


_EDM = {"string": "String", "enum": "String", "guid": "Guid", "datetime": "DateTimeOffset",
        "bool": "Boolean", "number": "Decimal", "list": "Collection", "null": "Null"}
_CMP_KIND = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual",
             "lt": "LessThan", "le": "LessThanOrEqual"}
_GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# OData v4 datetimes carry an offset; an unquoted one without Z is an error,
# as is a quoted one (that is a string).
_DT_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})")
_NUM_RE = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?[mMdDfFlL]?")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN_RE = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<punct>[(),])|(?P<word>[^\s(),']+))")
_STRING_FUNCS = {"tolower", "toupper", "trim"}
_BOOL_FUNCS = {"contains", "startswith", "endswith"}


class ODataFilter:
    """Parses a $filter once into a tree, type-checks it the way ASP.NET OData
    does (a quoted guid or datetime is a type error), then evaluates it per
    record. String comparisons are case-SENSITIVE: NOTES §4 does not know
    whether NowCerts' are, and a client that does not fold case itself
    (tolower) must not pass against the fake."""

    def __init__(self, text, fields, entity):
        self.fields = fields
        self.entity = entity
        self.text = text
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.tree = self._parse_or()
        if self.pos != len(self.tokens):
            raise ODataError(f"Syntax error at position {self.tokens[self.pos][2]} in '{text}'.")

    def _tokenize(self, text):
        out = []
        pos = 0
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            if m is None:
                if not text[pos:].strip():
                    break
                raise ODataError(f"Syntax error: unterminated string literal at position {pos} in '{text}'.")
            start = m.start(m.lastgroup)
            if m.group("str") is not None:
                out.append(("str", m.group("str")[1:-1].replace("''", "'"), start))
            elif m.group("punct") is not None:
                out.append(("punct", m.group("punct"), start))
            else:
                out.append(("word", m.group("word"), start))
            pos = m.end()
        if not out:
            raise ODataError("The $filter is empty.")
        return out

    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None, len(self.text))

    def _peek_word(self, *words):
        kind, value, _ = self._peek()
        return kind == "word" and value.lower() in words

    def _expect(self, kind, value):
        k, v, p = self._peek()
        if k != kind or v != value:
            raise ODataError(f"Syntax error: expected '{value}' at position {p} in '{self.text}'.")
        self.pos += 1

    def _parse_or(self):
        node = self._parse_and()
        while self._peek_word("or"):
            self.pos += 1
            node = ("or", node, self._parse_and())
        return node

    def _parse_and(self):
        node = self._parse_not()
        while self._peek_word("and"):
            self.pos += 1
            node = ("and", node, self._parse_not())
        return node

    def _parse_not(self):
        if self._peek_word("not"):
            self.pos += 1
            return ("not", self._parse_not())
        return self._parse_primary()

    def _parse_primary(self):
        kind, value, _ = self._peek()
        if kind == "punct" and value == "(":
            self.pos += 1
            node = self._parse_or()
            self._expect("punct", ")")
            return node
        left = self._parse_operand()
        k, v, p = self._peek()
        if k == "word" and v.lower() in _CMP_KIND:
            self.pos += 1
            right = self._parse_operand()
            self._check_types(v.lower(), left, right)
            return ("cmp", v.lower(), left, right)
        if k == "word" and v.lower() == "in":
            self.pos += 1
            self._expect("punct", "(")
            items = [self._parse_operand()]
            while self._peek()[0] == "punct" and self._peek()[1] == ",":
                self.pos += 1
                items.append(self._parse_operand())
            self._expect("punct", ")")
            for item in items:
                if item[0] != "lit":
                    raise ODataError("The 'in' operator takes a list of literals.")
                self._check_types("eq", left, item)
            return ("in", left, items)
        if self._type(left) != "bool":
            raise ODataError(f"Syntax error at position {p} in '{self.text}': expected a comparison.")
        return ("truthy", left)

    def _parse_operand(self):
        kind, value, pos = self._peek()
        if kind is None:
            raise ODataError(f"Syntax error: unexpected end of '{self.text}'.")
        self.pos += 1
        if kind == "str":
            return ("lit", "string", value)
        if kind == "punct":
            raise ODataError(f"Syntax error at position {pos} in '{self.text}'.")
        low = value.lower()
        nxt = self._peek()
        if nxt[0] == "punct" and nxt[1] == "(" and low in _STRING_FUNCS | _BOOL_FUNCS:
            self.pos += 1
            args = [self._parse_operand()]
            while self._peek()[0] == "punct" and self._peek()[1] == ",":
                self.pos += 1
                args.append(self._parse_operand())
            self._expect("punct", ")")
            want = 1 if low in _STRING_FUNCS else 2
            if len(args) != want or any(self._type(a) not in ("string", "enum") for a in args):
                raise ODataError(f"No function signature for the function with name '{low}' matches the given arguments.")
            return ("fn", low, args)
        if low in ("true", "false"):
            return ("lit", "bool", low == "true")
        if low == "null":
            return ("lit", "null", None)
        if _GUID_RE.fullmatch(value):
            return ("lit", "guid", value.lower())
        if _DT_RE.fullmatch(value):
            dt = parse_datetime(value)
            if dt is None:
                raise ODataError(f"The DateTimeOffset text '{value}' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?'.")
            return ("lit", "datetime", dt)
        if _NUM_RE.fullmatch(value):
            return ("lit", "number", float(value.rstrip("mMdDfFlL")))
        if _IDENT_RE.fullmatch(value):
            if value not in self.fields:
                raise ODataError(f"Could not find a property named '{value}' on type '{self.entity}'.")
            return ("field", value, self.fields[value])
        raise ODataError(f"Syntax error at position {pos} in '{self.text}'.")

    def _type(self, node):
        if node[0] == "lit":
            return node[1]
        if node[0] == "field":
            return node[2]
        if node[0] == "fn":
            return "string" if node[1] in _STRING_FUNCS else "bool"
        return "bool"

    def _check_types(self, op, left, right):
        lt, rt = self._type(left), self._type(right)
        norm = {"enum": "string"}
        a, b = norm.get(lt, lt), norm.get(rt, rt)
        if "list" in (a, b):
            raise ODataError("Collection properties cannot be compared with a binary operator.")
        if "null" in (a, b):
            if op not in ("eq", "ne"):
                raise ODataError("null can only be compared with eq or ne.")
            return
        if a != b:
            raise ODataError(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'Edm.{_EDM[lt]}' and 'Edm.{_EDM[rt]}' for operator kind '{_CMP_KIND[op]}'.")

    # ---- evaluation -------------------------------------------------------
    def matches(self, rec):
        return bool(self._eval(self.tree, rec))

    def _value(self, node, rec):
        kind = node[0]
        if kind == "lit":
            return node[2]
        if kind == "field":
            return field_value(rec.get(node[1]), node[2])
        if kind == "fn":
            args = [self._value(a, rec) for a in node[2]]
            if any(a is None for a in args):
                return None if node[1] in _STRING_FUNCS else False
            a = [str(x) for x in args]
            if node[1] == "tolower":
                return a[0].lower()
            if node[1] == "toupper":
                return a[0].upper()
            if node[1] == "trim":
                return a[0].strip()
            if node[1] == "contains":
                return a[1] in a[0]
            if node[1] == "startswith":
                return a[0].startswith(a[1])
            return a[0].endswith(a[1])
        return self._eval(node, rec)

    def _eval(self, node, rec):
        kind = node[0]
        if kind == "or":
            return self._eval(node[1], rec) or self._eval(node[2], rec)
        if kind == "and":
            return self._eval(node[1], rec) and self._eval(node[2], rec)
        if kind == "not":
            return not self._eval(node[1], rec)
        if kind == "truthy":
            return self._value(node[1], rec) is True
        if kind == "in":
            left = self._value(node[1], rec)
            return any(left == item[2] for item in node[2])
        if kind == "cmp":
            op = node[1]
            left = self._value(node[2], rec)
            right = self._value(node[3], rec)
            if op == "eq":
                return left == right
            if op == "ne":
                return left != right
            if left is None or right is None:
                return False
            return {"gt": left > right, "ge": left >= right,
                    "lt": left < right, "le": left <= right}[op]
        return bool(self._value(node, rec))


def field_value(raw, ftype):
    """A stored field as the comparable value of its OData type."""
    if raw is None:
        return None
    if ftype == "guid":
        return str(raw).lower()
    if ftype == "datetime":
        return parse_datetime(raw)
    if ftype == "number":
        try:
            return float(raw)
        except (TypeError, ValueError):
            return None
    if ftype == "bool":
        return raw if isinstance(raw, bool) else None
    if ftype == "list":
        return raw
    return str(raw)


def sort_key(raw, ftype):
    value = fold(field_value(raw, ftype))
    return (False, 0) if value is None else (True, value)


def odata_query(params, records, fields, entity, context_url):
    """Applies the OData system query options to records and returns the
    envelope NowCerts answers with. Raises ODataError for a bad query."""
    supported = {"$filter", "$orderby", "$top", "$skip", "$count", "$select"}
    for key in params:
        if key.startswith("$") and key not in supported:
            raise ODataError(f"The query parameter '{key}' is not supported.")
    rows = list(records)
    if params.get("$filter", "").strip():
        flt = ODataFilter(params["$filter"], fields, entity)
        rows = [r for r in rows if flt.matches(r)]
    if params.get("$orderby", "").strip():
        keys = []
        for part in params["$orderby"].split(","):
            words = part.split()
            if not words or len(words) > 2:
                raise ODataError(f"Syntax error in $orderby '{params['$orderby']}'.")
            name = words[0]
            direction = words[1].lower() if len(words) == 2 else "asc"
            if direction not in ("asc", "desc"):
                raise ODataError(f"Syntax error in $orderby: '{words[1]}' is not asc or desc.")
            if name not in fields:
                raise ODataError(f"Could not find a property named '{name}' on type '{entity}'.")
            if fields[name] == "list":
                raise ODataError(f"The $orderby property '{name}' is a collection.")
            keys.append((name, direction == "desc"))
        # Stable sorts from the last key to the first give a multi-key order;
        # nulls sort first ascending, as in SQL Server.
        for name, desc in reversed(keys):
            rows.sort(key=lambda r, n=name, t=fields[name]: sort_key(r.get(n), t), reverse=desc)
    count = params.get("$count", "false").lower()
    if count not in ("true", "false"):
        raise ODataError(f"'{params['$count']}' is not a valid count option.")
    total = len(rows)

    def non_negative(name):
        raw = params.get(name)
        if raw is None or raw == "":
            return None
        if not re.fullmatch(r"\d+", raw.strip()):
            raise ODataError(f"Invalid value '{raw}' for {name} query option found. "
                             f"The {name} query option requires a non-negative integer value.")
        return int(raw)

    skip = non_negative("$skip")
    top = non_negative("$top")
    if skip:
        rows = rows[skip:]
    if top is not None:
        rows = rows[:top]
    select_raw = params.get("$select", "").strip()
    if select_raw and select_raw != "*":
        names = [s.strip() for s in select_raw.split(",")]
        for name in names:
            if name not in fields:
                raise ODataError(f"Could not find a property named '{name}' on type '{entity}'.")
        rows = [{n: r.get(n) for n in names} for r in rows]
    envelope = {"@odata.context": context_url}
    if count == "true":
        envelope["@odata.count"] = total
    envelope["value"] = copy.deepcopy(rows)
    return envelope


# --------------------------------------------------------------------------
# Fake NowCerts
# --------------------------------------------------------------------------

ENUM_TYPE = {0: "Insured", 1: "Prospect", 2: "Underwriter (MGA)", 3: "NAIC (Carrier)",
             4: "Finance_Company", 5: "Referral_Source", 6: "Other"}
ENUM_INSURED_TYPE = {0: "Commercial", 1: "Personal", 2: "LifeHealth_Group",
                     3: "LifeHealth_Individual", 4: "Medicare"}
ENUM_PROSPECT_TYPE = {0: "Hot Prospect", 1: "Prospect", 2: "Cold_Prospect"}
ENUM_BUSINESS_TYPE = {0: "New_Business", 1: "Renewal", 2: "Rewrite"}
ENUM_BUSINESS_SUBTYPE = {0: "AgentOfRecord", 1: "NewCustomer", 2: "NewLOB", 3: "ChangedPlan",
                         4: "NewToMedicare", 5: "PurchasedBook"}
ENUM_BILLING_TYPE = {0: "Direct_Bill_100", 1: "Direct_Bill_with_agency_down_payment",
                     2: "Agency_Bill_100", 3: "Agency_Bill_with_Outside_Financing",
                     4: "Agency_Bill_Paid_In_Full", 5: "Direct_Bill_Autopay"}
ENUM_POLICY_STATUS = {0: "Active", 1: "Pending cancel", 2: "Cancelled", 3: "Expired", 4: "Renewing",
                      5: "Renewed", 6: "Reinstated", 7: "Replaced", 8: "Non-Renewal",
                      9: "Reinstating", 10: "Rewriting", 11: "Rewritten"}
INACTIVE_POLICY_STATUSES = {"Cancelled", "Expired", "Replaced", "Non-Renewal", "Renewed", "Rewritten"}

# Read-side fields of InsuredDetailList (NOTES §4) and their OData types.
INSURED_FIELDS = {
    "id": "guid", "commercialName": "string", "firstName": "string", "middleName": "string",
    "lastName": "string", "dateOfBirth": "datetime", "type": "enum", "dba": "string",
    "addressLine1": "string", "addressLine2": "string", "state": "string", "city": "string",
    "zipCode": "string", "eMail": "string", "eMail2": "string", "eMail3": "string", "fax": "string",
    "phone": "string", "cellPhone": "string", "smsPhone": "string", "description": "string",
    "active": "bool", "website": "string", "fein": "string", "customerId": "string",
    "insuredId": "string", "referralSourceCompanyName": "string", "changeDate": "datetime",
    "createDate": "datetime", "coInsured_FirstName": "string", "coInsured_MiddleName": "string",
    "coInsured_LastName": "string", "coInsured_DateOfBirth": "datetime", "insuredType": "enum",
    "prospectType": "enum", "acquisitionDate": "datetime", "lastChangeUserId": "guid",
    "lastChangeUserName": "string",
}
INSURED_ENUMS = {"type": ENUM_TYPE, "insuredType": ENUM_INSURED_TYPE, "prospectType": ENUM_PROSPECT_TYPE}
# Fields an Insured/Insert body may set: the read side less what the server
# owns, with databaseId in place of id. Keys match case-insensitively, as
# Json.NET binds them; anything else is ignored.
INSURED_SERVER_FIELDS = {"id", "changeDate", "createDate", "lastChangeUserId", "lastChangeUserName"}
INSURED_WRITE = {k.lower(): k for k in INSURED_FIELDS if k not in INSURED_SERVER_FIELDS}
INSURED_WRITE["databaseid"] = "databaseId"

# Read-side fields of PolicyDetailList (NOTES §5).
POLICY_FIELDS = {
    "id": "guid", "databaseId": "guid", "number": "string", "isQuote": "bool",
    "effectiveDate": "datetime", "expirationDate": "datetime", "bindDate": "datetime",
    "businessType": "enum", "businessSubType": "enum", "description": "string", "billingType": "enum",
    "insuredDatabaseId": "guid", "insuredEmail": "string", "insuredFirstName": "string",
    "insuredLastName": "string", "insuredCommercialName": "string", "carrierName": "string",
    "carrierNAIC": "string", "mgaName": "string", "totalPremium": "number", "totalNonPremium": "number",
    "totalAgencyCommission": "number", "changeDate": "datetime", "cancellationDate": "datetime",
    "reinstatementDate": "datetime", "active": "bool", "status": "string", "inceptionDate": "datetime",
    "createDate": "datetime", "policyTerm": "number", "policyTermFormatted": "string",
    "binderId": "string", "insuredType": "enum", "additionalPolicyStatus": "string",
    "percentageChange": "number", "productName": "string", "lineOfBusinesses": "list",
    "lastChangeUserId": "guid", "lastChangeUserName": "string", "origin": "string",
    "alternativePolicyNumber": "string",
}
POLICY_ENUMS = {"businessType": ENUM_BUSINESS_TYPE, "businessSubType": ENUM_BUSINESS_SUBTYPE,
                "billingType": ENUM_BILLING_TYPE, "insuredType": ENUM_INSURED_TYPE}
# Policy/Insert and Quote/Insert body fields (NOTES §5), lower-cased → canonical.
POLICY_WRITE = {k.lower(): k for k in (
    "databaseId", "insuredDatabaseId", "insuredEmail", "insuredFirstName", "insuredLastName",
    "insuredCommercialName", "number", "effectiveDate", "expirationDate", "bindDate", "businessType",
    "businessSubType", "description", "billingType", "lineOfBusinessName", "carrierName", "mgaName",
    "premium", "binderId", "productName", "manualStatus", "deleteOtherLob")}

# Rows of DeletedInsuredList (NOTES §6, sample deletedinsuredlist-response.json):
# nothing else, no deletion time.
DELETED_INSURED_FIELDS = {"insuredDatabaseId": "guid", "deleted": "bool", "policies": "list",
                          "insuredContacts": "list"}

NC_DENIED = {"Message": "Authorization has been denied for this request."}
NC_INVALID = {"Message": "The request is invalid."}

# ZapierEventType (ref/nowcerts/enums.json): the `event` of Zapier/Subscribe.
ZAPIER_EVENT_TYPES = {
    "CreateInsured": 0, "CreatePolicy": 1, "CreateQuote": 2, "CreateProspect": 3, "UpdatePolicy": 4,
    "UpdateQuote": 5, "CreateTask": 6, "UpdateTask": 7, "CreateOpportunity": 8, "UpdateOpportunity": 9,
    "CreateServiceRequestsAddDriver": 10, "CreateServiceRequestsAddressChanges": 11,
    "CreateServiceRequestsRemoveDriver": 12, "CreateServiceRequestsReplaceDriver": 13,
    "CreateServiceRequestsVehicleTransfer": 14, "CreateServiceRequests": 15, "CreateClaim": 16,
    "CreateAutomobileLossClaim": 17, "CreateNote": 18, "CreateTagApply": 19, "CreateDriver": 20,
    "UpdateDriver": 21, "CreateVehicle": 22, "UpdateVehicle": 23, "CreateProperty": 24,
    "UpdateProperty": 25, "CreatePrincipal": 26, "UpdatePrincipal": 27, "CreateCallLog": 28,
    "CreateSMS": 29, "ConvertProspectToInsured": 30, "CreateQuoteApplication": 31,
    "UpdateInsured": 32, "UpdateProspect": 33,
}
ZAPIER_EVENT_NAMES = {v: k for k, v in ZAPIER_EVENT_TYPES.items()}
# A delivery holds its target this long at most.
DELIVERY_TIMEOUT_S = 10.0


def post_json(url, data, entry):
    """POSTs the JSON bytes `data` to url, as both fakes deliver webhooks;
    records the answer in entry: status and answer, or status 0 and error."""
    try:
        u = urlsplit(url)
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = cls(u.hostname, u.port, timeout=DELIVERY_TIMEOUT_S)
        try:
            path = (u.path or "/") + ("?" + u.query if u.query else "")
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            entry["answer"] = resp.read().decode("utf-8", "replace")[:2000]
            entry["status"] = resp.status
        finally:
            conn.close()
    except (OSError, ValueError, http.client.HTTPException) as e:
        entry["status"] = 0
        entry["error"] = f"{type(e).__name__}: {e}"
# Read-side names that the Zapier/Insert* bodies spell differently (NOTES §4,
# §5: first_name, email, phone_number, address_line_1, zip_code, ...); the
# rest are converted from camelCase by rule.
ZAPIER_RENAMES = {"id": "database_id", "databaseId": "database_id", "eMail": "email",
                  "eMail2": "email_2", "eMail3": "email_3", "phone": "phone_number",
                  "addressLine1": "address_line_1", "addressLine2": "address_line_2",
                  "zipCode": "zip_code", "totalPremium": "premium"}


def snake(name):
    """camelCase (and NowCerts' coInsured_FirstName) to snake_case."""
    out = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    return re.sub(r"_+", "_", out)


def zapier_view(rec):
    """A record as our guess of a Zapier REST-hook delivery: NowCerts'
    Zapier/* endpoints speak snake_case (NOTES §4, §6), so the read-side record
    with its names in that style. The real payload is unconfirmed."""
    out = {}
    for key, value in rec.items():
        if key == "lineOfBusinesses":
            names = [x.get("lineOfBusinessName") if isinstance(x, dict) else x for x in value or []]
            out["line_of_business_name"] = names[0] if names else None
            out["lines_of_business"] = names
            continue
        out[ZAPIER_RENAMES.get(key) or snake(key)] = copy.deepcopy(value)
    if rec.get("id"):
        out["id"] = out["database_id"] = rec["id"]
    return out


class InvalidBody(Exception):
    """A write body the real API's model binder would refuse (HTTP 400)."""


def canon_body(body, table):
    """Body keys mapped to canonical names (case-insensitively); others dropped."""
    out = {}
    for key, value in body.items():
        name = table.get(key.lower()) if isinstance(key, str) else None
        if name is not None:
            out[name] = value
    return out


def enum_name(value, table, field):
    """Enums are ints on write; a name is accepted too (Json.NET binds both)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidBody(f"{field}: not a valid value")
    if isinstance(value, int) and value in table:
        return table[value]
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text) and int(text) in table:
            return table[int(text)]
        for name in table.values():
            if name.lower() == text.lower():
                return name
    raise InvalidBody(f"{field}: {value!r} is not a valid value")


def as_text(value, field):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        return str(value)
    raise InvalidBody(f"{field}: expected a string")


def as_bool(value, field):
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidBody(f"{field}: expected true or false")


def as_guid(value, field):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and _GUID_RE.fullmatch(value.strip()):
        return value.strip().lower()
    raise InvalidBody(f"{field}: {value!r} is not a guid")


def as_decimal(value, field):
    if value is None or is_number(value):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise InvalidBody(f"{field}: expected a number")


def present(value):
    return isinstance(value, str) and value.strip() != ""


def insured_display_name(rec):
    """The name NowCerts puts in its messages: "Last, First Middle", else the
    commercial name (sample: "Insured '1000, 100 1001' ...")."""
    if present(rec.get("lastName")) or present(rec.get("firstName")):
        name = f"{rec.get('lastName') or ''}, {rec.get('firstName') or ''}"
        if present(rec.get("middleName")):
            name += f" {rec['middleName']}"
        return name
    return rec.get("commercialName") or ""


# The user an agent's edit in NowCerts' own UI is stamped with: never the API
# user, so a client's "was this my own write?" check sees someone else.
NC_AGENT_USER_ID = stable_guid("user:agency-agent")
NC_AGENT_USER_NAME = "Agency Agent (fake NowCerts UI)"


def insured_edit_fields(body):
    """A control-API edit body (read-side names, null clears) as stored
    values; raises InvalidBody naming the first bad field."""
    fields = {}
    for name, value in body.items():
        if name == "_user":
            continue
        if name not in INSURED_FIELDS or name in INSURED_SERVER_FIELDS:
            raise InvalidBody(f"{name}: not an editable InsuredDetailList field")
        ftype = INSURED_FIELDS[name]
        if name in INSURED_ENUMS:
            if value is None:
                raise InvalidBody(f"{name}: cannot be null")
            fields[name] = enum_name(value, INSURED_ENUMS[name], name)
        elif ftype == "bool":
            if value is None:
                raise InvalidBody(f"{name}: cannot be null")
            fields[name] = as_bool(value, name)
        elif ftype == "datetime":
            if value is not None and parse_datetime(value) is None:
                raise InvalidBody(f"{name}: {value!r} is not an ISO-8601 date")
            fields[name] = value
        else:
            fields[name] = as_text(value, name)
    return fields


class NowCertsFake(Fake):
    label = "fake-nowcerts"
    collections = ("insureds", "policies", "subscriptions", "deletedInsureds", "insuredTags")
    config_keys = {"latency_ms", "token_ttl", "date_precision"}
    route_flags = re.IGNORECASE

    def __init__(self, config, request_log_max, quiet, user, password):
        self.user = user
        self.password = password
        self.generation = 0
        self.outbox = queue.Queue()
        super().__init__(config, request_log_max, quiet)
        # One worker posts the REST-hook deliveries, in the order the writes
        # happened, and never while a request holds the lock.
        threading.Thread(target=self.deliver_forever, daemon=True).start()

    def routes(self):
        return [
            ("POST", "/api/token", "h_token"),
            ("GET", "/api/InsuredDetailList", "h_insured_list"),
            ("GET", "/api/PolicyDetailList", "h_policy_list"),
            ("GET", "/api/DeletedInsuredList", "h_deleted_insured_list"),
            ("POST", "/api/Insured/Insert", "h_insured_insert"),
            ("POST", "/api/Insured/OnlyInsertInsured", "h_insured_only_insert"),
            ("POST", "/api/Policy/Insert", "h_policy_insert"),
            ("POST", "/api/Quote/Insert", "h_quote_insert"),
            ("POST", "/api/Zapier/Subscribe", "h_zapier_subscribe"),
            ("POST", "/api/Zapier/Unsubscribe", "h_zapier_unsubscribe"),
        ]

    def reset_upstream_state(self):
        self.access_tokens = {}    # access token -> {"expires", "user"}
        self.sessions = {}         # refresh token -> session (only the latest is a key)
        self.deliveries = deque(maxlen=self.request_log_max)
        # Deliveries queued before a reset belong to the old world: dropped.
        self.generation = getattr(self, "generation", 0) + 1

    # ---- Zapier REST hooks ----------------------------------------------------
    def zapier_body(self, req):
        """(target_url, event) of a Subscribe/Unsubscribe body, or raises
        InvalidBody as the model binder would."""
        body = json_object(req)
        fields = {k.lower(): v for k, v in body.items() if isinstance(k, str)}
        url = fields.get("target_url")
        if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
            raise InvalidBody("target_url: an absolute http(s) URL is required")
        event = fields.get("event")
        if isinstance(event, str) and event in ZAPIER_EVENT_TYPES:
            event = ZAPIER_EVENT_TYPES[event]
        if isinstance(event, bool) or not isinstance(event, int) or event not in ZAPIER_EVENT_NAMES:
            raise InvalidBody(f"event: {event!r} is not a valid ZapierEventType")
        return url, event

    def h_zapier_subscribe(self, req, user):
        # The answer's shape is our guess (NOTES §6: unconfirmed); subscribing
        # the same URL to the same event twice keeps one subscription.
        url, event = self.zapier_body(req)
        with self.lock:
            subs = self.records["subscriptions"]
            found = next((x for x in subs.values() if x["target_url"] == url and x["event"] == event), None)
            if found is None:
                found = {"id": str(uuid.uuid4()), "target_url": url, "event": event,
                         "event_name": ZAPIER_EVENT_NAMES[event], "user_id": user["userId"],
                         "created": self.now()}
                subs[found["id"]] = found
            return Reply(200, {"id": found["id"], "target_url": url, "event": event,
                               "status": 1, "message": "Subscribed"})

    def h_zapier_unsubscribe(self, req, user):
        url, event = self.zapier_body(req)
        with self.lock:
            subs = self.records["subscriptions"]
            gone = [k for k, x in subs.items() if x["target_url"] == url and x["event"] == event]
            for k in gone:
                del subs[k]
        return Reply(200, {"removed": len(gone), "status": 1, "message": "Unsubscribed"})

    def c_deliveries(self, body):
        with self.lock:
            return Reply(200, copy.deepcopy(list(self.deliveries)))

    def emit(self, names, rec):
        """Queues a delivery of rec to every subscription of each event name.
        Called with the lock held, right after the write."""
        view = None
        for name in names:
            event = ZAPIER_EVENT_TYPES[name]
            for sub in self.records["subscriptions"].values():
                if sub["event"] != event:
                    continue
                if view is None:
                    view = zapier_view(rec)
                self.outbox.put((self.generation, name, event, sub["target_url"], copy.deepcopy(view)))

    def emit_insured(self, rec, before):
        """before: the record's type before the write, None for a new one."""
        prospect = rec.get("type") == "Prospect"
        if before is None:
            self.emit(["CreateProspect" if prospect else "CreateInsured"], rec)
        elif before == "Prospect" and not prospect:
            self.emit(["ConvertProspectToInsured"], rec)
        else:
            self.emit(["UpdateProspect" if prospect else "UpdateInsured"], rec)

    def emit_policy(self, rec, created):
        kind = "Quote" if rec.get("isQuote") else "Policy"
        self.emit([("Create" if created else "Update") + kind], rec)

    def deliver_forever(self):
        while True:
            generation, name, event, url, body = self.outbox.get()
            if generation != self.generation:
                continue
            entry = {"event": event, "name": name, "target_url": url, "body": body,
                     "at": time.time(), "status": None, "error": None}
            post_json(url, json.dumps(body).encode(), entry)
            self.log(f"delivery {name} -> {url}: {entry['status']}")
            with self.lock:
                if generation == self.generation:
                    self.deliveries.append(entry)

    def validate_config(self, key, value):
        super().validate_config(key, value)
        if key == "token_ttl" and (not is_number(value) or value < 0):
            raise ValueError("token_ttl must be a non-negative number of seconds")
        if key == "date_precision" and value not in ("second", "minute"):
            raise ValueError("date_precision must be 'second' or 'minute'")

    def c_revoke(self, body):
        with self.lock:
            n = len(self.access_tokens)
            self.access_tokens.clear()
        return Reply(200, {"revoked": n})

    def default_error_body(self, status):
        if status == 401:
            return dict(NC_DENIED)
        return {"Message": "An error has occurred."}

    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def now(self):
        return iso_now_nowcerts(self.config.get("date_precision", "second"))

    # ---- dispatch --------------------------------------------------------
    def dispatch(self, req):
        m = self.match(req.method, req.path)
        if m is None:
            return Reply(404, {"Message": "No HTTP resource was found that matches the request URI "
                                          f"'{self.base_url()}{req.path}'."})
        route, fn, params = m
        if route is None:
            return Reply(405, {"Message": f"The requested resource does not support http method '{req.method}'."},
                         {"Allow": ", ".join(params)})
        if fn == self.h_token:
            return fn(req)
        user = self.authorize(req)
        if user is None:
            return Reply(401, dict(NC_DENIED), {"WWW-Authenticate": "Bearer"})
        try:
            return fn(req, user)
        except BadJson:
            return Reply(400, dict(NC_INVALID))
        except InvalidBody as e:
            return Reply(400, {"Message": "The request is invalid.", "ModelState": {"model": [str(e)]}})

    def authorize(self, req):
        token = req.bearer()
        if not token:
            return None
        with self.lock:
            info = self.access_tokens.get(token)
            if info is None or time.time() >= info["expires"]:
                return None
            return info["user"]

    # ---- token endpoint ----------------------------------------------------
    def user_info(self, username):
        display = username.split("@")[0].replace(".", " ").title() or username
        return {
            "userName": username,
            "userId": stable_guid("user:" + username.lower()),
            "userDisplayName": f"{display} (fake NowCerts)",
            "agencyId": stable_guid("agency"),
            "agencyName": "Fake Agency (ncghl sandbox)",
            "contactId": stable_guid("contact:" + username.lower()),
            "userType": "Agent",
            "isAgencyOwner": "true",
            "email": username if "@" in username else f"{username}@example.invalid",
        }

    def issue(self, session):
        """New access and refresh tokens for a login; the previous refresh
        token of that login stops working (NowCerts rotates them)."""
        ttl = self.config["token_ttl"]
        now = time.time()
        access = secrets.token_urlsafe(48)
        refresh = secrets.token_hex(16)
        with self.lock:
            self.sessions.pop(session.get("refresh"), None)
            session["refresh"] = refresh
            self.sessions[refresh] = session
            self.access_tokens[access] = {"expires": now + ttl, "user": session["user"]}
        body = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
            "refresh_token": refresh,
            "as:client_id": "ngAuthApp",
        }
        body.update(session["user"])
        body[".issued"] = formatdate(now, usegmt=True)
        body[".expires"] = formatdate(now + ttl, usegmt=True)
        return Reply(200, body)

    def h_token(self, req):
        # OWIN parses the form whatever the Content-Type says (NOTES §2).
        form = dict(parse_qsl(req.text, keep_blank_values=True))
        if form.get("client_id") != "ngAuthApp":
            return Reply(400, {"error": "invalid_client", "error_description": "Client id is not set."})
        grant = form.get("grant_type")
        if grant == "password":
            username, password = form.get("username", ""), form.get("password", "")
            ok = bool(username) and bool(password)
            if self.user is not None:
                ok = ok and username == self.user
            if self.password is not None:
                ok = ok and password == self.password
            if not ok:
                return Reply(400, {"error": "invalid_grant",
                                   "error_description": "The user name or password is incorrect."})
            return self.issue({"user": self.user_info(username), "refresh": None})
        if grant == "refresh_token":
            # Lookup and rotation under one lock: of two refreshes racing with
            # the same token, exactly one wins.
            with self.lock:
                session = self.sessions.get(form.get("refresh_token", ""))
                if session is None:
                    return Reply(400, {"error": "invalid_grant", "error_description": "invalid refresh token"})
                return self.issue(session)
        return Reply(400, {"error": "unsupported_grant_type"})

    # ---- lists ------------------------------------------------------------
    def odata(self, req, collection, fields, entity, set_name):
        context = f"{self.base_url()}/api/$metadata#{set_name}"
        with self.lock:
            records = list(self.records[collection].values())
            try:
                return Reply(200, odata_query(req.params, records, fields, entity, context))
            except ODataError as e:
                return Reply(400, {"Message": f"The query specified in the URI is not valid. {e}"})

    def h_insured_list(self, req, user):
        return self.odata(req, "insureds", INSURED_FIELDS, "InsuredDetail", "InsuredDetailList")

    def h_policy_list(self, req, user):
        return self.odata(req, "policies", POLICY_FIELDS, "PolicyDetail", "PolicyDetailList")

    def h_deleted_insured_list(self, req, user):
        return self.odata(req, "deletedInsureds", DELETED_INSURED_FIELDS, "DeletedInsured",
                          "DeletedInsuredList")

    # ---- insureds ---------------------------------------------------------
    def insured_fields(self, body):
        """Write body → read-side field values (enums as names)."""
        fields = {}
        for name, value in canon_body(body, INSURED_WRITE).items():
            if name == "databaseId":
                continue
            ftype = INSURED_FIELDS[name]
            if name in INSURED_ENUMS:
                fields[name] = enum_name(value, INSURED_ENUMS[name], name)
            elif ftype == "bool":
                fields[name] = as_bool(value, name)
            elif ftype == "guid":
                fields[name] = as_guid(value, name)
            else:
                fields[name] = as_text(value, name)
        return fields

    def find_insured(self, body):
        """Insured/Insert's match order (NOTES §4): databaseId, then
        commercialName, then firstName+lastName, names compared ignoring case.
        Returns (record or None, error message or None)."""
        db_id = as_guid(canon_body(body, INSURED_WRITE).get("databaseId"), "databaseId")
        if db_id is not None:
            rec = self.records["insureds"].get(db_id)
            return (rec, None) if rec else (None, "Insured not found")
        fields = canon_body(body, INSURED_WRITE)
        commercial = fields.get("commercialName")
        if present(commercial):
            for rec in self.records["insureds"].values():
                if fold(rec.get("commercialName")) == fold(commercial.strip()):
                    return rec, None
        first, last = fields.get("firstName"), fields.get("lastName")
        if present(first) and present(last):
            for rec in self.records["insureds"].values():
                if (fold(rec.get("firstName")) == fold(first.strip())
                        and fold(rec.get("lastName")) == fold(last.strip())):
                    return rec, None
        return None, None

    @staticmethod
    def has_identity(body):
        fields = canon_body(body, INSURED_WRITE)
        return (present(fields.get("databaseId")) or present(fields.get("commercialName"))
                or (present(fields.get("firstName")) and present(fields.get("lastName"))))

    def new_insured(self, fields, user):
        now = self.now()
        rec = {name: None for name in INSURED_FIELDS}
        # Json.NET leaves unset non-nullable enums and bools at their defaults:
        # type 0 (Insured), insuredType 0 (Commercial), active false.
        rec.update({"type": "Insured", "insuredType": "Commercial", "active": False})
        rec.update(fields)
        rec["id"] = str(uuid.uuid4())
        rec["createDate"] = now
        rec["changeDate"] = now
        rec["lastChangeUserId"] = user["userId"]
        rec["lastChangeUserName"] = user["userDisplayName"]
        self.records["insureds"][rec["id"]] = rec
        return rec

    @staticmethod
    def replace_insured(rec, fields):
        """Insured/Insert on an existing record: the body becomes the record.
        Writable fields it leaves out become null; the non-nullable enums and
        bool fall back to Json.NET's defaults, as on a create. id, createDate
        and the change stamps are the server's and are kept (the caller sets
        the stamps)."""
        for name in INSURED_WRITE.values():
            if name != "databaseId":
                rec[name] = None
        rec.update({"type": "Insured", "insuredType": "Commercial", "active": False})
        rec.update(fields)

    def insert_answer(self, rec, message):
        return Reply(200, {"insuredDatabaseId": rec["id"],
                           "referralSourceCompanyName": rec.get("referralSourceCompanyName"),
                           "status": 1, "message": message})

    def h_insured_insert(self, req, user):
        body = json_object(req)
        if not self.has_identity(body):
            return Reply(200, {"status": 0, "message":
                               "At least CommercialName or FirstName and LastName or Id should be entered"})
        fields = self.insured_fields(body)
        with self.lock:
            rec, error = self.find_insured(body)
            if error:
                return Reply(200, {"status": 0, "message": error})
            if rec is None:
                rec = self.new_insured(fields, user)
                self.emit_insured(rec, None)
                return self.insert_answer(rec, f"Insured '{insured_display_name(rec)}' has been imported")
            # The documented quirk: whatever matched is overwritten, even when
            # it is a different person of the same name. A matched Insert
            # replaces the record (SPEC 10): every writable field the body
            # leaves out is blanked, not kept.
            before = rec.get("type")
            self.replace_insured(rec, fields)
            self.apply_tag(rec, body)
            rec["changeDate"] = self.now()
            rec["lastChangeUserId"] = user["userId"]
            rec["lastChangeUserName"] = user["userDisplayName"]
            self.emit_insured(rec, before)
            return self.insert_answer(
                rec, f"Insured '{insured_display_name(rec)}' exists in database and has been overridden.")

    def apply_tag(self, rec, body):
        """Insured/Insert's tagName and tagDescription (NOTES section 4 lists
        them as write fields; what NowCerts does with them is unconfirmed):
        kept as a tag applied to the insured, listed under /_records/insuredTags
        (no read list of the API shows tags)."""
        lower = {k.lower(): v for k, v in body.items() if isinstance(k, str)}
        name = lower.get("tagname")
        if present(name):
            tag_id = str(uuid.uuid4())
            self.records["insuredTags"][tag_id] = {
                "id": tag_id, "insuredDatabaseId": rec["id"], "tagName": as_text(name, "tagName"),
                "tagDescription": as_text(lower.get("tagdescription"), "tagDescription"),
                "at": self.now()}

    def h_insured_only_insert(self, req, user):
        body = json_object(req)
        fields = self.insured_fields(body)
        has_name = present(fields.get("commercialName")) or (
            present(fields.get("firstName")) and present(fields.get("lastName")))
        if not has_name:
            return Reply(200, {"status": 0, "message":
                               "At least CommercialName or FirstName and LastName or Id should be entered"})
        with self.lock:
            rec = self.new_insured(fields, user)
            self.apply_tag(rec, body)
            self.emit_insured(rec, None)
            return self.insert_answer(rec, f"Insured '{insured_display_name(rec)}' has been imported")

    # ---- an agent in NowCerts' UI (control API) ----------------------------------
    def editable_collections(self):
        return ("insureds",)

    def agent_edit(self, collection, rid, body):
        user_id = body.get("_user", NC_AGENT_USER_ID)
        try:
            user_id = as_guid(user_id, "_user")
            fields = insured_edit_fields(body)
        except InvalidBody as e:
            return Reply(400, {"error": str(e)})
        if user_id is None:
            return Reply(400, {"error": "_user: a user guid is required"})
        with self.lock:
            rec = self.records["insureds"].get(rid.lower())
            if rec is None:
                return Reply(404, {"error": f"no insured {rid}"})
            before = rec.get("type")
            rec.update(fields)
            rec["changeDate"] = self.now()
            rec["lastChangeUserId"] = user_id
            rec["lastChangeUserName"] = (NC_AGENT_USER_NAME if user_id == NC_AGENT_USER_ID
                                         else f"User {user_id[:8]} (fake NowCerts UI)")
            self.emit_insured(rec, before)
            return Reply(200, copy.deepcopy(rec))

    def agent_delete(self, collection, rid):
        """Deleting an insured in the UI takes its policies with it; the
        insured then appears in DeletedInsuredList with their ids."""
        with self.lock:
            rec = self.records["insureds"].pop(rid.lower(), None)
            if rec is None:
                return Reply(404, {"error": f"no insured {rid}"})
            policies = [pid for pid, p in self.records["policies"].items()
                        if p.get("insuredDatabaseId") == rec["id"]]
            for pid in policies:
                del self.records["policies"][pid]
            row = {"insuredDatabaseId": rec["id"], "deleted": True,
                   "policies": [{"policyDatabaseId": pid} for pid in policies], "insuredContacts": []}
            self.records["deletedInsureds"][rec["id"]] = row
            return Reply(200, copy.deepcopy(row))

    # ---- policies and quotes --------------------------------------------------
    def h_policy_insert(self, req, user):
        return self.policy_insert(req, user, is_quote=False)

    def h_quote_insert(self, req, user):
        return self.policy_insert(req, user, is_quote=True)

    def policy_insert(self, req, user, is_quote):
        body = canon_body(json_object(req), POLICY_WRITE)
        kind = "Quote" if is_quote else "Policy"
        number = as_text(body.get("number"), "number")
        if not present(number):
            return Reply(200, {"status": 0, "message": "Policy number is required"})
        db_id = as_guid(body.get("databaseId"), "databaseId")
        with self.lock:
            insured = self.locate_policy_insured(body)
            if insured is None:
                return Reply(200, {"status": 0, "message": "Insured not found"})
            policies = self.records["policies"]
            # Upsert on databaseId, else on number among records of the same
            # kind (a quote and a policy may share a number, as in NOTES §5's
            # samples). An unknown databaseId falls through to the number, as
            # the policy-insert sample's differing ids show.
            rec = policies.get(db_id) if db_id else None
            if rec is not None and rec["isQuote"] != is_quote:
                rec = None
            if rec is None:
                for cand in policies.values():
                    if cand["isQuote"] == is_quote and fold(cand.get("number")) == fold(number.strip()):
                        rec = cand
                        break
            now = self.now()
            created = rec is None
            if rec is None:
                rec = {name: None for name in POLICY_FIELDS}
                new_id = str(uuid.uuid4())
                rec.update({"id": new_id, "databaseId": new_id, "number": number, "isQuote": is_quote,
                            "createDate": now, "lineOfBusinesses": [], "status": "Active", "active": True,
                            "businessType": "New_Business", "businessSubType": "AgentOfRecord",
                            "billingType": "Direct_Bill_100", "origin": "Web Service",
                            "totalNonPremium": 0.0, "totalAgencyCommission": 0.0})
                policies[new_id] = rec
            self.apply_policy(rec, body, insured)
            rec["changeDate"] = now
            rec["lastChangeUserId"] = user["userId"]
            rec["lastChangeUserName"] = user["userDisplayName"]
            self.emit_policy(rec, created)
            message = f"{kind} with number '{rec['number']}' has been imported."
            section = "Quotes" if is_quote else "Policies"
            return Reply(200, {
                "policiesOrQuotes": [{
                    "policyOrQuoteId": rec["id"], "isQuote": is_quote,
                    "objectURL": f"{self.base_url()}/AMSINS/{section}/Details/{rec['id']}/Information?part=0",
                    "status": 1, "message": message}],
                "insuredDatabaseId": insured["id"], "status": 1, "message": message})

    def locate_policy_insured(self, body):
        """The insured by insuredDatabaseId, else insuredCommercialName, else
        insuredFirstName + insuredLastName."""
        insureds = self.records["insureds"]
        db_id = as_guid(body.get("insuredDatabaseId"), "insuredDatabaseId")
        if db_id is not None:
            return insureds.get(db_id)
        commercial = body.get("insuredCommercialName")
        if present(commercial):
            for rec in insureds.values():
                if fold(rec.get("commercialName")) == fold(commercial.strip()):
                    return rec
        first, last = body.get("insuredFirstName"), body.get("insuredLastName")
        if present(first) and present(last):
            for rec in insureds.values():
                if fold(rec.get("firstName")) == fold(first.strip()) and fold(rec.get("lastName")) == fold(last.strip()):
                    return rec
        return None

    def apply_policy(self, rec, body, insured):
        for name in ("effectiveDate", "expirationDate", "bindDate", "description", "carrierName",
                     "mgaName", "binderId", "productName"):
            if name in body:
                rec[name] = as_text(body[name], name)
        for name in ("businessType", "businessSubType", "billingType"):
            if name in body:
                rec[name] = enum_name(body[name], POLICY_ENUMS[name], name)
        if "premium" in body:
            rec["totalPremium"] = as_decimal(body["premium"], "premium")
        if "manualStatus" in body:
            rec["status"] = enum_name(body["manualStatus"], ENUM_POLICY_STATUS, "manualStatus")
            rec["active"] = rec["status"] not in INACTIVE_POLICY_STATUSES
        lob = as_text(body.get("lineOfBusinessName"), "lineOfBusinessName")
        if present(lob):
            if as_bool(body.get("deleteOtherLob"), "deleteOtherLob"):
                rec["lineOfBusinesses"] = []
            if not any(fold(x.get("lineOfBusinessName")) == fold(lob) for x in rec["lineOfBusinesses"]):
                rec["lineOfBusinesses"].append({"lineOfBusinessName": lob})
        if rec.get("inceptionDate") is None:
            rec["inceptionDate"] = rec.get("effectiveDate")
        eff, exp = parse_datetime(rec.get("effectiveDate")), parse_datetime(rec.get("expirationDate"))
        if eff and exp:
            months = (exp.year - eff.year) * 12 + (exp.month - eff.month)
            rec["policyTerm"] = months
            rec["policyTermFormatted"] = f"{months} months"
        # The read side repeats the insured's details on every policy row.
        rec["insuredDatabaseId"] = insured["id"]
        rec["insuredEmail"] = insured.get("eMail")
        rec["insuredFirstName"] = insured.get("firstName")
        rec["insuredLastName"] = insured.get("lastName")
        rec["insuredCommercialName"] = insured.get("commercialName")
        rec["insuredType"] = insured.get("insuredType")

    # ---- seeding (/_records) --------------------------------------------------
    def seed(self, collection, record):
        now = self.now()
        if collection == "insureds":
            rec = {name: None for name in INSURED_FIELDS}
            rec.update(record)
            for name, table in INSURED_ENUMS.items():
                if isinstance(rec.get(name), int):
                    rec[name] = enum_name(rec[name], table, name)
            rec["id"] = (rec.get("id") or rec.pop("databaseId", None) or str(uuid.uuid4())).lower()
            rec.pop("databaseId", None)
            rec.setdefault("createDate", None)
            rec["createDate"] = rec["createDate"] or now
            rec["changeDate"] = rec.get("changeDate") or rec["createDate"]
            old = self.records["insureds"].get(rec["id"])
            self.records["insureds"][rec["id"]] = rec
            self.emit_insured(rec, None if old is None else old.get("type"))
            return rec
        if collection == "deletedInsureds":
            db_id = as_guid(record.get("insuredDatabaseId"), "insuredDatabaseId") if isinstance(
                record.get("insuredDatabaseId"), str) else None
            if db_id is None:
                raise ValueError("a deleted insured needs insuredDatabaseId (a guid)")
            row = {"insuredDatabaseId": db_id, "deleted": True, "policies": [], "insuredContacts": []}
            row.update({k: v for k, v in record.items() if k in ("deleted", "policies", "insuredContacts")})
            self.records["deletedInsureds"][db_id] = row
            return row
        if collection == "insuredTags":
            raise ValueError("insured tags are made by Insured/Insert's tagName, not seeded")
        if collection == "subscriptions":
            event = record.get("event")
            if event not in ZAPIER_EVENT_NAMES or not isinstance(record.get("target_url"), str):
                raise ValueError("a subscription needs target_url and an event number (ZapierEventType)")
            sub = {"id": str(uuid.uuid4()), "event_name": ZAPIER_EVENT_NAMES[event], "created": now}
            sub.update(record)
            self.records["subscriptions"][sub["id"]] = sub
            return sub
        rec = {name: None for name in POLICY_FIELDS}
        rec.update(record)
        for name, table in POLICY_ENUMS.items():
            if isinstance(rec.get(name), int):
                rec[name] = enum_name(rec[name], table, name)
        pid = (rec.get("id") or rec.get("databaseId") or str(uuid.uuid4())).lower()
        rec["id"] = rec["databaseId"] = pid
        rec["isQuote"] = bool(rec.get("isQuote"))
        lobs = rec.get("lineOfBusinesses") or []
        rec["lineOfBusinesses"] = [x if isinstance(x, dict) else {"lineOfBusinessName": x} for x in lobs]
        rec["createDate"] = rec.get("createDate") or now
        rec["changeDate"] = rec.get("changeDate") or rec["createDate"]
        created = pid not in self.records["policies"]
        self.records["policies"][pid] = rec
        self.emit_policy(rec, created)
        return rec


# --------------------------------------------------------------------------
# Fake GoHighLevel
# --------------------------------------------------------------------------

CONTACT_STRINGS = {"firstName", "lastName", "name", "email", "locationId", "gender", "phone", "address1",
                   "city", "state", "postalCode", "website", "timezone", "source", "dateOfBirth",
                   "country", "companyName", "assignedTo"}
# The DTOs of ref/ghl/openapi/apps/contacts.json; NestJS's whitelist answers
# 422 "property X should not exist" for anything else.
CREATE_CONTACT = CONTACT_STRINGS | {"dnd", "dndSettings", "inboundDndSettings", "tags", "customFields"}
UPDATE_CONTACT = CREATE_CONTACT - {"locationId", "gender", "companyName"}
UPSERT_CONTACT = CREATE_CONTACT | {"createNewIfDuplicateAllowed"}
CREATE_OPPORTUNITY = {"pipelineId", "locationId", "name", "pipelineStageId", "status", "contactId",
                      "monetaryValue", "assignedTo", "customFields"}
UPDATE_OPPORTUNITY = {"pipelineId", "name", "pipelineStageId", "status", "monetaryValue",
                      "assignedTo", "customFields"}
OPPORTUNITY_STATUSES = ("open", "won", "lost", "abandoned", "all")
OPP_SEARCH_PARAMS = {"q", "location_id", "pipeline_id", "pipeline_stage_id", "contact_id", "status",
                     "assigned_to", "campaignId", "id", "order", "endDate", "startAfter", "startAfterId",
                     "date", "country", "page", "limit", "getTasks", "getNotes", "getCalendarEvents"}
SEEDED_PIPELINES = ("Personal Lines", "Commercial Lines")
SEEDED_STAGES = ("New", "Quoted", "Bound")

# The locations the static token may use, unless --ghl-locations or /_config
# says otherwise: the integration tests', the sandbox's and the benchmark's.
DEFAULT_GHL_LOCATIONS = ("it-location-1", "sandbox-location", "bench-location")
# A location-scoped token asked about another location (v3 common schema's
# 403 shape; the message is the one GHL users report).
GHL_FORBIDDEN = {"statusCode": 403, "message": "The token does not have access to this location.",
                 "error": "Forbidden"}

GHL_UNAUTHORIZED = {"statusCode": 401, "message": "Invalid token: access token is invalid",
                    "error": "Unauthorized"}


def unprocessable(messages):
    return Reply(422, {"statusCode": 422, "message": list(messages), "error": "Unprocessable Entity"})


def bad_request(message):
    return Reply(400, {"statusCode": 400, "message": message})


def validate_contact_body(body, allowed, require_location):
    """class-validator's answers for a contact DTO, as a list of messages."""
    errors = [f"property {k} should not exist" for k in body if k not in allowed]
    for key, value in body.items():
        if key not in allowed or value is None:
            continue
        if key in CONTACT_STRINGS and not isinstance(value, str):
            errors.append(f"{key} must be a string")
        elif key in ("dnd", "createNewIfDuplicateAllowed") and not isinstance(value, bool):
            errors.append(f"{key} must be a boolean value")
        elif key == "tags" and (not isinstance(value, list) or not all(isinstance(t, str) for t in value)):
            errors.append("each value in tags must be a string" if isinstance(value, list)
                          else "tags must be an array")
        elif key == "customFields" and (not isinstance(value, list) or not all(isinstance(c, dict) for c in value)):
            errors.append("customFields must be an array" if not isinstance(value, list)
                          else "each value in customFields must be an object")
        elif key in ("dndSettings", "inboundDndSettings") and not isinstance(value, dict):
            errors.append(f"{key} must be an object")
        elif key in ("dndSettings", "inboundDndSettings"):
            errors += dnd_settings_errors(key, value)
    if require_location and not (isinstance(body.get("locationId"), str) and body["locationId"]):
        errors.append("locationId should not be empty")
    return errors


# DndSettingsSchema / InboundDndSettingsSchema (ref/ghl/openapi/apps/contacts.json).
DND_CHANNELS = ("Call", "Email", "SMS", "WhatsApp", "GMB", "FB")
DND_STATUSES = ("active", "inactive", "permanent")
INBOUND_DND_STATUSES = ("active", "inactive")


def dnd_settings_errors(key, value):
    channels, statuses = (DND_CHANNELS, DND_STATUSES) if key == "dndSettings" else (("all",), INBOUND_DND_STATUSES)
    errors = []
    for channel, setting in value.items():
        where = f"{key}.{channel}"
        if channel not in channels:
            errors.append(f"property {where} should not exist")
        elif not isinstance(setting, dict):
            errors.append(f"{where} must be an object")
        else:
            if setting.get("status") not in statuses:
                errors.append(f"{where}.status must be one of the following values: " + ", ".join(statuses))
            for extra in ("message", "code") if key == "dndSettings" else ("message",):
                if setting.get(extra) is not None and not isinstance(setting[extra], str):
                    errors.append(f"{where}.{extra} must be a string")
            for extra in setting:
                if extra not in ("status", "message", "code"):
                    errors.append(f"property {where}.{extra} should not exist")
    return errors


# A custom field's dataType -> the JSON type its field_value must have (NOTES
# §2: number for NUMERICAL/MONETORY, string[] for CHECKBOX/MULTIPLE_OPTIONS,
# object for FILE); anything else, and a field the fake does not know, is a
# string.
CUSTOM_FIELD_VALUE_TYPES = {"NUMERICAL": "number", "MONETORY": "number", "CHECKBOX": "array",
                            "MULTIPLE_OPTIONS": "array", "FILE_UPLOAD": "object"}
CUSTOM_FIELD_DATA_TYPES = ("TEXT", "LARGE_TEXT", "NUMERICAL", "PHONE", "MONETORY", "CHECKBOX",
                           "SINGLE_OPTIONS", "MULTIPLE_OPTIONS", "FLOAT", "TIME", "DATE", "TEXTBOX_LIST",
                           "FILE_UPLOAD", "SIGNATURE", "RADIO", "EMAIL")


def field_value_error(where, value, kind):
    """class-validator's message when value is not of kind; None if it is.
    null passes (the property is optional)."""
    if value is None:
        return None
    if kind == "number":
        return None if is_number(value) else f"{where} must be a number conforming to the specified constraints"
    if kind == "array":
        if not isinstance(value, list):
            return f"{where} must be an array"
        return None if all(isinstance(x, str) for x in value) else f"each value in {where} must be a string"
    if kind == "object":
        return None if isinstance(value, dict) else f"{where} must be an object"
    if kind == "opportunity":
        # CreateDto/UpdateOpportunityDto: string | string[] | object.
        if isinstance(value, (str, dict)) or (isinstance(value, list) and all(isinstance(x, str) for x in value)):
            return None
        return f"{where} must be a string"
    return None if isinstance(value, str) else f"{where} must be a string"


def custom_field_id(item):
    """Input items name a field by id or key; a key gets a stable id so that
    the same key always lands on the same field."""
    if isinstance(item.get("id"), str) and item["id"]:
        return item["id"]
    if isinstance(item.get("key"), str) and item["key"]:
        return stable_ghl_id("customField:" + item["key"])
    return None


def custom_field_value(item):
    for key in ("field_value", "fieldValue", "value"):
        if key in item:
            return item[key]
    return None


def merge_custom_fields(existing, items):
    """Output shape is [{"id", "value"}]; given fields replace same-id ones."""
    merged = {cf["id"]: dict(cf) for cf in existing or []}
    for item in items or []:
        cid = custom_field_id(item)
        if cid is not None:
            merged[cid] = {"id": cid, "value": custom_field_value(item)}
    return list(merged.values())


# Contact fields a GHL contact webhook carries at top level
# (ref/ghl/docs/webhook-events/Contact*.md), plus the record's dateUpdated.
WEBHOOK_CONTACT_FIELDS = ("address1", "city", "state", "companyName", "country", "source", "dateAdded",
                          "dateUpdated", "dateOfBirth", "dnd", "email", "name", "firstName", "lastName",
                          "phone", "postalCode", "tags", "website", "attachments", "assignedTo",
                          "customFields")
# What a change to each event's fields looks like; the rest is ContactUpdate.
WEBHOOK_TAG_FIELDS = {"tags"}
WEBHOOK_DND_FIELDS = {"dnd", "dndSettings", "inboundDndSettings"}
WEBHOOK_IGNORED_FIELDS = {"dateUpdated", "firstNameLowerCase", "lastNameLowerCase", "fullNameLowerCase",
                          "emailLowerCase"}
WEBHOOK_ORDERS = ("fifo", "lifo", "shuffle")


def empty(value):
    return value is None or value == "" or value == [] or value == {}


def contact_webhook(event, contact):
    """GHL's flat webhook body for a contact event. Empty fields are left out,
    so a cleared field is simply absent (the worse case for a client)."""
    body = {"type": event, "locationId": contact.get("locationId"), "id": contact["id"]}
    for key in WEBHOOK_CONTACT_FIELDS + (("dndSettings",) if event == "ContactDndUpdate" else ()):
        if not empty(contact.get(key)):
            body[key] = copy.deepcopy(contact[key])
    body["timestamp"] = iso_now_ms()
    body["webhookId"] = str(uuid.uuid4())
    return body


def contact_events(before, after):
    """The webhook events one contact write fires, in the order sent."""
    if before is None:
        return ["ContactCreate"]
    if after is None:
        return ["ContactDelete"]
    changed = {k for k in set(before) | set(after)
               if k not in WEBHOOK_IGNORED_FIELDS and before.get(k) != after.get(k)}
    events = []
    if changed - WEBHOOK_TAG_FIELDS - WEBHOOK_DND_FIELDS:
        events.append("ContactUpdate")
    if changed & WEBHOOK_TAG_FIELDS:
        events.append("ContactTagUpdate")
    if changed & WEBHOOK_DND_FIELDS:
        events.append("ContactDndUpdate")
    return events

# ---- the location (for `ncghl doctor`) -------------------------------------
# Kept apart from the rest of the GHL fake. GET /locations/{id} answers for
# the locations the token may use (403 otherwise, as GHL does for a token of
# another sub-account); a name can be seeded through /_records/locations.
# The opportunity custom fields the shipped mappings/policies.lua names are
# there from the start, as the seeded pipelines are, so `ncghl doctor
# --sandbox` passes.
DOCTOR_SEEDED_FIELDS = (("policy_number", "Policy Number"), ("carrier", "Carrier"),
                        ("effective_date", "Effective Date"), ("expiration_date", "Expiration Date"))


def doctor_seed_defaults(fake, locations=None):
    for location in locations or fake.config["locations"]:
        for key, name in DOCTOR_SEEDED_FIELDS:
            fake.seed("customFields", {"id": stable_ghl_id("customField:%s:%s" % (location, key)),
                                       "name": name, "fieldKey": "opportunity." + key,
                                       "model": "opportunity", "locationId": location})


def doctor_routes():
    return [("GET", "/locations/{locationId}", "h_location_get")]


def _h_location_get(self, req, location_id):
    # Once locations are seeded, they are the sub-accounts this token
    # reaches: any other answers 403, as GHL does.
    with self.lock:
        seeded = set(self.records["locations"])
    denied = self.location_denied(req, location_id)
    if denied or (seeded and location_id not in seeded):
        return denied or Reply(403, dict(GHL_FORBIDDEN))
    with self.lock:
        loc = copy.deepcopy(self.records["locations"].get(location_id) or {"id": location_id,
                                                                          "name": "Sandbox location"})
    return Reply(200, {"location": loc})


class GhlFake(Fake):
    label = "fake-ghl"
    collections = ("contacts", "opportunities", "pipelines", "customFields", "locations")
    config_keys = {"latency_ms", "rate_limit", "rate_window", "webhook_url", "webhook_delay_ms",
                   "webhook_duplicate", "webhook_shuffle", "locations", "oauth_client_id",
                   "oauth_client_secret", "oauth_token_ttl", "oauth_code_ttl"}

    def __init__(self, config, request_log_max, quiet, token):
        self.token = token
        config = dict(config)
        for key, value in (("webhook_url", None), ("webhook_delay_ms", 0), ("webhook_duplicate", 0),
                           ("webhook_shuffle", False), ("locations", list(DEFAULT_GHL_LOCATIONS)),
                           ("oauth_client_id", "fake-ghl-client-id"),
                           ("oauth_client_secret", "fake-ghl-client-secret"), ("oauth_token_ttl", 86399),
                           ("oauth_code_ttl", 300)):
            config.setdefault(key, value)
        self.wh_cond = None
        super().__init__(config, request_log_max, quiet)
        self.wh_cond = threading.Condition(self.lock)
        threading.Thread(target=self.webhooks_forever, daemon=True).start()

    def reset(self):
        # A reset drops queued deliveries but keeps where they go: the ncghl
        # under test is still listening there.
        url = self.config.get("webhook_url") if hasattr(self, "config") else None
        with self.lock:
            super().reset()
            if url is not None and self.startup_config.get("webhook_url") is None:
                self.config["webhook_url"] = url
            if self.wh_cond is not None:
                self.wh_cond.notify_all()

    def routes(self):
        # More specific paths first: /contacts/search must not be taken as an id.
        return [
            ("POST", "/contacts/upsert", "h_contact_upsert"),
            ("POST", "/contacts/search", "h_contact_search"),
            ("GET", "/contacts/search/duplicate", "h_contact_duplicate"),
            ("POST", "/contacts/", "h_contact_create"),
            ("POST", "/contacts/{id}/tags", "h_contact_add_tags"),
            ("DELETE", "/contacts/{id}/tags", "h_contact_remove_tags"),
            ("GET", "/contacts/{id}", "h_contact_get"),
            ("PUT", "/contacts/{id}", "h_contact_update"),
            ("DELETE", "/contacts/{id}", "h_contact_delete"),
            ("GET", "/opportunities/pipelines", "h_pipelines"),
            ("GET", "/locations/{locationId}/customFields", "h_custom_fields"),
            ("POST", "/oauth/token", "h_oauth_token"),
            ("GET", "/opportunities/search", "h_opp_search"),
            ("POST", "/opportunities/", "h_opp_create"),
            ("PUT", "/opportunities/{id}/status", "h_opp_status"),
            ("GET", "/opportunities/{id}", "h_opp_get"),
            ("PUT", "/opportunities/{id}", "h_opp_update"),
            ("DELETE", "/opportunities/{id}", "h_opp_delete"),
        ] + doctor_routes()

    def reset_upstream_state(self):
        self.oauth_codes = {}      # code -> {"locationId", "userType", "redirect_uri"}; used once
        self.oauth_access = {}     # access token -> {"locationId", "userType", "expires"}
        self.oauth_refresh = {}    # refresh token -> grant; only the latest of a chain is a key
        self.oauth_revoked = set() # access tokens of a replaced install: refused, never "static"
        self.wh_generation = getattr(self, "wh_generation", 0) + 1
        self.wh_queue = deque()     # (generation, due monotonic, url, body), sent in order
        self.wh_buffer = []         # held or shuffled, waiting for a flush
        self.wh_held = False
        self.wh_next_shuffle = 0.0
        self.wh_log = deque(maxlen=self.request_log_max)
        self.windows = {}   # rate-limit key -> deque of monotonic request times
        self.daily = Counter()
        for name in SEEDED_PIPELINES:
            pid = stable_ghl_id("pipeline:" + name)
            self.records["pipelines"][pid] = {
                "id": pid, "name": name,
                "stages": [{"id": stable_guid(f"stage:{name}:{s}"), "name": s} for s in SEEDED_STAGES],
                "showInFunnel": True, "showInPieChart": True,
            }
        doctor_seed_defaults(self)

    def validate_config(self, key, value):
        super().validate_config(key, value)
        if key == "rate_limit" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError("rate_limit must be a positive integer")
        if key == "rate_window" and (not is_number(value) or value <= 0):
            raise ValueError("rate_window must be a positive number of seconds")
        if key == "webhook_url" and value is not None and not (
                isinstance(value, str) and re.match(r"https?://[^/\s]+", value)):
            raise ValueError("webhook_url must be an http(s) URL or null")
        if key == "webhook_delay_ms" and (not is_number(value) or value < 0):
            raise ValueError("webhook_delay_ms must be a non-negative number")
        if key == "webhook_duplicate" and (not is_number(value) or not 0 <= value <= 1):
            raise ValueError("webhook_duplicate must be a probability between 0 and 1")
        if key == "webhook_shuffle" and not isinstance(value, bool):
            raise ValueError("webhook_shuffle must be true or false")
        if key in ("oauth_client_id", "oauth_client_secret") and not (isinstance(value, str) and value):
            raise ValueError(f"{key} must be a non-empty string")
        if key in ("oauth_token_ttl", "oauth_code_ttl") and (not is_number(value) or value < 0):
            raise ValueError(f"{key} must be a non-negative number of seconds")
        if key == "locations" and (not isinstance(value, list) or not value
                                   or not all(isinstance(x, str) and x for x in value)):
            raise ValueError("locations must be a non-empty array of location ids")

    # ---- OAuth (ref/ghl/NOTES.md §1) ---------------------------------------------
    def c_oauth_code(self, body):
        """An authorization code, as GHL's redirect after "choose location"
        would hand one to the app."""
        location = body.get("locationId")
        user_type = body.get("userType", "Location")
        if user_type not in ("Location", "Company"):
            return Reply(400, {"error": "userType must be Location or Company"})
        if user_type == "Location" and not (isinstance(location, str) and location):
            return Reply(400, {"error": "locationId is required for a Location code"})
        redirect = body.get("redirect_uri")
        if redirect is not None and not isinstance(redirect, str):
            return Reply(400, {"error": "redirect_uri must be a string"})
        code = secrets.token_hex(20)
        with self.lock:
            # GHL documents no code lifetime; a short one is the worse case.
            self.oauth_codes[code] = {"locationId": location if user_type == "Location" else None,
                                      "userType": user_type, "redirect_uri": redirect,
                                      "expires": time.time() + self.config["oauth_code_ttl"]}
        return Reply(200, {"code": code})

    def c_oauth_expire(self, body):
        """The day passing: every access token issued for locationId expires
        now (refresh tokens keep working)."""
        location = body.get("locationId")
        if not (isinstance(location, str) and location):
            return Reply(400, {"error": "locationId is required"})
        with self.lock:
            expired = 0
            for grant in self.oauth_access.values():
                if grant.get("locationId") == location:
                    grant["expires"] = 0
                    expired += 1
        return Reply(200, {"expired": expired})

    def h_oauth_token(self, req):
        # A form body (NOTES §1); a JSON body binds nothing, so its fields are
        # "empty" (the worse case: the spec only documents the form).
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        form = {}
        if ctype == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(req.text, keep_blank_values=True))
        errors = [f"{k} should not be empty" for k in ("client_id", "client_secret", "grant_type") if not form.get(k)]
        grant_type = form.get("grant_type")
        if grant_type and grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
            errors.append("grant_type must be one of the following values: authorization_code, refresh_token, "
                          "client_credentials")
        if form.get("user_type") and form["user_type"] not in ("Company", "Location"):
            errors.append("user_type must be one of the following values: Company, Location")
        if errors:
            return unprocessable(errors)
        with self.lock:
            if (form["client_id"] != self.config["oauth_client_id"]
                    or form["client_secret"] != self.config["oauth_client_secret"]):
                return Reply(401, {"statusCode": 401, "message": "Invalid client credentials",
                                   "error": "Unauthorized"})
            if grant_type == "client_credentials":
                return bad_request("client_credentials is not supported by this fake")
            # Lookup, checks and use under one lock: of two requests racing
            # with one code or refresh token, exactly one wins.
            store, given = ((self.oauth_codes, form.get("code")) if grant_type == "authorization_code"
                            else (self.oauth_refresh, form.get("refresh_token")))
            what = "authorization code" if grant_type == "authorization_code" else "refresh token"
            grant = store.get(given or "")
            if grant is None:
                return bad_request(f"Invalid grant: {what} is invalid or already used")
            if form.get("user_type") and form["user_type"] != grant["userType"]:
                return bad_request(f"user_type does not match the grant ({grant['userType']})")
            if (grant_type == "authorization_code" and grant["redirect_uri"] is not None
                    and form.get("redirect_uri") != grant["redirect_uri"]):
                return bad_request("Invalid grant: redirect_uri does not match")
            del store[given]
            if grant_type == "authorization_code" and time.time() >= grant["expires"]:
                return bad_request("Invalid grant: authorization code has expired")
            if grant_type == "authorization_code":
                grant = {"locationId": grant["locationId"], "userType": grant["userType"],
                         "userId": stable_ghl_id("oauth-user:" + str(grant["locationId"]))}
                # An install again replaces the earlier install's tokens.
                # GHL does not say whether the old ones keep working; the
                # worse case for a client is that they stop at once.
                self.oauth_revoke(grant)
            return Reply(200, self.oauth_issue(grant))

    def oauth_revoke(self, grant):
        """Forgets every access and refresh token of grant's location and
        user type; lock held."""
        def same(g):
            return g.get("locationId") == grant["locationId"] and g.get("userType") == grant["userType"]
        for table in (self.oauth_access, self.oauth_refresh):
            for token in [t for t, g in table.items() if same(g)]:
                del table[token]
                if table is self.oauth_access:
                    self.oauth_revoked.add(token)

    def oauth_issue(self, grant):
        """New access and refresh tokens for a grant; lock held."""
        ttl = self.config["oauth_token_ttl"]
        access, refresh = secrets.token_hex(24), secrets.token_hex(24)
        self.oauth_access[access] = dict(grant, expires=time.time() + ttl)
        self.oauth_refresh[refresh] = grant
        location = grant.get("locationId")
        body = {"access_token": access, "token_type": "Bearer",
                "expires_in": int(ttl) if float(ttl).is_integer() else ttl, "refresh_token": refresh,
                "scope": "contacts.readonly contacts.write opportunities.readonly opportunities.write "
                         "locations/customFields.readonly",
                "userType": grant["userType"], "companyId": stable_ghl_id("oauth-company"),
                "userId": grant["userId"]}
        if location:
            body["locationId"] = location
            body["approvedLocations"] = [location]
        return body

    # ---- custom fields ----------------------------------------------------------
    def h_custom_fields(self, req, location):
        unknown = [k for k in req.params if k != "model"]
        model = req.params.get("model", "all")
        errors = [f"property {k} should not exist" for k in unknown]
        if model not in ("contact", "opportunity", "all"):
            errors.append("model must be one of the following values: contact, opportunity, all")
        if errors:
            return unprocessable(errors)
        denied = self.location_denied(req, location)
        if denied:
            return denied
        with self.lock:
            fields = [copy.deepcopy(f) for f in self.records["customFields"].values()
                      if f.get("locationId") == location and model in ("all", f.get("model"))]
        return Reply(200, {"customFields": fields})

    def custom_field_errors(self, items, location, model):
        """422 messages for customFields[].field_value of the wrong type: by
        the seeded field's dataType for contacts, string | string[] | object
        for opportunities."""
        errors = []
        if not isinstance(items, list):
            return errors
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            key = next((k for k in ("field_value", "fieldValue", "value") if k in item), "field_value")
            where = f"customFields.{i}.{key}"
            if model == "opportunity":
                kind = "opportunity"
            else:
                field = self.find_custom_field(item, location, model)
                kind = CUSTOM_FIELD_VALUE_TYPES.get(field.get("dataType"), "string") if field else "string"
            err = field_value_error(where, item.get(key), kind)
            if err:
                errors.append(err)
        return errors

    def find_custom_field(self, item, location, model):
        """The seeded field an input item names (by id, else by key: bare or
        as "<model>.<key>"), or None."""
        cid, key = item.get("id"), item.get("key")
        for f in self.records["customFields"].values():
            if f.get("model") != model or (location is not None and f.get("locationId") != location):
                continue
            if cid and f.get("id") == cid:
                return f
            if not cid and isinstance(key, str) and key and f.get("fieldKey") in (key, f"{model}.{key}"):
                return f
        return None

    # ---- locations ------------------------------------------------------------
    def token_locations(self, token):
        """The locations a token may touch: an OAuth token its own (none for
        a Company token), the static token (a Private Integration token)
        every known location."""
        grant = self.oauth_access.get(token)
        if grant is not None:
            return {grant["locationId"]} if grant.get("locationId") else set()
        return set(self.config["locations"])

    @staticmethod
    def location_denied(req, location):
        if location in req.locations:
            return None
        return Reply(403, dict(GHL_FORBIDDEN))

    @staticmethod
    def visible(req, rec):
        """A record of a location the token cannot see answers as not found."""
        return rec if rec is not None and rec.get("locationId") in req.locations else None

    # ---- webhooks to ncghl ----------------------------------------------------
    def contact_changed(self, before, after):
        """Queues the webhooks one contact write fires (before None: created;
        after None: deleted). Called with the lock held, right after the
        write, so the bodies carry the record as that write left it."""
        url = self.config.get("webhook_url")
        if url is None:
            return
        record = after if after is not None else before
        for event in contact_events(before, after):
            body = contact_webhook(event, record)
            copies = 2 if random.random() < self.config.get("webhook_duplicate", 0) else 1
            for _ in range(copies):
                # A duplicate is a resend: the same body, webhookId included.
                self.wh_enqueue(url, copy.deepcopy(body))

    def wh_enqueue(self, url, body):
        queued = time.time()
        if self.wh_held or self.config.get("webhook_shuffle"):
            if not self.wh_buffer:
                self.wh_next_shuffle = time.monotonic() + self.config.get("webhook_delay_ms", 0) / 1000.0
            self.wh_buffer.append((url, body, queued))
        else:
            due = time.monotonic() + self.config.get("webhook_delay_ms", 0) / 1000.0
            self.wh_queue.append((self.wh_generation, due, url, body, queued))
        self.wh_cond.notify_all()

    def wh_release(self, order):
        """Moves the buffer to the send queue in the given order; lock held."""
        items = list(self.wh_buffer)
        self.wh_buffer = []
        if order == "lifo":
            items.reverse()
        elif order == "shuffle":
            random.shuffle(items)
        now = time.monotonic()
        for url, body, queued in items:
            self.wh_queue.append((self.wh_generation, now, url, body, queued))
        self.wh_cond.notify_all()
        return len(items)

    def webhooks_forever(self):
        while True:
            with self.wh_cond:
                while True:
                    now = time.monotonic()
                    delay = self.config.get("webhook_delay_ms", 0) / 1000.0
                    if (self.wh_buffer and not self.wh_held and self.config.get("webhook_shuffle")
                            and delay > 0 and now >= self.wh_next_shuffle):
                        self.wh_release("shuffle")
                        self.wh_next_shuffle = now + delay
                    while self.wh_queue and self.wh_queue[0][0] != self.wh_generation:
                        self.wh_queue.popleft()
                    if self.wh_queue and self.wh_queue[0][1] <= now:
                        generation, _, url, body, queued = self.wh_queue.popleft()
                        break
                    waits = [0.5]
                    if self.wh_queue:
                        waits.append(self.wh_queue[0][1] - now)
                    if self.wh_buffer and not self.wh_held and self.config.get("webhook_shuffle") and delay > 0:
                        waits.append(self.wh_next_shuffle - now)
                    self.wh_cond.wait(max(0.001, min(waits)))
            self.wh_send(generation, url, body, queued)

    def wh_send(self, generation, url, body, queued):
        entry = {"type": body.get("type"), "webhookId": body.get("webhookId"), "url": url, "body": body,
                 "queued_at": queued, "at": time.time(), "status": None, "answer": None, "error": None}
        post_json(url, json.dumps(body, separators=(",", ":")).encode(), entry)
        self.log(f"webhook {entry['type']} -> {url}: {entry['status']}")
        with self.lock:
            if generation == self.wh_generation:
                self.wh_log.append(entry)

    def c_webhooks(self, body):
        with self.lock:
            return Reply(200, copy.deepcopy(list(self.wh_log)))

    def c_webhooks_hold(self, body):
        with self.lock:
            self.wh_held = True
            return Reply(200, {"held": True, "buffered": len(self.wh_buffer)})

    def c_webhooks_flush(self, body):
        unknown = set(body) - {"order"}
        default = "shuffle" if self.config.get("webhook_shuffle") else "fifo"
        order = body.get("order", default)
        if unknown or order not in WEBHOOK_ORDERS:
            return Reply(400, {"error": "body: {\"order\": \"fifo\"|\"lifo\"|\"shuffle\"}"})
        with self.lock:
            self.wh_held = False
            return Reply(200, {"flushed": self.wh_release(order), "order": order})

    def default_error_body(self, status):
        if status == 401:
            return dict(GHL_UNAUTHORIZED)
        if status == 429:
            return {"statusCode": 429, "message": "Too many requests"}
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        return {"statusCode": status, "message": phrase}

    # ---- rate limit ---------------------------------------------------------
    def rate_key(self, req):
        # A Private Integration or location token belongs to one location, so
        # the token stands for GHL's "per app per location" bucket; OAuth
        # tokens rotate, so theirs is keyed by the location itself.
        token = req.bearer()
        with self.lock:
            grant = self.oauth_access.get(token)
        if grant is not None:
            return "oauth-location:" + str(grant.get("locationId"))
        return token

    def rate_take(self, key):
        """Counts one request in key's sliding window; returns 0 when allowed,
        else the seconds until a slot frees."""
        limit, window = self.config["rate_limit"], self.config["rate_window"]
        now = time.monotonic()
        with self.lock:
            q = self.windows.setdefault(key, deque())
            while q and q[0] <= now - window:
                q.popleft()
            if len(q) >= limit:
                return max(1, math.ceil(q[0] + window - now))
            q.append(now)
            self.daily[key] += 1
            return 0

    def rate_headers(self, key):
        limit, window = self.config["rate_limit"], self.config["rate_window"]
        now = time.monotonic()
        with self.lock:
            q = self.windows.get(key, ())
            used = sum(1 for t in q if t > now - window)
            daily = self.daily.get(key, 0)
        return {
            "X-RateLimit-Max": limit,
            "X-RateLimit-Remaining": max(0, limit - used),
            "X-RateLimit-Interval-Milliseconds": int(window * 1000),
            "X-RateLimit-Limit-Daily": GHL_DAILY_LIMIT,
            "X-RateLimit-Daily-Remaining": max(0, GHL_DAILY_LIMIT - daily),
        }

    def finish_reply(self, reply, req):
        reply.headers.update(self.rate_headers(self.rate_key(req)))
        return reply

    # ---- dispatch --------------------------------------------------------
    def dispatch(self, req):
        m = self.match(req.method, req.path)
        if m is None or m[0] is None:
            return Reply(404, {"statusCode": 404, "message": f"Cannot {req.method} {req.path}",
                               "error": "Not Found"})
        route, fn, params = m
        if fn == self.h_oauth_token:
            # No Bearer and no Version header (ref/ghl/openapi/apps/oauth.json).
            return fn(req)
        token = req.bearer()
        with self.lock:
            grant = self.oauth_access.get(token)
            revoked = token in self.oauth_revoked
        if revoked:
            return Reply(401, dict(GHL_UNAUTHORIZED))
        if grant is not None:
            if time.time() >= grant["expires"]:
                return Reply(401, dict(GHL_UNAUTHORIZED))
        elif not token or (self.token is not None and token != self.token):
            return Reply(401, dict(GHL_UNAUTHORIZED))
        if (req.headers.get("Version") or "").strip() != GHL_VERSION:
            return bad_request("Version header is missing or invalid")
        wait = self.rate_take(self.rate_key(req))
        if wait:
            return Reply(429, {"statusCode": 429, "message": "Too many requests"}, {"Retry-After": wait})
        with self.lock:
            req.locations = self.token_locations(token)
        try:
            return fn(req, *params)
        except BadJson as e:
            return Reply(400, {"statusCode": 400, "message": e.message, "error": "Bad Request"})

    # ---- contacts ---------------------------------------------------------
    def write_contact(self, contact, body):
        """Applies a validated body: tags replace, customFields merge by id,
        everything else overwrites; derived fields follow."""
        for key, value in body.items():
            if key == "customFields":
                contact["customFields"] = merge_custom_fields(contact.get("customFields"), value)
            elif key == "tags":
                contact["tags"] = list(dict.fromkeys(value or []))
            elif key == "phone":
                contact["phone"] = e164(value)
            elif key != "createNewIfDuplicateAllowed":
                contact[key] = value
        if "name" not in body and ("firstName" in body or "lastName" in body):
            contact["name"] = " ".join(x for x in (contact.get("firstName"), contact.get("lastName")) if x) or None
        first, last = contact.get("firstName"), contact.get("lastName")
        contact["firstNameLowerCase"] = first.lower() if isinstance(first, str) else None
        contact["lastNameLowerCase"] = last.lower() if isinstance(last, str) else None
        full = " ".join(x for x in (first, last) if isinstance(x, str) and x)
        contact["fullNameLowerCase"] = full.lower() or None
        email = contact.get("email")
        contact["emailLowerCase"] = email.lower() if isinstance(email, str) else None
        contact["dateUpdated"] = iso_now_ms()
        return contact

    def new_contact(self, body):
        now = iso_now_ms()
        contact = {"id": ghl_id(), "locationId": body.get("locationId"), "type": "lead", "dnd": False,
                   "tags": [], "customFields": [], "attachments": [], "dateAdded": now}
        self.write_contact(contact, body)
        contact["dateUpdated"] = now
        self.records["contacts"][contact["id"]] = contact
        return contact

    def h_contact_create(self, req):
        body = json_object(req)
        errors = validate_contact_body(body, CREATE_CONTACT, require_location=True)
        with self.lock:
            errors += self.custom_field_errors(body.get("customFields"), body.get("locationId"), "contact")
        if errors:
            return unprocessable(errors)
        denied = self.location_denied(req, body["locationId"])
        if denied:
            return denied
        with self.lock:
            contact = self.new_contact(body)
            self.contact_changed(None, contact)
            return Reply(201, {"contact": copy.deepcopy(contact)})

    def h_contact_update(self, req, cid):
        body = json_object(req)
        errors = validate_contact_body(body, UPDATE_CONTACT, require_location=False)
        if errors:
            return unprocessable(errors)
        with self.lock:
            contact = self.visible(req, self.records["contacts"].get(cid))
            if contact is None:
                return bad_request("Contact not found")
            errors = self.custom_field_errors(body.get("customFields"), contact.get("locationId"), "contact")
            if errors:
                return unprocessable(errors)
            before = copy.deepcopy(contact)
            self.write_contact(contact, body)
            self.contact_changed(before, contact)
            return Reply(200, {"succeded": True, "contact": copy.deepcopy(contact)})

    def h_contact_get(self, req, cid):
        with self.lock:
            contact = self.visible(req, self.records["contacts"].get(cid))
            if contact is None:
                return bad_request("Contact not found")
            return Reply(200, {"contact": copy.deepcopy(contact)})

    def h_contact_delete(self, req, cid):
        with self.lock:
            contact = self.visible(req, self.records["contacts"].get(cid))
            if contact is None:
                return bad_request("Contact not found")
            del self.records["contacts"][cid]
            self.contact_changed(contact, None)
        return Reply(200, {"succeded": True})

    def h_contact_add_tags(self, req, cid):
        body = json_object(req)
        tags = body.get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return unprocessable(["tags must be an array"])
        with self.lock:
            contact = self.visible(req, self.records["contacts"].get(cid))
            if contact is None:
                return bad_request("Contact not found")
            before = copy.deepcopy(contact)
            contact["tags"] = list(dict.fromkeys(contact["tags"] + tags))
            contact["dateUpdated"] = iso_now_ms()
            self.contact_changed(before, contact)
            return Reply(201, {"tags": list(contact["tags"])})

    def h_contact_remove_tags(self, req, cid):
        body = json_object(req)
        tags = body.get("tags")
        if not isinstance(tags, list):
            return unprocessable(["tags must be an array"])
        with self.lock:
            contact = self.visible(req, self.records["contacts"].get(cid))
            if contact is None:
                return bad_request("Contact not found")
            before = copy.deepcopy(contact)
            contact["tags"] = [t for t in contact["tags"] if t not in tags]
            contact["dateUpdated"] = iso_now_ms()
            self.contact_changed(before, contact)
            return Reply(200, {"tags": list(contact["tags"])})

    # ---- an agent in GHL's UI (control API) ----------------------------------------
    def editable_collections(self):
        return ("contacts",)

    def agent_edit(self, collection, rid, body):
        # Any contact field a person can type into GHL's UI; moving a contact
        # to another location is not an edit.
        allowed = (CONTACT_STRINGS - {"locationId"}) | {"dnd", "dndSettings", "inboundDndSettings",
                                                          "tags", "customFields", "type"}
        errors = validate_contact_body(body, allowed, require_location=False)
        if "type" in body and body["type"] not in ("lead", "customer", None):
            errors.append("type must be lead or customer")
        if errors:
            return Reply(400, {"error": errors})
        update = dict(body)
        for key, empty in (("tags", []), ("customFields", None), ("dnd", False), ("type", "lead")):
            if key in update and update[key] is None:
                update[key] = empty
        with self.lock:
            contact = self.records["contacts"].get(rid)
            if contact is None:
                return Reply(404, {"error": f"no contact {rid}"})
            before = copy.deepcopy(contact)
            if "customFields" in update and update["customFields"] is None:
                del update["customFields"]
                contact["customFields"] = []
            self.write_contact(contact, update)
            self.contact_changed(before, contact)
            return Reply(200, copy.deepcopy(contact))

    def agent_delete(self, collection, rid):
        with self.lock:
            contact = self.records["contacts"].pop(rid, None)
            if contact is None:
                return Reply(404, {"error": f"no contact {rid}"})
            self.contact_changed(contact, None)
            return Reply(200, copy.deepcopy(contact))

    def contacts_in(self, location_id):
        return [c for c in self.records["contacts"].values() if c.get("locationId") == location_id]

    @staticmethod
    def same_email(contact, email):
        return isinstance(email, str) and email != "" and fold(contact.get("email")) == fold(email)

    @staticmethod
    def same_phone(contact, phone):
        tail = digits_tail(phone)
        return tail != "" and digits_tail(contact.get("phone")) == tail

    def h_contact_upsert(self, req):
        body = json_object(req)
        errors = validate_contact_body(body, UPSERT_CONTACT, require_location=True)
        with self.lock:
            errors += self.custom_field_errors(body.get("customFields"), body.get("locationId"), "contact")
        if errors:
            return unprocessable(errors)
        denied = self.location_denied(req, body["locationId"])
        if denied:
            return denied
        trace = str(uuid.uuid4())
        with self.lock:
            candidates = self.contacts_in(body["locationId"])
            # Email has first priority, then phone (the location's duplicate
            # setting as NOTES §2 describes it).
            found = next((c for c in candidates if self.same_email(c, body.get("email"))), None)
            if found is None:
                found = next((c for c in candidates if self.same_phone(c, body.get("phone"))), None)
            if found is None:
                contact = self.new_contact(body)
                self.contact_changed(None, contact)
                return Reply(200, {"new": True, "contact": copy.deepcopy(contact), "traceId": trace})
            # Observed quirk [I#313]: gender is silently ignored on an existing contact.
            update = {k: v for k, v in body.items() if k not in ("gender", "locationId")}
            before = copy.deepcopy(found)
            self.write_contact(found, update)
            self.contact_changed(before, found)
            return Reply(200, {"new": False, "contact": copy.deepcopy(found), "traceId": trace})

    def contact_filter(self, flt):
        """A predicate for one search filter (or an AND/OR group of them);
        raises ValueError with the 422 message for one it does not support."""
        if not isinstance(flt, dict):
            raise ValueError("each value in filters must be an object")
        if "filters" in flt:
            parts = [self.contact_filter(f) for f in flt.get("filters") or []]
            group = str(flt.get("group", "AND")).upper()
            if group == "OR":
                return lambda c: any(p(c) for p in parts)
            return lambda c: all(p(c) for p in parts)
        field, op, value = flt.get("field"), flt.get("operator"), flt.get("value")
        if op != "eq":
            raise ValueError(f"operator {op} is not supported by this fake (use eq)")
        if field == "email":
            return lambda c: self.same_email(c, value)
        if field == "phone":
            return lambda c: self.same_phone(c, value)
        if field == "id":
            return lambda c: c.get("id") == value
        if field in ("firstName", "lastName", "companyName"):
            return lambda c: fold(c.get(field)) == fold(value)
        if field == "tags":
            wanted = value if isinstance(value, list) else [value]
            return lambda c: all(fold(t) in [fold(x) for x in c.get("tags") or []] for t in wanted)
        raise ValueError(f"field {field} is not supported by this fake "
                         "(email, phone, id, firstName, lastName, companyName, tags)")

    def h_contact_search(self, req):
        body = json_object(req)
        errors = []
        if not (isinstance(body.get("locationId"), str) and body["locationId"]):
            errors.append("locationId should not be empty")
        page_limit = body.get("pageLimit")
        if not isinstance(page_limit, int) or isinstance(page_limit, bool) or page_limit < 1:
            errors.append("pageLimit must be a number conforming to the specified constraints")
        page = body.get("page", 1)
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            errors.append("page must be a number conforming to the specified constraints")
        filters = body.get("filters", [])
        if not isinstance(filters, list):
            errors.append("filters must be an array")
        preds = []
        if not errors:
            try:
                preds = [self.contact_filter(f) for f in filters]
            except ValueError as e:
                errors.append(str(e))
        if errors:
            return unprocessable(errors)
        denied = self.location_denied(req, body["locationId"])
        if denied:
            return denied
        with self.lock:
            hits = [c for c in self.contacts_in(body["locationId"]) if all(p(c) for p in preds)]
            hits.sort(key=lambda c: c.get("dateAdded") or "", reverse=True)
            start = (page - 1) * page_limit
            return Reply(200, {"contacts": copy.deepcopy(hits[start:start + page_limit]),
                               "total": len(hits), "traceId": str(uuid.uuid4())})

    def h_contact_duplicate(self, req):
        # Response shape unconfirmed upstream (NOTES §2): {"contact": {...}|null}.
        unknown = [k for k in req.params if k not in ("locationId", "email", "number")]
        if unknown:
            return unprocessable([f"property {k} should not exist" for k in unknown])
        location = req.params.get("locationId")
        if not location:
            return unprocessable(["locationId should not be empty"])
        email, number = req.params.get("email"), req.params.get("number")
        if not email and not number:
            return bad_request("Pass at least one of number, email query parameter")
        denied = self.location_denied(req, location)
        if denied:
            return denied
        with self.lock:
            candidates = self.contacts_in(location)
            found = next((c for c in candidates if self.same_email(c, email)), None)
            if found is None and number:
                found = next((c for c in candidates if self.same_phone(c, number)), None)
            return Reply(200, {"contact": copy.deepcopy(found)})

    # ---- opportunities ----------------------------------------------------
    def opportunity_view(self, opp):
        view = copy.deepcopy(opp)
        contact = self.records["contacts"].get(opp.get("contactId"))
        if contact is not None:
            view["contact"] = {k: copy.deepcopy(contact.get(k))
                               for k in ("id", "name", "companyName", "email", "phone", "tags")}
        return view

    def validate_opportunity(self, body, allowed, required):
        errors = [f"property {k} should not exist" for k in body if k not in allowed]
        for key in required:
            if body.get(key) in (None, ""):
                errors.append(f"{key} should not be empty")
        for key in ("pipelineId", "locationId", "name", "pipelineStageId", "contactId", "assignedTo"):
            if key in allowed and body.get(key) is not None and not isinstance(body[key], str):
                errors.append(f"{key} must be a string")
        status = body.get("status")
        if status is not None and status not in OPPORTUNITY_STATUSES:
            errors.append("status must be one of the following values: " + ", ".join(OPPORTUNITY_STATUSES))
        if body.get("monetaryValue") is not None and not is_number(body["monetaryValue"]):
            errors.append("monetaryValue must be a number conforming to the specified constraints")
        cfs = body.get("customFields")
        if cfs is not None and (not isinstance(cfs, list) or not all(isinstance(c, dict) for c in cfs)):
            errors.append("customFields must be an array")
        errors += self.custom_field_errors(cfs, None, "opportunity")
        return errors

    def check_pipeline(self, pipeline_id, stage_id):
        """The fake's own consistency checks (the real messages are not
        documented): the pipeline and stage must exist. Returns (stage id,
        error reply)."""
        pipeline = self.records["pipelines"].get(pipeline_id)
        if pipeline is None:
            return None, bad_request("Pipeline not found")
        stages = [s.get("id") for s in pipeline.get("stages") or []]
        if stage_id is None:
            return (stages[0] if stages else None), None
        if stage_id not in stages:
            return None, bad_request("Pipeline stage not found")
        return stage_id, None

    @staticmethod
    def opportunity_custom_fields(existing, items):
        merged = {cf["id"]: dict(cf) for cf in existing or []}
        for item in items or []:
            cid = custom_field_id(item)
            if cid is not None:
                merged[cid] = {"id": cid, "fieldValue": custom_field_value(item)}
        return list(merged.values())

    def h_opp_create(self, req):
        body = json_object(req)
        errors = self.validate_opportunity(body, CREATE_OPPORTUNITY,
                                           ("pipelineId", "locationId", "name", "status", "contactId"))
        if errors:
            return unprocessable(errors)
        denied = self.location_denied(req, body["locationId"])
        if denied:
            return denied
        with self.lock:
            stage, err = self.check_pipeline(body["pipelineId"], body.get("pipelineStageId"))
            if err:
                return err
            contact = self.visible(req, self.records["contacts"].get(body["contactId"]))
            if contact is None or contact.get("locationId") != body["locationId"]:
                return bad_request("Contact not found")
            now = iso_now_ms()
            opp = {"id": ghl_id(), "name": body["name"], "monetaryValue": body.get("monetaryValue", 0),
                   "pipelineId": body["pipelineId"], "pipelineStageId": stage,
                   "assignedTo": body.get("assignedTo"), "status": body["status"], "source": "",
                   "lastStatusChangeAt": now, "lastStageChangeAt": now, "lastActionDate": now,
                   "indexVersion": 1, "createdAt": now, "updatedAt": now, "contactId": body["contactId"],
                   "locationId": body["locationId"], "lostReasonId": None,
                   "customFields": self.opportunity_custom_fields([], body.get("customFields")),
                   "followers": []}
            self.records["opportunities"][opp["id"]] = opp
            return Reply(201, {"opportunity": self.opportunity_view(opp)})

    def h_opp_update(self, req, oid):
        body = json_object(req)
        errors = self.validate_opportunity(body, UPDATE_OPPORTUNITY, ())
        if errors:
            return unprocessable(errors)
        with self.lock:
            opp = self.visible(req, self.records["opportunities"].get(oid))
            if opp is None:
                return bad_request("Opportunity not found")
            pipeline_id = body.get("pipelineId", opp["pipelineId"])
            stage_id = body.get("pipelineStageId",
                                opp["pipelineStageId"] if pipeline_id == opp["pipelineId"] else None)
            stage, err = self.check_pipeline(pipeline_id, stage_id)
            if err:
                return err
            now = iso_now_ms()
            if body.get("status") not in (None, opp["status"]):
                opp["lastStatusChangeAt"] = now
            if stage != opp["pipelineStageId"]:
                opp["lastStageChangeAt"] = now
            for key, value in body.items():
                if key == "customFields":
                    opp["customFields"] = self.opportunity_custom_fields(opp["customFields"], value)
                elif key != "pipelineStageId":
                    opp[key] = value
            opp["pipelineStageId"] = stage
            opp["updatedAt"] = opp["lastActionDate"] = now
            opp["indexVersion"] = opp.get("indexVersion", 0) + 1
            return Reply(200, {"opportunity": self.opportunity_view(opp)})

    def h_opp_status(self, req, oid):
        body = json_object(req)
        errors = [f"property {k} should not exist" for k in body if k not in ("status", "lostReasonId")]
        if body.get("status") not in OPPORTUNITY_STATUSES:
            errors.append("status must be one of the following values: " + ", ".join(OPPORTUNITY_STATUSES))
        if errors:
            return unprocessable(errors)
        with self.lock:
            opp = self.visible(req, self.records["opportunities"].get(oid))
            if opp is None:
                return bad_request("Opportunity not found")
            now = iso_now_ms()
            if opp["status"] != body["status"]:
                opp["lastStatusChangeAt"] = now
            opp["status"] = body["status"]
            if "lostReasonId" in body:
                opp["lostReasonId"] = body["lostReasonId"]
            opp["updatedAt"] = now
        return Reply(200, {"succeded": True})

    def h_opp_get(self, req, oid):
        with self.lock:
            opp = self.visible(req, self.records["opportunities"].get(oid))
            if opp is None:
                return bad_request("Opportunity not found")
            return Reply(200, {"opportunity": self.opportunity_view(opp)})

    def h_opp_delete(self, req, oid):
        with self.lock:
            if self.visible(req, self.records["opportunities"].get(oid)) is None:
                return bad_request("Opportunity not found")
            del self.records["opportunities"][oid]
        return Reply(200, {"succeded": True})

    def h_opp_search(self, req):
        p = req.params
        errors = [f"property {k} should not exist" for k in p if k not in OPP_SEARCH_PARAMS]
        if not p.get("location_id"):
            errors.append("location_id should not be empty")
        limit, page = p.get("limit", "20"), p.get("page", "1")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            errors.append("limit must not be greater than 100" if limit.isdigit()
                          else "limit must be a number conforming to the specified constraints")
        if not page.isdigit() or int(page) < 1:
            errors.append("page must be a number conforming to the specified constraints")
        if errors:
            return unprocessable(errors)
        denied = self.location_denied(req, p["location_id"])
        if denied:
            return denied
        limit, page = int(limit), int(page)
        wanted = {"locationId": p["location_id"], "contactId": p.get("contact_id"),
                  "pipelineId": p.get("pipeline_id"), "pipelineStageId": p.get("pipeline_stage_id"),
                  "assignedTo": p.get("assigned_to"), "id": p.get("id")}
        status = p.get("status")
        with self.lock:
            hits = []
            for opp in self.records["opportunities"].values():
                if any(v is not None and opp.get(k) != v for k, v in wanted.items()):
                    continue
                if status and status != "all" and opp.get("status") != status:
                    continue
                if p.get("q") and fold(p["q"]) not in fold(opp.get("name") or ""):
                    continue
                hits.append(opp)
            hits.sort(key=lambda o: o.get("createdAt") or "", reverse=True)
            start = (page - 1) * limit
            chunk = hits[start:start + limit]
            views = []
            for opp in chunk:
                view = self.opportunity_view(opp)
                # Search results show custom fields in the observed form
                # {"id","fieldValueString","type":"string"} for text values
                # (NOTES §3), so a client must parse both forms.
                view["customFields"] = [
                    {"id": cf["id"], "fieldValueString": cf["fieldValue"], "type": "string"}
                    if isinstance(cf.get("fieldValue"), str) else cf
                    for cf in view.get("customFields") or []]
                views.append(view)
            more = start + limit < len(hits)
            last = chunk[-1] if chunk else None
            meta = {"total": len(hits), "currentPage": page, "nextPage": page + 1 if more else None,
                    "prevPage": page - 1 if page > 1 else None,
                    "nextPageUrl": (f"http://127.0.0.1:{self.port}/opportunities/search?"
                                    f"location_id={p['location_id']}&page={page + 1}&limit={limit}") if more else None,
                    "startAfterId": last["id"] if last and more else None,
                    "startAfter": last["createdAt"] if last and more else None}
            return Reply(200, {"opportunities": views, "meta": meta, "aggregations": {}})

    def h_pipelines(self, req):
        unknown = [k for k in req.params if k != "locationId"]
        if unknown:
            return unprocessable([f"property {k} should not exist" for k in unknown])
        location = req.params.get("locationId")
        if not location:
            return unprocessable(["locationId should not be empty"])
        denied = self.location_denied(req, location)
        if denied:
            return denied
        with self.lock:
            pipelines = []
            for pl in self.records["pipelines"].values():
                view = copy.deepcopy(pl)
                view["locationId"] = pl.get("locationId") or location
                pipelines.append(view)
        return Reply(200, {"pipelines": pipelines})

    h_location_get = _h_location_get

    # ---- seeding (/_records) -------------------------------------------------
    def seed(self, collection, record):
        if collection in ("contacts", "opportunities") and not record.get("locationId"):
            # Seeded without one: the first known location, so the record is
            # visible; seeding any other location simulates another sub-account.
            record["locationId"] = self.config["locations"][0]
        if collection == "locations":
            loc = {"id": record.get("id") or ghl_id(), "name": "Location"}
            loc.update(record)
            self.records["locations"][loc["id"]] = loc
            if loc["id"] not in self.config["locations"]:
                self.config["locations"] = self.config["locations"] + [loc["id"]]
                doctor_seed_defaults(self, [loc["id"]])
            return loc
        if collection == "contacts":
            contact = {"id": record.get("id") or ghl_id(), "type": "lead", "dnd": False, "tags": [],
                       "customFields": [], "attachments": [], "dateAdded": record.get("dateAdded") or iso_now_ms()}
            fields = {k: v for k, v in record.items() if k not in ("id", "dateAdded", "dateUpdated", "customFields")}
            self.write_contact(contact, fields)
            if "customFields" in record:
                contact["customFields"] = copy.deepcopy(record["customFields"])
            contact["dateUpdated"] = record.get("dateUpdated") or contact["dateAdded"]
            self.records["contacts"][contact["id"]] = contact
            return contact
        if collection == "opportunities":
            now = iso_now_ms()
            opp = {"id": ghl_id(), "name": None, "monetaryValue": 0, "pipelineId": None,
                   "pipelineStageId": None, "assignedTo": None, "status": "open", "source": "",
                   "lastStatusChangeAt": now, "lastStageChangeAt": now, "lastActionDate": now,
                   "indexVersion": 1, "createdAt": now, "updatedAt": now, "contactId": None,
                   "locationId": None, "lostReasonId": None, "customFields": [], "followers": []}
            opp.update(record)
            self.records["opportunities"][opp["id"]] = opp
            return opp
        if collection == "customFields":
            model = record.get("model", "contact")
            if model not in ("contact", "opportunity"):
                raise ValueError("model must be contact or opportunity")
            name = record.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError("a custom field needs a name")
            data_type = record.get("dataType", "TEXT")
            if data_type not in CUSTOM_FIELD_DATA_TYPES:
                raise ValueError("dataType must be one of " + ", ".join(CUSTOM_FIELD_DATA_TYPES))
            key = record.get("fieldKey") or f"{model}.{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}"
            field = {"id": record.get("id") or stable_ghl_id("customField:" + key.split(".", 1)[-1]),
                     "name": name, "fieldKey": key, "dataType": data_type, "model": model,
                     "locationId": record.get("locationId") or self.config["locations"][0]}
            field.update({k: v for k, v in record.items() if k not in field})
            self.records["customFields"][field["id"]] = field
            return field
        pipeline = {"id": ghl_id(), "name": None, "stages": [], "showInFunnel": True, "showInPieChart": True}
        pipeline.update(record)
        pipeline["stages"] = [s if isinstance(s, dict) else {"id": stable_guid(f"stage:{pipeline['id']}:{s}"), "name": s}
                              for s in pipeline["stages"]]
        for stage in pipeline["stages"]:
            stage.setdefault("id", str(uuid.uuid4()))
        self.records["pipelines"][pipeline["id"]] = pipeline
        return pipeline


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------

class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, fake, stopping):
        self.fake = fake
        self.stopping = stopping
        super().__init__(address, Handler)

    def handle_error(self, request, client_address):
        # A client closing its keep-alive connection is normal (wrk does it
        # at the end of every run); anything else is a bug worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeUpstream/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    error_content_type = "application/json"
    error_message_format = '{"statusCode": %(code)d, "message": "%(message)s"}'

    def log_message(self, fmt, *args):
        self.server.fake.log(fmt % args)

    def log_request(self, code="-", size="-"):
        pass    # each request gets one line from _handle instead

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, size = [], 0
            while True:
                line = self.rfile.readline(1024)
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                size += n
                if size > MAX_BODY_BYTES:
                    raise OverflowError
                chunks.append(self.rfile.read(n))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError
        if length > MAX_BODY_BYTES:
            raise OverflowError
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The client went away before its body was whole (a process
            # killed mid-send): no request reached the service, as with a
            # real server, so nothing is done or recorded.
            raise ConnectionAbortedError
        return body

    def _handle(self):
        fake = self.server.fake
        started = time.monotonic()
        split = urlsplit(self.path)
        path = split.path or "/"
        try:
            body = self._read_body()
        except OverflowError:
            self.close_connection = True
            self._send(Reply(413, {"message": "request body too large"}))
            return
        except ValueError:
            self.close_connection = True
            self._send(Reply(400, {"message": "malformed request body framing"}))
            return
        except ConnectionAbortedError:
            self.close_connection = True
            return
        req = Request(self.command, path, split.query, self.headers, body)

        if path.startswith("/_"):
            self._send(self._guarded(fake.control, req))
            return

        entry = fake.log_arrival(req)
        fault = fake.take_fault(req.method, path)
        delay_ms = fake.config.get("latency_ms", 0) + (fault["latency_ms"] if fault else 0)
        if delay_ms:
            time.sleep(delay_ms / 1000.0)
        if fault and fault["after_write"]:
            # The request does its work first; only its answer is lost.
            self._guarded(fake.dispatch, req)
        if fault and fault["hang"]:
            self._hang()
            fake.log_answer(entry, 0, fake.route_name(req.method, path))
            fake.log(f"{req.method} {self.path} -> hung up ({(time.monotonic() - started) * 1000:.1f} ms)")
            return
        if fault and self._wire_fault(fault):
            fake.log_answer(entry, 0, fake.route_name(req.method, path))
            fake.log(f"{req.method} {self.path} -> broken answer ({(time.monotonic() - started) * 1000:.1f} ms)")
            return
        if fault and fault["status"]:
            reply = fake.fault_reply(fault, req)
            reply.route = fake.route_name(req.method, path)
        else:
            reply = self._guarded(fake.dispatch, req)
            if reply.route is None:
                reply.route = fake.route_name(req.method, path)
        reply = fake.finish_reply(reply, req)
        # Logged before it is sent: a client that has the answer may look at
        # /_requests at once and must find the status there.
        fake.log_answer(entry, reply.status, reply.route)
        self._send(reply)
        fake.log(f"{req.method} {self.path} -> {reply.status} ({(time.monotonic() - started) * 1000:.1f} ms)")

    def _guarded(self, fn, req):
        """fn(req), or a JSON 500 naming the exception if the fake itself
        fails, so that a bug here never looks like an upstream dropping the
        connection."""
        try:
            return fn(req)
        except Exception as e:
            sys.stderr.write(f"[{self.server.fake.label}] internal error on {req.method} {req.path}:\n"
                             + traceback.format_exc())
            sys.stderr.flush()
            return Reply(500, {"message": f"fake internal error: {type(e).__name__}: {e}"})

    def _wire_fault(self, fault):
        """The faults that break the wire rather than answer: `reset` (the
        connection is closed with a TCP RST, nothing sent), `raw` (the
        status with these bytes as the body, not JSON) and `truncate` (the
        status and headers promising the whole body, then only part of it
        and a close). Returns whether it handled the request."""
        if fault.get("reset"):
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            except OSError:
                pass
            return True
        raw, cut = fault.get("raw"), fault.get("truncate")
        if raw is None and not cut:
            return False
        status = fault["status"] or 200
        if raw is not None:
            data = raw.encode("utf-8")
        else:
            body = fault["body"] if fault["body"] is not None else {"message": "x" * 200}
            data = json.dumps(body, separators=(",", ":")).encode()
        sent = data[:len(data) // 2] if cut else data
        self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8" if raw is None
                             else "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(sent)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        return True

    def _hang(self):
        """Holds the connection without answering until the client goes away,
        the server stops, or HANG_LIMIT_S passes; then closes it."""
        self.close_connection = True
        sock = self.connection
        deadline = time.monotonic() + HANG_LIMIT_S
        while time.monotonic() < deadline and not self.server.stopping.is_set():
            try:
                readable, _, _ = select.select([sock], [], [], 0.2)
                if readable and not sock.recv(1, socket.MSG_PEEK):
                    return
                if readable:
                    # More bytes from the client (a pipelined request): keep
                    # holding, but without spinning on the readable socket.
                    time.sleep(0.2)
            except (OSError, ValueError):
                return

    def _send(self, reply):
        if isinstance(reply.body, bytes):
            data = reply.body     # a raw_body fault: garbage on purpose
        else:
            data = b"" if reply.body is None else json.dumps(reply.body, separators=(",", ":")).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in reply.headers.items():
                self.send_header(key, str(value))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description="Fake NowCerts and GoHighLevel APIs (loopback only).")
    ap.add_argument("--nowcerts-port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--ghl-port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="added to every non-control request")
    ap.add_argument("--token-ttl", type=float, default=3600, help="NowCerts access token lifetime, seconds")
    ap.add_argument("--nowcerts-user", default=None, help="default: accept any non-empty user")
    ap.add_argument("--nowcerts-pass", default=None, help="default: accept any non-empty password")
    ap.add_argument("--ghl-token", default=None, help="default: accept any non-empty Bearer token")
    ap.add_argument("--ghl-locations", default=",".join(DEFAULT_GHL_LOCATIONS),
                    help="comma-separated location ids the GHL token may use")
    ap.add_argument("--ghl-rate-limit", type=int, default=100, help="requests per window per token")
    ap.add_argument("--ghl-rate-window", type=float, default=10.0, help="window length, seconds")
    ap.add_argument("--request-log", type=int, default=20000,
                    help="how many requests /_requests keeps (oldest dropped first)")
    ap.add_argument("--exit-with-parent", action="store_true",
                    help="exit when the parent process goes away (for a sandbox child)")
    ap.add_argument("--quiet", action="store_true", help="no request log on stderr")
    args = ap.parse_args(argv)
    if args.ghl_rate_limit < 1 or args.ghl_rate_window <= 0:
        ap.error("--ghl-rate-limit must be >= 1 and --ghl-rate-window > 0")
    if not [x for x in args.ghl_locations.split(",") if x.strip()]:
        ap.error("--ghl-locations needs at least one location id")
    if args.latency_ms < 0 or args.token_ttl < 0 or args.request_log < 1:
        ap.error("--latency-ms and --token-ttl must be >= 0, --request-log >= 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stopping = threading.Event()
    ttl = int(args.token_ttl) if float(args.token_ttl).is_integer() else args.token_ttl
    nowcerts = NowCertsFake({"latency_ms": args.latency_ms, "token_ttl": ttl, "date_precision": "second"},
                            args.request_log, args.quiet, args.nowcerts_user, args.nowcerts_pass)
    ghl = GhlFake({"latency_ms": args.latency_ms, "rate_limit": args.ghl_rate_limit,
                   "rate_window": args.ghl_rate_window,
                   "locations": [x.strip() for x in args.ghl_locations.split(",") if x.strip()]},
                  args.request_log, args.quiet, args.ghl_token)
    servers = []
    try:
        for fake, port in ((nowcerts, args.nowcerts_port), (ghl, args.ghl_port)):
            server = FakeServer(("127.0.0.1", port), fake, stopping)
            fake.port = server.server_address[1]
            servers.append(server)
    except OSError as e:
        sys.stderr.write(f"fake_upstreams: cannot listen: {e}\n")
        for server in servers:
            server.server_close()
        return 2

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
               for s in servers]
    for t in threads:
        t.start()
    sys.stdout.write(f"READY nowcerts={nowcerts.port} ghl={ghl.port}\n")
    sys.stdout.flush()
    parent = os.getppid()
    while not stopping.wait(0.5):
        if args.exit_with_parent and os.getppid() != parent:
            break
    stopping.set()
    for server in servers:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
