-- ncghl.suggest: "did you mean" for names an agency typed (map targets,
-- pipelines, stages, custom field keys). Pure; shared by ncghl.lint and
-- ncghl.doctor so both suggest the same way.
local suggest = {}

-- Edit distance with transpositions (optimal string alignment), on
-- lower-cased names, so "postalcode" is 0 from "postalCode" and "eMial" 1
-- from "eMail".
function suggest.distance(a, b)
  a, b = a:lower(), b:lower()
  local la, lb = #a, #b
  if la == 0 then
    return lb
  elseif lb == 0 then
    return la
  end
  local prev2, prev, cur = {}, {}, {}
  for j = 0, lb do
    prev[j] = j
  end
  for i = 1, la do
    cur = { [0] = i }
    local ca = a:byte(i)
    for j = 1, lb do
      local cb = b:byte(j)
      local cost = ca == cb and 0 or 1
      local d = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      if i > 1 and j > 1 and ca == b:byte(j - 1) and a:byte(i - 1) == cb then
        d = math.min(d, prev2[j - 2] + 1)
      end
      cur[j] = d
    end
    prev2, prev = prev, cur
  end
  return cur[lb]
end

-- The closest of `names` (a list of strings) to `name`, or nil when none is
-- close enough to be a plausible typo: at most a third of the name's length
-- (at least 1, at most 3) edits away.
function suggest.closest(name, names)
  local best, best_d
  local limit = math.max(1, math.min(3, #name // 3))
  for _, cand in ipairs(names) do
    local d = suggest.distance(name, cand)
    if d <= limit and (best_d == nil or d < best_d or (d == best_d and cand < best)) then
      best, best_d = cand, d
    end
  end
  return best
end

-- " (did you mean X?)" or "".
function suggest.hint(name, names)
  local c = suggest.closest(name, names)
  if c then
    return (" (did you mean %q?)"):format(c)
  end
  return ""
end

return suggest
