-- Test cases for people going from NowCerts to GHL (routes.lua:
-- nowcerts.INSURED_INSERT / INSURED_UPDATE, the map contacts.insured_to_contact).
-- Run them with `ncghl test`; the format is in docs/mapping-guide.md.
--
-- In a case, `answers` are what GHL answers, in order; a request with no
-- answer here gets the default one (a search finds nobody, a write works).
-- `expect.requests` lists requests that must have been made, in that order
-- (others may come in between); bodies are compared as subsets, and ABSENT
-- means "this field must not be sent". `snapshots` seed what both sides
-- agreed on after the last sync (each field's base value, as compared:
-- e-mails lower case, phones their last 10 digits).

local NC_ID = "3f0c1a2b-0000-4000-8000-00000000abcd"

-- The search GHL gets when ncghl looks a person up by email.
local function search_by_email(email)
  return {
    service = "ghl", method = "POST", path = "/contacts/search",
    body = {
      locationId = "loc-1", pageLimit = 10, page = 1,
      filters = { { field = "email", operator = "eq", value = email } },
    },
  }
end

-- A new insured whose contact GHL is asked to create with (at least) `body`.
local function creates(name, insured, body, config)
  return { name = name, source = "nowcerts", config = config,
    body = { event_type = "INSURED_INSERT", data = insured },
    expect = {
      outcome = "done",
      requests = { { service = "ghl", method = "POST", path = "/contacts/", body = body } },
    } }
end

-- Both sides changed the phone since the base: NowCerts to 555-111-2222
-- (its changeDate nc_at, 10:05:00 unless given), GHL to +1 555 333 4444
-- at ghl_at. The winner's phone is written to the side that lost.
local function phone_conflict(name, cid, ghl_at, winner, nc_at)
  return { name = name,
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = cid } },
    snapshots = { { nowcerts = NC_ID, ghl = cid, tags = { "nowcerts" },
      fields = { firstName = "Jane", lastName = "Doe", phone = "5550000000" } } },
    body = {
      event_type = "INSURED_UPDATE",
      data = { id = NC_ID, firstName = "Jane", lastName = "Doe", phone = "555-111-2222",
        changeDate = nc_at or "2024-03-01T10:05:00-00:00" },
    },
    answers = {
      { service = "ghl", method = "GET", path = "/contacts/" .. cid, status = 200,
        body = { contact = { id = cid, firstName = "Jane", lastName = "Doe", phone = "+15553334444",
          dateUpdated = ghl_at, tags = { "nowcerts" } } } },
    },
    expect = {
      outcome = "done",
      requests = winner == "nowcerts" and {
        { service = "ghl", method = "PUT", path = "/contacts/" .. cid, body = { phone = "+15551112222" } },
      } or {
        { service = "nowcerts", method = "POST", path = "/Insured/Insert", body = { phone = "+15553334444" } },
      },
      data = { action = "updated", conflicts = { { field = "phone", winner = winner } } },
    } }
end

