-- herald's topics script (GET /topics/{t} and GET /topics in cluster mode):
-- what the cluster holds of some topics, and a page of the topic index, in
-- the hub's current epoch.
--
-- KEYS[1]  {prefix}:hub, a hash: e = epoch, s = last seq issued
-- ARGV     prefix ("{herald}"), epoch candidate (unused: this script
--          starts no epoch), expired_at (ms: entries with t <= it count as
--          expired; -1 = no TTL), min and max (ZRANGEBYLEX bounds of the
--          page, computed by the caller: Lua compares strings by locale),
--          want (valid topics the page needs; 0 = no page), budget (names
--          of the index examined at most), n, then n topics to describe
-- Returns  {epoch ("" when the hub hash is missing), resume, k, then k
--          quadruples name, count, bytes, last, then n quadruples exists,
--          count, bytes, last}
--          The page: names of {prefix}:topics from min to max whose meta is
--          of this epoch and that still hold an entry a read would return,
--          at most want. resume is the last name examined when the budget
--          ran out before the page was full (continue after it), else "". Names whose meta is gone or of another epoch (expired by the
--          idle TTL, flushed, an older epoch) are dropped from the index as
--          they are met. exists is 1 when the topic's meta is of this
--          epoch; count and bytes (topic, event and data bytes) are what a
--          read would return (expired entries at the oldest end left out);
--          last is the meta's l, the topic's newest seq (0 = none).
--
-- {prefix}:topics  sorted set, every score 0 (so ZRANGEBYLEX is byte
--                  order): the names the publish script gave a new meta.
-- Numbers go out through string.format('%d'): Lua's .. prints them %.14g.

local hub = KEYS[1]
local prefix = ARGV[1]
local expired_at = tonumber(ARGV[3])
local min, max = ARGV[4], ARGV[5]
local want = tonumber(ARGV[6])
local budget = tonumber(ARGV[7])
local n = tonumber(ARGV[8])

if not (expired_at and want and budget and n) or #ARGV ~= 8 + n then
  return redis.error_reply('ERR herald topics: bad arguments')
end
if hub ~= prefix .. ':hub' then
  return redis.error_reply('ERR herald topics: bad hub key')
end

local epoch = redis.call('HGET', hub, 'e')
local index = prefix .. ':topics'

-- A topic's held entries as a read sees them: nil when its meta is not of this epoch.
local function stats(topic)
  if not epoch then return nil end
  local e, l, b = unpack(redis.call('HMGET', prefix .. ':m:' .. topic, 'e', 'l', 'b'))
  if e ~= epoch then return nil end
  local stream = prefix .. ':s:' .. topic
  local count = redis.call('XLEN', stream)
  local bytes = tonumber(b) or 0
  if expired_at >= 0 then
    -- Oldest first: the expired ones are at the start.
    local from = '-'
    local young = false
    while count > 0 and not young do
      local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', 64)
      if #entries == 0 then break end
      for _, entry in ipairs(entries) do
        local f = entry[2] -- d, data, t, ms, p, prev, v, event
        if tonumber(f[4]) > expired_at then
          young = true
          break
        end
        count = count - 1
        bytes = bytes - (#topic + #f[8] + #f[2])
        from = '(' .. entry[1]
      end
    end
  end
  if count == 0 then bytes = 0 end -- the stream expired before its meta
  return count, bytes, tonumber(l) or 0
end

local page = {}
local resume = ''
if want > 0 and budget > 0 then
  local names = redis.call('ZRANGEBYLEX', index, min, max, 'LIMIT', 0, budget)
  local found = 0
  for _, name in ipairs(names) do
    if found == want then break end
    local count, bytes, last = stats(name)
    if not count then
      redis.call('ZREM', index, name)
    elseif count > 0 then
      found = found + 1
      page[#page + 1] = name
      page[#page + 1] = string.format('%d', count)
      page[#page + 1] = string.format('%d', bytes)
      page[#page + 1] = string.format('%d', last)
    end
  end
  if found < want and #names == budget then
    resume = names[#names]
  end
end

local reply = { epoch or '', resume, #page / 4 }
for _, v in ipairs(page) do
  reply[#reply + 1] = v
end
for i = 1, n do
  local count, bytes, last = stats(ARGV[8 + i])
  reply[#reply + 1] = count and 1 or 0
  reply[#reply + 1] = string.format('%d', count or 0)
  reply[#reply + 1] = string.format('%d', bytes or 0)
  reply[#reply + 1] = string.format('%d', last or 0)
end
return reply
