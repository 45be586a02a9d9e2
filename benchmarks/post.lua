-- wrk script: POST the JSON body in the BODY environment variable (or BODY_FILE) to PATH,
-- and count non-2xx answers so failed requests show up in the summary.
local body = os.getenv("BODY")
local file = os.getenv("BODY_FILE")
if file then
  local f = assert(io.open(file, "rb"))
  body = f:read("*a")
  f:close()
end
wrk.method = "POST"
wrk.path = os.getenv("PATH_") or "/invocations"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

local failed = 0
function response(status, headers, body)
  if status >= 300 then
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  io.write(string.format(
    "RESULT requests=%d duration_us=%d errors_status=%d errors_connect=%d errors_read=%d errors_timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
