"""SPEC sections 11 and 12: logging never stalls the loop (a LOG_FILE nobody
reads drops lines, counted, instead of blocking webhooks); personal data is
masked in log lines and stored attempt URLs unless LOG_PII=true;
LOG_FORMAT=json gives one JSON object per line."""

import json
import os
import re
import shutil
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import ROOT, IntegTest, nowcerts_event  # noqa: E402

# A route that writes 200 lines of 1 KB each: a few events fill any pipe.
CHATTY = r'''
nowcerts.CHATTY = function(ev)
  local line = string.rep("x", 1000)
  for i = 1, 200 do ncghl.log("info", "chatty " .. i .. " " .. line) end
  return {action = "logged"}
end
'''


def with_routes(test, extra):
    copy = test.tmp / "mappings"
    shutil.copytree(ROOT / "mappings", copy)
    routes = copy / "routes.lua"
    text = routes.read_text()
    cut = text.rstrip().rfind("\nreturn")
    test.assertGreater(cut, 0, "routes.lua does not end in a return")
    routes.write_text(text[:cut] + "\n" + extra + text[cut:])
    return copy


def metric(text, name):
    m = re.search(r"(?m)^%s(?:\{\})? (\S+)$" % re.escape(name), text)
    return float(m.group(1)) if m else None


class StalledLogFile(IntegTest):
    def test_a_fifo_nobody_reads_does_not_block_webhooks(self):
        fifo = self.tmp / "log.fifo"
        os.mkfifo(fifo)
        # Opened for reading (so ncghl can open it) and never read: once the
        # pipe is full, every write to it would block.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        s = self.server({"MAPPINGS_DIR": with_routes(self, CHATTY), "LOG_FILE": fifo,
                         "LOG_LEVEL": "DEBUG"})
        for i in range(40):
            ans = s.nowcerts(nowcerts_event("CHATTY", {"n": i}), timeout=20)
            body = self.assertJSONAnswer(ans, 200)
            self.assertEqual(body["data"].get("action"), "logged", body)
        # Ordinary events still go through while the log is stalled.
        ok = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT"), timeout=20), 200)
        self.assertEqual(ok["data"].get("action"), "created", ok)
        r = s.get("/metrics")
        self.assertEqual(r.status, 200)
        dropped = metric(r.text, "ncghl_log_dropped_total")
        self.assertIsNotNone(dropped, "no ncghl_log_dropped_total in /metrics")
        self.assertGreater(dropped, 0, "8 MB of log lines into a stalled FIFO and none dropped")


class PersonalData(IntegTest):
    def _sync(self, env):
        token = "adm-" + harness.uniq(20)
        env = dict(env, ADMIN_TOKEN=token, LOG_LEVEL="DEBUG")
        s = self.server(env)
        contact = self.seed_contact()
        ans = self.assertJSONAnswer(s.ghl(harness.ghl_event("ContactCreate", contact)), 200)
        eid = ans["event_id"]
        s.wait_event(eid)
        one = self.assertJSONAnswer(
            s.get("/api/v1/events/" + eid, {"Authorization": "Bearer " + token}), 200)
        urls = " ".join(a.get("url") or "" for a in one.get("attempts") or [])
        self.assertIn("InsuredDetailList", urls, "no NowCerts look-up by e-mail among the attempts")
        cli = s.cli("events", "--json", "--limit", "100")
        s.stop()
        # The event's payload is the person's record itself; what must not
        # carry the data is what ncghl wrote about it.
        stored = urls + cli.stdout + json.dumps(one.get("attempts"))
        return contact, s.log_text() + s.stderr_text(), stored

    @staticmethod
    def forms(value):
        return {value, urllib.parse.quote(value, safe=""), urllib.parse.quote(value)}

    def test_email_and_phone_are_masked_unless_log_pii(self):
        contact, log, stored = self._sync({})
        email, phone = contact["email"], contact["phone"]
        for form in self.forms(email) | self.forms(email.split("@")[0]):
            self.assertNotIn(form, log, "the e-mail appears in the log")
            self.assertNotIn(form, stored, "the e-mail appears in a stored attempt URL")
        for form in self.forms(phone) | {phone[2:]}:
            self.assertNotIn(form, log, "the phone number appears in the log")
            self.assertNotIn(form, stored, "the phone number appears in a stored attempt URL")
        # Masked, yet recognisable.
        masked = email[0] + "***"
        self.assertIn(masked, stored)
        self.assertIn(".com", stored)

        # A failing look-up: the event's stored error quotes the request
        # path, whose OData filter holds the e-mail.
        self.tmp = self.tmp / "failing"
        env = {"MAX_RETRIES": 0}
        s = self.server(env)
        contact = self.seed_contact()
        self.fakes.fault("nowcerts", status=400, count=1, path=r"InsuredDetailList", method="GET",
                         body={"message": "bad filter"})
        ans = s.ghl(harness.ghl_event("ContactCreate", contact))
        eid = ans.json()["event_id"]
        ev = s.wait_event(eid, ("dead",))
        shown = s.cli("events", "--json", "--limit", "100").stdout + json.dumps(ev) + ans.text
        self.assertIn("InsuredDetailList", shown)
        for form in self.forms(contact["email"]):
            self.assertNotIn(form, shown, "the e-mail appears in the event's stored error")
        s.stop()

        # LOG_PII=true: shown as they are.
        self.tmp = self.tmp / "pii"
        contact, log, stored = self._sync({"LOG_PII": "true"})
        email = contact["email"]
        self.assertTrue(any(f in log for f in self.forms(email)), "LOG_PII=true: no e-mail in the log")
        self.assertTrue(any(f in stored for f in self.forms(email)),
                        "LOG_PII=true: no e-mail in the attempt URLs")


class JsonFormat(IntegTest):
    def test_one_json_object_per_line(self):
        s = self.server({"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG", "MAX_RETRIES": 0})
        self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 200)
        # A failing event: its lines name it (event=...).
        self.fakes.fault("ghl", status=400, count=1, path=r"^/contacts/?$", method="POST")
        self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT")), 502)
        s.stop()
        lines = [x for x in s.log_text().splitlines() if x.strip()]
        self.assertGreater(len(lines), 3)
        with_event = 0
        for line in lines:
            obj = json.loads(line)
            self.assertIsInstance(obj, dict, line)
            for key in ("ts", "level", "msg"):
                self.assertIn(key, obj, line)
            self.assertIn(obj["level"], ("DEBUG", "INFO", "WARNING", "ERROR"), line)
            self.assertRegex(obj["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            if "event" in obj:
                with_event += 1
                self.assertIn("event=" + obj["event"], obj["msg"])
        self.assertGreater(with_event, 0, "no line carried its event as a field")

    def test_unknown_format_stops_start_up(self):
        s = self.server({"LOG_FORMAT": "xml"}, start=False)
        p = s.cli("serve", timeout=20)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("LOG_FORMAT", p.stderr)


if __name__ == "__main__":
    harness.main()
