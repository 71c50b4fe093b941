"""A throwaway PostgreSQL server for ncghl's tests: Debian's `postgresql`
binaries (initdb, pg_ctl), a data directory in a temporary directory, a
free loopback port, trust authentication, stopped and removed at the end
even when a test fails.

PostgreSQL refuses to run as root, so when the suite runs as root (CI) the
server runs as the `postgres` system user the package creates.

Used by tests/integration/harness.py (NCGHL_TEST_STORE=postgresql) and, as
`python3 tests/pgcluster.py run -- CMD...`, around a unit test: CMD runs
with NCGHL_TEST_PG_URL naming a fresh database of a cluster of its own.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid


def _bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        raise RuntimeError("PostgreSQL's initdb not found under /usr/lib/postgresql/*/bin: "
                           "run scripts/deps.sh (package postgresql)")
    return os.path.dirname(found[-1])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One server. `url(db)` names a database of it; every URL carries a
    password (trust authentication never asks for it) so tests can check
    that ncghl never prints it."""

    PASSWORD = "pgtest-secret-%s" % uuid.uuid4().hex[:8]

    def __init__(self):
        self.bindir = _bindir()
        self.dir = tempfile.mkdtemp(prefix="ncghl-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        os.mkdir(self.sock)
        self.port = None
        self.user = None
        self._as = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self.user = "postgres"
            for p in (self.dir, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.db_user = self.user or pwd.getpwuid(os.geteuid()).pw_name
        self.started = False

    def _run(self, *args, check=True, timeout=120):
        return subprocess.run(self._as + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=check, cwd=self.dir)

    def start(self):
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "-U", self.db_user, "--no-sync")
        last = None
        for _ in range(5):
            self.port = _free_port()
            r = self._start()
            if r.returncode == 0:
                self.started = True
                return self
            last = r.stdout.decode(errors="replace") + self.log_tail()
        raise RuntimeError("pg_ctl start failed: %s" % last)

    def _start(self):
        opts = ("-k %s -p %d -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200"
                " -c shared_buffers=16MB" % (self.sock, self.port))
        return self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-t", "60",
                         "-l", os.path.join(self.dir, "server.log"), "-o", opts, "start",
                         check=False)

    def pause(self):
        """Stops the server (fast shutdown: every session is ended), keeping
        its data, as a database restart or an outage does."""
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                  "stop")

    def resume(self):
        """Starts the paused server again, on the same port."""
        r = self._start()
        if r.returncode != 0:
            raise RuntimeError("pg_ctl start failed: %s" % (r.stdout.decode(errors="replace")
                                                           + self.log_tail()))

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def url(self, db, schema=None):
        u = "postgresql://%s:%s@127.0.0.1:%d/%s" % (self.db_user, self.PASSWORD, self.port, db)
        if schema:
            u += "?ncghl_schema=%s" % schema
        return u

    def psql(self, db, sql, timeout=60):
        """Rows of a query as lists of strings (psql -At, tab-separated)."""
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-At", "-F", "\t",
                            "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", self.db_user, "-d", db, "-c", sql],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("psql %r: %s" % (sql, r.stderr.decode(errors="replace")))
        out = r.stdout.decode()
        return [line.split("\t") for line in out.splitlines() if line != ""]

    def createdb(self, name=None):
        name = name or "t_" + uuid.uuid4().hex[:12]
        self.psql("postgres", 'CREATE DATABASE "%s"' % name)
        return name

    def stop(self):
        if self.started:
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                      "-w", "stop", check=False)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)


def main(argv):
    if len(argv) < 3 or argv[1] != "run" or "--" not in argv:
        print("usage: pgcluster.py run -- CMD [ARGS...]", file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1:]
    c = Cluster()
    try:
        c.start()
        env = dict(os.environ)
        env["NCGHL_TEST_PG_URL"] = c.url(c.createdb("ncghl_unit"))
        return subprocess.call(cmd, env=env)
    except Exception as e:  # noqa: BLE001 - the reason is what the log needs
        print("pgcluster: %s\n%s" % (e, c.log_tail()), file=sys.stderr)
        return 1
    finally:
        c.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
