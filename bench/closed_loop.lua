-- wrk script for bench/serving_benchmark.py: POSTs JSON bodies (one per line of the file
-- given after `--`), round-robin per connection, and prints one JSON line of results.
local requests_ = {}
local next_index = 1

function init(args)
  local path = args[1]
  local target = args[2] or "/"
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(path) do
    if #line > 0 then
      requests_[#requests_ + 1] = wrk.format("POST", target, headers, line)
    end
  end
  -- Threads start at different offsets so they do not send the same row in lockstep.
  next_index = (id or 0) % #requests_ + 1
end

function request()
  local req = requests_[next_index]
  next_index = next_index % #requests_ + 1
  return req
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
