"""Harness for ncghl's integration tests: the real binary over loopback
against the fake upstreams (tests/fakes/fake_upstreams.py).

Each test_*.py file is one ctest entry. It imports this module, defines
unittest.TestCase classes (usually subclasses of IntegTest) and ends with
`harness.main()`, which runs them and prints a last line exactly
`N passed, N failed` and exits non-zero on any failure.

With NCGHL_TEST_STORE=postgresql every server of a test file runs on
PostgreSQL instead of a SQLite file: one throwaway server per file
(tests/pgcluster.py, started on first use, stopped and removed at exit),
a fresh database per working directory (so per test, and shared by the
servers a test restarts in the same directory), named by STORE_URL.
Helpers that read the store (Server.db_query) work on either.

Everything here is Python 3.11 standard library. Waits are bounded by
generous time-outs that only decide when to give up; no test asserts that
something was fast.
"""

import atexit
import ctypes
import hashlib
import http.client as httplib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(os.environ.get("NCGHL_ROOT") or Path(__file__).resolve().parents[2])
sys.path.insert(0, str(ROOT / "tests"))
import pgcluster  # noqa: E402  (tests/pgcluster.py, beside this directory)
BIN = Path(os.environ.get("NCGHL_BIN") or ROOT / "build" / "ncghl")
FAKES = ROOT / "tests" / "fakes" / "fake_upstreams.py"
KEEP_TMP = os.environ.get("NCGHL_KEEP_TMP") == "1"

# Generous bounds for "wait until"; exceeding one is a failure of behaviour
# (the thing never happened), not a performance verdict.
START_TIMEOUT = 10.0
EVENT_TIMEOUT = 30.0

GHL_VERSION = "2021-07-28"
EVENT_ID_RE = re.compile(r"^[a-z]+_[0-9a-f]{64}$")
# What AddressSanitizer, LeakSanitizer and UBSan print when they find
# something (the suite also runs against a -fsanitize build).
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak)Sanitizer[^\n]*|[^\n]*runtime error: [^\n]*")

