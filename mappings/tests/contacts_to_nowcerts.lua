-- Test cases for people going from GHL to NowCerts (routes.lua:
-- ghl.ContactCreate / ContactUpdate, the map contacts.contact_to_insured).
-- Run them with `ncghl test`; the format is in docs/mapping-guide.md.
--
-- The rule these cases guard: Insured/Insert overwrites any NowCerts record
-- that merely has the same name, so it is only ever sent with the databaseId
-- of a record ncghl found; a new person goes through OnlyInsertInsured.

local NC_ID = "e4037abf-da50-4474-9f62-efc93e3a68d1"

-- GHL's own webhook: the contact's fields flat, next to the event's.
local function contact_event(type_, fields)
  local body = {
    type = type_, locationId = "loc-1", timestamp = "2025-08-26T11:36:43.463Z",
    webhookId = "7d3b8f2e-1c4a-4e5b-9f6d-0a1b2c3d4e5f",
  }
  for k, v in pairs(fields) do
    body[k] = v
  end
  return body
end

-- The OData query NowCerts gets when ncghl looks an insured up by email:
-- every e-mail field, without case.
local function lookup_by_email(email)
  return {
    service = "nowcerts", method = "GET", path = "/InsuredDetailList",
    query = { ["$filter"] = ("tolower(eMail) eq '%s' or tolower(eMail2) eq '%s' or tolower(eMail3) eq '%s'")
      :format(email, email, email), ["$top"] = "10" },
  }
end

