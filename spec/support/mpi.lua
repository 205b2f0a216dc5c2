-- Helpers of the MPI specs (spec/mpi_*_spec.lua): whether this busted runs
-- as rank 0 of an MPI world with serving ranks (make test runs them under
-- mpiexec -n 3, see tools/runspecs.lua), and where a task runs.
local M = {}

local ok, mpi = pcall(require, "futures.mpi")
M.world = ok and mpi.world() or nil

--- Is this rank 0 of a world of at least n ranks (3 by default)?
function M.ready(n)
  return M.world ~= nil and M.world.mode == "world" and M.world.size >= (n or 3)
end

M.why = ok and ("needs rank 0 of mpiexec -n 3 (make test runs it so); this process is a world of mode "
  .. M.world.mode .. " and " .. M.world.size .. " rank(s)")
  or ("futures.mpi cannot be loaded: " .. tostring(mpi))

--- A task: the MPI rank of the process that runs it (its parent's, which
-- the worker's environment names), its pid and its parent's pid.
function M.where()
  local f = io.open("/proc/self/stat")
  local s = f:read("a")
  f:close()
  local pid, ppid = s:match("^(%d+) %(.-%) %a (%d+)")
  local rank = os.getenv("OMPI_COMM_WORLD_RANK") or os.getenv("PMIX_RANK") or os.getenv("PMI_RANK")
  return tonumber(rank), tonumber(pid), tonumber(ppid)
end

--- The pid of the process that runs this code.
function M.pid()
  local f = io.open("/proc/self/stat")
  local pid = f:read("n")
  f:close()
  return pid
end

return M
