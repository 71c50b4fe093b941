"""SPEC section 4: configuration from the environment and .env files; a bad
value stops start-up with one line naming the variable."""

import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, free_port, nowcerts_event, port_open  # noqa: E402

BAD_VALUES = [
    ("PORT", "abc"),
    ("MAX_RETRIES", "-1"),
    ("MAX_RETRIES", "three"),
    ("LOG_LEVEL", "LOUD"),
    ("MAPPINGS_DIR", "/nonexistent"),
    ("RETRY_INITIAL_DELAY", "-1"),
    ("RETRY_INITIAL_DELAY", "soon"),
    ("RETRY_BACKOFF_FACTOR", "abc"),
    ("WEBHOOK_WAIT_MS", "abc"),
    ("MAX_BODY_BYTES", "big"),
    ("IDEMPOTENCY_TTL", "-5"),
    ("TOKEN_REFRESH_MARGIN", "x"),
    ("NOWCERTS_POLL_INTERVAL", "-1"),
    ("UPSTREAM_TIMEOUT", "abc"),
    ("EVENT_CONCURRENCY", "abc"),
]


class BadValues(IntegTest):
    NEEDS_FAKES = False

    def _refused(self, s, name):
        s.start(wait=False)
        try:
            code = s.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.fail("serve with a bad %s did not exit" % name)
        self.assertNotEqual(code, 0)
        lines = [x for x in s.stderr_text().splitlines() if x.strip()]
        self.assertEqual(len(lines), 1, "stderr should be one line: %r" % lines)
        self.assertIn(name, lines[0])

    def test_bad_value_stops_start_up_naming_the_variable(self):
        for name, value in BAD_VALUES:
            with self.subTest(var=name, value=value):
                s = self.server({name: value}, start=False,
                                workdir=self.tmp / ("%s-%s" % (name, value)))
                self._refused(s, name)

    def test_a_host_port_or_store_it_cannot_use_is_one_line_naming_it(self):
        # Found later than the values' own checks (at the listen and the
        # store's open), still one line on stderr at the default log level.
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        self.addCleanup(busy.close)
        for name, env in (("HOST", {"HOST": "not a host"}),
                          ("DB_PATH", {"DB_PATH": "/proc/nope/x.db"}),
                          ("PORT", {"PORT": str(busy.getsockname()[1])})):
            with self.subTest(var=name):
                env = dict(env, LOG_LEVEL="INFO")
                s = self.server(env, start=False, workdir=self.tmp / ("late-" + name),
                                port=int(env["PORT"]) if "PORT" in env else None)
                if name == "DB_PATH" and s.store_url:
                    continue  # on PostgreSQL, STORE_URL names the store and DB_PATH is unused
                self._refused(s, name)

    def test_bad_value_in_dotenv_is_named_too(self):
        wd = self.tmp / "dotenv-bad"
        wd.mkdir()
        (wd / ".env").write_text("# a comment\n\nMAX_RETRIES=-1\n")
        s = self.server({"MAX_RETRIES": None}, start=False, workdir=wd)
        self._refused(s, "MAX_RETRIES")


class EnvFiles(IntegTest):
    def test_dotenv_in_working_directory_is_read(self):
        wd = self.tmp / "dotenv"
        wd.mkdir()
        port = free_port()
        (wd / ".env").write_text("# ncghl test\n\nPORT=%d\nWEBHOOK_WAIT_MS=0\n" % port)
        s = self.server({"PORT": None, "WEBHOOK_WAIT_MS": None}, start=False, workdir=wd,
                        port=port)
        s.start()
        self.assertEqual(s.port, port)
        # WEBHOOK_WAIT_MS=0 from the file: the answer does not wait.
        self.assertEqual(s.nowcerts(nowcerts_event("INSURED_INSERT")).status, 202)

    def test_environment_wins_over_dotenv(self):
        wd = self.tmp / "dotenv-wins"
        wd.mkdir()
        file_port = free_port()
        (wd / ".env").write_text("PORT=%d\nLOG_LEVEL=LOUD\n" % file_port)
        s = self.server(workdir=wd)  # PORT and LOG_LEVEL=DEBUG in the environment
        self.assertNotEqual(s.port, file_port)
        self.assertFalse(port_open(file_port))

    def test_env_option_reads_the_named_file(self):
        wd = self.tmp / "envopt"
        wd.mkdir()
        port = free_port()
        f = self.tmp / "other.env"
        f.write_text("PORT=%d\n" % port)
        # A .env in the working directory is not read when --env names a file.
        (wd / ".env").write_text("LOG_LEVEL=LOUD\n")
        s = self.server({"PORT": None, "LOG_LEVEL": None}, start=False, workdir=wd, port=port,
                        args=("serve", "--env", str(f)))
        s.start()
        self.assertEqual(s.get("/health").status, 200)


class MisspeltNames(IntegTest):
    def test_a_name_a_typo_away_from_a_setting_is_said_with_the_setting(self):
        # GHL_LOCATON_ID in a .env left GHL_LOCATION_ID unset without a word;
        # a name far from every setting (another tool's) is left alone.
        wd = self.tmp / "typos"
        wd.mkdir()
        (wd / ".env").write_text("GHL_LOCATON_ID=abc\nWEBHOOK_WAIT_MSS=100\nMY_OTHER_APP=1\n")
        s = self.server(workdir=wd)
        text = s.log_text() + s.stderr_text()
        self.assertIn(".env: GHL_LOCATON_ID is not a setting ncghl reads (did you mean "
                      "GHL_LOCATION_ID?); it is ignored", text)
        self.assertIn("did you mean WEBHOOK_WAIT_MS?", text)
        self.assertNotIn("MY_OTHER_APP", text)


class Lifecycle(IntegTest):
    def test_sigterm_exits_cleanly(self):
        s = self.server()
        self.assertEqual(s.stop(), 0)
        self.assertFalse(port_open(s.port))


if __name__ == "__main__":
    harness.main()
