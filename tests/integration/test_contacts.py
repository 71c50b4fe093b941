"""SPEC section 6: contacts are upserted, never blindly created; two people
who share a name are never merged; ncghl's own writes are not echoed back."""

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import (IntegTest, ghl_event, insured_data, nowcerts_event,  # noqa: E402
                     rid, uniq)

CREATE_CONTACT = r"^/contacts/?$"
UPDATE_CONTACT = r"^/contacts/[^/]+$"
NC_INSERT = r"/Insured/Insert$"
NC_ONLY_INSERT = r"/Insured/OnlyInsertInsured$"
CREATE_ONLY = ("locationId", "gender", "companyName")


class NowCertsToGhl(IntegTest):
    def test_insured_update_for_known_email_updates_that_contact(self):
        s = self.server()
        email = "known.%s@example.com" % uniq()
        cid = self.seed_id("ghl", "contacts", {
            "firstName": "Old", "lastName": "Name", "email": email, "phone": "+15550000000",
            "locationId": "it-location-1", "companyName": "Old Co", "gender": "female"}, "email")
        before = len(self.fakes.records("ghl", "contacts"))

        data = insured_data(email=email, first="New", last="Person", phone="+15559998888")
        ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_UPDATE", data)), 200)
        self.assertIs(ans.get("success"), True, ans)
        self.assertEqual(ans["data"].get("action"), "updated", ans)
        self.assertEqual(ans["data"].get("contact_id"), cid, ans)
        # The answer shows the contact as written, not as it was found.
        self.assertEqual(ans["data"]["contact"].get("firstName"), "New", ans)

        self.assertEqual(len(self.fakes.records("ghl", "contacts")), before)
        contacts = self.contacts_with_email(email)
        self.assertEqual(len(contacts), 1, contacts)
        self.assertEqual(contacts[0].get("id"), cid)
        self.assertEqual(contacts[0].get("firstName"), "New")
        self.assertEqual(contacts[0].get("lastName"), "Person")
        self.assertEqual(contacts[0].get("city"), "Tampa")

        self.assertEqual(self.fakes.calls("ghl", "POST", CREATE_CONTACT), [])
        puts = self.fakes.calls("ghl", "PUT", UPDATE_CONTACT)
        self.assertGreaterEqual(len(puts), 1)
        for p in puts:
            self.assertEqual(p["path"].rstrip("/").rsplit("/", 1)[-1], cid, p)
            body = harness.req_body(p)
            for f in CREATE_ONLY:
                self.assertNotIn(f, body, "update body carries create-only %s: %r" % (f, body))

    def test_insert_then_update_keeps_one_contact(self):
        s = self.server()
        data = insured_data()
        a = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT", data)), 200)
        self.assertEqual(a["data"].get("action"), "created", a)
        changed = dict(data, lastName="Changed" + uniq(4))
        b = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_UPDATE", changed)), 200)
        self.assertEqual(b["data"].get("action"), "updated", b)
        self.assertEqual(b["data"].get("contact_id"), a["data"].get("contact_id"))
        contacts = self.contacts_with_email(data["email"])
        self.assertEqual(len(contacts), 1, contacts)
        self.assertEqual(contacts[0].get("lastName"), changed["lastName"])
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 1)

    def test_insert_of_existing_email_does_not_duplicate(self):
        # Even an INSERT event is an upsert: GHL already knows the email.
        s = self.server()
        email = "dup.%s@example.com" % uniq()
        cid = self.seed_id("ghl", "contacts", {"firstName": "A", "lastName": "B", "email": email,
                                                "locationId": "it-location-1"}, "email")
        ans = self.assertJSONAnswer(
            s.nowcerts(nowcerts_event("INSURED_INSERT", insured_data(email=email))), 200)
        self.assertEqual(ans["data"].get("action"), "updated", ans)
        self.assertEqual(ans["data"].get("contact_id"), cid)
        self.assertEqual(len(self.contacts_with_email(email)), 1)

    def test_known_insured_id_follows_the_link_when_email_changes(self):
        s = self.server()
        nc_id = "3f0c1a2b-0000-4000-8000-%012x" % int(uniq(12), 16)
        data = insured_data(id=nc_id)
        a = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT", data)), 200)
        cid = a["data"].get("contact_id")
        self.assertTrue(cid, a)
        new_email = "moved.%s@example.com" % uniq()
        b = self.assertJSONAnswer(
            s.nowcerts(nowcerts_event("INSURED_UPDATE", dict(data, email=new_email))), 200)
        self.assertEqual(b["data"].get("action"), "updated", b)
        self.assertEqual(b["data"].get("contact_id"), cid, b)
        contacts = self.fakes.records("ghl", "contacts")
        self.assertEqual(len(contacts), 1, contacts)
        self.assertEqual(contacts[0].get("email"), new_email)


