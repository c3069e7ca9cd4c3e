-- wrk script for scripts/load: POST /recommend with a new user text on every
-- request (from the bench fixture, made unique) and 100 candidates, either
-- the same 100 each time (LOAD_MODE=cached: their embeddings stay cached) or
-- 100 never-seen titles (LOAD_MODE=fresh). wrk's -d bounds the run in time;
-- each thread also stops after LOAD_REQUESTS_PER_THREAD responses.

local function read_texts(path)
  local texts = {}
  for line in io.lines(path) do
    local text = line:match('"text": "(.-)"[,}]')
    if text then texts[#texts + 1] = text end
  end
  return texts
end

local titles = read_texts(os.getenv("LOAD_TITLES"))

-- Each fixture user: a search query and 5 recently viewed titles, as the
-- fixture's ~100-token user text shows them.
local users = {}
for line in io.lines(os.getenv("LOAD_USERS")) do
  local query = line:match('"query": "(.-)"')
  local viewed = {}
  local list = line:match('recently viewed: (.-)"') or ""
  for title in (list .. " ; "):gmatch("(.-) ; ") do
    viewed[#viewed + 1] = '"' .. title .. '"'
  end
  users[#users + 1] = { query = query, history = "[" .. table.concat(viewed, ",") .. "]" }
end
local mode = os.getenv("LOAD_MODE") or "cached"
local limit = tonumber(os.getenv("LOAD_REQUESTS_PER_THREAD") or "200")
local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local counter, responses, failures = 0, 0, 0

local function candidates(suffix)
  local parts = {}
  for i = 1, 100 do
    parts[i] = string.format('{"id":"c%d","text":"%s%s"}', i, titles[i], suffix)
  end
  return "[" .. table.concat(parts, ",") .. "]"
end

local cached = candidates("")

request = function()
  counter = counter + 1
  local user = users[(counter + tid * 37) % #users + 1]
  -- The marker leads the query so the user text is new on every request.
  local query = string.format("#%d-%d %s", tid, counter, user.query)
  local items = cached
  if mode == "fresh" then items = candidates(string.format(" v%d-%d", tid, counter)) end
  local body = '{"user":{"query":"' .. query .. '","history":' .. user.history .. '},"candidates":'
    .. items .. ',"top_k":10}'
  return wrk.format("POST", "/recommend", {["Content-Type"] = "application/json"}, body)
end

response = function(status, headers, body)
  responses = responses + 1
  if status ~= 200 then failures = failures + 1 end
  if responses >= limit then wrk.thread:stop() end
end

done = function(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do failed = failed + (thread:get("failures") or 0) end
  io.write(string.format("RESULT requests=%d rps=%.1f p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f non200=%d errors=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    failed, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
