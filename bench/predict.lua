-- wrk script: POST JSON prediction requests in a cycle and check every response's predictions.
--
-- Usage: wrk -t N -c N -s bench/predict.lua URL -- CASES.lua
-- CASES.lua (written by bench/run.py) returns a list of {body = JSON text, expect = labels}, where
-- expect is the JSON of the expected predictions array without its brackets, e.g. '"setosa","virginica"'.
--
-- Run with as many threads as connections: each wrk thread then owns one connection and its own Lua
-- state, so request() and response() alternate strictly and every response is checked against the
-- body it answers. (With several connections per thread, responses come back in any order.)

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  cases = dofile(args[1])
  requests = {}
  for i, case in ipairs(cases) do
    requests[i] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, case.body)
  end
  -- Start each connection at a different case so concurrent requests carry different rows.
  position = (thread_index * 7) % #cases
  pending = nil
  checked, mismatches, non2xx = 0, 0, 0
  first_problem = ""
end

function request()
  position = position % #cases + 1
  pending = position
  return requests[position]
end

local function note(problem)
  if first_problem == "" then
    first_problem = problem
  end
end

function response(status, headers, body)
  checked = checked + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    note("status " .. status .. ": " .. string.sub(body, 1, 200))
    return
  end
  local array = string.match(body, '"predictions"%s*:%s*%[(.-)%]')
  local got = array and array:gsub("%s*,%s*", ","):gsub("^%s+", ""):gsub("%s+$", "")
  if got ~= cases[pending].expect then
    mismatches = mismatches + 1
    note("case " .. pending .. ": expected [" .. cases[pending].expect .. "], got "
         .. string.sub(body, 1, 200))
  end
end

local function json_string(text)
  return '"' .. text:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

function done(summary, latency, requests)
  local checked_sum, mismatches_sum, non2xx_sum, problem = 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    checked_sum = checked_sum + thread:get("checked")
    mismatches_sum = mismatches_sum + thread:get("mismatches")
    non2xx_sum = non2xx_sum + thread:get("non2xx")
    if problem == "" then
      problem = thread:get("first_problem")
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},'
      .. '"checked":%d,"mismatches":%d,"non2xx":%d,"first_problem":%s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    checked_sum, mismatches_sum, non2xx_sum, json_string(problem)))
end
