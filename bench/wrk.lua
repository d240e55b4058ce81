-- wrk script for the relay scenario. BENCH_PATH is the request target wrk sends verbatim: "/1k" for a server
-- or gateway, "http://ORIGIN/1k" (absolute form) for a forward proxy; BENCH_HOST is the Host field then.
-- done() prints one machine-readable line for bench/run.
wrk.path = os.getenv("BENCH_PATH") or "/"
local host = os.getenv("BENCH_HOST")
if host and host ~= "" then
  wrk.headers["Host"] = host
end
if os.getenv("BENCH_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
