-- What ncghl does with each event.
--
-- `nowcerts` and `ghl` are prepared by the engine. nowcerts.X is the route for
-- event X coming FROM NowCerts; ghl.Y the route for event Y coming FROM GHL.
-- The same tables hold the helpers that write TO that side, so a route that
-- sends a NowCerts insured to GHL calls ghl.upsert_contact(...).
--
-- An event type with no route here is answered "ignored".
local util = require "ncghl.util"
local maps = require "contacts"

-- A NowCerts insured (or prospect) was created or changed: the fields that
-- changed since the last sync go to its GHL contact (found by the link, then
-- email, then phone; created when GHL has none). docs/sync-model.md.
nowcerts.INSURED_INSERT = function(ev)
  return ghl.upsert_contact(ev.data, maps, { event = ev })
end
nowcerts.INSURED_UPDATE = nowcerts.INSURED_INSERT

-- NowCerts deleted an insured that has a GHL contact (the poller reads
-- DeletedInsuredList): contacts.lifecycle.deleted says what happens to it.
nowcerts.INSURED_DELETE = function(ev)
  return ghl.insured_deleted(ev.data, maps)
end

-- A GHL contact was created or changed (its tags and DND flags included):
-- the fields that changed go to its NowCerts insured (found by the link,
-- then email, then phone; created as a prospect when NowCerts has none).
ghl.ContactCreate = function(ev)
  return nowcerts.upsert_insured(ev.data, maps, { event = ev })
end
ghl.ContactUpdate = ghl.ContactCreate
ghl.ContactTagUpdate = ghl.ContactCreate
ghl.ContactDndUpdate = ghl.ContactCreate

-- A GHL contact was deleted: the link goes, and a later change to the
-- insured does not create the contact again (unless GHL has another
-- contact with the person's e-mail or phone, which is then linked).
ghl.ContactDelete = function(ev)
  return ghl.contact_deleted(ev.data.id)
end

-- Policies and quotes become GHL opportunities on the insured's contact
-- (maps in policies.lua, pipelines and stages in pipelines.lua). Without
-- policies.lua these events are answered "ignored".
local policies = util.require_optional "policies"
if policies then
  nowcerts.POLICY_INSERT = function(ev)
    return ghl.upsert_opportunity(ev.data, policies, { quote = false, event = ev })
  end
  nowcerts.POLICY_UPDATE = nowcerts.POLICY_INSERT

  nowcerts.QUOTE_INSERT = function(ev)
    return ghl.upsert_opportunity(ev.data, policies, { quote = true, event = ev })
  end
  nowcerts.QUOTE_UPDATE = nowcerts.QUOTE_INSERT

  -- A manual sync from GHL to NowCerts (POST /api/v1/sync/manual with
  -- entity_type "policy" or "quote"): written with Policy/Insert or
  -- Quote/Insert, which update the record with that number if there is one.
  ghl.POLICY_UPDATE = function(ev)
    return nowcerts.upsert_policy(ev.data, policies, { quote = false })
  end
  ghl.QUOTE_UPDATE = function(ev)
    return nowcerts.upsert_policy(ev.data, policies, { quote = true })
  end

  -- GHL reports every opportunity change, ncghl's own writes included: those
  -- are skipped as echoes; other changes are not sent to NowCerts
  -- ("ignored").
  for _, t in ipairs({ "OpportunityCreate", "OpportunityUpdate", "OpportunityStatusUpdate",
    "OpportunityStageUpdate", "OpportunityMonetaryValueUpdate", "OpportunityAssignedToUpdate" }) do
    ghl[t] = ghl.opportunity_echo
  end
end

return { nowcerts = nowcerts, ghl = ghl }
