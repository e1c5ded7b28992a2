-- wrk script: bench/predict.lua's checked requests, each connection pausing between two of them,
-- for a steady load below capacity (bench/cluster.py's soak).
--
-- Usage (from the repository's root): wrk -t N -c N -s bench/paced.lua URL -- CASES.lua PAUSE_MS

dofile("bench/predict.lua")

local checked_init = init

function init(args)
  checked_init(args)
  pause_ms = tonumber(args[2])
end

function delay()
  return pause_ms
end