class GhlToNowCerts(IntegTest):
    def test_same_name_different_email_creates_a_new_insured(self):
        s = self.server()
        old_email = "john.smith.%s@example.com" % uniq()
        old = {"firstName": "John", "lastName": "Smith", "eMail": old_email,
               "phone": "(813) 555-0100", "addressLine1": "5 Elm St", "city": "Tampa",
               "state": "FL", "zipCode": "33602", "type": "Insured", "active": True}
        old_id = self.seed_id("nowcerts", "insureds", old, "eMail")
        snapshot = copy.deepcopy([i for i in self.fakes.records("nowcerts", "insureds")
                                  if rid(i) == old_id])
        self.assertEqual(len(snapshot), 1)

        c = self.seed_contact(first="John", last="Smith")
        ans = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c)), 200)
        self.assertIs(ans.get("success"), True, ans)
        self.assertEqual(ans["data"].get("action"), "created", ans)
        self.assertNotEqual(ans["data"].get("insured_id"), old_id, ans)

        insureds = self.fakes.records("nowcerts", "insureds")
        smiths = [i for i in insureds if i.get("firstName") == "John" and i.get("lastName") == "Smith"]
        self.assertEqual(len(smiths), 2, insureds)
        now_old = [i for i in insureds if rid(i) == old_id]
        self.assertEqual(now_old, snapshot, "the existing John Smith was modified")
        self.assertEqual(len(self.insureds_with_email(c["email"])), 1)

        self.assertGreaterEqual(len(self.fakes.calls("nowcerts", "POST", NC_ONLY_INSERT)), 1)
        for r in self.fakes.calls("nowcerts", "POST", NC_INSERT):
            body = harness.req_body(r)
            self.assertTrue(isinstance(body, dict) and body.get("databaseId"),
                            "Insured/Insert without databaseId: %r" % body)

    def test_contact_with_known_email_updates_that_insured(self):
        s = self.server()
        email = "kim.%s@example.com" % uniq()
        ins_id = self.seed_id("nowcerts", "insureds", {
            "firstName": "Kim", "lastName": "Old", "eMail": email, "type": "Insured",
            "active": True}, "eMail")
        c = self.seed_contact(email=email, first="Kim", last="New")
        ans = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c)), 200)
        self.assertEqual(ans["data"].get("action"), "updated", ans)
        self.assertEqual(ans["data"].get("insured_id"), ins_id, ans)
        ins = self.insureds_with_email(email)
        self.assertEqual(len(ins), 1, ins)
        self.assertEqual(ins[0].get("lastName"), "New")
        self.assertEqual(self.fakes.calls("nowcerts", "POST", NC_ONLY_INSERT), [])
        for r in self.fakes.calls("nowcerts", "POST", NC_INSERT):
            self.assertEqual(harness.req_body(r).get("databaseId"), ins_id)

    def test_update_of_linked_contact_sends_database_id(self):
        s = self.server()
        c = self.seed_contact()
        a = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c)), 200)
        ins_id = a["data"].get("insured_id")
        self.assertTrue(ins_id, a)
        changed = dict(c, city="Jacksonville", phone="+15553334444")
        b = self.assertJSONAnswer(s.ghl(ghl_event("ContactUpdate", changed)), 200)
        self.assertEqual(b["data"].get("action"), "updated", b)
        self.assertEqual(b["data"].get("insured_id"), ins_id, b)
        inserts = self.fakes.calls("nowcerts", "POST", NC_INSERT)
        self.assertGreaterEqual(len(inserts), 1)
        for r in inserts:
            self.assertEqual(harness.req_body(r).get("databaseId"), ins_id)
        ins = self.insureds_with_email(c["email"])
        self.assertEqual(len(ins), 1, ins)
        self.assertEqual(ins[0].get("city"), "Jacksonville")


