#!/usr/bin/env python3
"""SPEC 10: two-way sync at the field level, judged by what the agency sees
in both systems afterwards. NowCerts changes arrive through the poller (an
agent edits a record in the fake NowCerts' UI), GHL changes through the fake
GHL's own webhooks (an agent edits the contact; GHL also reports every write
ncghl makes, so echoes are real). Each test ends by reading both fakes'
records field by field."""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import IntegTest, ghl_event, http, uniq, wait_until  # noqa: E402

CREATE_CONTACT = r"^/contacts/?$"
UPDATE_CONTACT = r"^/contacts/[^/]+$"
NC_INSERT = r"^/api/Insured/Insert$"
NC_ONLY_INSERT = r"^/api/Insured/OnlyInsertInsured$"
SETTLE = 30


def phone():
    return "813%07d" % (int(uniq(6), 16) % 10000000)


def e164(p):
    digits = "".join(ch for ch in p if ch.isdigit())
    return "+1" + digits[-10:]


class SyncCase(IntegTest):
    """The helpers; no tests of its own."""
    ENV = {"NOWCERTS_POLL_INTERVAL": 1, "GHL_RATE_LIMIT": 0}

    # ---- set-up --------------------------------------------------------------

    def start(self, **env):
        e = dict(self.ENV)
        e.update(env)
        s = self.server(e)
        self.fakes.config("ghl", webhook_url=s.base + "/api/v1/webhooks/ghl")
        self.addCleanup(self.fakes.config, "ghl", webhook_url=None)
        return s

    def insured(self, **extra):
        rec = {"firstName": "Ann", "lastName": "L" + uniq(5), "eMail": "ann.%s@example.com" % uniq(),
               "phone": phone(), "addressLine1": "7 Pine St", "state": "FL", "zipCode": "33603",
               "type": "Insured", "insuredType": "Personal", "active": True}
        rec.update(extra)
        return rec

    def lead(self, **fields):
        """A GHL contact with only the given fields, as a web form makes it."""
        c = dict(fields, locationId="it-location-1")
        c["id"] = self.seed_id("ghl", "contacts", dict(c), "email")
        return c

    def nc(self, ins_id):
        for r in self.fakes.records("nowcerts", "insureds"):
            if harness.rid(r) == ins_id:
                return r
        return None

    def contact(self, cid):
        for c in self.fakes.records("ghl", "contacts"):
            if c.get("id") == cid:
                return c
        return None

    def linked_pair(self, s, **extra):
        """An insured made in NowCerts (seen by the poller) and the contact
        ncghl made for it. Returns (insured id, contact id)."""
        rec = self.insured(**extra)
        ins_id = self.seed_id("nowcerts", "insureds", rec, "eMail")
        wait_until(lambda: self.contacts_with_email(rec["eMail"]), SETTLE, 0.1, "the contact made in GHL")
        cid = self.contacts_with_email(rec["eMail"])[0]["id"]
        self.settle(s)
        return ins_id, cid

    def settle(self, s, quiet=1.5):
        """Waits until no event is pending or running and neither fake got a
        request for `quiet` seconds (echoes and polls included)."""
        last = [None, time.monotonic()]

        def quiet_now():
            n = (len(self.fakes.requests("ghl")), len(self.fakes.calls("nowcerts", "POST")),
                 len(self.fakes.ghl_webhooks()))
            busy = [e for e in s.events() if e["status"] in ("pending", "running")]
            if n != last[0] or busy:
                last[0], last[1] = n, time.monotonic()
                return False
            return time.monotonic() - last[1] >= quiet
        wait_until(quiet_now, SETTLE, 0.2, "the sync to settle")

    def just_after_a_poll(self):
        n = len(self.fakes.calls("nowcerts", "GET", r"/InsuredDetailList"))
        wait_until(lambda: len(self.fakes.calls("nowcerts", "GET", r"/InsuredDetailList")) > n, SETTLE, 0.02,
                   "a poll")

    def agent_nc(self, ins_id, **fields):
        return self.fakes.agent_edit("nowcerts", "insureds", ins_id, fields)

    def agent_ghl(self, cid, **fields):
        return self.fakes.agent_edit("ghl", "contacts", cid, fields)

    def conflicts(self, s):
        p = s.cli("conflicts", "--json")
        self.assertEqual(p.returncode, 0, p)
        return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]



