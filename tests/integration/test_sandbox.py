"""SPEC sections 2 and 7: `serve --sandbox` runs without any credentials,
with its own fake upstreams, so a newcomer can post a webhook and watch a
contact appear in the fake GHL."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, free_port, http, insured_data, nowcerts_event, port_open  # noqa: E402


class Sandbox(IntegTest):
    NEEDS_FAKES = False

    def test_sandbox_comes_up_and_syncs_into_its_own_fakes(self):
        nc_port, ghl_port = free_port(), free_port()
        env = {"SANDBOX_NOWCERTS_PORT": nc_port, "SANDBOX_GHL_PORT": ghl_port}
        for k in ("NOWCERTS_USERNAME", "NOWCERTS_PASSWORD", "GHL_API_KEY", "GHL_LOCATION_ID",
                  "GHL_WEBHOOK_VERIFY"):
            env[k] = None  # no credentials at all, as after a fresh clone
        s = self.server(env, args=("serve", "--sandbox"))
        body = self.assertJSONAnswer(s.get("/health"), 200)
        self.assertEqual(body.get("status"), "healthy", body)

        data = insured_data()
        ans = s.nowcerts(nowcerts_event("INSURED_INSERT", data))
        self.assertIn(ans.status, (200, 202), ans)
        self.assertIs(ans.json().get("success"), True, ans)

        def appeared():
            r = http("GET", "http://127.0.0.1:%d/_records/contacts" % ghl_port)
            return r.status == 200 and [c for c in r.json() if c.get("email") == data["email"]]
        harness.wait_until(appeared, 20, 0.1, "the contact in the sandbox's fake GHL")

        # Its store is its own, never the real set-up's (DB_PATH is set, as
        # in a real .env beside it): the sandbox once sent a real waiting
        # event to its fake GHL.
        self.assertTrue((Path(s.workdir) / "data" / "sandbox.db").exists())
        self.assertFalse(Path(s.db_path).exists(), "the sandbox opened DB_PATH's store")

        self.assertEqual(s.stop(), 0)
        # The fakes belong to the sandbox: they go when it goes.
        deadline = time.monotonic() + 10
        while (port_open(nc_port) or port_open(ghl_port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(port_open(ghl_port), "sandbox fake GHL outlived the service")
        self.assertFalse(port_open(nc_port), "sandbox fake NowCerts outlived the service")


if __name__ == "__main__":
    harness.main()
