-- wrk: POST /api/v1/webhooks/nowcerts with a unique payload per request (the
-- source design's Test 2 body; the email and the phone change), so idempotency
-- never short-circuits and every request is a new person: a new event and a
-- new GHL contact. (The peer's own script varied only the email; a shared
-- phone makes every request the same household to ncghl, whose upserts must
-- then take them one at a time. The peer does no lookups, so it is
-- indifferent to the phone.)
-- usage: wrk -t2 -c32 -d10s --latency -s bench/unique.lua http://127.0.0.1:8001[/t/TENANT] -- RUN_ID [PAD [SERIES]]
-- PAD (bytes, default 0): that much more body, as extra fields the mapping
-- does not read ("note_01": "xxx..."), for the payload-size curve.
-- SERIES (0-498, default 0): keeps phones unique across runs against one
-- server (the e-mail has RUN_ID; the phone's area code has SERIES).
-- WRK_DELAY (environment, ms): each connection waits that long before its
-- next request, a steady load instead of a flood (bench/steady.sh).
local threads = {}

local think = tonumber(os.getenv("WRK_DELAY") or "")
if think then
  function delay()
    return think
  end
end

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  run_id = args[1] or tostring(math.random(1, 1e9))
  local pad = tonumber(args[2] or "0") or 0
  local series = tonumber(args[3] or "0") or 0
  area = series * 2 + tid
  counter = 0
  statuses = {}
  -- Built once per thread: the body grows, not the load generator's work.
  extra = ""
  local i = 0
  while #extra < pad do
    i = i + 1
    extra = extra .. string.format('"note_%03d":"%s",', i, string.rep("x", 240))
  end
end

local headers = { ["Content-Type"] = "application/json" }
-- A URL with a path (http://host:port/t/acme) posts to that tenant's route.
prefix = (wrk.path and wrk.path ~= "/") and wrk.path:gsub("/+$", "") or ""
local fmt = '{"event_type":"INSURED_INSERT","timestamp":"2024-01-15T10:30:00Z","data":{%s'
  .. '"firstName":"Bench","lastName":"User","email":"bench-%s-t%d-%d@example.com",'
  .. '"phone":"+1%03d%07d","address":{"street":"123 Test St","city":"Miami","state":"FL","zip":"33101"}}}'

function request()
  counter = counter + 1
  if counter == 1 then
    body_len = #string.format(fmt, extra, run_id, tid, counter, area, counter % 10000000)
  end
  return wrk.format("POST", prefix .. "/api/v1/webhooks/nowcerts", headers, string.format(fmt, extra, run_id, tid, counter, area, counter % 10000000))
end

function response(status, hdrs, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, unique, body_len = {}, 0, 0
  for _, t in ipairs(threads) do
    -- Each request() made a new e-mail and phone: the count of them is the
    -- count of distinct people sent.
    unique = unique + (t:get("counter") or 0)
    body_len = math.max(body_len, t:get("body_len") or 0)
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do parts[#parts + 1] = string.format("%s=%d", tostring(k), v) end
  table.sort(parts)
  io.write(string.format("RESULT rps=%.1f p50=%.2f p99=%.2f max=%.2f requests=%d errors=%d statuses=%s unique=%d body=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
      + summary.errors.timeout, table.concat(parts, ","), unique, body_len))
end
