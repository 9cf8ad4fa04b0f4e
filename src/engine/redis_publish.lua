-- herald's publish script (SPEC §5; ../shared/design/redis-engine.md, part B):
-- one atomic step that assigns ids to a batch of messages (a single publish
-- is a batch of one), appends each to its topic's history, trims that
-- history and hands each message to every node over pub/sub. The engine
-- also sends several publish requests as one batch (group commit) and
-- splits the seqs back by request; a refusal refuses them all, and it then
-- sends each alone.
--
-- KEYS[1]  {prefix}:hub, a hash: e = epoch, s = last seq issued
-- ARGV     prefix ("{herald}"), epoch candidate, now (ms), max_messages,
--          max_bytes, ttl (ms, 0 = none), idle_ttl (s, 0 = none),
--          known epoch, known seq (the highest seq this node has seen in
--          known epoch; "" and 0 when none), overhead (bytes a message
--          costs besides its topic, event and data), n,
--          then n triples: topic, event ("" = none), data,
--          then the idempotency TTL (ms, 0 = keys are not remembered) and
--          n idempotency keys ("" = none)
-- Returns  {epoch, rotation, seq_1, ..., seq_n}; rotation is "" or why
--          the epoch changed: "lost" (no hub hash; the run_id is then
--          recorded in {prefix}:rid, as the hello script does) or
--          "rollback" (Redis is behind what was seen: a restore, a
--          failover that lost writes).
--          A negative seq_i is item i repeating an idempotency key: nothing
--          was published for it, and -seq_i is the first publish's seq.
--
-- Per topic T:
--   {prefix}:s:T  stream, entry id "<seq>-0", fields in this order:
--                 d data, t ms, p previous seq of T in this epoch (0 = first), v event
--   {prefix}:m:T  hash: e = epoch of the stream, l = last seq of T,
--                 b = topic, event and data bytes held
--   {prefix}:c:T  channel: "<epoch>:<seq>:<prev>:<ms>:<event length>:<event><data>"
--   {prefix}:i:T|K  string "<epoch>:<seq>", expiring after the idempotency TTL:
--                 the publish of T with idempotency key K ('|' is in no topic
--                 name). A key of another epoch names a message that is gone:
--                 the item is published anew.
-- {prefix}:topics, a sorted set (every score 0), gets T when T's meta is new
-- in this epoch: the index GET /topics pages through (redis_topics.lua).
-- A message costs #T + #event + #data + overhead bytes, as in the memory
-- engine (the overhead is counted per entry, not stored, so nodes that
-- pass different ones do not skew b). Before each append the oldest
-- entries go while they are expired (t <= now - ttl), or while keeping them
-- would exceed max_messages or max_bytes with the new one; a message larger
-- than max_bytes is kept alone, and limits of 0 behave like 1 (as in the
-- memory engine).
--
-- Phase 1 only reads and checks, so a refusal writes nothing; phase 2 has
-- no command that can fail, so a batch is stored whole or not at all.
-- Numbers go out through string.format('%d'): Lua's .. prints them %.14g.

local hub = KEYS[1]
local prefix = ARGV[1]
local candidate = ARGV[2]
local now = tonumber(ARGV[3])
local max_messages = tonumber(ARGV[4])
local max_bytes = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local idle_ttl = tonumber(ARGV[7])
local known_epoch = ARGV[8]
local known_seq = tonumber(ARGV[9])
local overhead = tonumber(ARGV[10])
local n = tonumber(ARGV[11])

local function refuse(why)
  return redis.error_reply('ERR herald publish: ' .. why)
end

-- Phase 1: checks.
if not (now and max_messages and max_bytes and ttl and idle_ttl and known_seq and overhead
    and n) then
  return refuse('a numeric argument is not a number')
end
if n < 1 or #ARGV ~= 12 + 4 * n then
  return refuse('expected ' .. string.format('%d', 12 + 4 * n) .. ' arguments')
end
local idem_ttl = tonumber(ARGV[12 + 3 * n])
if not idem_ttl then
  return refuse('a numeric argument is not a number')
end
if hub ~= prefix .. ':hub' or candidate == '' then
  return refuse('bad hub key or epoch candidate')
end

local function wrong_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return refuse(key .. ' holds a ' .. t .. ', not a ' .. want)
  end
end

local index = prefix .. ':topics'
local err = wrong_type(hub, 'hash') or wrong_type(index, 'zset')
if err then return err end
local hub_e, hub_s = unpack(redis.call('HMGET', hub, 'e', 's'))
if hub_s and not tonumber(hub_s) then
  return refuse(hub .. ' s is not a number') -- HINCRBY would fail half way
end
hub_s = tonumber(hub_s) or 0
local rotation = ''
if not hub_e then
  rotation = 'lost'
elseif hub_e == known_epoch and known_seq > hub_s then
  rotation = 'rollback'
end

