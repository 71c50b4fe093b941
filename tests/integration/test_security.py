"""SPEC section 11 and docs/security.md: data at rest and personal data in
logs. The store holds people's names, e-mails, phones and addresses, so its
files are readable by the service's user only (0600, whatever the umask),
and personal data is masked in the log and in stored attempt URLs unless
LOG_PII=true."""

import os
import stat
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, ghl_contact, ghl_event, insured_data, nowcerts_event  # noqa: E402

ADMIN = "security-admin-token"


class DataAtRest(IntegTest):
    def setUp(self):
        super().setUp()
        # A usual umask, so a file created with the default 0644 shows it.
        self._umask = os.umask(0o022)
        self.addCleanup(os.umask, self._umask)

    def _modes(self, db):
        out = {}
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(db) + suffix)
            if p.exists():
                out[p.name] = stat.S_IMODE(p.stat().st_mode)
        return out

    def test_store_files_are_created_owner_only(self):
        """A DB_PATH in a directory that already exists (as /var/lib/ncghl
        would): the store and its -wal/-shm companions are 0600."""
        existing = self.tmp / "var-lib"
        existing.mkdir(mode=0o755)
        db = existing / "ncghl.db"
        s = self.server({"DB_PATH": str(db)})
        self.assertEqual(s.nowcerts(nowcerts_event()).status, 200)
        modes = self._modes(db)
        self.assertIn("ncghl.db", modes)
        for name, mode in modes.items():
            self.assertEqual(mode & 0o077, 0, "%s is created %s: readable beyond its owner"
                             % (name, oct(mode)))

    def test_a_created_store_directory_is_owner_only(self):
        db = self.tmp / "made" / "by" / "ncghl" / "ncghl.db"
        s = self.server({"DB_PATH": str(db)})
        self.assertEqual(s.nowcerts(nowcerts_event()).status, 200)
        for d in (db.parent, db.parent.parent, db.parent.parent.parent):
            mode = stat.S_IMODE(d.stat().st_mode)
            self.assertEqual(mode & 0o077, 0, "%s is created %s" % (d, oct(mode)))


class PersonalData(IntegTest):
    def test_personal_data_is_masked_in_the_log_and_in_attempt_urls(self):
        s = self.server({"LOG_LEVEL": "DEBUG", "ADMIN_TOKEN": ADMIN})
        d = insured_data(first="Zebulon", last="Quackenbush" + harness.uniq(4))
        c = ghl_contact(first="Ignatius", last="Pemberton" + harness.uniq(4))
        r1 = s.nowcerts(nowcerts_event("INSURED_INSERT", d))
        r2 = s.ghl(ghl_event("ContactCreate", c))
        self.assertEqual((r1.status, r2.status), (200, 200), (r1, r2))
        log = s.log_text() + s.stderr_text()
        pii = [d["email"], d["phone"], d["lastName"], c["email"], c["phone"], c["lastName"]]
        leaked = [v for v in pii if v in log]
        urls = []
        for r in (r1, r2):
            show = s.get("/api/v1/events/" + r.json()["event_id"],
                         headers={"Authorization": "Bearer " + ADMIN})
            self.assertEqual(show.status, 200, show)
            urls += [a.get("url") or "" for a in show.json().get("attempts") or []]
        # The search by e-mail puts it in the query string: the stored URL
        # must not keep it (in plain or URL-encoded form).
        in_urls = [v for v in pii for u in urls
                   if v in u or v.replace("@", "%40") in u or v.replace("+", "%2B") in u]
        self.assertEqual(leaked, [], "personal data in the log (LOG_PII unset)")
        self.assertEqual(in_urls, [], "personal data in stored attempt URLs: %r" % urls)


if __name__ == "__main__":
    harness.main()
