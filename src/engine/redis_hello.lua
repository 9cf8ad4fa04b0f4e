-- herald's hello script (SPEC §5; ../shared/design/redis-engine.md §2): run
-- by every node at every (re)connect, before anything else it sends. In one
-- atomic step it checks whether Redis still holds what the hub was, starts
-- a new epoch when it may not, and answers the epoch and the cut.
--
-- KEYS[1]  {prefix}:hub, a hash: e = epoch, s = last seq issued
-- ARGV     prefix ("{herald}"), epoch candidate, restart rotates ("1": a
--          restart starts a new epoch; "0": the operator trusts Redis's
--          persistence), known epoch, known seq (the highest seq the node
--          has seen in known epoch; "" and 0 when none), left epochs (the
--          epochs the node moved away from, comma-separated; "" when none)
-- Returns  {epoch, cut, rotation}; rotation is "" or why the epoch changed:
--          "lost" (no hub hash), "restart" (another Redis process than the
--          one that wrote {prefix}:rid) or "rollback" (Redis is behind what
--          was seen, or back at an epoch that was left: epochs are random,
--          so only a restore of older data brings one back).
--
-- {prefix}:rid holds the run_id (INFO server) of the Redis process that
-- last ran a hello, or created the hub (every script that creates it sets
-- rid too). A hub without rid (written by a herald older than this script,
-- or rid evicted alone) counts as a restart: nothing proves Redis kept
-- every write since. Several nodes reconnecting after one restart rotate once: the
-- first hello rotates and stores the new run_id, the others then find it.
-- Numbers go out through string.format('%d'): Lua's .. prints them %.14g.

local hub = KEYS[1]
local prefix = ARGV[1]
local candidate = ARGV[2]
local restart_rotates = ARGV[3] == '1'
local known_epoch = ARGV[4]
local known_seq = tonumber(ARGV[5])
local left = ARGV[6]

if #ARGV ~= 6 or not known_seq then
  return redis.error_reply('ERR herald hello: bad arguments')
end
if hub ~= prefix .. ':hub' or candidate == '' then
  return redis.error_reply('ERR herald hello: bad hub key or epoch candidate')
end
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')

local rid = prefix .. ':rid'
local epoch, cut = unpack(redis.call('HMGET', hub, 'e', 's'))
cut = tonumber(cut) or 0
local rotation = ''
if not epoch then
  rotation = 'lost'
elseif restart_rotates and redis.call('GET', rid) ~= run_id then
  rotation = 'restart'
elseif epoch == known_epoch and known_seq > cut then
  rotation = 'rollback'
else
  for e in string.gmatch(left, '%x+') do
    if e == epoch then rotation = 'rollback' end
  end
end
if rotation ~= '' then
  if candidate == epoch then
    return redis.error_reply('ERR herald hello: the epoch candidate is the current epoch')
  end
  epoch, cut = candidate, 0
  redis.call('HSET', hub, 'e', epoch, 's', 0)
end
redis.call('SET', rid, run_id)
return { epoch, string.format('%d', cut), rotation }
