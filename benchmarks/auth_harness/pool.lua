-- wrk script: cycle through raw HTTP requests built before the run.
--
-- Usage: wrk ... -s pool.lua http://127.0.0.1:PORT/ -- /path/to/pool.bin
-- The pool file holds complete requests separated by NUL bytes (request_mix.py).
-- Building requests in Lua per call makes wrk itself the bottleneck near
-- 26,000 requests/s; returning pre-built strings keeps it far above any server
-- measured here.  done() prints one line "HARNESS-RESULT {json}" for the driver.

local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local blob = file:read("*a")
   file:close()
   pool = {}
   local start = 1
   while start <= #blob do
      local stop = string.find(blob, "\0", start, true) or (#blob + 1)
      pool[#pool + 1] = string.sub(blob, start, stop - 1)
      start = stop + 1
   end
   assert(#pool > 0, "empty request pool")
   -- Threads start at different places so that they do not send the same session
   -- at the same moment.
   position = (id * 7919) % #pool
end

function request()
   position = position + 1
   if position > #pool then
      position = 1
   end
   return pool[position]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'HARNESS-RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,"max_us":%.1f,'
         .. '"non_2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,'
         .. '"timeouts":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
