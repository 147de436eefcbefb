-- wrk script of the load benchmark (bench/run.sh): every request carries
-- `Authorization: Bearer <token>`, the tokens taken in turn from a file (one per line),
-- wrapping around at its end.
--
--   wrk -t1 -c32 -d10s --latency -s bench/tokens.lua URL -- TOKENS [STOP_AFTER]
--
-- TOKENS      token file, one compact JWS per line
-- STOP_AFTER  optional: stop once this many requests have been sent (the cache-fill
--             run); absent: run for -d.
--
-- (Runs 1-4 of the benchmark history, `git log -p BENCHMARKS.md`, also paced connections with a delay() here; the
-- half-saturation runs now use bench/loadgen, an open-loop generator.)
--
-- Requests are formatted once, at start, so the per-request cost in wrk is a table
-- lookup. done() prints one JSON line prefixed with "BENCH_JSON " for the driver.

local reqs = {}
local count = 0
local index = 0
local stop_after = nil
local sent = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("tokens.lua: usage: -- TOKENS [STOP_AFTER]")
  end
  for line in io.lines(path) do
    if #line > 0 then
      count = count + 1
      reqs[count] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. line })
    end
  end
  if count == 0 then
    error("tokens.lua: no token in " .. path)
  end
  stop_after = tonumber(args[2] or "")
end

function request()
  index = index + 1
  if index > count then
    index = 1
  end
  sent = sent + 1
  if stop_after ~= nil and sent > stop_after then
    wrk.thread:stop()
  end
  return reqs[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
