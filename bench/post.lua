-- POST a ~200 B chat body with a bearer key. Usage: wrk ... URL -s post.lua -- KEY MODEL STREAM(0|1)
-- Direct runs use the same script: nginx ignores the Authorization header.

function init(args)
   local key = args[1] or "none"
   local model = args[2] or "bench-json"
   local stream = (args[3] == "1") and "true" or "false"
   wrk.method = "POST"
   wrk.headers["Authorization"] = "Bearer " .. key
   wrk.headers["Content-Type"] = "application/json"
   wrk.body = '{"model":"' .. model .. '","messages":[{"role":"system","content":"You are terse."},'
      .. '{"role":"user","content":"Benchmark request: reply with a short fixed answer please."}],'
      .. '"max_tokens":16,"temperature":0,"stream":' .. stream .. '}'
end