return {
  { name = "insured insert creates a GHL contact",
    source = "nowcerts",
    body = {
      event_type = "INSURED_INSERT", timestamp = "2024-01-15T10:30:00Z",
      data = {
        firstName = "Jane", lastName = "Doe", email = "jane@example.com", phone = "555-123-4567",
        address = { street = "1 Main St", city = "Tampa", state = "FL", zip = "33601" },
      },
    },
    answers = {
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200,
        body = { contacts = {}, total = 0 } },
      { service = "ghl", method = "POST", path = "/contacts/", status = 201,
        body = { contact = { id = "c1", email = "jane@example.com" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        search_by_email("jane@example.com"),
        { service = "ghl", method = "POST", path = "/contacts/",
          body = {
            firstName = "Jane", lastName = "Doe", email = "jane@example.com",
            -- GHL stores and searches phones in E.164.
            phone = "+15551234567", address1 = "1 Main St", city = "Tampa", state = "FL",
            postalCode = "33601", source = "NowCerts", tags = { "nowcerts" },
            locationId = "loc-1",
          } },
      },
      data = { action = "created", contact_id = "c1", found_by = ABSENT },
    } },

  { name = "NowCerts' own field names fill the same GHL fields",
    source = "nowcerts",
    body = {
      event_type = "INSURED_INSERT",
      data = {
        id = NC_ID, firstName = "Jane", lastName = "Doe", eMail = " Jane@Example.com ",
        cellPhone = "(555) 123-4567", addressLine1 = "1 Main St", city = "Tampa", state = "FL",
        zipCode = "33601", middleName = "",
      },
    },
    expect = {
      outcome = "done",
      requests = {
        search_by_email("jane@example.com"),
        { service = "ghl", method = "POST", path = "/contacts/",
          body = {
            email = "Jane@Example.com", phone = "+15551234567", address1 = "1 Main St",
            postalCode = "33601", middleName = ABSENT,
          } },
      },
      data = { action = "created" },
    } },

  { name = "insured update finds the GHL contact by email and updates it",
    source = "nowcerts",
    body = {
      event_type = "INSURED_UPDATE",
      data = { firstName = "Jane", lastName = "Smith", email = "JANE@example.com" },
    },
    answers = {
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200,
        body = { contacts = { { id = "c7", email = "jane@example.com", tags = { "vip" } } }, total = 1 } },
      { service = "ghl", method = "PUT", path = "/contacts/c7", status = 200,
        body = { succeded = true, contact = { id = "c7" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        search_by_email("jane@example.com"),
        -- An update carries no create-only field and no tags: a PUT of tags
        -- would replace the ones people added ("vip").
        { service = "ghl", method = "PUT", path = "/contacts/c7",
          body = {
            lastName = "Smith", locationId = ABSENT, gender = ABSENT, companyName = ABSENT,
            tags = ABSENT,
          } },
        -- ncghl's own tag goes through the tag endpoint.
        { service = "ghl", method = "POST", path = "/contacts/c7/tags", body = { tags = { "nowcerts" } } },
      },
      data = { action = "updated", contact_id = "c7" },
    } },

  { name = "insured update finds the GHL contact by its stored link",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "c42" } },
    snapshots = {
      { nowcerts = NC_ID, ghl = "c42", tags = { "nowcerts" },
        fields = { firstName = "jane", lastName = "Doe", email = "old@example.com" } },
    },
    body = {
      event_type = "INSURED_UPDATE",
      data = { databaseId = NC_ID, firstName = "jane", lastName = "Doe", email = "jane@example.com" },
    },
    answers = {
      { service = "ghl", method = "GET", path = "/contacts/c42", status = 200,
        body = { contact = { id = "c42", firstName = "jane", lastName = "Doe", email = "old@example.com",
          tags = { "nowcerts" } } } },
    },
    expect = {
      outcome = "done",
      -- No search: the link is enough. NowCerts is read first (the insured
      -- as it is now is the truth), then the contact, then only the field
      -- that changed is written.
      requests = {
        { service = "nowcerts", method = "GET", path = "/InsuredDetailList" },
        { service = "ghl", method = "GET", path = "/contacts/c42" },
        { service = "ghl", method = "PUT", path = "/contacts/c42",
          body = { email = "jane@example.com", firstName = ABSENT, lastName = ABSENT, locationId = ABSENT } },
      },
      request_count = 3,
      data = { action = "updated", contact_id = "c42", found_by = "link", fields = { "email" } },
    } },

  { name = "a contact deleted in GHL (the linked id is gone) is not created again",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "gone1" } },
    snapshots = { { nowcerts = NC_ID, ghl = "gone1", fields = { email = "jane@example.com" } } },
    body = {
      event_type = "INSURED_UPDATE",
      data = { id = NC_ID, firstName = "Jane", lastName = "Doe", email = "jane@example.com" },
    },
    answers = {
      { service = "ghl", method = "GET", path = "/contacts/gone1", status = 404,
        body = { statusCode = 404, message = "Contact not found" } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "GET", path = "/contacts/gone1" },
        search_by_email("jane@example.com"),
      },
      data = { action = "skipped", deleted_id = "gone1" },
    } },

  { name = "a contact deleted in GHL whose person has another contact (merged) links that one",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "gone2" } },
    snapshots = { { nowcerts = NC_ID, ghl = "gone2", fields = { email = "jane@example.com" } } },
    body = {
      event_type = "INSURED_UPDATE",
      data = { id = NC_ID, firstName = "Jane", lastName = "Doe", email = "jane@example.com" },
    },
    answers = {
      { service = "ghl", method = "GET", path = "/contacts/gone2", status = 400,
        body = { statusCode = 400, message = "Contact not found" } },
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200,
        body = { contacts = { { id = "kept1", email = "jane@example.com", firstName = "Jane" } }, total = 1 } },
      { service = "ghl", method = "GET", path = "/contacts/kept1", status = 200,
        body = { contact = { id = "kept1", email = "jane@example.com", firstName = "Jane" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "GET", path = "/contacts/gone2" },
        search_by_email("jane@example.com"),
        { service = "ghl", method = "PUT", path = "/contacts/kept1", body = { lastName = "Doe" } },
      },
      data = { action = "updated", contact_id = "kept1", found_by = "email" },
    } },

  { name = "a field filled in later is a change, not an echo",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "c50" } },
    -- Synced without a city: the base has none.
    snapshots = { { nowcerts = NC_ID, ghl = "c50", tags = { "nowcerts" },
      fields = { firstName = "Jane", lastName = "Doe", email = "jane@example.com", city = "" } } },
    body = {
      event_type = "INSURED_UPDATE",
      data = { id = NC_ID, firstName = "Jane", lastName = "Doe", eMail = "jane@example.com", city = "Tampa" },
    },
    answers = {
      { service = "ghl", method = "GET", path = "/contacts/c50", status = 200,
        body = { contact = { id = "c50", firstName = "Jane", lastName = "Doe", email = "jane@example.com",
          tags = { "nowcerts" } } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "PUT", path = "/contacts/c50",
          body = { city = "Tampa", email = ABSENT, firstName = ABSENT } },
      },
      data = { action = "updated", fields = { "city" } },
    } },

  -- GHL's change is newer: nothing is written to GHL; NowCerts gets GHL's phone.
  phone_conflict("both sides changed the phone: the newer record wins and the conflict is recorded",
    "c60", "2024-03-01T10:05:00.000Z", "ghl", "2024-03-01T10:00:00Z"),

  { name = "no email: the contact is looked up by phone in E.164",
    source = "nowcerts",
    body = {
      event_type = "INSURED_INSERT",
      data = { firstName = "Sam", lastName = "Lee", cellPhone = "(555) 987-6543" },
    },
    answers = {
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200,
        body = { contacts = { { id = "c9", phone = "+15559876543" } }, total = 1 } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/contacts/search",
          body = { filters = { { field = "phone", operator = "eq", value = "+15559876543" } } } },
        { service = "ghl", method = "PUT", path = "/contacts/c9" },
      },
      data = { action = "updated", found_by = "phone" },
    } },

  { name = "an insured with no name, company, e-mail or phone makes no contact, saying why",
    source = "nowcerts",
    body = { event_type = "INSURED_INSERT", data = { city = "Tampa" } },
    expect = {
      outcome = "done",
      data = { action = "skipped", reason = "the record has no name, company, e-mail or phone: a GHL "
        .. "contact with nothing to know the person by is not made" },
    } },

  { name = "a phone with an extension is written in E.164 without it",
    source = "nowcerts",
    body = {
      event_type = "INSURED_INSERT",
      data = { firstName = "Sam", lastName = "Lee", cellPhone = "(555) 987-6543 ext. 12" },
    },
    answers = {
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200,
        body = { contacts = {}, total = 0 } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/contacts/search",
          body = { filters = { { field = "phone", operator = "eq", value = "+15559876543" } } } },
        { service = "ghl", method = "POST", path = "/contacts/", body = { phone = "+15559876543" } },
      },
      data = { action = "created" },
    } },

  phone_conflict("both sides changed the phone at the same time: NowCerts wins the tie",
    "c61", "2024-03-01T10:05:00.000Z", "nowcerts"),

  -- NowCerts writes its times to the minute: its edit was made at some
  -- moment of 10:05, maybe after GHL's at 10:05:25.
  phone_conflict("a GHL edit within the minute NowCerts' changeDate names is a tie: NowCerts wins",
    "c62", "2024-03-01T10:05:25.120Z", "nowcerts"),

  phone_conflict("a GHL edit after the minute NowCerts' changeDate names is newer: GHL wins",
    "c63", "2024-03-01T10:06:01.000Z", "ghl"),

  creates("a phone without a country code gets DEFAULT_COUNTRY's (E.164)",
    { firstName = "Ada", lastName = "Byron", email = "ada@example.co.uk", phone = "07700 900123" },
    { phone = "+447700900123" }, { DEFAULT_COUNTRY = "GB" }),

  creates("an insured's own source becomes the contact's, else NowCerts",
    { firstName = "Rae", lastName = "Doe", email = "rae@example.com", source = "Referral" },
    { source = "Referral" }),

  { name = "the echo of ncghl's own GHL write is skipped",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "c5" } },
    -- What both sides agreed on after the last sync (e-mails lower case,
    -- phones as their last 10 digits).
    snapshots = {
      { nowcerts = NC_ID, ghl = "c5", tags = { "nowcerts" },
        fields = { firstName = "Jane", lastName = "Doe", email = "jane@example.com" } },
    },
    body = {
      event_type = "INSURED_UPDATE",
      data = { id = NC_ID, firstName = "Jane", lastName = "Doe", eMail = "Jane@Example.com" },
    },
    expect = {
      outcome = "done",
      request_count = 0,
      data = { action = "skipped" },
    } },

  { name = "GHL refusing the contact (400) fails the event for good",
    source = "nowcerts",
    body = {
      event_type = "INSURED_INSERT",
      data = { firstName = "Jane", lastName = "Doe", email = "jane@example.com" },
    },
    answers = {
      { service = "ghl", method = "POST", path = "/contacts/", status = 400,
        body = { statusCode = 400, message = "Bad Request" } },
    },
    expect = {
      outcome = "failed",
      error = "GHL POST /contacts/ failed: HTTP 400",
    } },

  { name = "GHL unavailable (503 after the retries) asks for a later retry",
    source = "nowcerts",
    body = {
      event_type = "INSURED_INSERT",
      data = { firstName = "Jane", lastName = "Doe", email = "jane@example.com" },
    },
    answers = {
      { service = "ghl", method = "POST", path = "/contacts/search", status = 503,
        body = "Service Unavailable" },
    },
    expect = {
      outcome = "retry",
      error = "HTTP 503",
      request_count = 1,
    } },

  { name = "a person sharing a phone with a contact of another email gets a contact of their own",
    source = "nowcerts",
    body = {
      event_type = "INSURED_INSERT",
      data = { firstName = "Sam", lastName = "Doe", email = "sam@example.com", phone = "555-123-4567" },
    },
    answers = {
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200,
        body = { contacts = {}, total = 0 } },
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200,
        body = { contacts = { { id = "c1", email = "jane@example.com", phone = "+15551234567" } }, total = 1 } },
      { service = "ghl", method = "POST", path = "/contacts/", status = 201,
        body = { contact = { id = "c2", email = "sam@example.com" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        search_by_email("sam@example.com"),
        { service = "ghl", method = "POST", path = "/contacts/search",
          body = { filters = { { field = "phone", operator = "eq" } } } },
        { service = "ghl", method = "POST", path = "/contacts/", body = { email = "sam@example.com" } },
      },
      data = { action = "created", contact_id = "c2" },
    } },

  { name = "an event type no route handles is ignored",
    source = "nowcerts",
    body = { event_type = "CLAIM_INSERT", data = { id = "x1" } },
    expect = {
      outcome = "ignored",
      request_count = 0,
    } },

  { name = "a manual sync to GHL runs the insured route",
    source = "manual",
    body = {
      source = "nowcerts", entity_type = "contact", direction = "to_ghl",
      data = { firstName = "Jane", lastName = "Doe", email = "jane@example.com" },
    },
    expect = {
      outcome = "done",
      requests = {
        search_by_email("jane@example.com"),
        { service = "ghl", method = "POST", path = "/contacts/" },
      },
      data = { action = "created" },
    } },
}
