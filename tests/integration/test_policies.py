"""SPEC section 6: policies and quotes become GHL opportunities, attached to
the insured's contact (found, or created first): every event type, both
naming schemes, one opportunity per NowCerts record (updates, quotes bound
as policies, renewals), pipelines by line of business, echoes, upstream
errors, and NowCerts REST-hook deliveries."""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # keep the source tree clean
import harness  # noqa: E402
from harness import IntegTest, ghl_event, insured_data, nowcerts_event, uniq  # noqa: E402


def guid():
    return "6d45d106-%s-4%s-8%s-%s" % (uniq(4), uniq(3), uniq(3), uniq(12))


def mappings_with(tmp, lua):
    """A copy of the shipped mappings whose pipelines.lua ends with `lua`
    (an agency's own settings), and its directory."""
    mapdir = tmp / "mappings"
    shutil.copytree(harness.ROOT / "mappings", mapdir)
    p = mapdir / "pipelines.lua"
    text = p.read_text()
    at = text.rindex("return pipelines")
    p.write_text(text[:at] + lua + "\n" + text[at:])
    return mapdir


class Policies(IntegTest):
    def _post(self, s, event_type, data):
        ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event(event_type, data)), 200)
        self.assertIs(ans.get("success"), True, ans)
        self.assertNotEqual(ans.get("status"), "ignored", "no route handles %s" % event_type)
        return ans

    def _opps(self):
        return self.fakes.records("ghl", "opportunities")

    def _one_opp(self, name):
        opps = [o for o in self._opps() if o.get("name") == name]
        self.assertEqual(len(opps), 1, "opportunities: %r" % self._opps())
        return opps[0]

    def test_policy_becomes_an_opportunity_on_the_existing_contact(self):
        s = self.server()
        c = self.seed_contact()
        number = "POL-" + uniq(6)
        data = {"policyNumber": number, "policyType": "Auto", "premium": 1500.0,
                "carrier": "Progressive", "effectiveDate": "2024-01-01",
                "expirationDate": "2025-01-01", "insuredEmail": c["email"]}
        self._post(s, "POLICY_INSERT", data)
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual(float(opp.get("monetaryValue")), 1500.0)
        self.assertEqual(opp.get("contactId"), c["id"])
        self.assertTrue(opp.get("pipelineId"), opp)
        custom = json.dumps(opp.get("customFields"))
        self.assertIn(number, custom)
        self.assertIn("Progressive", custom)
        self.assertEqual(len(self.contacts_with_email(c["email"])), 1)

    def test_nowcerts_real_policy_names(self):
        s = self.server()
        c = self.seed_contact()
        number = "H-" + uniq(6)
        data = {"databaseId": guid(), "number": number, "lineOfBusinessName": "Homeowners",
                "totalPremium": 980.5, "carrierName": "Citizens",
                "effectiveDate": "2024-02-01T00:00:00-05:00",
                "expirationDate": "2025-02-01T00:00:00-05:00", "insuredEmail": c["email"]}
        self._post(s, "POLICY_INSERT", data)
        opp = self._one_opp("Homeowners Policy - %s" % number)
        self.assertEqual(float(opp.get("monetaryValue")), 980.5)
        self.assertEqual(opp.get("contactId"), c["id"])

    def test_policy_for_an_unknown_insured_creates_the_contact_first(self):
        s = self.server()
        email = "newpol.%s@example.com" % uniq()
        number = "POL-" + uniq(6)
        data = {"policyNumber": number, "policyType": "Auto", "premium": 700,
                "insuredEmail": email, "insuredFirstName": "Nia", "insuredLastName": "Q" + uniq(4)}
        self._post(s, "POLICY_INSERT", data)
        contacts = self.contacts_with_email(email)
        self.assertEqual(len(contacts), 1, self.fakes.records("ghl", "contacts"))
        self.assertEqual(self._one_opp("Auto Policy - %s" % number).get("contactId"),
                         contacts[0]["id"])

    def test_policy_names_its_insured_by_database_id(self):
        s = self.server()
        ins_id = guid()
        a = self.assertJSONAnswer(
            s.nowcerts(nowcerts_event("INSURED_INSERT", insured_data(id=ins_id))), 200)
        cid = a["data"]["contact_id"]
        number = "POL-" + uniq(6)
        data = {"policyNumber": number, "policyType": "Auto", "premium": 321,
                "insuredDatabaseId": ins_id}
        self._post(s, "POLICY_INSERT", data)
        self.assertEqual(self._one_opp("Auto Policy - %s" % number).get("contactId"), cid)
        self.assertEqual(len(self.fakes.records("ghl", "contacts")), 1)

    def test_policy_update_updates_the_same_opportunity(self):
        s = self.server()
        c = self.seed_contact()
        pid, number = guid(), "POL-" + uniq(6)
        data = {"id": pid, "policyNumber": number, "policyType": "Auto", "premium": 1000,
                "insuredEmail": c["email"]}
        self._post(s, "POLICY_INSERT", data)
        first = self._one_opp("Auto Policy - %s" % number)
        self._post(s, "POLICY_UPDATE", dict(data, premium=1250))
        self.assertEqual(len(self._opps()), 1, self._opps())
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual(opp.get("id"), first.get("id"))
        self.assertEqual(float(opp.get("monetaryValue")), 1250.0)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", r"^/opportunities/?$")), 1)

    def test_quote_becomes_an_opportunity(self):
        s = self.server()
        c = self.seed_contact()
        number = "Q-" + uniq(6)
        data = {"policyNumber": number, "policyType": "Auto", "premium": 450,
                "insuredEmail": c["email"]}
        self._post(s, "QUOTE_INSERT", data)
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual(opp.get("contactId"), c["id"])
        # A quote update (no NowCerts id: found by its number) changes the
        # same opportunity, which stays at the quote stage.
        self._post(s, "QUOTE_UPDATE", dict(data, premium=475))
        again = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual(again["id"], opp["id"])
        self.assertEqual(float(again["monetaryValue"]), 475.0)
        self.assertEqual((again["pipelineId"], again["pipelineStageId"]),
                         self._stage("Personal Lines", "Quoted"))

    # -- helpers for the tests below ------------------------------------------

    def _stage(self, pipeline, stage):
        """(pipeline id, stage id) of the fake GHL's seeded pipelines."""
        for pl in self.fakes.records("ghl", "pipelines"):
            if pl.get("name") == pipeline:
                for st in pl.get("stages") or []:
                    if st.get("name") == stage:
                        return pl["id"], st["id"]
        raise AssertionError("the fake GHL has no %s / %s" % (pipeline, stage))

    def _ghl_put(self, path, body):
        """A change made in GHL by a person (straight to the fake's API)."""
        r = harness.http("PUT", self.fakes.base("ghl") + path, body,
                         {"Authorization": "Bearer agent", "Version": harness.GHL_VERSION})
        self.assertEqual(r.status, 200, r)
        return r.json()

    # -- quotes, policies and the same opportunity ----------------------------

    def test_quote_that_becomes_a_policy_moves_its_opportunity(self):
        s = self.server()
        c = self.seed_contact()
        qid, number = guid(), "Q-" + uniq(6)
        quote = {"databaseId": qid, "number": number, "isQuote": True,
                 "lineOfBusinessName": "Auto", "totalPremium": 600, "insuredEmail": c["email"]}
        self._post(s, "QUOTE_INSERT", quote)
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual((opp["pipelineId"], opp["pipelineStageId"]), self._stage("Personal Lines", "Quoted"))
        ans = self._post(s, "POLICY_UPDATE", dict(quote, isQuote=False, totalPremium=640))
        self.assertEqual(ans["data"]["action"], "updated", ans)
        self.assertEqual(len(self._opps()), 1, self._opps())
        moved = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual(moved["id"], opp["id"])
        self.assertEqual((moved["pipelineId"], moved["pipelineStageId"]), self._stage("Personal Lines", "Bound"))
        self.assertEqual(float(moved["monetaryValue"]), 640.0)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", r"^/opportunities/?$")), 1)

    def test_quote_bound_as_a_new_policy_record_moves_and_stays_bound(self):
        """NowCerts may bind a quote as a new record with the same number:
        the quote's opportunity moves; the quote's late update does not move
        it back."""
        s = self.server()
        c = self.seed_contact()
        number = "Q-" + uniq(6)
        quote = {"databaseId": guid(), "number": number, "lineOfBusinessName": "Homeowners",
                 "premium": 900, "insuredEmail": c["email"]}
        self._post(s, "QUOTE_INSERT", quote)
        policy = dict(quote, databaseId=guid(), premium=950)
        ans = self._post(s, "POLICY_INSERT", policy)
        self.assertEqual(ans["data"]["found_by"], "quote", ans)
        bound = self._stage("Personal Lines", "Bound")
        opp = self._one_opp("Homeowners Policy - %s" % number)
        self.assertEqual((opp["pipelineId"], opp["pipelineStageId"]), bound)
        late = self._post(s, "QUOTE_UPDATE", dict(quote, premium=905))
        self.assertEqual(late["data"]["action"], "skipped", late)
        opp = self._one_opp("Homeowners Policy - %s" % number)
        self.assertEqual((opp["pipelineId"], opp["pipelineStageId"]), bound)
        self.assertEqual(float(opp["monetaryValue"]), 950.0)
        self.assertEqual(len(self._opps()), 1, self._opps())

    def test_renewal_with_the_same_number_gets_its_own_opportunity(self):
        s = self.server()
        c = self.seed_contact()
        number = "R-" + uniq(6)
        term1 = {"databaseId": guid(), "number": number, "lineOfBusinessName": "Auto",
                 "premium": 1000, "insuredEmail": c["email"], "effectiveDate": "2024-01-01"}
        self._post(s, "POLICY_INSERT", term1)
        self._post(s, "POLICY_INSERT", dict(term1, databaseId=guid(), premium=1100,
                                            effectiveDate="2025-01-01"))
        opps = [o for o in self._opps() if o.get("name") == "Auto Policy - %s" % number]
        self.assertEqual(sorted(float(o["monetaryValue"]) for o in opps), [1000.0, 1100.0], opps)

    def test_resend_without_a_nowcerts_id_updates_by_number(self):
        s = self.server()
        c = self.seed_contact()
        number = "POL-" + uniq(6)
        data = {"policyNumber": number, "policyType": "Auto", "premium": 500,
                "insuredEmail": c["email"]}
        self._post(s, "POLICY_INSERT", data)
        ans = self._post(s, "POLICY_UPDATE", dict(data, premium=525))
        self.assertEqual(ans["data"]["found_by"], "number", ans)
        self.assertEqual(float(self._one_opp("Auto Policy - %s" % number)["monetaryValue"]), 525.0)
        self.assertEqual(len(self.fakes.calls("ghl", "POST", r"^/opportunities/?$")), 1)
        # The update is an UpdateOpportunityDto: no contactId or locationId
        # (the fake answers 422 to them, as GHL does).
        put = self.fakes.calls("ghl", "PUT", r"^/opportunities/")
        self.assertEqual(len(put), 1, put)
        body = harness.req_body(put[0])
        self.assertNotIn("contactId", body)
        self.assertNotIn("locationId", body)

    def test_two_insureds_policies_with_one_number_stay_two_opportunities(self):
        # Policy numbers are unique per carrier, not across a book: two
        # records without a NowCerts id, one number, two people.
        s = self.server()
        x, y = self.seed_contact(), self.seed_contact()
        number = "100" + uniq(6)
        auto = {"policyNumber": number, "policyType": "Auto", "premium": 400,
                "carrier": "Progressive", "insuredEmail": x["email"]}
        home = {"policyNumber": number, "policyType": "Home", "premium": 900,
                "carrier": "Allstate", "insuredEmail": y["email"]}
        self._post(s, "POLICY_INSERT", auto)
        self._post(s, "POLICY_INSERT", home)
        a = self._one_opp("Auto Policy - %s" % number)
        h = self._one_opp("Home Policy - %s" % number)
        self.assertEqual((a.get("contactId"), float(a["monetaryValue"])), (x["id"], 400.0))
        self.assertEqual((h.get("contactId"), float(h["monetaryValue"])), (y["id"], 900.0))
        # Each one's update reaches its own opportunity, and no third is made.
        self._post(s, "POLICY_UPDATE", dict(auto, premium=450))
        self._post(s, "POLICY_UPDATE", dict(home, premium=950))
        self.assertEqual(float(self._one_opp("Auto Policy - %s" % number)["monetaryValue"]), 450.0)
        self.assertEqual(float(self._one_opp("Home Policy - %s" % number)["monetaryValue"]), 950.0)
        self.assertEqual(len([o for o in self._opps() if number in o.get("name", "")]), 2)

    def test_a_late_relay_dated_only_by_its_event_timestamp_changes_nothing(self):
        s = self.server()
        c = self.seed_contact()
        number = "P-" + uniq(6)
        base = {"policyNumber": number, "policyType": "Auto", "insuredEmail": c["email"]}

        def post(ts, **data):
            ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event("POLICY_UPDATE", dict(base, **data),
                                                                  timestamp=ts)), 200)
            return ans["data"]
        post("2026-03-01T10:00:00Z", status="Active", premium=100)
        post("2026-03-01T10:05:00Z", status="Cancelled", premium=110)
        late = post("2026-03-01T10:02:00Z", status="Active", premium=105)
        self.assertEqual(late.get("action"), "skipped", late)
        self.assertIn("the event's timestamp", late.get("reason", ""))
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual((opp.get("status"), float(opp["monetaryValue"])), ("lost", 110.0))

    def test_a_carrier_cleared_in_nowcerts_is_cleared_in_ghl(self):
        s = self.server()
        c = self.seed_contact()
        pid = "77777777-0000-4000-8000-%012x" % int(uniq(12), 16)
        number = "PT-" + uniq(6)
        data = {"databaseId": pid, "number": number, "lineOfBusinessName": "Auto", "totalPremium": 350,
                "carrierName": "Geico", "insuredEmail": c["email"]}
        self._post(s, "POLICY_INSERT", data)
        self.assertIn("Geico", json.dumps(self._one_opp("Auto Policy - %s" % number)["customFields"]))
        self._post(s, "POLICY_UPDATE", dict(data, carrierName=""))
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertNotIn("Geico", json.dumps(opp["customFields"]))
        self.assertIn(number, json.dumps(opp["customFields"]))  # what it did not clear stays
        self.assertEqual(float(opp["monetaryValue"]), 350.0)

    def test_an_update_keeps_a_stage_and_status_an_agent_set_in_ghl(self):
        s = self.server()
        c = self.seed_contact()
        pid, number = guid(), "POL-" + uniq(6)
        data = {"databaseId": pid, "number": number, "lineOfBusinessName": "Auto",
                "totalPremium": 700, "insuredEmail": c["email"]}
        self._post(s, "POLICY_INSERT", data)
        opp = self._one_opp("Auto Policy - %s" % number)
        _, new_stage = self._stage("Personal Lines", "New")
        self._ghl_put("/opportunities/%s" % opp["id"], {"pipelineStageId": new_stage, "status": "won"})
        self._post(s, "POLICY_UPDATE", dict(data, totalPremium=720))
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual(float(opp["monetaryValue"]), 720.0)
        self.assertEqual(opp["pipelineStageId"], new_stage)
        self.assertEqual(opp["status"], "won")

    def _acme_auto_policy(self, s, changed):
        """An Auto policy (500, carrier Acme) on a contact GHL has, sent as
        POLICY_INSERT with changeDate `changed`: (its data, its number)."""
        c = self.seed_contact()
        number = "POL-" + uniq(6)
        data = {"databaseId": guid(), "number": number, "lineOfBusinessName": "Auto", "totalPremium": 500,
                "carrierName": "Acme", "insuredEmail": c["email"], "changeDate": changed}
        self._post(s, "POLICY_INSERT", data)
        return data, number

    def test_an_update_sends_only_what_changed_so_an_agents_name_and_value_stay(self):
        # SPEC 10: the opportunity is synced field by field, like a contact.
        s = self.server()
        data, number = self._acme_auto_policy(s, "2026-03-01T10:00:00Z")
        opp = self._one_opp("Auto Policy - %s" % number)
        self._ghl_put("/opportunities/%s" % opp["id"], {"name": "Agent renamed", "monetaryValue": 999})
        ans = self._post(s, "POLICY_UPDATE", dict(data, carrierName="Beta Ins",
                                                  changeDate="2026-03-02T10:00:00Z"))
        self.assertEqual(ans["data"]["action"], "updated", ans)
        opp = self._one_opp("Agent renamed")
        self.assertEqual(float(opp["monetaryValue"]), 999.0)
        self.assertIn("Beta Ins", [f.get("fieldValue") for f in opp.get("customFields") or []], opp)
        # The same record again (a field no map reads aside): nothing to send.
        ans = self._post(s, "POLICY_UPDATE", dict(data, carrierName="Beta Ins", description="again",
                                                  changeDate="2026-03-02T10:00:00Z"))
        self.assertEqual(ans["data"]["action"], "unchanged", ans)
        # A premium change travels, the agent's name still stays.
        self._post(s, "POLICY_UPDATE", dict(data, carrierName="Beta Ins", totalPremium=650,
                                            changeDate="2026-03-03T10:00:00Z"))
        opp = self._one_opp("Agent renamed")
        self.assertEqual(float(opp["monetaryValue"]), 650.0)

    def test_a_late_copy_of_an_older_policy_changes_nothing(self):
        s = self.server()
        data, number = self._acme_auto_policy(s, "2026-03-02T10:00:00Z")
        late = dict(data, totalPremium=100, carrierName="OldCarrier", changeDate="2026-03-01T10:00:00Z")
        ans = self._post(s, "POLICY_UPDATE", late)
        self.assertEqual(ans["data"]["action"], "skipped", ans)
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual(float(opp["monetaryValue"]), 500.0)
        self.assertIn("Acme", [f.get("fieldValue") for f in opp.get("customFields") or []], opp)
        self.assertEqual(len(self._opps()), 1)

    # -- pipelines -------------------------------------------------------------

    def test_commercial_lines_go_to_the_commercial_pipeline(self):
        s = self.server()
        c = self.seed_contact()
        number = "GL-" + uniq(6)
        self._post(s, "POLICY_INSERT", {"number": number, "lineOfBusinessName": "General Liability",
                                        "totalPremium": 2500, "insuredEmail": c["email"]})
        opp = self._one_opp("General Liability Policy - %s" % number)
        self.assertEqual((opp["pipelineId"], opp["pipelineStageId"]),
                         self._stage("Commercial Lines", "Bound"))
        # The pipelines were read once, not once per event.
        self._post(s, "POLICY_INSERT", {"number": number + "-2", "lineOfBusinessName": "Auto",
                                        "totalPremium": 1, "insuredEmail": c["email"]})
        self.assertEqual(len(self.fakes.calls("ghl", "GET", r"^/opportunities/pipelines")), 1)

    def test_a_pipeline_ghl_does_not_have_fails_the_event_naming_it(self):
        s = self.server(env={"MAPPINGS_DIR": str(mappings_with(
            self.tmp, 'pipelines.by_line = { { pipeline = "Life and Health" } }'))})
        c = self.seed_contact()
        r = s.nowcerts(nowcerts_event("POLICY_INSERT", {
            "policyNumber": "L-" + uniq(6), "policyType": "Auto", "premium": 1,
            "insuredEmail": c["email"]}))
        body = self.assertJSONAnswer(r, 502)
        self.assertEqual(body.get("status"), "dead", body)
        self.assertIn('no pipeline named "Life and Health"', body.get("error", ""))
        self.assertIn("Personal Lines", body.get("error", ""))
        self.assertEqual(self._opps(), [])
        # Read once at the miss... and once more: the names GHL has may just
        # have changed.
        self.assertEqual(len(self.fakes.calls("ghl", "GET", r"^/opportunities/pipelines")), 1)

    # -- the insured -----------------------------------------------------------

    def test_insured_known_only_by_id_is_read_from_nowcerts(self):
        s = self.server()
        email = "only.id.%s@example.com" % uniq()
        ins = self.fakes.seed("nowcerts", "insureds", {
            "firstName": "Omar", "lastName": "Idd" + uniq(4), "eMail": email,
            "cellPhone": "555-010-%04d" % (int(uniq(4), 16) % 10000), "type": 0, "insuredType": 1,
            "active": True})
        ins_id = harness.rid(ins)
        number = "POL-" + uniq(6)
        self._post(s, "POLICY_INSERT", {"number": number, "lineOfBusinessName": "Auto",
                                        "premium": 10, "insuredDatabaseId": ins_id})
        contacts = self.contacts_with_email(email)
        self.assertEqual(len(contacts), 1, self.fakes.records("ghl", "contacts"))
        self.assertEqual(contacts[0].get("firstName"), "Omar")
        self.assertEqual(self._one_opp("Auto Policy - %s" % number)["contactId"], contacts[0]["id"])
        self.assertEqual(len(self.fakes.calls("nowcerts", "GET", r"InsuredDetailList")), 1)
        # The link is stored: the next policy of that insured asks nobody.
        self._post(s, "POLICY_INSERT", {"number": number + "-B", "lineOfBusinessName": "Auto",
                                        "premium": 20, "insuredDatabaseId": ins_id.upper()})
        self.assertEqual(len(self.fakes.calls("nowcerts", "GET", r"InsuredDetailList")), 1)
        self.assertEqual(len(self.contacts_with_email(email)), 1)

    def _nc_insured(self, first, last, email):
        ins = self.fakes.seed("nowcerts", "insureds", {
            "firstName": first, "lastName": last, "eMail": email, "type": 0, "insuredType": 1,
            "active": True})
        return harness.rid(ins)

    def test_a_policy_of_one_of_two_people_who_share_a_name_goes_on_its_own_contact(self):
        s = self.server()
        last = "Smith" + uniq(4)
        a_mail, b_mail = "sam1.%s@example.com" % uniq(), "sam2.%s@example.com" % uniq()
        a_id, b_id = self._nc_insured("Sam", last, a_mail), self._nc_insured("Sam", last, b_mail)
        a = nowcerts_event("INSURED_INSERT", {"id": a_id, "firstName": "Sam", "lastName": last,
                                              "eMail": a_mail})
        self.assertJSONAnswer(s.nowcerts(a), 200)
        [ca] = self.contacts_with_email(a_mail)
        number = "SB-" + uniq(6)
        self._post(s, "POLICY_INSERT", {"number": number, "lineOfBusinessName": "Auto", "premium": 5,
                                        "insuredDatabaseId": b_id, "insuredFirstName": "Sam",
                                        "insuredLastName": last})
        [cb] = self.contacts_with_email(b_mail)
        self.assertNotEqual(ca["id"], cb["id"])
        self.assertEqual(self._one_opp("Auto Policy - %s" % number)["contactId"], cb["id"])
        # A's contact is still A's: its change reaches it, B's address untouched.
        self.fakes.agent_edit("nowcerts", "insureds", a_id, {"city": "Dunedin"})
        moved = dict(a["data"], city="Dunedin")
        upd = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_UPDATE", moved)), 200)
        self.assertEqual(self.contacts_with_email(a_mail)[0].get("city"), "Dunedin", upd)
        self.assertEqual(self.contacts_with_email(b_mail)[0]["id"], cb["id"])

    def test_a_new_policy_of_an_insured_whose_contact_was_deleted_makes_no_contact(self):
        s = self.server()
        email, last = "del.%s@example.com" % uniq(), "Two" + uniq(4)
        ins_id = self._nc_insured("Del", last, email)
        # Policy rows repeat their insured's name and e-mail (NOTES 5).
        who = {"insuredDatabaseId": ins_id, "insuredFirstName": "Del", "insuredLastName": last,
               "insuredEmail": email}
        self._post(s, "POLICY_INSERT", dict(who, number="Y-" + uniq(6), lineOfBusinessName="Auto",
                                            premium=5))
        [c] = self.contacts_with_email(email)
        self.fakes.agent_delete("ghl", "contacts", c["id"])
        gone = self.assertJSONAnswer(s.ghl(ghl_event("ContactDelete", {"id": c["id"]})), 200)
        self.assertIn("unlinked", json.dumps(gone))
        ans = self._post(s, "POLICY_INSERT", dict(who, number="Y-" + uniq(6), lineOfBusinessName="Auto",
                                                  premium=6))
        self.assertEqual(ans["data"].get("action"), "skipped", ans)
        self.assertEqual(self.contacts_with_email(email), [])

    def test_a_policy_of_an_insured_whose_contact_went_without_a_webhook_is_skipped(self):
        s = self.server()
        email, last = "gone.%s@example.com" % uniq(), "Gone" + uniq(4)
        ins_id = self._nc_insured("Ida", last, email)
        self._post(s, "POLICY_INSERT", {"number": "G-" + uniq(6), "lineOfBusinessName": "Auto",
                                        "premium": 5, "insuredDatabaseId": ins_id})
        [c] = self.contacts_with_email(email)
        self.fakes.agent_delete("ghl", "contacts", c["id"])  # and GHL says nothing
        ans = self._post(s, "POLICY_INSERT", {"number": "G-" + uniq(6), "lineOfBusinessName": "Auto",
                                              "premium": 6, "insuredDatabaseId": ins_id})
        self.assertEqual(ans["data"].get("action"), "skipped", ans)
        self.assertIn("deleted", ans["data"].get("reason", ""), ans)
        self.assertEqual(self.contacts_with_email(email), [])
        self.assertEqual(len(self._opps()), 1)

    def test_insured_named_only_by_name_is_not_created_twice(self):
        s = self.server()
        last = "Nm" + uniq(6)
        data = {"policyNumber": "POL-" + uniq(6), "policyType": "Renters", "premium": 90,
                "insuredFirstName": "Ana", "insuredLastName": last}
        self._post(s, "POLICY_INSERT", data)
        self._post(s, "POLICY_INSERT", dict(data, policyNumber="POL-" + uniq(6)))
        named = [c for c in self.fakes.records("ghl", "contacts") if c.get("lastName") == last]
        self.assertEqual(len(named), 1, named)
        self.assertEqual(len([o for o in self._opps() if o.get("contactId") == named[0]["id"]]), 2)

    # -- echoes ------------------------------------------------------------------

    def test_ghl_opportunity_webhook_of_our_own_write_is_skipped(self):
        s = self.server()
        c = self.seed_contact()
        number = "POL-" + uniq(6)
        self._post(s, "POLICY_INSERT", {"policyNumber": number, "policyType": "Auto",
                                        "premium": 1500, "insuredEmail": c["email"]})
        opp = self._one_opp("Auto Policy - %s" % number)
        fields = {k: opp[k] for k in ("id", "name", "monetaryValue", "pipelineId",
                                      "pipelineStageId", "status", "contactId", "assignedTo",
                                      "source")}
        echo = self.assertJSONAnswer(s.ghl(harness.ghl_event("OpportunityCreate", fields)), 200)
        self.assertEqual(echo.get("data", {}).get("action"), "skipped", echo)
        # A change a person made in GHL is not ours: ignored, nothing written.
        before = len(self.fakes.requests("ghl"))
        _, new_stage = self._stage("Personal Lines", "New")
        other = self.assertJSONAnswer(s.ghl(harness.ghl_event(
            "OpportunityStageUpdate", dict(fields, pipelineStageId=new_stage))), 200)
        self.assertEqual(other.get("status"), "ignored", other)
        self.assertEqual(len(self.fakes.requests("ghl")), before)

    def test_a_manual_sync_from_ghl_writes_the_policy_and_quote_to_nowcerts(self):
        s = self.server()
        email = "manual.%s@example.com" % uniq()
        ins = self.seed_id("nowcerts", "insureds",
                           {"firstName": "Mae", "lastName": "Nual", "eMail": email, "type": "Insured",
                            "active": True}, "eMail")
        number = "MP-" + uniq(6)
        data = {"policyNumber": number, "policyType": "Auto", "premium": 100, "carrier": "Progressive",
                "effectiveDate": "2024-01-01", "expirationDate": "2025-01-01", "insuredEmail": email}
        body = {"source": "ghl", "entity_type": "policy", "direction": "to_nowcerts", "data": data}
        ans = self.assertJSONAnswer(s.manual(body), 200)
        self.assertEqual(ans["data"].get("action"), "written", ans)

        def theirs(n):
            return [p for p in self.fakes.records("nowcerts", "policies") if p.get("number") == n]
        [p] = theirs(number)
        self.assertEqual((p["insuredDatabaseId"], p["carrierName"], float(p["totalPremium"]), p["isQuote"]),
                         (ins, "Progressive", 100.0, False))
        self.assertEqual([x.get("lineOfBusinessName") for x in p["lineOfBusinesses"]], ["Auto"])
        # Sent again with another premium: the same record, updated.
        again = dict(body, data=dict(data, premium=125))
        self.assertJSONAnswer(s.manual(again), 200)
        [p] = theirs(number)
        self.assertEqual(float(p["totalPremium"]), 125.0)
        # A quote goes through Quote/Insert.
        q = dict(body, entity_type="quote", data=dict(data, policyNumber="MQ-" + number[3:]))
        self.assertJSONAnswer(s.manual(q), 200)
        [p] = theirs("MQ-" + number[3:])
        self.assertIs(p["isQuote"], True)
        # Without its dates it fails for good, naming them, and writes nothing.
        bad = dict(body, data={"policyNumber": "MX-" + number[3:], "policyType": "Auto",
                               "insuredEmail": email})
        dead = self.assertJSONAnswer(s.manual(bad), 502)
        self.assertIn("effectiveDate, expirationDate", dead.get("error", ""))
        self.assertEqual(theirs("MX-" + number[3:]), [])

    # -- upstream errors ---------------------------------------------------------

    def test_ghl_refusing_the_opportunity_makes_the_event_dead(self):
        s = self.server()
        c = self.seed_contact()
        self.fakes.fault("ghl", status=400, count=1, method="POST", path=r"^/opportunities/?$",
                         body={"statusCode": 400, "message": "Bad Request"})
        r = s.nowcerts(nowcerts_event("POLICY_INSERT", {
            "policyNumber": "POL-" + uniq(6), "policyType": "Auto", "premium": 1,
            "insuredEmail": c["email"]}))
        body = self.assertJSONAnswer(r, 502)
        self.assertIn("GHL POST /opportunities/ failed: HTTP 400", body.get("error", ""))
        self.assertEqual(len(self.fakes.calls("ghl", "POST", r"^/opportunities/?$")), 1)