# Variables passed through from the caller's environment; everything else
# the binary sees is set explicitly, so a stray PORT or DB_PATH in the
# developer's shell cannot change what a test means.
_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "ASAN_OPTIONS",
                "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS")


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Runs in the child before exec: if this test process dies (a ctest
    time-out kills it), the kernel kills the child too, so no server or fake
    outlives the run. Resolved beforehand: a forked child must not import."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def free_port():
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recv_all(sock):
    """Everything a raw socket's peer sends until it closes (the socket is
    closed after)."""
    data = b""
    with sock:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def uniq(n=10):
    return uuid.uuid4().hex[:n]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(pred, timeout=EVENT_TIMEOUT, interval=0.05, what="condition"):
    """Polls pred() until it returns something truthy; returns that value.
    Raises AssertionError naming `what` when the time-out passes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Slammer:
    """A TCP listener that accepts and at once closes every connection,
    counting them: an upstream that never answers (a connection error)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self._lock = threading.Lock()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _run(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.count += 1
            c.close()

    def close(self):
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class RecordingProxy:
    """A pass-through HTTP proxy in front of one fake that keeps every
    answer it relays: the only way to see what the fakes issued (e.g. the
    last refresh token, which never comes back in a request)."""

    def __init__(self, target_base):
        target = urllib.parse.urlsplit(target_base)
        self.answers = []  # (method, path, status, answer body, request body), as text
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _relay(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                hdrs = {k: v for k, v in self.headers.items()
                        if k.lower() not in ("host", "connection", "content-length")}
                conn = httplib.HTTPConnection(target.hostname, target.port, timeout=150)
                try:
                    conn.request(self.command, self.path, body=body, headers=hdrs)
                    r = conn.getresponse()
                    data = r.read()
                    rh = r.getheaders()
                    status = r.status
                except OSError:
                    # The fake hung up (e.g. a "hang" fault): do the same.
                    self.close_connection = True
                    return
                finally:
                    conn.close()
                proxy.answers.append((self.command, self.path, status,
                                      data.decode("utf-8", "replace"),
                                      (body or b"").decode("utf-8", "replace")))
                self.send_response(status)
                for k, v in rh:
                    if k.lower() not in ("connection", "transfer-encoding", "content-length",
                                         "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = "http://127.0.0.1:%d" % self.port
        self._t = threading.Thread(target=self.server.serve_forever,
                                   kwargs={"poll_interval": 0.1}, daemon=True)
        self._t.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- HTTP

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-cased names
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    @property
    def content_type(self):
        return self.headers.get("content-type", "")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError("answer is not JSON (HTTP %d, %r): %s"
                                 % (self.status, self.text[:300], e)) from None

    def __repr__(self):
        return "<HTTP %d %s>" % (self.status, self.text[:500])


def http(method, url, body=None, headers=None, timeout=30.0):
    """One request on a fresh connection. body: bytes/str sent as is,
    anything else JSON-encoded."""
    u = urllib.parse.urlsplit(url)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    hdrs = {}
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs["Content-Type"] = "application/json"
    elif body is not None:
        hdrs["Content-Type"] = "application/json"
    if isinstance(body, str):
        body = body.encode("utf-8")
    hdrs.update(headers or {})
    conn = httplib.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()



# ---------------------------------------------------------------- fakes

class Fakes:
    """The fake NowCerts and GHL (one child process), with their control API."""

    def __init__(self, tmpdir, *args):
        self.tmpdir = Path(tmpdir)
        if not FAKES.exists():
            raise AssertionError("fakes not found: %s" % FAKES)
        self.err_path = self.tmpdir / "fakes.stderr"
        self._err = open(self.err_path, "wb")
        cmd = [sys.executable, str(FAKES), "--nowcerts-port", "0", "--ghl-port", "0",
               "--quiet"] + [str(a) for a in args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        ready = {}

        def reader():
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").strip()
                m = re.match(r"READY nowcerts=(\d+) ghl=(\d+)", line)
                if m and not ready:
                    ready["nc"], ready["ghl"] = int(m.group(1)), int(m.group(2))
            # Keep draining until EOF so the child never blocks on a full pipe.

        self._reader = threading.Thread(target=reader, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not ready:
            if self.proc.poll() is not None:
                raise AssertionError("fakes exited (%s) before READY: %s"
                                     % (self.proc.returncode, self.stderr_text()[-2000:]))
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("fakes printed no READY line")
            time.sleep(0.02)
        self.nc_port, self.ghl_port = ready["nc"], ready["ghl"]
        self.nc_base = "http://127.0.0.1:%d" % self.nc_port
        self.ghl_base = "http://127.0.0.1:%d" % self.ghl_port

    def stderr_text(self):
        try:
            return self.err_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()

    def base(self, side):
        return {"nowcerts": self.nc_base, "nc": self.nc_base, "ghl": self.ghl_base}[side]

    def _ctl(self, side, method, path, body=None):
        r = http(method, self.base(side) + path, body)
        if r.status >= 300:
            raise AssertionError("fake %s %s %s -> %r" % (side, method, path, r))
        return r.json() if r.body.strip() else None

    def records(self, side, coll):
        return self._ctl(side, "GET", "/_records/" + coll)

    def seed(self, side, coll, record):
        return self._ctl(side, "POST", "/_records/" + coll, record)

    def requests(self, side):
        return self._ctl(side, "GET", "/_requests")

    def reset(self):
        self._ctl("nowcerts", "POST", "/_reset", {})
        self._ctl("ghl", "POST", "/_reset", {})

    def fault(self, side, **spec):
        return self._ctl(side, "POST", "/_fault", spec)

    def revoke(self):
        return self._ctl("nowcerts", "POST", "/_revoke", {})

    def config(self, side, **kw):
        return self._ctl(side, "POST", "/_config", kw)

    def stats(self, side):
        return self._ctl(side, "GET", "/_stats")

    def agent_edit(self, side, coll, rid, fields):
        """A person editing one record in the product's UI (PATCH
        /_records/<coll>/<id>); answers the record after the change."""
        return self._ctl(side, "PATCH", "/_records/%s/%s" % (coll, rid), fields)

    def agent_delete(self, side, coll, rid):
        """A person deleting one record in the product's UI."""
        return self._ctl(side, "DELETE", "/_records/%s/%s" % (coll, rid))

    def ghl_webhooks(self):
        """The contact webhooks the fake GHL has sent (needs webhook_url set
        through config("ghl", webhook_url=...))."""
        return self._ctl("ghl", "GET", "/_webhooks")

    def hold_ghl_webhooks(self):
        return self._ctl("ghl", "POST", "/_webhooks/hold", {})

    def flush_ghl_webhooks(self, order="fifo"):
        return self._ctl("ghl", "POST", "/_webhooks/flush", {"order": order})

    def ghl_oauth_code(self, location="it-location-1", **extra):
        """An authorization code the fake GHL's POST /oauth/token exchanges
        for tokens of that location."""
        return self._ctl("ghl", "POST", "/_oauth/code", dict(extra, locationId=location))["code"]

    def ghl_oauth_expire(self, location="it-location-1"):
        """Expires every OAuth access token of that location in the fake GHL."""
        return self._ctl("ghl", "POST", "/_oauth/expire", {"locationId": location})["expired"]

    # Views over /_requests -------------------------------------------------

    def calls(self, side, method=None, path_re=None):
        """Recorded requests to business routes (control routes excluded)."""
        out = []
        for r in self.requests(side):
            p = r.get("path", "")
            if p.startswith("/_"):
                continue
            if method and r.get("method", "").upper() != method.upper():
                continue
            if path_re and not re.search(path_re, p):
                continue
            out.append(r)
        return out

    def token_calls(self):
        return self.calls("nowcerts", "POST", r"/token$")


def req_body(r):
    """The body of a recorded request: parsed JSON when it is JSON, a dict of
    fields when form-encoded, else the raw string."""
    b = r.get("body")
    if isinstance(b, (dict, list)) or b is None:
        return b
    try:
        return json.loads(b)
    except (ValueError, TypeError):
        pass
    ctype = (r.get("headers") or {}).get("content-type") or ""
    if "x-www-form-urlencoded" in ctype or ("=" in b and "{" not in b):
        return dict(urllib.parse.parse_qsl(b, keep_blank_values=True))
    return b


def rid(rec):
    """Id of a fake's record (GHL "id"; NowCerts "id" or "databaseId")."""
    return rec.get("id") or rec.get("databaseId") or rec.get("insuredDatabaseId")


def req_at(r):
    """Arrival time of a recorded request in seconds."""
    at = float(r.get("at"))
    return at / 1000.0 if at > 1e11 else at


# ---------------------------------------------------------------- store

STORE = os.environ.get("NCGHL_TEST_STORE", "sqlite")
if STORE not in ("sqlite", "postgresql"):
    raise SystemExit("NCGHL_TEST_STORE must be sqlite or postgresql, not %r" % STORE)
PG = STORE == "postgresql"
_cluster = None
_databases = {}  # working directory -> database name


class DBError(Exception):
    """The store could not be read (not created yet, or a failed query)."""


def pg_cluster():
    """The file's PostgreSQL server, started on first use."""
    global _cluster
    if _cluster is None:
        c = pgcluster.Cluster()
        try:
            c.start()
        except Exception:
            c.stop()
            raise
        _cluster = c
        atexit.register(_stop_cluster)
        signal.signal(signal.SIGTERM, _on_sigterm)
    return _cluster


def _on_sigterm(signum, frame):
    # ctest's time-out: exit through atexit, so the server is stopped too.
    sys.exit(1)


def _stop_cluster():
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None


def _pg_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def _pg_value(v):
    """psql prints text; numbers come back as the numbers SQLite gives."""
    if re.fullmatch(r"-?[0-9]{1,18}", v):
        return int(v)
    return v


def pg_query(db, sql, args=(), schema=None):
    """A query with SQLite's `?` placeholders, on a PostgreSQL database (in
    that schema: a tenant's store)."""
    parts = sql.split("?")
    if len(parts) - 1 != len(args):
        raise ValueError("%d placeholders, %d arguments" % (len(parts) - 1, len(args)))
    text = parts[0] + "".join(_pg_literal(a) + rest for a, rest in zip(args, parts[1:]))
    if schema:
        text = 'SET search_path TO "%s"; %s' % (schema, text)
    try:
        rows = pg_cluster().psql(db, text)
    except RuntimeError as e:
        raise DBError(str(e)) from None
    return [tuple(_pg_value(v) for v in row) for row in rows]


def sqlite_query(path, sql, args=()):
    """Read-only, beside the service; never creates the file."""
    import sqlite3
    try:
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        raise DBError(str(e)) from None


# ---------------------------------------------------------------- server

def base_env():
    return {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}


class Server:
    """One `ncghl serve` in its own working directory."""

    def __init__(self, workdir, fakes=None, env=None, args=("serve",), port=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.db_path = str(self.workdir / "ncghl.db")
        self.log_path = str(self.workdir / "ncghl.log")
        self.stderr_path = self.workdir / ("stderr.%d.log" % self.port)
        self.args = list(args)
        e = base_env()
        e.update({
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DB_PATH": self.db_path,
            "MAPPINGS_DIR": str(ROOT / "mappings"),
            "LUA_DIR": str(ROOT / "lua"),
            "GHL_WEBHOOK_VERIFY": "false",
            "NOWCERTS_POLL_INTERVAL": "0",
            # The preflight checks serve runs at start (test_doctor.py turns
            # them on) make upstream calls that tests counting calls would see.
            "DOCTOR_AT_START": "false",
            "RETRY_INITIAL_DELAY": "0.1",
            "LOG_LEVEL": "DEBUG",
            "LOG_FILE": self.log_path,
            "NOWCERTS_USERNAME": "it-user",
            "NOWCERTS_PASSWORD": "it-pass-" + uniq(8),
            "GHL_API_KEY": "it-ghl-key-" + uniq(8),
            "GHL_LOCATION_ID": "it-location-1",
        })
        self.store_url = None
        given = (env or {}).get("STORE_URL")
        if PG and given:
            # Another server's database (two nodes on one store).
            self.store_url = given
            self.db_name = urllib.parse.urlsplit(given).path.lstrip("/")
        elif PG:
            key = str(self.workdir.resolve())
            if key not in _databases:
                _databases[key] = pg_cluster().createdb()
            self.db_name = _databases[key]
            self.store_url = pg_cluster().url(self.db_name)
            e["STORE_URL"] = self.store_url
        if fakes is not None:
            e["NOWCERTS_BASE_URL"] = fakes.nc_base + "/api"
            e["GHL_BASE_URL"] = fakes.ghl_base
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = str(v)
        self.env = e
        if e.get("PORT", "").isdigit():
            self.port = int(e["PORT"])
        self.proc = None
        self._err = None

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def store_label(self):
        """How ncghl names this server's store in what it prints: the SQLite
        path, or the URL with its password masked."""
        if self.store_url:
            return self.store_url.replace(":" + pgcluster.Cluster.PASSWORD + "@", ":***@")
        return self.db_path

    def db_query(self, sql, args=(), tenant=None):
        """Rows of a read-only query (SQLite's `?` placeholders) on this
        server's store, whichever it is, or on a tenant's (its file beside
        DB_PATH's, or its schema); DBError when it cannot be read."""
        if self.store_url:
            return pg_query(self.db_name, sql, args, schema=tenant and "t_" + tenant)
        if tenant:
            return sqlite_query(str(Path(self.db_path).parent / "tenants" / (tenant + ".db")), sql, args)
        return sqlite_query(self.db_path, sql, args)

    def start(self, wait=True):
        if not BIN.exists():
            raise AssertionError("ncghl binary not found at %s (set NCGHL_BIN)" % BIN)
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([str(BIN)] + self.args, cwd=self.workdir, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self._err,
                                     stderr=self._err, preexec_fn=_die_with_parent)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("ncghl exited with %s before /health answered; stderr:\n%s"
                                     % (self.proc.returncode, self.stderr_text()[-3000:]))
            try:
                r = http("GET", self.base + "/health", timeout=2)
                if r.status == 200:
                    return r
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("ncghl /health did not answer 200 within %.0f s; stderr:\n%s"
                                     % (timeout, self.stderr_text()[-3000:]))
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("ncghl did not exit within %d s of SIGTERM" % timeout)
        self._close()
        return self.proc.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self):
        if self._err is not None:
            self._err.close()
            self._err = None

    # HTTP -----------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=30.0):
        return http(method, self.base + path, body, headers, timeout)

    def post(self, path, body=None, headers=None, timeout=30.0):
        return self.request("POST", path, body, headers, timeout)

    def get(self, path, headers=None):
        return self.request("GET", path, None, headers)

    def nowcerts(self, body, **kw):
        return self.post("/api/v1/webhooks/nowcerts", body, **kw)

    def ghl(self, body, **kw):
        return self.post("/api/v1/webhooks/ghl", body, **kw)

    def manual(self, body, **kw):
        return self.post("/api/v1/sync/manual", body, **kw)

    # CLI ------------------------------------------------------------------

    def cli(self, *args, timeout=30, env=None):
        e = dict(self.env)
        e.update(env or {})
        return subprocess.run([str(BIN)] + [str(a) for a in args], cwd=self.workdir, env=e,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def events(self, *args):
        """`ncghl events --json` as a list of dicts."""
        p = self.cli("events", "--json", *args)
        if p.returncode != 0:
            raise AssertionError("ncghl events --json exited %d: %s" % (p.returncode, p.stderr))
        out = []
        for line in p.stdout.splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    raise AssertionError("ncghl events --json printed a non-JSON line: %r"
                                         % line) from None
        return out

    def event(self, event_id):
        for e in self.events("--limit", "100000"):
            if e.get("id") == event_id:
                return e
        return None

    def wait_event(self, event_id, statuses=("done",), timeout=EVENT_TIMEOUT):
        def check():
            e = self.event(event_id)
            return e if e and e.get("status") in statuses else None
        try:
            return wait_until(check, timeout, 0.1, "event %s to be %s" % (event_id, "/".join(statuses)))
        except AssertionError as err:
            raise AssertionError("%s; it is %r" % (err, self.event(event_id))) from None

    # Logs -----------------------------------------------------------------

    def stderr_text(self):
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def log_text(self):
        try:
            return Path(self.log_path).read_text("utf-8", "replace")
        except OSError:
            return ""


# ---------------------------------------------------------------- payloads

def insured_data(email=None, first="Jane", last=None, **extra):
    """A NowCerts insured in the source design's names."""
    d = {
        "firstName": first,
        "lastName": last or "Doe" + uniq(6),
        "email": email or "jane.%s@example.com" % uniq(),
        "phone": "+1555%07d" % (int(uniq(6), 16) % 10000000),
        "address": {"street": "1 Main St", "city": "Tampa", "state": "FL", "zip": "33601"},
    }
    d.update(extra)
    return d


def nowcerts_event(event_type="INSURED_INSERT", data=None, **extra):
    b = {"event_type": event_type, "timestamp": "2024-01-15T10:30:00Z",
         "data": data if data is not None else insured_data()}
    b.update(extra)
    return b


def ghl_contact(email=None, first="John", last=None, cid=None, **extra):
    c = {
        "id": cid or "c" + uniq(19),
        "firstName": first,
        "lastName": last or "Roe" + uniq(6),
        "email": email or "john.%s@example.com" % uniq(),
        "phone": "+1555%07d" % (int(uniq(6), 16) % 10000000),
        "address1": "2 Oak Ave",
        "city": "Orlando",
        "state": "FL",
        "postalCode": "32801",
    }
    c.update(extra)
    return c


def ghl_event(type_="ContactCreate", contact=None, location="it-location-1"):
    """GHL's own flat webhook format."""
    b = dict(contact if contact is not None else ghl_contact())
    # The event type wins over a contact's own "type" (lead, customer).
    b["type"] = type_
    b.setdefault("locationId", location)
    b.setdefault("timestamp", "2025-08-26T11:36:43.463Z")
    b.setdefault("webhookId", str(uuid.uuid4()))
    return b


def canonical(obj):
    """ncghl's canonical JSON (json.h): keys sorted, no white space, minimal
    escapes, non-ASCII as is. Valid for the plain payloads the tests send."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def expected_event_id(source, obj):
    """digest.h: source + "_" + hex(sha256(source + "\\n" + canonical))."""
    h = hashlib.sha256((source + "\n" + canonical(obj)).encode("utf-8")).hexdigest()
    return "%s_%s" % (source, h)


# ---------------------------------------------------------------- base class

def _tail(text, n):
    return "\n".join(text.splitlines()[-n:])


class IntegTest(unittest.TestCase):
    """Fakes shared by a class (reset before every test), a fresh working
    directory and database per test, every process stopped afterwards."""

    FAKE_ARGS = ()
    NEEDS_FAKES = True
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        cls._class_tmp = tempfile.mkdtemp(prefix="ncghl-it-")
        cls.fakes = Fakes(cls._class_tmp, *cls.FAKE_ARGS) if cls.NEEDS_FAKES else None

    @classmethod
    def tearDownClass(cls):
        if cls.fakes is not None:
            cls.fakes.stop()
        if not KEEP_TMP:
            shutil.rmtree(cls._class_tmp, ignore_errors=True)

    def setUp(self):
        if self.fakes is not None:
            self.fakes.reset()
        self.tmp = Path(tempfile.mkdtemp(prefix="ncghl-it-", dir=self._class_tmp))
        self.servers = []
        self.diag = ""

    def tearDown(self):
        parts = []
        problems = []
        for s in self.servers:
            was_running = s.running()
            try:
                rc = s.stop()
                # A service the test left running must stop cleanly on SIGTERM.
                if was_running and rc != 0:
                    problems.append("ncghl (port %d) exited with %s after SIGTERM" % (s.port, rc))
            except AssertionError as e:
                parts.append(str(e))
                problems.append(str(e))
            m = SANITIZER_RE.search(s.stderr_text())
            if m:
                problems.append("sanitizer report in ncghl's stderr (port %d): %s"
                                % (s.port, m.group(0)))
            if s.stderr_text().strip():
                parts.append("--- ncghl stderr (port %d), last lines:\n%s"
                             % (s.port, _tail(s.stderr_text(), 40)))
            if s.log_text().strip():
                parts.append("--- ncghl log file (port %d), last lines:\n%s"
                             % (s.port, _tail(s.log_text(), 40)))
        if self.fakes is not None and self.fakes.stderr_text().strip():
            parts.append("--- fakes stderr, last lines:\n%s"
                         % _tail(self.fakes.stderr_text(), 15))
        self.diag = "\n".join(parts)
        if problems:
            self.fail("; ".join(problems))

    def server(self, env=None, start=True, workdir=None, args=("serve",), port=None):
        """A server on the class's fakes; env entries override (None removes)."""
        s = Server(workdir or self.tmp, self.fakes, env, args, port)
        self.servers.append(s)
        if start:
            s.start()
        return s

    # Assertions shared by the files ---------------------------------------

    def assertJSONAnswer(self, r, status):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.content_type.startswith("application/json"),
                        "Content-Type %r on %r" % (r.content_type, r))
        return r.json()

    def assertEventId(self, eid, source=None):
        self.assertIsInstance(eid, str)
        self.assertRegex(eid, EVENT_ID_RE)
        if source:
            self.assertTrue(eid.startswith(source + "_"), eid)

    def assert422(self, r):
        body = self.assertJSONAnswer(r, 422)
        self.assertIsInstance(body.get("detail"), list, body)
        self.assertGreaterEqual(len(body["detail"]), 1, body)
        for d in body["detail"]:
            self.assertIsInstance(d.get("loc"), list, d)
            self.assertIsInstance(d.get("msg"), str, d)
            self.assertTrue(d["msg"], d)
            self.assertIsInstance(d.get("type"), str, d)
        return body

    def seed_id(self, side, coll, record, email_key):
        """Seeds one record in a fake and returns its id."""
        r = self.fakes.seed(side, coll, record)
        if isinstance(r, dict):
            for k in ("id", "databaseId"):
                if r.get(k):
                    return r[k]
            for v in r.values():
                if isinstance(v, dict) and (v.get("id") or v.get("databaseId")):
                    return v.get("id") or v.get("databaseId")
        for rec in self.fakes.records(side, coll):
            if rec.get(email_key) == record[email_key]:
                return rec.get("id") or rec.get("databaseId")
        raise AssertionError("seeded %s record not found in the fake" % coll)

    def seed_contact(self, **kw):
        """A GHL contact that exists in the fake GHL (as a real webhook's
        contact would), with the fake's id; keyword args as ghl_contact()."""
        c = ghl_contact(**kw)
        c.pop("id")
        c["locationId"] = "it-location-1"
        c["id"] = self.seed_id("ghl", "contacts", dict(c), "email")
        return c

    def contacts_with_email(self, email):
        return [c for c in self.fakes.records("ghl", "contacts")
                if (c.get("email") or "").lower() == email.lower()]

    def insureds_with_email(self, email):
        return [i for i in self.fakes.records("nowcerts", "insureds")
                if (i.get("eMail") or i.get("email") or "").lower() == email.lower()]


# ---------------------------------------------------------------- runner

class _Result(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.passed = 0
        self.failed = []
        self._t0 = {}

    def startTest(self, test):
        super().startTest(test)
        self._t0[test] = time.monotonic()
        print("... %s" % test.id().split(".", 1)[-1], flush=True)

    def _secs(self, test):
        return time.monotonic() - self._t0.get(test, time.monotonic())

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1
        print("ok   %s (%.1f s)" % (test.id().split(".", 1)[-1], self._secs(test)), flush=True)

    def _bad(self, kind, test, err, owner=None):
        name = test.id().split(".", 1)[-1] if hasattr(test, "id") else str(test)
        try:
            text = self._exc_info_to_string(err, owner or test)
        except Exception:  # noqa: BLE001 - a report must never crash the runner
            text = "".join(traceback.format_exception(*err))
        # The owner's diagnostics are read at the end: failures are reported
        # before tearDown has collected them.
        self.failed.append((kind, name, text, owner or test))
        print("%s %s" % (kind, name), flush=True)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "FAIL" if issubclass(err[0], test.failureException) else "ERROR"
            self._bad(kind, subtest, err, owner=test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._bad("FAIL", test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._bad("ERROR", test, err)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.failed.append(("UNEXPECTED SUCCESS", test.id(), "", None))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        print("skip %s: %s" % (test.id().split(".", 1)[-1], reason), flush=True)


def main():
    """Runs the calling module's tests (or the names given as arguments,
    e.g. `python3 test_contacts.py ContactTests.test_update_existing`)."""
    module = sys.modules["__main__"]
    loader = unittest.defaultTestLoader
    names = [a for a in sys.argv[1:] if not a.startswith("-")]
    suite = loader.loadTestsFromNames(names, module) if names else loader.loadTestsFromModule(module)
    result = _Result()
    print("ncghl integration: %s (binary %s)" % (Path(module.__file__).name, BIN), flush=True)
    suite.run(result)
    for kind, name, text, owner in result.failed:
        print("\n======== %s: %s\n%s" % (kind, name, text))
        diag = getattr(owner, "diag", "")
        if diag:
            print(diag)
    if result.skipped:
        print("%d skipped" % len(result.skipped))
    print("%d passed, %d failed" % (result.passed, len(result.failed)), flush=True)
    sys.exit(1 if result.failed or result.passed == 0 else 0)