class Echo(IntegTest):
    def test_ghl_echo_of_our_own_write_is_skipped(self):
        s = self.server()
        data = insured_data()
        a = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT", data)), 200)
        cid = a["data"].get("contact_id")
        stored = [c for c in self.fakes.records("ghl", "contacts") if c.get("id") == cid]
        self.assertEqual(len(stored), 1)
        echo = ghl_event("ContactUpdate", dict(stored[0]))
        b = self.assertJSONAnswer(s.ghl(echo), 200)
        self.assertIs(b.get("success"), True, b)
        self.assertEqual(b.get("data", {}).get("action"), "skipped", b)
        self.assertEqual(self.fakes.calls("nowcerts", "POST", NC_INSERT), [])
        self.assertEqual(self.fakes.calls("nowcerts", "POST", NC_ONLY_INSERT), [])
        self.assertEqual(self.fakes.records("nowcerts", "insureds"), [])

    def test_nowcerts_echo_of_our_own_write_is_skipped(self):
        s = self.server()
        c = self.seed_contact()
        contacts_before = self.fakes.records("ghl", "contacts")
        a = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c)), 200)
        self.assertEqual(a["data"].get("action"), "created", a)
        ins_id = a["data"].get("insured_id")
        stored = [i for i in self.fakes.records("nowcerts", "insureds") if rid(i) == ins_id]
        self.assertEqual(len(stored), 1)
        b = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_UPDATE", dict(stored[0]))), 200)
        self.assertIs(b.get("success"), True, b)
        self.assertEqual(b.get("data", {}).get("action"), "skipped", b)
        self.assertEqual(self.fakes.calls("ghl", "POST", CREATE_CONTACT), [])
        self.assertEqual(self.fakes.calls("ghl", "PUT", UPDATE_CONTACT), [])
        # The contact's fields are as the person wrote them; what ncghl added
        # is its own tags for a NowCerts prospect, through the tag endpoint.
        after = self.fakes.records("ghl", "contacts")
        self.assertEqual(len(after), len(contacts_before))
        for old, new in zip(contacts_before, after):
            self.assertEqual({k: v for k, v in old.items() if k not in ("tags", "dateUpdated")},
                             {k: v for k, v in new.items() if k not in ("tags", "dateUpdated")})
        self.assertEqual(sorted(after[0]["tags"]), ["nowcerts", "prospect"])

    def test_a_real_change_after_our_write_is_not_skipped(self):
        # Echo suppression must not swallow a genuine edit on the other side.
        s = self.server()
        data = insured_data()
        a = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT", data)), 200)
        cid = a["data"].get("contact_id")
        stored = [c for c in self.fakes.records("ghl", "contacts") if c.get("id") == cid][0]
        edited = dict(stored, city="Key West")
        b = self.assertJSONAnswer(s.ghl(ghl_event("ContactUpdate", edited)), 200)
        self.assertNotEqual(b.get("data", {}).get("action"), "skipped", b)
        ins = self.insureds_with_email(data["email"])
        self.assertEqual(len(ins), 1, self.fakes.records("nowcerts", "insureds"))
        self.assertEqual(ins[0].get("city"), "Key West")


if __name__ == "__main__":
    harness.main()