class PolicyStatusAndPipelines(IntegTest):
    """SPEC section 10, Policies: the opportunity's status and stage follow
    the policy's status, and the default pipeline choice works against a
    location whose pipelines have names of their own."""

    OTHER = {
        "Personal Lines": ("Auto Insurance", ["New Lead", "Quote Sent", "Sold", "Lost"]),
        "Commercial Lines": ("Business Insurance", ["Inquiry", "Proposal", "Issued", "Closed Lost"]),
    }

    def _rename_pipelines(self, extra=()):
        """The fake GHL's location, with its two seeded pipelines renamed
        (same ids, other names and stages): no "Personal Lines", no
        "Commercial Lines", no "Quoted" or "Bound"."""
        for pl in self.fakes.records("ghl", "pipelines"):
            name, stages = self.OTHER[pl["name"]]
            self.fakes.seed("ghl", "pipelines", {"id": pl["id"], "name": name, "stages": stages})
        for name, stages in extra:
            self.fakes.seed("ghl", "pipelines", {"name": name, "stages": stages})
        names = sorted(pl["name"] for pl in self.fakes.records("ghl", "pipelines"))
        self.assertNotIn("Personal Lines", names)

    def _stage(self, pipeline, stage):
        for pl in self.fakes.records("ghl", "pipelines"):
            if pl.get("name") == pipeline:
                for st in pl.get("stages") or []:
                    if st.get("name") == stage:
                        return pl["id"], st["id"]
        raise AssertionError("the fake GHL has no %s / %s" % (pipeline, stage))

    def _post(self, s, event_type, data):
        ans = self.assertJSONAnswer(s.nowcerts(nowcerts_event(event_type, data)), 200)
        self.assertIs(ans.get("success"), True, ans)
        return ans

    def _one_opp(self, name):
        opps = [o for o in self.fakes.records("ghl", "opportunities") if o.get("name") == name]
        self.assertEqual(len(opps), 1, "opportunities: %r" % self.fakes.records("ghl", "opportunities"))
        return opps[0]

    def test_a_policy_finds_the_pipeline_matching_its_line(self):
        self._rename_pipelines()
        s = self.server()
        c = self.seed_contact()
        number = "GL-" + uniq(6)
        ans = self._post(s, "POLICY_INSERT", {
            "databaseId": guid(), "number": number, "lineOfBusinessName": "General Liability",
            "totalPremium": 2500, "status": "Active", "active": True, "insuredEmail": c["email"]})
        opp = self._one_opp("General Liability Policy - %s" % number)
        self.assertEqual((opp["pipelineId"], opp["pipelineStageId"]),
                         self._stage("Business Insurance", "Issued"))
        self.assertEqual(opp["status"], "open")
        d = ans["data"]
        self.assertEqual((d["pipeline"], d["how"], d["stage"], d["stage_how"]),
                         ("Business Insurance", "matched", "Issued", "matched"), d)
        # A personal line in the same location goes to the other pipeline.
        self._post(s, "POLICY_INSERT", {"number": number + "-H", "lineOfBusinessName": "Homeowners",
                                        "totalPremium": 900, "insuredEmail": c["email"]})
        opp = self._one_opp("Homeowners Policy - %s-H" % number)
        self.assertEqual((opp["pipelineId"], opp["pipelineStageId"]),
                         self._stage("Auto Insurance", "Sold"))

    def test_a_quote_sits_at_the_quote_stage_open(self):
        self._rename_pipelines()
        s = self.server()
        c = self.seed_contact()
        number = "Q-" + uniq(6)
        ans = self._post(s, "QUOTE_INSERT", {"number": number, "isQuote": True,
                                             "lineOfBusinessName": "Personal Auto",
                                             "totalPremium": 450, "status": "Active",
                                             "insuredEmail": c["email"]})
        opp = self._one_opp("Personal Auto Policy - %s" % number)
        self.assertEqual((opp["pipelineId"], opp["pipelineStageId"]),
                         self._stage("Auto Insurance", "Quote Sent"))
        self.assertEqual(opp["status"], "open")
        self.assertEqual(ans["data"]["kind"], "quote", ans)

    def test_a_cancelled_policy_is_lost(self):
        s = self.server()
        c = self.seed_contact()
        number = "C-" + uniq(6)
        ans = self._post(s, "POLICY_INSERT", {
            "databaseId": guid(), "number": number, "lineOfBusinessName": "Auto",
            "totalPremium": 700, "status": "Cancelled", "active": False, "insuredEmail": c["email"]})
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual(opp["status"], "lost", opp)
        self.assertEqual(ans["data"]["policy_status"], "Cancelled", ans)

    def test_a_policy_going_from_active_to_cancelled_moves_its_opportunity_to_lost(self):
        self._rename_pipelines()
        s = self.server()
        c = self.seed_contact()
        pid, number = guid(), "AC-" + uniq(6)
        data = {"databaseId": pid, "number": number, "lineOfBusinessName": "Auto",
                "totalPremium": 700, "status": "Active", "active": True, "insuredEmail": c["email"]}
        self._post(s, "POLICY_INSERT", data)
        first = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual(first["status"], "open")
        ans = self._post(s, "POLICY_UPDATE", dict(data, status="Cancelled", active=False))
        self.assertEqual(ans["data"]["action"], "updated", ans)
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual(opp["id"], first["id"])
        self.assertEqual(opp["status"], "lost", opp)
        # Still at the policy stage: only the status changed.
        self.assertEqual((opp["pipelineId"], opp["pipelineStageId"]), self._stage("Auto Insurance", "Sold"))
        put = self.fakes.calls("ghl", "PUT", r"^/opportunities/")
        self.assertEqual(len(put), 1, put)
        self.assertEqual(harness.req_body(put[0]).get("status"), "lost", put)
        # Expired and non-renewed are lost too; back to Active is open again.
        self._post(s, "POLICY_UPDATE", dict(data, status="Active"))
        self.assertEqual(self._one_opp("Auto Policy - %s" % number)["status"], "open")
        self._post(s, "POLICY_UPDATE", dict(data, status="Non-Renewal"))
        self.assertEqual(self._one_opp("Auto Policy - %s" % number)["status"], "lost")

    def test_explicit_names_win(self):
        self._rename_pipelines(extra=[("Everything", ["Open", "Quoted", "Won"])])
        # Only the pipeline is named; the stage is still chosen by its words.
        s = self.server(env={"MAPPINGS_DIR": str(mappings_with(
            self.tmp, 'pipelines.by_line = { { pipeline = "Everything" } }'))})
        c = self.seed_contact()
        number = "E-" + uniq(6)
        ans = self._post(s, "POLICY_INSERT", {"number": number, "lineOfBusinessName": "Auto",
                                              "totalPremium": 10, "insuredEmail": c["email"]})
        opp = self._one_opp("Auto Policy - %s" % number)
        self.assertEqual((opp["pipelineId"], opp["pipelineStageId"]), self._stage("Everything", "Won"))
        self.assertEqual((ans["data"]["how"], ans["data"]["stage_how"]), ("explicit", "matched"), ans)

    def test_a_policy_number_sent_as_a_json_number_reaches_ghl_as_text(self):
        s = self.server()
        c = self.seed_contact()
        number = int(uniq(6), 16) + 100000
        self._post(s, "POLICY_INSERT", {"number": number, "lineOfBusinessName": "Auto",
                                        "totalPremium": 10, "insuredEmail": c["email"]})
        opp = self._one_opp("Auto Policy - %d" % number)
        post = self.fakes.calls("ghl", "POST", r"^/opportunities/?$")
        self.assertEqual(len(post), 1, post)
        # The map names the field by key; ncghl sends GHL's id for it, read
        # from the location's custom-field list (the reference notes: prefer id).
        fields = self.fakes.records("ghl", "customFields")
        fields = fields.values() if isinstance(fields, dict) else fields
        field_id = next(f["id"] for f in fields
                        if f.get("fieldKey") == "opportunity.policy_number" and f.get("locationId") == "it-location-1")
        sent = {cf.get("id"): cf.get("field_value") for cf in harness.req_body(post[0])["customFields"]}
        self.assertEqual(sent.get(field_id), str(number), sent)
        self.assertNotIn("key", json.dumps(harness.req_body(post[0])["customFields"]))
        self.assertIn({"id": field_id, "fieldValue": str(number)},
                      [{"id": cf.get("id"), "fieldValue": cf.get("fieldValue")} for cf in opp["customFields"]], opp)

    def test_an_unknown_status_fails_naming_the_accepted_values(self):
        s = self.server()
        c = self.seed_contact()
        r = s.nowcerts(nowcerts_event("POLICY_INSERT", {
            "number": "U-" + uniq(6), "lineOfBusinessName": "Auto", "totalPremium": 10,
            "status": "Suspended", "insuredEmail": c["email"]}))
        body = self.assertJSONAnswer(r, 502)
        self.assertEqual(body.get("status"), "dead", body)
        err = body.get("error", "")
        self.assertIn('"Suspended"', err)
        self.assertIn("field status", err)
        for accepted in ("Active", "Cancelled", "Expired", "Non-Renewal"):
            self.assertIn(accepted, err)
        self.assertEqual(self.fakes.records("ghl", "opportunities"), [])

    def test_choices_list_what_each_kind_of_line_gets(self):
        """pipelines.choices(location_pipelines), which `ncghl doctor`
        shows, read here through a route added to a copy of the mappings,
        against the fake GHL's real pipelines."""
        self._rename_pipelines()
        # One explicit rule, for a pipeline this location does not have.
        mapdir = mappings_with(self.tmp, 'pipelines.by_line = { { pipeline = "Life", words = { "life" } } }')
        routes = mapdir / "routes.lua"
        text = routes.read_text()
        cut = text.rstrip().rfind("\nreturn")
        routes.write_text(text[:cut] + "\nnowcerts.PIPELINE_CHOICES = function(ev)\n"
                          "  return { choices = require(\"pipelines\").choices((ghl.pipelines())) }\n"
                          "end\n" + text[cut:])
        s = self.server(env={"MAPPINGS_DIR": str(mapdir)})
        ans = self._post(s, "PIPELINE_CHOICES", {})
        got = {(c["line"], c["kind"]): (c.get("pipeline"), c.get("stage"), c["how"])
               for c in ans["data"]["choices"]}
        self.assertEqual(got, {
            ("Life", "quote"): ("Life", None, "missing"),
            ("Life", "policy"): ("Life", None, "missing"),
            ("commercial lines", "quote"): ("Business Insurance", "Proposal", "matched"),
            ("commercial lines", "policy"): ("Business Insurance", "Issued", "matched"),
            ("personal lines", "quote"): ("Auto Insurance", "Quote Sent", "matched"),
            ("personal lines", "policy"): ("Auto Insurance", "Sold", "matched"),
            ("any other line", "quote"): ("Auto Insurance", "Quote Sent", "catch-all"),
            ("any other line", "policy"): ("Auto Insurance", "Sold", "catch-all"),
        }, ans)

    def test_map_shows_the_choice_and_how_it_was_made(self):
        s = self.server(start=False)
        f = self.tmp / "policy.json"
        f.write_text(json.dumps(nowcerts_event("POLICY_INSERT", {
            "number": "M-1", "lineOfBusinessName": "Workers Comp", "totalPremium": 10,
            "status": "Expired", "insuredEmail": "m@example.com"})))
        p = s.cli("map", "--source", "nowcerts", f)
        self.assertEqual(p.returncode, 0, p)
        d = json.loads(p.stdout)["data"]
        self.assertEqual((d["pipeline"], d["how"], d["stage"], d["stage_how"], d["status"]),
                         ("Commercial Lines", "matched", "Bound", "matched", "lost"), d)