return {
  { name = "a new GHL contact becomes a NowCerts prospect through OnlyInsertInsured",
    source = "ghl",
    body = contact_event("ContactCreate", {
      id = "c100", firstName = "John", lastName = "Roe", email = "John.Roe@Example.com",
      phone = "+15551230000", address1 = "2 Oak Ave", city = "Orlando", state = "FL",
      postalCode = "32801",
    }),
    answers = {
      { service = "nowcerts", method = "GET", path = "/InsuredDetailList", status = 200,
        body = { ["@odata.count"] = 0, value = {} } },
      { service = "nowcerts", method = "POST", path = "/Insured/OnlyInsertInsured", status = 200,
        body = { status = 1, message = "Insured created", insuredDatabaseId = NC_ID } },
    },
    expect = {
      outcome = "done",
      requests = {
        lookup_by_email("john.roe@example.com"),
        { service = "nowcerts", method = "POST", path = "/Insured/OnlyInsertInsured",
          body = {
            firstName = "John", lastName = "Roe", eMail = "John.Roe@Example.com",
            phone = "+15551230000", addressLine1 = "2 Oak Ave", city = "Orlando", state = "FL",
            zipCode = "32801", type = 1, insuredType = 1, active = true, databaseId = ABSENT,
          } },
        { service = "ghl", method = "POST", path = "/contacts/c100/tags",
          body = { tags = { "nowcerts", "prospect" } } },
      },
      -- By e-mail, then by phone (digits: NowCerts keeps phones as typed);
      -- then the contact gets ncghl's tags for a NowCerts prospect.
      request_count = 4,
      data = { action = "created", insured_id = NC_ID },
    } },

  { name = "a contact found by email is updated with Insured/Insert and its databaseId",
    source = "ghl",
    body = contact_event("ContactUpdate", {
      id = "c101", firstName = "John", lastName = "Roe", email = "john@example.com", city = "Miami",
    }),
    answers = {
      { service = "nowcerts", method = "GET", path = "/InsuredDetailList", status = 200,
        body = { ["@odata.count"] = 1, value = {
          { id = NC_ID, eMail = "JOHN@example.com", type = "Insured", insuredType = "Commercial", active = true },
        } } },
      { service = "nowcerts", method = "POST", path = "/Insured/Insert", status = 200,
        body = { status = 1, message = "has been overridden", insuredDatabaseId = NC_ID } },
    },
    expect = {
      outcome = "done",
      requests = {
        lookup_by_email("john@example.com"),
        -- The record keeps what it is (an Insured, Commercial): NowCerts reads
        -- those back as names and takes them as numbers.
        { service = "nowcerts", method = "POST", path = "/Insured/Insert",
          body = { databaseId = NC_ID, city = "Miami", type = 0, insuredType = 0, active = true } },
      },
      data = { action = "updated", insured_id = NC_ID, found_by = "email" },
    } },

  { name = "a linked contact is read by id and updated, without an email search",
    source = "ghl",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "c102" } },
    body = contact_event("ContactUpdate", {
      id = "c102", firstName = "Johnny", lastName = "Roe", email = "john@example.com",
    }),
    answers = {
      { service = "nowcerts", method = "GET", path = "/InsuredDetailList",
        query = { ["$filter"] = "id eq " .. NC_ID }, status = 200,
        body = { value = { { id = NC_ID, type = "Prospect", insuredType = "Personal", active = true } } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "nowcerts", method = "GET", path = "/InsuredDetailList",
          query = { ["$filter"] = "id eq " .. NC_ID } },
        { service = "nowcerts", method = "POST", path = "/Insured/Insert",
          body = { databaseId = NC_ID, firstName = "Johnny", type = 1 } },
        -- The first sync of the link: the contact gets ncghl's tags for
        -- what the insured is (a prospect).
        { service = "ghl", method = "POST", path = "/contacts/c102/tags",
          body = { tags = { "nowcerts", "prospect" } } },
      },
      request_count = 3,
      data = { action = "updated", found_by = "link" },
    } },

  { name = "an insured deleted in NowCerts (the linked id is gone) is not created again",
    source = "ghl",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "c103" } },
    snapshots = { { nowcerts = NC_ID, ghl = "c103", fields = { email = "ann@example.com" } } },
    body = contact_event("ContactUpdate", {
      id = "c103", firstName = "Ann", lastName = "Poe", email = "ann@example.com",
    }),
    -- No answers: every list NowCerts is asked for comes back empty.
    expect = {
      outcome = "done",
      requests = {
        { service = "nowcerts", method = "GET", path = "/InsuredDetailList",
          query = { ["$filter"] = "id eq " .. NC_ID } },
        lookup_by_email("ann@example.com"),
      },
      data = { action = "skipped", deleted_id = NC_ID },
    } },

  { name = "a GHL lead with a first name and a phone only becomes a prospect",
    source = "ghl",
    body = contact_event("ContactCreate", { id = "c110", firstName = "Lou", phone = "+15557654321" }),
    expect = {
      outcome = "done",
      requests = {
        { service = "nowcerts", method = "POST", path = "/Insured/OnlyInsertInsured",
          body = { firstName = "Lou", lastName = "(no last name)", phone = "+15557654321", type = 1 } },
      },
      data = { action = "created" },
    } },

  { name = "a GHL contact named only by its whole name becomes a prospect with that name split",
    source = "ghl",
    body = contact_event("ContactCreate", { id = "c114", name = "Pedro de la Paramo", email = "pedro@example.com" }),
    expect = {
      outcome = "done",
      requests = {
        lookup_by_email("pedro@example.com"),
        { service = "nowcerts", method = "POST", path = "/Insured/OnlyInsertInsured",
          body = { firstName = "Pedro", lastName = "de la Paramo", eMail = "pedro@example.com", type = 1 } },
      },
      data = { action = "created" },
    } },

  { name = "a GHL contact with neither a name nor a company is skipped, saying why",
    source = "ghl",
    body = contact_event("ContactCreate", { id = "c111", phone = "+15557654322" }),
    expect = {
      outcome = "done",
      data = { action = "skipped", reason = "the GHL contact has neither a name nor a company name, which NowCerts needs" },
    } },

  { name = "an insuredType NowCerts does not know fails the event, naming the accepted values",
    source = "ghl",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "c112" } },
    snapshots = { { nowcerts = NC_ID, ghl = "c112", fields = { firstName = "Al", lastName = "Poe", city = "" } } },
    body = contact_event("ContactUpdate", { id = "c112", firstName = "Al", lastName = "Poe", city = "Miami" }),
    answers = {
      { service = "nowcerts", method = "GET", path = "/InsuredDetailList", status = 200,
        body = { value = { { id = NC_ID, firstName = "Al", lastName = "Poe", type = "Prospect",
          insuredType = "Personal Lines", active = true } } } },
    },
    expect = {
      outcome = "failed",
      error = 'NowCerts field insuredType has the value "Personal Lines", which NowCerts does not know; accepted: Commercial, LifeHealth_Group',
    } },

  { name = "a webhook from another GHL location is ignored",
    source = "ghl",
    body = {
      type = "ContactCreate", locationId = "other-location", id = "c113",
      firstName = "Zed", lastName = "Doe", email = "zed@example.com",
    },
    expect = {
      outcome = "ignored",
      request_count = 0,
    } },

  { name = "the source design's contact.created format is accepted",
    source = "ghl",
    body = {
      event = "contact.created", locationId = "loc-1",
      contact = { id = "c104", firstName = "Eve", lastName = "Moe", email = "eve@example.com" },
    },
    expect = {
      outcome = "done",
      requests = {
        lookup_by_email("eve@example.com"),
        { service = "nowcerts", method = "POST", path = "/Insured/OnlyInsertInsured",
          body = { firstName = "Eve", eMail = "eve@example.com" } },
      },
    } },

  { name = "GHL's fields nested under data are accepted",
    source = "ghl",
    body = {
      type = "ContactCreate", locationId = "loc-1",
      data = { id = "c105", firstName = "Max", lastName = "Doe", email = "max@example.com" },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "nowcerts", method = "POST", path = "/Insured/OnlyInsertInsured",
          body = { firstName = "Max", eMail = "max@example.com" } },
      },
    } },

  { name = "the echo of ncghl's own NowCerts write is skipped",
    source = "ghl",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "c106" } },
    snapshots = {
      { nowcerts = NC_ID, ghl = "c106",
        fields = { firstName = "John", lastName = "Roe", email = "john@example.com" } },
    },
    body = contact_event("ContactUpdate", {
      id = "c106", firstName = "John", lastName = "Roe", email = "JOHN@example.com ",
    }),
    expect = {
      outcome = "done",
      request_count = 0,
      data = { action = "skipped" },
    } },

  { name = "NowCerts' HTTP 200 with status 0 is a failure, not a success",
    source = "ghl",
    body = contact_event("ContactCreate", {
      id = "c107", firstName = "John", lastName = "Roe", email = "john@example.com",
    }),
    answers = {
      { service = "nowcerts", method = "POST", path = "/Insured/OnlyInsertInsured", status = 200,
        body = { status = 0, message = "At least CommercialName or FirstName and LastName should be entered" } },
    },
    expect = {
      outcome = "failed",
      error = "status 0: At least CommercialName",
    } },

  { name = "NowCerts unavailable (503 after the retries) asks for a later retry",
    source = "ghl",
    body = contact_event("ContactCreate", {
      id = "c108", firstName = "John", lastName = "Roe", email = "john@example.com",
    }),
    answers = {
      { service = "nowcerts", method = "GET", path = "/InsuredDetailList", status = 503, body = "" },
    },
    expect = {
      outcome = "retry",
      error = "NowCerts GET /InsuredDetailList.* failed: HTTP 503",
    } },

  { name = "a GHL event type no route handles is ignored",
    source = "ghl",
    body = { type = "NoteCreate", locationId = "loc-1", id = "n1", body = "called back" },
    expect = {
      outcome = "ignored",
      request_count = 0,
    } },
}