class FieldSync(SyncCase):
    # ---- the cases of issue 7 --------------------------------------------------

    def test_a_city_added_in_ghl_reaches_nowcerts(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)  # synced without a city
        self.assertFalse(self.contact(cid).get("city"))
        self.agent_ghl(cid, city="Tampa")
        wait_until(lambda: self.nc(ins_id).get("city") == "Tampa", SETTLE, 0.2, "the city in NowCerts")
        self.settle(s)
        self.assertEqual(self.nc(ins_id).get("city"), "Tampa")
        self.assertEqual(self.contact(cid).get("city"), "Tampa")
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 1)

    def test_a_cell_phone_added_in_nowcerts_reaches_ghl(self):
        # The person came from GHL without a phone: ncghl made the prospect in
        # NowCerts, and what it wrote there must not hide a phone added later.
        s = self.start()
        c = self.lead(firstName="Cy", lastName="L" + uniq(5), email="cy.%s@example.com" % uniq())
        a = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c)), 200)
        ins_id, cid = a["data"]["insured_id"], c["id"]
        self.settle(s)
        self.assertFalse(self.contact(cid).get("phone"))
        cell = phone()
        self.agent_nc(ins_id, cellPhone=cell)
        wait_until(lambda: self.contact(cid).get("phone") == e164(cell), SETTLE, 0.2, "the phone in GHL")
        self.settle(s)
        self.assertEqual(self.nc(ins_id).get("cellPhone"), cell)
        self.assertEqual(self.contact(cid).get("phone"), e164(cell))

    def test_edits_to_different_fields_on_both_sides_both_survive(self):
        # The NowCerts edit is not polled yet when GHL's arrives: GHL's write
        # to NowCerts must not undo it, and the poller must not then drop the
        # row as ncghl's own change.
        s = self.start(NOWCERTS_POLL_INTERVAL=4)
        ins_id, cid = self.linked_pair(s)
        new_phone, new_email = phone(), "moved.%s@example.com" % uniq()
        self.just_after_a_poll()
        self.agent_nc(ins_id, phone=new_phone)
        self.agent_ghl(cid, email=new_email)
        wait_until(lambda: self.contact(cid).get("phone") == e164(new_phone)
                   and (self.nc(ins_id).get("eMail") or "").lower() == new_email,
                   SETTLE, 0.2, "both edits on both sides")
        self.settle(s)
        n, c = self.nc(ins_id), self.contact(cid)
        self.assertEqual(n["phone"], new_phone)
        self.assertEqual(n["eMail"].lower(), new_email)
        self.assertEqual(c["phone"], e164(new_phone))
        self.assertEqual(c["email"].lower(), new_email)
        self.assertEqual(self.conflicts(s), [])

    def test_tags_people_add_stay_and_a_tag_whose_rule_ended_goes(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s, type="Prospect")
        self.assertEqual(sorted(self.contact(cid)["tags"]), ["nowcerts", "prospect"])
        self.agent_ghl(cid, tags=self.contact(cid)["tags"] + ["vip"])
        self.settle(s)
        self.agent_nc(ins_id, type="Insured")  # the prospect became a customer
        wait_until(lambda: "prospect" not in self.contact(cid)["tags"], SETTLE, 0.2, "prospect removed")
        self.settle(s)
        self.assertEqual(sorted(self.contact(cid)["tags"]), ["nowcerts", "vip"])
        self.assertEqual(self.nc(ins_id)["type"], "Insured")
        # Tags only ever went through the tag endpoints, never a PUT of tags.
        for r in self.fakes.calls("ghl", "PUT", UPDATE_CONTACT):
            self.assertNotIn("tags", harness.req_body(r) or {}, r)

    def test_a_tag_an_agent_set_stays_when_ncghl_stops_wanting_it(self):
        s = self.start()
        # An agent's lead, tagged "prospect" by hand before ncghl saw it.
        c = self.lead(firstName="Tia", lastName="Tag" + uniq(4), email="tia.%s@example.com" % uniq(),
                      tags=["prospect", "hot lead"])
        a = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c)), 200)
        ins_id = a["data"]["insured_id"]
        self.settle(s)
        self.assertEqual(sorted(self.contact(c["id"])["tags"]), ["hot lead", "nowcerts", "prospect"])
        self.agent_nc(ins_id, type="Insured")  # ncghl's rule for "prospect" ends
        self.agent_nc(ins_id, active=False)
        wait_until(lambda: "inactive" in self.contact(c["id"])["tags"], SETTLE, 0.2, "the inactive tag")
        self.settle(s)
        # ncghl never set "prospect": it stays; its own "inactive" comes and goes.
        self.assertEqual(sorted(self.contact(c["id"])["tags"]), ["hot lead", "inactive", "nowcerts", "prospect"])
        self.agent_nc(ins_id, active=True)
        wait_until(lambda: "inactive" not in self.contact(c["id"])["tags"], SETTLE, 0.2, "inactive removed")
        self.settle(s)
        self.assertEqual(sorted(self.contact(c["id"])["tags"]), ["hot lead", "nowcerts", "prospect"])

    def test_a_write_to_nowcerts_keeps_the_fields_ncghl_does_not_map(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s, dateOfBirth="1980-04-02T00:00:00", addressLine2="Apt 4",
                                       eMail2="work.%s@example.com" % uniq(), description="VIP client")
        before = self.nc(ins_id)
        self.agent_ghl(cid, city="Orlando")
        wait_until(lambda: self.nc(ins_id).get("city") == "Orlando", SETTLE, 0.2, "the city in NowCerts")
        self.settle(s)
        after = self.nc(ins_id)
        for f in ("dateOfBirth", "addressLine2", "eMail2", "description", "type", "insuredType", "active"):
            self.assertEqual(after.get(f), before.get(f), f)
        self.assertGreaterEqual(len(self.fakes.calls("nowcerts", "POST", NC_INSERT)), 1)

    def test_a_lead_with_a_first_name_and_a_phone_becomes_a_prospect(self):
        s = self.start()
        c = self.lead(firstName="Lou", phone=e164(phone()))
        body = ghl_event("ContactCreate", c)
        a = self.assertJSONAnswer(s.ghl(body), 200)
        self.assertEqual(a["data"].get("action"), "created", a)
        ins = self.nc(a["data"]["insured_id"])
        self.assertEqual(ins["firstName"], "Lou")
        self.assertEqual(ins["lastName"], "(no last name)")
        self.assertEqual(ins["type"], "Prospect")
        # The stand-in never comes back to GHL.
        self.settle(s)
        self.assertFalse(self.contact(c["id"]).get("lastName"))

    def test_a_contact_with_neither_name_nor_company_is_skipped_with_its_reason(self):
        s = self.start()
        c = self.lead(phone=e164(phone()))
        a = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c)), 200)
        self.assertEqual(a["data"].get("action"), "skipped", a)
        self.assertIn("neither a name nor a company", a["data"].get("reason", ""))
        self.assertEqual(self.fakes.calls("nowcerts", "POST", NC_ONLY_INSERT), [])

    def test_webhooks_of_another_location_are_ignored_and_counted(self):
        s = self.start()
        c = harness.ghl_contact()
        a = self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", c, location="another-sub-account")), 200)
        self.assertEqual(a.get("status"), "ignored", a)
        self.assertEqual(self.fakes.records("nowcerts", "insureds"), [])
        metrics = s.get("/metrics").text
        self.assertRegex(metrics, r'ncghl_ignored_events_total\{reason="other_location"\} 1\b')

    def test_phones_reach_ghl_in_e164(self):
        s = self.start()
        rec = self.insured(phone="(813) 555-0142")
        self.seed_id("nowcerts", "insureds", rec, "eMail")
        wait_until(lambda: self.contacts_with_email(rec["eMail"]), SETTLE, 0.1, "the contact")
        create = self.fakes.calls("ghl", "POST", CREATE_CONTACT)[0]
        self.assertEqual(harness.req_body(create)["phone"], "+18135550142")
        self.assertEqual(self.contacts_with_email(rec["eMail"])[0]["phone"], "+18135550142")

    def test_a_first_link_made_from_ghl_keeps_what_only_nowcerts_has(self):
        # The insured has an address GHL lacks; the contact's webhook (GHL
        # leaves empty fields out) links the two. The address must reach
        # GHL, and the echo of ncghl's writes must not blank it in NowCerts.
        s = self.start(NOWCERTS_POLL_INTERVAL=0)
        email = "mia.%s@example.com" % uniq()
        ins_id = self.seed_id("nowcerts", "insureds", {
            "firstName": "Mia", "lastName": "Case", "eMail": email, "type": "Insured", "active": True,
            "city": "Tampa", "addressLine1": "9 Bay St", "zipCode": "33601"}, "eMail")
        c = self.lead(firstName="Mia", lastName="Case", email=email, phone="+18135550101")
        r = s.ghl(ghl_event("ContactCreate", c))
        self.assertEqual(r.status, 200, r.body)
        self.settle(s)
        nc, gh = self.nc(ins_id), self.contact(c["id"])
        for nc_key, ghl_key, want in (("city", "city", "Tampa"), ("addressLine1", "address1", "9 Bay St"),
                                      ("zipCode", "postalCode", "33601")):
            self.assertEqual(nc.get(nc_key), want, nc)
            self.assertEqual(gh.get(ghl_key), want, gh)
        self.assertEqual(e164(nc.get("phone") or ""), "+18135550101", nc)
        self.assertEqual(len(self.fakes.records("nowcerts", "insureds")), 1)

    def test_a_person_found_by_a_second_email_loses_neither_address(self):
        # Found in NowCerts by eMail2, the contact's e-mail is written as the
        # insured's e-mail; the address it replaces moves to eMail2.
        s = self.start(NOWCERTS_POLL_INTERVAL=0)
        home, work = "kim.%s@home.example" % uniq(), "kim.%s@work.example" % uniq()
        ins_id = self.seed_id("nowcerts", "insureds", {
            "firstName": "Kim", "lastName": "Park", "eMail": home, "eMail2": work, "type": "Insured",
            "active": True}, "eMail")
        c = self.lead(firstName="Kim", lastName="Park", email=work)
        r = s.ghl(ghl_event("ContactCreate", c))
        self.assertEqual(r.status, 200, r.body)
        self.settle(s)
        nc = self.nc(ins_id)
        self.assertEqual(sorted([nc.get("eMail"), nc.get("eMail2")]), sorted([home, work]), nc)
        self.assertEqual(nc.get("eMail"), work, nc)
        self.assertEqual(self.contact(c["id"]).get("email"), work)
        self.assertEqual(len(self.fakes.records("nowcerts", "insureds")), 1)

    def test_a_second_contact_with_a_linked_email_does_not_take_the_insured_over(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s, city="Tampa")
        before = self.nc(ins_id)
        # An agent makes a second contact with the same e-mail in GHL.
        other = self.lead(firstName="Other", lastName="Person", email=before["eMail"], city="Miami")
        r = s.ghl(ghl_event("ContactCreate", other))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["data"]["action"], "skipped", r.json())
        self.assertIn(cid, r.json()["data"]["reason"])
        self.settle(s)
        after = self.nc(ins_id)
        for k in ("firstName", "lastName", "city", "addressLine1", "zipCode", "phone", "state"):
            self.assertEqual(after.get(k), before.get(k), k)
        self.assertEqual(self.contact(cid)["firstName"], "Ann")
        self.assertEqual(self.contact(other["id"])["city"], "Miami")
        rows = harness_db(s, "SELECT ghl_id FROM links WHERE kind = 'contact' AND nowcerts_id = ?",
                          (ins_id.lower(),))
        self.assertEqual(rows, [(cid,)])
        self.assertEqual(len(self.fakes.records("nowcerts", "insureds")), 1)

    def test_a_contact_deleted_in_ghl_is_not_created_again(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        self.fakes.agent_delete("ghl", "contacts", cid)  # GHL sends ContactDelete
        self.settle(s)
        self.agent_nc(ins_id, city="Clearwater")
        self.settle(s, quiet=3)
        self.assertIsNone(self.contact(cid))
        self.assertEqual(self.contacts_with_email(self.nc(ins_id)["eMail"]), [])
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 1)
        self.assertEqual(self.nc(ins_id)["city"], "Clearwater")
        # The change was looked at and left alone, on purpose: not dead.
        updates = [e for e in s.events() if e["source"] == "nowcerts" and e["type"] == "INSURED_UPDATE"]
        self.assertTrue(updates)
        self.assertEqual({e["status"] for e in updates}, {"done"}, updates)

    def _update_results(self, s):
        rows = s.db_query("SELECT id, status, result FROM events WHERE type = ? ORDER BY seq",
                          ("INSURED_UPDATE",))
        return [(r[0], r[1], json.loads(r[2]) if r[2] else {}) for r in rows]

    def test_a_contact_deleted_while_its_update_is_in_flight_is_said_not_sent(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        # GHL takes 2 s over the update; the agent deletes the contact
        # meanwhile, so the PUT meets a contact that is gone.
        self.fakes.fault("ghl", path=r"^/contacts/[^/]+$", method="PUT", count=1, latency_ms=2000)
        reads = len(self.fakes.calls("ghl", "GET", r"^/contacts/" + cid + "$"))
        self.agent_nc(ins_id, city="MidWrite")
        wait_until(lambda: len(self.fakes.calls("ghl", "GET", r"^/contacts/" + cid + "$")) > reads,
                   SETTLE, 0.02, "ncghl's read right before its write")
        time.sleep(0.5)
        self.fakes.agent_delete("ghl", "contacts", cid)
        self.settle(s, quiet=3)
        self.assertIsNone(self.contact(cid))
        self.assertEqual(self.contacts_with_email(self.nc(ins_id)["eMail"]), [], "made again")
        self.assertEqual(self.nc(ins_id)["city"], "MidWrite")
        results = self._update_results(s)
        self.assertTrue(results)
        for eid, status, result in results:
            self.assertEqual(status, 2, results)  # done, not dead
            self.assertNotEqual(result.get("action"), "updated", result)
            # Nothing reached GHL, so the timeline says nothing was sent.
            sent = s.db_query("SELECT field FROM changes WHERE event_id = ? AND action = ?",
                              (eid, "sent"))
            self.assertEqual(sent, [], result)
        self.assertIn("deleted", results[0][2].get("message", "") + results[0][2].get("reason", ""),
                      results)

    def test_an_insured_deleted_while_its_write_is_in_flight_is_skipped_not_dead(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        self.fakes.fault("nowcerts", path=r"/Insured/Insert$", method="POST", count=1,
                         latency_ms=2000)
        inserts = len(self.fakes.calls("nowcerts", "POST", NC_INSERT))
        self.agent_ghl(cid, city="MidWrite")
        wait_until(lambda: len(self.fakes.calls("nowcerts", "GET", r"/InsuredDetailList")) > 0,
                   SETTLE, 0.02, "a read")
        time.sleep(0.6)
        self.fakes.agent_delete("nowcerts", "insureds", ins_id)
        self.settle(s, quiet=3)
        self.assertGreater(len(self.fakes.calls("nowcerts", "POST", NC_INSERT)), inserts,
                           "the write never met the deleted insured")
        ev = [e for e in s.events() if e["source"] == "ghl" and e["type"] == "ContactUpdate"]
        self.assertTrue(ev)
        self.assertEqual({e["status"] for e in ev}, {"done"}, ev)
        self.assertEqual(self.insureds_with_email(self.contact(cid)["email"]), [], "made again")

    def test_a_policy_of_an_insured_whose_contact_was_deleted_is_skipped_not_dead(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        self.fakes.agent_delete("ghl", "contacts", cid)  # GHL sends ContactDelete
        self.settle(s)
        r = s.nowcerts({"event_type": "POLICY_INSERT", "data": {
            "databaseId": "6d45d106-%s-4abc-8abc-%s" % (uniq(4), uniq(12)), "number": "POL-" + uniq(6),
            "lineOfBusinessName": "Auto", "totalPremium": 500, "insuredDatabaseId": ins_id}})
        self.assertEqual(r.status, 200, r.body)
        data = r.json()["data"]
        self.assertEqual(data["action"], "skipped", data)
        self.assertIn("deleted", data["reason"])
        self.settle(s)
        self.assertEqual(self.fakes.records("ghl", "opportunities"), [])
        self.assertEqual(self.contacts_with_email(self.nc(ins_id)["eMail"]), [])

    def test_a_late_change_to_a_deleted_contact_changes_nothing(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s, city="Tampa")
        old = dict(self.contact(cid))
        self.fakes.agent_delete("ghl", "contacts", cid)  # GHL sends ContactDelete
        self.settle(s)
        # GHL's retry of a change made before the deletion arrives now.
        old.update(city="Oldtown", dateUpdated="2025-01-01T00:00:00.000Z")
        r = s.ghl(ghl_event("ContactUpdate", old))
        self.assertEqual(r.status, 200, r.body)
        data = r.json()["data"]
        self.assertEqual(data["action"], "skipped", data)
        self.assertIn("deleted", data["reason"])
        self.settle(s)
        self.assertEqual(self.nc(ins_id)["city"], "Tampa")
        rows = harness_db(s, "SELECT ghl_id FROM links WHERE kind = 'contact' AND nowcerts_id = ?",
                          (ins_id.lower(),))
        self.assertEqual(rows, [])

    def test_a_merged_survivor_is_linked_after_the_contact_is_deleted(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        email = self.nc(ins_id)["eMail"]
        self.fakes.agent_delete("ghl", "contacts", cid)
        self.settle(s)
        # GHL merged the person into another contact that has their e-mail.
        survivor = self.seed_contact(email=email, first="Ann", last=self.nc(ins_id)["lastName"])
        self.agent_nc(ins_id, city="Sarasota")
        wait_until(lambda: self.contact(survivor["id"]).get("city") == "Sarasota", SETTLE, 0.2,
                   "the survivor updated")
        self.settle(s)
        self.assertEqual(len(self.contacts_with_email(email)), 1)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 1)
        rows = harness_db(s, "SELECT ghl_id FROM links WHERE kind = 'contact' AND nowcerts_id = ?",
                          (ins_id.lower(),))
        self.assertEqual(rows, [(survivor["id"],)])

    def test_both_sides_changing_one_field_is_a_recorded_conflict_the_newer_wins(self):
        s = self.start(NOWCERTS_POLL_INTERVAL=5, ADMIN_TOKEN="t0k")
        ins_id, cid = self.linked_pair(s)
        self.fakes.hold_ghl_webhooks()
        nc_phone, ghl_phone = phone(), phone()
        self.just_after_a_poll()  # so that both edits land before the next one
        self.agent_nc(ins_id, phone=nc_phone)
        time.sleep(1.2)  # the GHL edit is the newer one, by the records' own times
        self.agent_ghl(cid, phone=e164(ghl_phone))
        # The poll finds the NowCerts edit and reads GHL: a conflict; GHL wins.
        wait_until(lambda: self.nc(ins_id).get("phone") == e164(ghl_phone), SETTLE, 0.2,
                   "GHL's phone in NowCerts")
        self.fakes.flush_ghl_webhooks()
        self.settle(s)
        self.assertEqual(self.contact(cid)["phone"], e164(ghl_phone))
        self.assertEqual(self.nc(ins_id)["phone"], e164(ghl_phone))
        cs = self.conflicts(s)
        self.assertEqual(len(cs), 1, cs)
        c = cs[0]
        self.assertEqual((c["field"], c["winner"]), ("phone", "ghl"))
        self.assertEqual(c["nowcerts_value"], nc_phone[-10:])
        self.assertEqual(c["ghl_value"], ghl_phone[-10:])
        self.assertEqual(c["nowcerts_id"], ins_id.lower())
        self.assertEqual(c["ghl_id"], cid)
        self.assertGreater(c["ghl_at"], c["nowcerts_at"])
        # The admin API lists it too, and the metric counts it.
        r = http("GET", s.base + "/api/v1/conflicts", headers={"Authorization": "Bearer t0k"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["id"] for x in r.json()["conflicts"]], [c["id"]])
        self.assertEqual(http("GET", s.base + "/api/v1/conflicts").status, 401)
        self.assertRegex(s.get("/metrics").text, r'ncghl_conflicts_total\{kind="contact",winner="ghl"\} 1\b')
        # The person's timeline has both sides' edits of the phone.
        r = http("GET", s.base + "/api/v1/timeline?nowcerts_id=" + ins_id.lower(),
                 headers={"Authorization": "Bearer t0k"})
        actions = {(x["field"], x["side"], x["action"]) for x in r.json()["changes"]}
        self.assertIn(("phone", "ghl", "conflict_won"), actions)
        self.assertIn(("phone", "nowcerts", "conflict_lost"), actions)

    def test_a_record_is_read_after_the_rate_limit_wait_not_before(self):
        # GHL's limit (3 a window here) makes the second update wait ~10 s
        # for its PUT. Read before that wait, an agent's GHL edit made during
        # it was written over and then dropped as "older" (SPEC 10: read
        # right before the write, not before waiting on a rate limit).
        s = self.start()
        pairs = [self.linked_pair(s) for _ in range(2)]
        s.stop()
        s = self.server(dict(self.ENV, GHL_RATE_LIMIT=3), workdir=s.workdir)
        self.fakes.config("ghl", webhook_url=s.base + "/api/v1/webhooks/ghl")
        time.sleep(11)  # the start's own calls leave the window
        self.just_after_a_poll()
        for i, (ins_id, _) in enumerate(pairs):
            self.agent_nc(ins_id, city="NC%d" % i)
        # Both edits are polled and the window fills with the first update's
        # GET and PUT and the second's GET (before the fix) ...
        wait_until(lambda: len(self.fakes.calls("ghl", "GET", r"^/contacts/[^/]+$")) >= 1,
                   SETTLE, 0.05, "the first update's read")
        time.sleep(1.5)
        # ... when an agent edits the second person's city in GHL.
        ins_id, cid = pairs[1]
        self.agent_ghl(cid, city="GHLnewer")
        self.settle(s, quiet=3)
        # The agent's edit, the newer, is on both sides (before the fix:
        # NowCerts' value on both, and no conflict). Whether it met ncghl's
        # update as a conflict depends on which reached ncghl first; one
        # recorded was won by GHL's newer edit.
        self.assertEqual(self.contact(cid)["city"], "GHLnewer")
        self.assertEqual(self.nc(ins_id)["city"], "GHLnewer")
        cs = [c for c in self.conflicts(s) if c["ghl_id"] == cid]
        self.assertIn([(c["field"], c["winner"]) for c in cs], ([], [("city", "ghl")]), cs)
        # The first person's update met no wait and no edit.
        self.assertEqual(self.contact(pairs[0][1])["city"], "NC0")

    def test_a_late_webhook_never_overwrites_a_newer_value(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        self.fakes.hold_ghl_webhooks()
        self.agent_ghl(cid, city="Ocala")
        time.sleep(0.05)
        self.agent_ghl(cid, city="Venice")
        self.fakes.flush_ghl_webhooks(order="lifo")  # the newer one first, the older late
        wait_until(lambda: self.nc(ins_id).get("city") == "Venice", SETTLE, 0.2, "Venice in NowCerts")
        self.settle(s)
        self.assertEqual(self.nc(ins_id)["city"], "Venice")
        self.assertEqual(self.contact(cid)["city"], "Venice")

    def test_a_late_webhook_that_lacks_a_field_never_overwrites_newer_values(self):
        # The late one lacks address1 (added after it), so ncghl reads the
        # contact to learn whether it was cleared; what it read is newer than
        # the webhook's own values, which must not be written under its time.
        s = self.start()
        ins_id, cid = self.linked_pair(s, addressLine1=None)
        self.fakes.hold_ghl_webhooks()
        self.agent_ghl(cid, city="Ocala")
        time.sleep(1.0)
        self.agent_ghl(cid, city="Venice", postalCode="34285")
        time.sleep(1.0)
        self.agent_ghl(cid, address1="5 Bay St")
        self.fakes.flush_ghl_webhooks(order="lifo")  # the newest first, the oldest last
        wait_until(lambda: self.nc(ins_id).get("addressLine1") == "5 Bay St", SETTLE, 0.2,
                   "the newest edit in NowCerts")
        self.settle(s)
        nc, c = self.nc(ins_id), self.contact(cid)
        self.assertEqual((nc["city"], nc["zipCode"], nc["addressLine1"]), ("Venice", "34285", "5 Bay St"))
        self.assertEqual((c["city"], c["postalCode"], c["address1"]), ("Venice", "34285", "5 Bay St"))

    def test_a_merge_survivors_edit_before_the_losers_delete_is_kept(self):
        s = self.start()
        ins_id, a_id = self.linked_pair(s)
        email = self.nc(ins_id)["eMail"]
        b = self.lead(firstName="Ann", lastName=self.nc(ins_id)["lastName"], email=email)
        self.assertJSONAnswer(s.ghl(ghl_event("ContactCreate", b)), 200)  # A holds the insured
        self.settle(s)
        # GHL merges A into B: B's edit, then A's deletion, their webhooks in that order.
        self.fakes.hold_ghl_webhooks()
        self.agent_ghl(b["id"], city="Venice")
        self.fakes.agent_delete("ghl", "contacts", a_id)
        self.fakes.flush_ghl_webhooks(order="fifo")
        wait_until(lambda: self.nc(ins_id).get("city") == "Venice", SETTLE, 0.2, "the survivor's edit")
        self.settle(s)
        self.assertEqual(self.nc(ins_id)["city"], "Venice")
        self.assertEqual(self.contact(b["id"])["city"], "Venice")
        self.assertEqual(len(self.insureds_with_email(email)), 1)

    def test_a_repeated_webhook_changes_nothing(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        self.fakes.config("ghl", webhook_duplicate=1.0)
        self.addCleanup(self.fakes.config, "ghl", webhook_duplicate=0)
        self.agent_ghl(cid, city="Largo")
        wait_until(lambda: self.nc(ins_id).get("city") == "Largo", SETTLE, 0.2, "Largo in NowCerts")
        self.settle(s)
        self.assertEqual(len([r for r in self.fakes.calls("nowcerts", "POST", NC_INSERT)
                              if (harness.req_body(r) or {}).get("city") == "Largo"]), 1)

    def test_a_clear_in_nowcerts_travels_and_a_never_cleared_field_stays(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s, city="Tampa")
        self.assertEqual(self.contact(cid).get("city"), "Tampa")
        self.agent_nc(ins_id, city=None)
        wait_until(lambda: not self.contact(cid).get("city"), SETTLE, 0.2, "the city cleared in GHL")
        last = self.contact(cid)["lastName"]
        self.agent_ghl(cid, lastName=None)  # GHL's webhook leaves it out
        self.settle(s)
        self.assertFalse(self.nc(ins_id).get("city"))
        self.assertEqual(self.nc(ins_id)["lastName"], last)  # map.keep: never cleared

    def test_our_own_writes_come_back_and_stop_there(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        self.agent_ghl(cid, city="Lakeland")
        wait_until(lambda: self.nc(ins_id).get("city") == "Lakeland", SETTLE, 0.2, "Lakeland")
        self.settle(s)
        writes = (len(self.fakes.calls("ghl", "PUT")) + len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)),
                  len(self.fakes.calls("nowcerts", "POST", NC_INSERT)))
        time.sleep(4)  # several polls and any echo webhook
        self.settle(s)
        self.assertEqual((len(self.fakes.calls("ghl", "PUT")) + len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)),
                          len(self.fakes.calls("nowcerts", "POST", NC_INSERT))), writes)

    def test_a_create_whose_answer_was_lost_is_found_not_made_twice(self):
        # GHL makes the contact but the answer comes after ncghl gave up: the
        # next run searches first and links what the lost answer made.
        s = self.start(UPSTREAM_TIMEOUT=1, MAX_RETRIES=1)
        self.fakes.fault("ghl", latency_ms=1800, count=1, path=CREATE_CONTACT, method="POST")
        rec = self.insured()
        self.seed_id("nowcerts", "insureds", rec, "eMail")
        wait_until(lambda: self.contacts_with_email(rec["eMail"]), SETTLE, 0.2, "the contact")
        wait_until(lambda: any(e["status"] == "done" and e["source"] == "nowcerts" and e["attempts"] >= 2
                               for e in s.events()), 60, 0.5, "the re-run to find it")
        self.settle(s)
        self.assertEqual(len(self.contacts_with_email(rec["eMail"])), 1)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 1)


class Lifecycle(SyncCase):
    ENV = {"NOWCERTS_POLL_INTERVAL": 1, "NOWCERTS_DELETED_POLL_INTERVAL": 1, "GHL_RATE_LIMIT": 0}

    def test_a_deleted_insured_tags_its_contact(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        other, other_cid = self.linked_pair(s)
        self.fakes.agent_delete("nowcerts", "insureds", ins_id)  # it moves to DeletedInsuredList
        wait_until(lambda: "deleted in NowCerts" in (self.contact(cid) or {}).get("tags", []), SETTLE, 0.2,
                   "the deleted tag")
        self.settle(s, quiet=3)  # several reads of the deleted list: one event
        self.assertEqual(sorted(self.contact(cid)["tags"]), ["deleted in NowCerts", "nowcerts"])
        self.assertNotIn("deleted in NowCerts", self.contact(other_cid)["tags"])
        deletes = [e for e in s.events() if e["type"] == "INSURED_DELETE"]
        self.assertEqual(len(deletes), 1, deletes)
        self.assertEqual(deletes[0]["status"], "done")

    def test_a_deleted_insureds_contact_edited_before_the_deleted_poll_is_tagged_too(self):
        # The GHL edit finds the insured gone first and ends the link; the
        # deleted-list poll then had no linked contact to tag.
        s = self.start(NOWCERTS_DELETED_POLL_INTERVAL=3600)
        ins_id, cid = self.linked_pair(s)
        self.fakes.agent_delete("nowcerts", "insureds", ins_id)
        self.agent_ghl(cid, city="EditedAfterDelete")
        wait_until(lambda: "deleted in NowCerts" in (self.contact(cid) or {}).get("tags", []), SETTLE,
                   0.2, "the deleted tag")
        self.settle(s)
        self.assertEqual(self.insureds_with_email(self.contact(cid)["email"]), [], "made again")

    def test_an_insured_deleted_and_entered_again_takes_its_contact_back(self):
        # The same person entered again in NowCerts after a delete: the
        # contact, linked to the deleted insured, follows the new one (it
        # was skipped for good as "not taken over" while nothing was left
        # to merge).
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        old = self.nc(ins_id)
        self.fakes.agent_delete("nowcerts", "insureds", ins_id)
        wait_until(lambda: "deleted in NowCerts" in (self.contact(cid) or {}).get("tags", []), SETTLE,
                   0.2, "the deleted tag")
        self.settle(s)
        again = self.insured(eMail=old["eMail"], phone=old["phone"], firstName=old["firstName"],
                             lastName=old["lastName"], city="Reentered")
        new_id = self.seed_id("nowcerts", "insureds", again, "eMail")
        wait_until(lambda: (self.contact(cid) or {}).get("city") == "Reentered", SETTLE, 0.2,
                   "the contact to follow the insured entered again")
        self.settle(s)
        self.assertNotIn("deleted in NowCerts", self.contact(cid)["tags"])
        self.assertEqual(len(self.contacts_with_email(old["eMail"])), 1)
        self.agent_nc(new_id, city="Later")
        wait_until(lambda: self.contact(cid).get("city") == "Later", SETTLE, 0.2,
                   "a later edit of the new insured to reach the contact")

    def test_an_inactive_insured_tags_its_contact_and_active_again_removes_it(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        self.agent_nc(ins_id, active=False)
        wait_until(lambda: "inactive" in self.contact(cid)["tags"], SETTLE, 0.2, "the inactive tag")
        self.agent_nc(ins_id, active=True)
        wait_until(lambda: "inactive" not in self.contact(cid)["tags"], SETTLE, 0.2, "the tag removed")
        self.settle(s)
        self.assertEqual(self.contact(cid)["tags"], ["nowcerts"])

    def test_lifecycle_delete_deletes_the_contact_and_never_recreates_it(self):
        d = self.tmp / "agency"
        d.mkdir()
        (d / "contacts.lua").write_text('local contacts = require "defaults.contacts"\n'
                                        'contacts.lifecycle.deleted = "delete"\n'
                                        'return contacts\n')
        s = self.start(MAPPINGS_DIR=str(d))
        ins_id, cid = self.linked_pair(s)
        self.fakes.agent_delete("nowcerts", "insureds", ins_id)
        wait_until(lambda: self.contact(cid) is None, SETTLE, 0.2, "the contact deleted")
        self.settle(s, quiet=3)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", CREATE_CONTACT)), 1)

    def test_dnd_set_in_ghl_reaches_nowcerts_as_a_tag_and_back_off(self):
        s = self.start()
        ins_id, cid = self.linked_pair(s)
        self.agent_ghl(cid, dnd=True)  # GHL sends ContactDndUpdate
        wait_until(lambda: self.nc_tags(ins_id), SETTLE, 0.2, "a tag on the insured")
        self.assertEqual(self.nc_tags(ins_id)[-1]["tagName"], "GHL: do not disturb")
        self.agent_ghl(cid, dnd=False, dndSettings={"SMS": {"status": "active"}})
        wait_until(lambda: len(self.nc_tags(ins_id)) >= 2, SETTLE, 0.2, "the second tag")
        self.assertEqual(self.nc_tags(ins_id)[-1]["tagDescription"], "Do not disturb in GHL on: SMS")
        self.agent_ghl(cid, dnd=False, dndSettings={"SMS": {"status": "inactive"}})
        wait_until(lambda: len(self.nc_tags(ins_id)) >= 3, SETTLE, 0.2, "the third tag")
        self.assertEqual(self.nc_tags(ins_id)[-1]["tagName"], "GHL: contact allowed")
        self.settle(s)
        self.assertEqual(len(self.nc_tags(ins_id)), 3)  # echoes wrote nothing more
        # The insured itself is whole: the tag rode on a read-modify-write.
        self.assertTrue(self.nc(ins_id)["firstName"])

    def nc_tags(self, ins_id):
        return sorted((t for t in self.fakes.records("nowcerts", "insuredTags")
                       if t["insuredDatabaseId"] == ins_id), key=lambda t: t["at"])


def harness_db(s, sql, args=()):
    return s.db_query(sql, args)


if __name__ == "__main__":
    harness.main()