class RestHooks(IntegTest):
    """NowCerts REST-hook deliveries (?hook=<EventName>; payload unconfirmed,
    snake_case as NowCerts' Zapier models) go through normalize.lua into the
    same routes as every other NowCerts event."""

    def _hook(self, s, name, body):
        r = s.post("/api/v1/webhooks/nowcerts?hook=%s" % name, body)
        ans = self.assertJSONAnswer(r, 200)
        self.assertIs(ans.get("success"), True, ans)
        self.assertNotEqual(ans.get("status"), "ignored", ans)
        return ans

    def test_create_policy_delivery_becomes_an_opportunity(self):
        s = self.server()
        c = self.seed_contact()
        number = "HO-" + uniq(6)
        ans = self._hook(s, "CreatePolicy", [{
            "database_id": guid(), "number": number, "line_of_business_name": "Homeowners",
            "premium": "1,310.50", "carrier_name": "Citizens", "insured_email": c["email"],
            "effective_date": "2024-03-01T00:00:00-05:00",
            "expiration_date": "2025-03-01T00:00:00-05:00"}])
        self.assertEqual(ans["data"]["action"], "created", ans)
        opps = [o for o in self.fakes.records("ghl", "opportunities")
                if o.get("name") == "Homeowners Policy - %s" % number]
        self.assertEqual(len(opps), 1, self.fakes.records("ghl", "opportunities"))
        self.assertEqual(float(opps[0]["monetaryValue"]), 1310.5)
        self.assertEqual(opps[0]["contactId"], c["id"])
        values = [cf.get("fieldValue") for cf in opps[0].get("customFields") or []]
        self.assertIn("2024-03-01", values)
        self.assertIn("Citizens", values)
        # The raw delivery is logged at DEBUG, so an agency can adjust the
        # normaliser to what NowCerts really sends.
        self.assertIn("nowcerts REST hook CreatePolicy, raw body:", s.log_text())
        self.assertIn(number, s.log_text())

    def test_create_prospect_delivery_creates_the_contact_once(self):
        s = self.server()
        email = "hook.%s@example.com" % uniq()
        ins_id = guid()
        record = {"database_id": ins_id, "first_name": "Pat", "last_name": "Q" + uniq(4),
                  "email": email, "cell_phone": "555-010-%04d" % (int(uniq(4), 16) % 10000),
                  "address_line_1": "9 Bay Rd", "city": "Tampa", "state": "FL", "zip_code": "33602"}
        self._hook(s, "CreateProspect", record)
        self._hook(s, "UpdateProspect", dict(record, city="Orlando"))
        contacts = self.contacts_with_email(email)
        self.assertEqual(len(contacts), 1, self.fakes.records("ghl", "contacts"))
        self.assertEqual(contacts[0].get("city"), "Orlando")
        self.assertEqual(contacts[0].get("postalCode"), "33602")
        self.assertEqual(contacts[0].get("address1"), "9 Bay Rd")

    def test_quote_then_policy_deliveries_move_one_opportunity(self):
        s = self.server()
        c = self.seed_contact()
        pid, number = guid(), "Q-" + uniq(6)
        rec = {"id": pid, "number": number, "line_of_business_name": "Auto", "premium": 400,
               "insured_email": c["email"]}
        self._hook(s, "CreateQuote", rec)
        self._hook(s, "UpdatePolicy", dict(rec, premium=410))
        opps = self.fakes.records("ghl", "opportunities")
        self.assertEqual(len(opps), 1, opps)
        bound = [st["id"] for pl in self.fakes.records("ghl", "pipelines")
                 if pl["name"] == "Personal Lines" for st in pl["stages"] if st["name"] == "Bound"]
        self.assertEqual(opps[0]["pipelineStageId"], bound[0])

    def test_a_delivery_of_several_records_is_dead_with_a_clear_error(self):
        s = self.server()
        r = s.post("/api/v1/webhooks/nowcerts?hook=UpdatePolicy", [{"number": "A"}, {"number": "B"}])
        body = self.assertJSONAnswer(r, 502)
        self.assertIn("UpdatePolicy delivered 2 records", body.get("error", ""))
        self.assertEqual(self.fakes.records("ghl", "opportunities"), [])


if __name__ == "__main__":
    harness.main()
