-- Test cases for people going from NowCerts to GHL (routes.lua:
-- nowcerts.INSURED_INSERT / INSURED_UPDATE, the map contacts.insured_to_contact).
-- Run them with `ncghl test`; the format is in docs/mapping-guide.md.
--
-- In a case, `answers` are what GHL answers, in order; a request with no
-- answer here gets the default one (a search finds nobody, a write works).
-- `expect.requests` lists requests that must have been made, in that order
-- (others may come in between); bodies are compared as subsets, and ABSENT
-- means "this field must not be sent".

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
            phone = "555-123-4567", address1 = "1 Main St", city = "Tampa", state = "FL",
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
            email = "Jane@Example.com", phone = "(555) 123-4567", address1 = "1 Main St",
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
        -- An update carries no create-only field, and keeps the contact's tags.
        { service = "ghl", method = "PUT", path = "/contacts/c7",
          body = {
            lastName = "Smith", locationId = ABSENT, gender = ABSENT, companyName = ABSENT,
            tags = { "vip", "nowcerts" },
          } },
      },
      request_count = 2,
      data = { action = "updated", contact_id = "c7", found_by = "email" },
    } },

  { name = "insured update finds the GHL contact by its stored link",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "c42" } },
    body = {
      event_type = "INSURED_UPDATE",
      data = { databaseId = NC_ID, firstName = "Jane", lastName = "Doe", email = "jane@example.com" },
    },
    answers = {
      { service = "ghl", method = "GET", path = "/contacts/c42", status = 200,
        body = { contact = { id = "c42", email = "old@example.com", tags = {} } } },
    },
    expect = {
      outcome = "done",
      -- No search: the link is enough.
      requests = {
        { service = "ghl", method = "GET", path = "/contacts/c42" },
        { service = "ghl", method = "PUT", path = "/contacts/c42",
          body = { email = "jane@example.com", locationId = ABSENT } },
      },
      request_count = 2,
      data = { action = "updated", contact_id = "c42", found_by = "link" },
    } },

  { name = "a stale link (GHL answers 404) falls back to email and creates",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = NC_ID, ghl = "gone1" } },
    body = {
      event_type = "INSURED_UPDATE",
      data = { id = NC_ID, firstName = "Jane", lastName = "Doe", email = "jane@example.com" },
    },
    answers = {
      { service = "ghl", method = "GET", path = "/contacts/gone1", status = 404,
        body = { statusCode = 404, message = "Contact not found" } },
      { service = "ghl", method = "POST", path = "/contacts/", status = 201,
        body = { contact = { id = "c8" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "GET", path = "/contacts/gone1" },
        search_by_email("jane@example.com"),
        { service = "ghl", method = "POST", path = "/contacts/", body = { email = "jane@example.com" } },
      },
      data = { action = "created", contact_id = "c8" },
    } },

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

  { name = "the echo of ncghl's own GHL write is skipped",
    source = "nowcerts",
    -- What ncghl last wrote for this insured, as echo suppression stores it
    -- (emails lower case, phones as their last 10 digits).
    fingerprints = {
      { side = "nowcerts", id = NC_ID,
        fields = { firstName = "Jane", lastName = "Doe", eMail = "jane@example.com" } },
    },
    body = {
      event_type = "INSURED_UPDATE",
      data = { id = NC_ID, firstName = "Jane", lastName = "Doe", eMail = "Jane@Example.com" },
    },
    expect = {
      outcome = "done",
      request_count = 0,
      data = { action = "skipped", reason = "echo of ncghl's own write" },
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
