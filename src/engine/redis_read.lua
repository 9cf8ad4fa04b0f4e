-- herald's read script (SPEC §5; ../shared/design/redis-engine.md §2, §3):
-- what some topics hold after a cursor, with the hub's epoch and seq as of
-- the read (its consistent cut), in one atomic step.
--
-- KEYS[1]  {prefix}:hub, a hash: e = epoch, s = last seq issued
-- ARGV     prefix ("{herald}"), epoch candidate (used when the hub hash is
--          missing, as by the publish script), cursor epoch ("" = the
--          cursor "earliest"), cursor seq, limit (entries per topic at
--          most), expired_at (ms: entries with t <= it count as lost; -1 =
--          no TTL), n, then n topics
-- Returns  {epoch, cut, rotation, then per topic: lost_upto, k, then k
--          quadruples seq, ms, event ("" = none), data; or, for a topic
--          that cannot be read (its meta or stream key of another type, an
--          entry herald did not write, any other error): the error text,
--          then -1}
--          rotation is "lost" when this read started the epoch (no hub
--          hash: it then also records the run_id in {prefix}:rid, as the
--          hello script does), "" otherwise.
--          lost_upto is the newest seq of the topic known lost in this
--          epoch (trimmed or expired; 0 = none); the entries are those
--          after the cursor (all of the epoch's when the cursor is of
--          another epoch, or "earliest"), oldest first, at most limit,
--          expired ones left out.
-- Numbers go out through string.format('%d'): Lua's .. prints them %.14g.

local hub = KEYS[1]
local prefix = ARGV[1]
local candidate = ARGV[2]
local cursor_epoch = ARGV[3]
local cursor_seq = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local expired_at = tonumber(ARGV[6])
local n = tonumber(ARGV[7])

if not (cursor_seq and limit and expired_at and n) or #ARGV ~= 7 + n or limit < 1 then
  return redis.error_reply('ERR herald read: bad arguments')
end
if hub ~= prefix .. ':hub' or candidate == '' then
  return redis.error_reply('ERR herald read: bad hub key or epoch candidate')
end

local epoch, cut = unpack(redis.call('HMGET', hub, 'e', 's'))
local rotation = ''
if not epoch then
  epoch, cut, rotation = candidate, 0, 'lost'
  redis.call('HSET', hub, 'e', epoch, 's', 0)
  redis.call('SET', prefix .. ':rid', string.match(redis.call('INFO', 'server'), 'run_id:(%x+)'))
end
cut = tonumber(cut) or 0

-- A topic's read fails alone (the others of a catch-up round are still
-- read) with a text naming what is wrong: its keys of another type (an
-- operator's), an entry herald did not write, any other error.
local function refuse(text)
  error(text, 0)
end

-- An entry as the publish script writes it: id <seq>-0, then d, data, t,
-- ms, p, prev, v, event.
local function check(stream, entry)
  local f = entry[2]
  if not string.match(entry[1], '^%d+%-0$') or #f ~= 8 or f[1] ~= 'd' or f[3] ~= 't' or
      f[5] ~= 'p' or f[7] ~= 'v' or not tonumber(f[4]) or not tonumber(f[6]) then
    refuse('entry ' .. entry[1] .. ' of ' .. stream .. ' is not one herald wrote')
  end
end

local function seq_of(entry)
  return string.sub(entry[1], 1, -3) -- "<seq>-0"
end

local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    refuse('WRONGTYPE ' .. key .. ' is a ' .. t .. ', not a ' .. want)
  end
end

-- Returns the topic's lost_upto and entries.
local function read_topic(topic)
  local stream = prefix .. ':s:' .. topic
  local meta = prefix .. ':m:' .. topic
  check_type(meta, 'hash')
  check_type(stream, 'stream')
  local function expired(entry)
    check(stream, entry)
    return expired_at >= 0 and tonumber(entry[2][4]) <= expired_at
  end
  local meta_e, meta_l = unpack(redis.call('HMGET', meta, 'e', 'l'))
  local lost = 0
  local entries = {}
  if meta_e ~= epoch then
    return lost, entries
  end
  -- The first entry still held and young enough: its prev is the newest lost.
  local from = '-'
  local first
  while true do
    first = redis.call('XRANGE', stream, from, '+', 'COUNT', 1)[1]
    if not first or not expired(first) then break end
    from = '(' .. first[1]
  end
  if not first then
    return tonumber(meta_l) or 0, entries
  end
  lost = tonumber(first[2][6])
  -- From the first young entry on (or after the cursor, if later): expired
  -- entries must not take places in the COUNT, or a page would look whole
  -- while younger entries lay beyond it.
  local start = first[1]
  if cursor_epoch == epoch and cursor_seq >= tonumber(seq_of(first)) then
    start = '(' .. string.format('%d', cursor_seq) .. '-0'
  end
  for _, entry in ipairs(redis.call('XRANGE', stream, start, '+', 'COUNT', limit)) do
    if not expired(entry) then
      entries[#entries + 1] = entry
    end
  end
  return lost, entries
end

local reply = { epoch, string.format('%d', cut), rotation }
for i = 1, n do
  local ok, lost, entries = pcall(read_topic, ARGV[7 + i])
  if not ok then
    -- A Redis error (redis.call's) comes as a table with its text in err.
    reply[#reply + 1] = type(lost) == 'table' and tostring(lost.err) or tostring(lost)
    reply[#reply + 1] = -1
  else
    reply[#reply + 1] = string.format('%d', lost)
    reply[#reply + 1] = #entries
    for _, entry in ipairs(entries) do
      local f = entry[2] -- d, data, t, ms, p, prev, v, event (check)
      reply[#reply + 1] = seq_of(entry)
      reply[#reply + 1] = f[4]
      reply[#reply + 1] = f[8]
      reply[#reply + 1] = f[2]
    end
  end
end
return reply