local topics = {}
for i = 1, n do
  local topic = ARGV[9 + 3 * i]
  if topic == '' then
    return refuse('empty topic')
  end
  if not topics[topic] then
    local t = { meta = prefix .. ':m:' .. topic, stream = prefix .. ':s:' .. topic }
    err = wrong_type(t.meta, 'hash') or wrong_type(t.stream, 'stream')
    if err then return err end
    local e, l, b = unpack(redis.call('HMGET', t.meta, 'e', 'l', 'b'))
    t.e, t.l, t.b = e, tonumber(l) or 0, tonumber(b) or 0
    if hub_e and e == hub_e and t.l > hub_s then
      rotation = 'rollback'
    end
    topics[topic] = t
  end
end
-- Each item's idempotency key name (checked here; read in phase 2, where an
-- item earlier in the batch may have just set it).
local idem = {}
for i = 1, n do
  local key = ARGV[12 + 3 * n + i]
  if key ~= '' and idem_ttl > 0 then
    local name = prefix .. ':i:' .. ARGV[9 + 3 * i] .. '|' .. key
    err = wrong_type(name, 'string')
    if err then return err end
    idem[i] = name
  end
end
if rotation ~= '' and candidate == hub_e then
  return refuse('the epoch candidate is the current epoch')
end

-- Phase 2: writes.
local epoch = hub_e
if rotation ~= '' then
  epoch = candidate
  redis.call('HSET', hub, 'e', epoch, 's', 0)
end
if rotation == 'lost' then
  redis.call('SET', prefix .. ':rid', string.match(redis.call('INFO', 'server'), 'run_id:(%x+)'))
end

-- t.len: the stream's length, read once per call and kept up to date
-- (only this script writes the stream while it runs), and the oldest entry
-- read only when it may have to go: a batch of many messages costs Redis
-- two commands per message to trim a full history, not five.
local function trim(topic, t, bytes)
  local expired_at = now - ttl
  while true do
    t.len = t.len or redis.call('XLEN', t.stream)
    local len = t.len
    if len == 0 then
      t.b = 0 -- nothing held, whatever the meta hash said (the stream expired first)
      return
    end
    local held = t.b + bytes + (len + 1) * overhead
    if ttl == 0 and len < max_messages and held <= max_bytes then return end
    local oldest = redis.call('XRANGE', t.stream, '-', '+', 'COUNT', 1)[1]
    local f = oldest[2] -- d, data, t, ms, p, prev, v, event
    local expired = ttl > 0 and tonumber(f[4]) <= expired_at
    if not (expired or len >= max_messages or held > max_bytes) then return end
    redis.call('XDEL', t.stream, oldest[1])
    t.len = len - 1
    t.b = t.b - (#topic + #f[8] + #f[2])
  end
end

-- The first publish's seq when item i repeats a key of this epoch (also one
-- earlier in the batch: recorded below as it is published), else nil.
local function repeated_seq(i)
  if not idem[i] then return nil end
  local held = redis.call('GET', idem[i])
  if not held then return nil end
  local e, seq = string.match(held, '^([^:]*):(%d+)$')
  if e ~= epoch then return nil end
  return tonumber(seq)
end

local reply = { epoch, rotation }
local now_text = string.format('%d', now)
for i = 1, n do
  local topic, event, data = ARGV[9 + 3 * i], ARGV[10 + 3 * i], ARGV[11 + 3 * i]
  local t = topics[topic]
  local first = repeated_seq(i)
  if first then
    reply[#reply + 1] = -first
  else
    t.touched = true
    -- The first write: Redis refuses a script -OOM (past maxmemory) only at its
    -- first write, and only when that one can grow memory (DEL cannot).
    local seq = redis.call('HINCRBY', hub, 's', 1)
    if t.e ~= epoch then
      -- The stream belongs to another epoch (or none): its ids mean nothing now.
      redis.call('DEL', t.stream)
      t.e, t.l, t.b, t.len = epoch, 0, 0, 0
      redis.call('ZADD', index, 0, topic) -- listed by the topics script (redis_topics.lua)
    end
    local bytes = #topic + #event + #data
    trim(topic, t, bytes)
    local prev = t.l
    redis.call('XADD', t.stream, string.format('%d-0', seq), 'd', data, 't', now_text,
      'p', string.format('%d', prev), 'v', event)
    t.l, t.b, t.len = seq, t.b + bytes, t.len + 1
    redis.call('PUBLISH', prefix .. ':c:' .. topic,
      string.format('%s:%d:%d:%s:%d:', epoch, seq, prev, now_text, #event) .. event .. data)
    reply[#reply + 1] = seq
    if idem[i] then
      redis.call('SET', idem[i], string.format('%s:%d', epoch, seq), 'PX',
        string.format('%d', idem_ttl))
    end
  end
end

for _, t in pairs(topics) do
  -- A topic whose every item was a repeat is left as it was.
  if t.touched then
    redis.call('HSET', t.meta, 'e', t.e, 'l', string.format('%d', t.l), 'b', string.format('%d', t.b))
    if idle_ttl > 0 then
      redis.call('EXPIRE', t.meta, idle_ttl)
      redis.call('EXPIRE', t.stream, idle_ttl)
    end
  end
end
return reply
