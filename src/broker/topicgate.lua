#!lua name=topicgate
-- topicgate's history library: recoverable messages (docs/PROTOCOL.md,
-- history and recovery). Every gateway loads it with FUNCTION LOAD REPLACE
-- at start and after every reconnect, on every master of a cluster.
--
--   FCALL topicgate_publish 1 <channel> <payload>
--       records <payload> in the channel's history, publishes it with its
--       offset and epoch, and returns the offset (nil when history is off).
--   FCALL topicgate_publish_position 1 <channel> <payload>
--       the same, returning {offset, epoch}: what the gateway itself calls.
--   FCALL_RO topicgate_history 1 <channel> [<epoch> <offset>]
--       {epoch, last offset, then offset and payload of every message still
--       kept after <offset> when <epoch> is the current one}; nil when the
--       channel has no history.
--   FCALL topicgate_reset 1 <channel> <epoch>
--       starts a new epoch, at offset 0 with no messages, when <epoch> is
--       still the channel's current one; returns the current {offset,
--       epoch} (nil when the channel has no history). A gateway calls it
--       when the history lost messages it had delivered under <epoch>: a
--       failover to a replica that missed them would otherwise hand their
--       offsets out again. Only the first of several callers resets.
--
-- <channel> is the topic's Redis channel (redis.channel_prefix + topic).
--
-- The constants below are filled in by the loading gateway from its
-- [history] settings and broker kind; with several gateways on one Redis,
-- the last one to load wins, so they should agree.
local SIZE = __SIZE__        -- messages kept per channel; 0: only publish
local TTL = __TTL__          -- seconds the messages outlive the last record
local SHARDED = __SHARDED__  -- a Redis Cluster gateway subscribes with SSUBSCRIBE

-- The epoch and last offset outlive the messages by 30 days, so a quiet
-- channel whose messages expired goes on from its last offset in the same
-- epoch rather than reusing offsets under it. When this meta key is gone
-- (expired, evicted, flushed), a new epoch starts at offset 1 and whatever
-- is left of the old stream is dropped: an epoch never names two messages
-- with one offset.
local META_TTL = TTL + 30 * 24 * 3600

-- A recorded message travels on the channel as
--   "\0tg1:" <epoch> ":" <offset> "\0" <payload>
-- The leading NUL byte and the version keep it apart from any plain PUBLISH
-- payload in practice (JSON and text never start with NUL); a plain
-- payload reaches subscribers untouched and unpositioned.
local MAGIC = '\0tg1:'

-- Keys. Every key a call touches must hash to the channel's cluster slot.
-- Redis hashes the part between the first '{' and the next '}' when that
-- part is not empty (the hash tag), else the whole name. A key body is:
--   '=' .. channel            when the channel has a hash tag (kept),
--   '{' .. channel .. '}'     when it has none and no '}' (wrapped),
--   '#{' .. T .. '}' .. channel  otherwise (e.g. 'a}b', '{}x'), where T is
--                             two or three bytes whose CRC16 is the slot.
-- The leading character tells the forms apart, so two channels never share
-- a key. src/broker/history/keys.rs derives the same names in Rust, and its
-- tests check both against Redis's hashing.

-- Built on first use: the loading environment offers no library (`bit`
-- and `string` exist only when a function runs).
local CRC = nil

local function crc_table()
  local table = {}
  for i = 0, 255 do
    local crc = bit.lshift(i, 8)
    for _ = 1, 8 do
      if bit.band(crc, 0x8000) ~= 0 then
        crc = bit.bxor(bit.lshift(crc, 1), 0x1021)
      else
        crc = bit.lshift(crc, 1)
      end
      crc = bit.band(crc, 0xFFFF)
    end
    table[i] = crc
  end
  return table
end

-- CRC16/XMODEM, the hash of Redis Cluster.
local function crc16(s)
  CRC = CRC or crc_table()
  local crc = 0
  for i = 1, #s do
    local index = bit.band(bit.bxor(bit.rshift(crc, 8), s:byte(i)), 0xFF)
    crc = bit.band(bit.bxor(bit.lshift(crc, 8), CRC[index]), 0xFFFF)
  end
  return crc
end

-- INVERSE[k + 1] is the two-byte string (as a number) whose CRC16 is 2^k.
-- CRC16 is linear over two-byte strings, so XORing these solves for any CRC.
local INVERSE = {
  0x9d71, 0x2ac3, 0x5586, 0xab0c, 0x4639, 0x8c72, 0x08c5, 0x118a,
  0x2314, 0x4628, 0x8c50, 0x0881, 0x1102, 0x2204, 0x4408, 0x8810,
}

local function solve(crc)
  local m = 0
  for k = 0, 15 do
    if bit.band(crc, bit.lshift(1, k)) ~= 0 then
      m = bit.bxor(m, INVERSE[k + 1])
    end
  end
  return m
end

local CLOSE = 0x7D -- '}', which a hash tag cannot contain

-- A hash tag whose slot is `slot`: the first of [p] b0 b1 with no '}'
-- (p = none, then 1, 2, ... skipping '}'), trying the four CRCs that map to
-- the slot. crc16(p 0 0) XOR crc16(b0 b1) = crc16(p b0 b1).
local function slot_tag(slot)
  for p = 0, 255 do
    if p ~= CLOSE then
      local base, lead = 0, ''
      if p > 0 then
        lead = string.char(p)
        base = crc16(lead .. '\0\0')
      end
      for high = 0, 3 do
        local m = solve(bit.bxor(slot + high * 16384, base))
        local b0, b1 = bit.rshift(m, 8), bit.band(m, 0xFF)
        if b0 ~= CLOSE and b1 ~= CLOSE then
          return lead .. string.char(b0, b1)
        end
      end
    end
  end
  error('no hash tag found')
end

local function key_body(channel)
  local open = channel:find('{', 1, true)
  if open then
    local close = channel:find('}', open + 1, true)
    if close and close > open + 1 then
      return '=' .. channel
    end
  end
  if not channel:find('}', 1, true) then
    return '{' .. channel .. '}'
  end
  return '#{' .. slot_tag(crc16(channel) % 16384) .. '}' .. channel
end

local function keys_of(channel)
  local body = key_body(channel)
  return 'topicgate:meta:' .. body, 'topicgate:hist:' .. body
end

local DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'

-- A new epoch: the server's time in microseconds, base 36. (math.random is
-- seeded identically in every script, so it cannot name anything.)
local function new_epoch()
  local time = redis.call('TIME')
  local n = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local epoch = ''
  repeat
    local digit = n % 36
    epoch = DIGITS:sub(digit + 1, digit + 1) .. epoch
    n = math.floor(n / 36)
  until n == 0
  return epoch
end

local function publish(channel, payload)
  if SHARDED then
    redis.call('SPUBLISH', channel, payload)
  else
    redis.call('PUBLISH', channel, payload)
  end
end

-- Starts a new life of the channel's history at offset 1.
local function restart(meta, stream)
  local epoch = new_epoch()
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 1)
  return epoch, 1
end

local function record(keys, args)
  if #keys ~= 1 or #args ~= 1 then
    return nil, 'usage: FCALL topicgate_publish 1 <channel> <payload>'
  end
  local channel, payload = keys[1], args[1]
  if SIZE == 0 then
    publish(channel, payload)
    return nil
  end
  local meta, stream = keys_of(channel)
  local epoch, offset = redis.call('HGET', meta, 'epoch'), nil
  if epoch then
    offset = redis.call('HINCRBY', meta, 'offset', 1)
  else
    epoch, offset = restart(meta, stream)
  end
  local id = string.format('%d-0', offset)
  local added = redis.pcall('XADD', stream, 'MAXLEN', SIZE, id, 'p', payload)
  if type(added) == 'table' and added.err then
    -- The stream is ahead of its meta key (restored or written apart
    -- from it): its offsets cannot go on, so neither can its epoch.
    epoch, offset = restart(meta, stream)
    redis.call('XADD', stream, 'MAXLEN', SIZE, '1-0', 'p', payload)
  end
  redis.call('EXPIRE', stream, TTL)
  redis.call('EXPIRE', meta, META_TTL)
  publish(channel, MAGIC .. epoch .. ':' .. string.format('%d', offset) .. '\0' .. payload)
  return {offset, epoch}
end

redis.register_function('topicgate_publish', function(keys, args)
  local position, usage = record(keys, args)
  if usage then
    return redis.error_reply(usage)
  end
  if position then
    return position[1]
  end
  return nil
end)

redis.register_function('topicgate_publish_position', function(keys, args)
  local position, usage = record(keys, args)
  if usage then
    return redis.error_reply(usage)
  end
  return position
end)

redis.register_function('topicgate_reset', function(keys, args)
  if #keys ~= 1 or #args ~= 1 then
    return redis.error_reply('usage: FCALL topicgate_reset 1 <channel> <epoch>')
  end
  local meta, stream = keys_of(keys[1])
  local state = redis.call('HMGET', meta, 'epoch', 'offset')
  if not state[1] then
    return nil
  end
  if state[1] ~= args[1] then
    return {tonumber(state[2]) or 0, state[1]}
  end
  local epoch = new_epoch()
  if epoch == args[1] then
    epoch = epoch .. '0'
  end
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  redis.call('EXPIRE', meta, META_TTL)
  return {0, epoch}
end)

redis.register_function{
  function_name = 'topicgate_history',
  flags = {'no-writes'},
  callback = function(keys, args)
    if #keys ~= 1 or (#args ~= 0 and #args ~= 2) then
      return redis.error_reply('usage: FCALL_RO topicgate_history 1 <channel> [<epoch> <offset>]')
    end
    if #args == 2 and not args[2]:match('^%d+$') then
      return redis.error_reply('offset must be a non-negative integer')
    end
    local meta, stream = keys_of(keys[1])
    local state = redis.call('HMGET', meta, 'epoch', 'offset')
    if not state[1] then
      return nil
    end
    local reply = {state[1], tonumber(state[2]) or 0}
    if #args == 2 and args[1] == state[1] then
      local entries = redis.call('XRANGE', stream, '(' .. args[2] .. '-0', '+')
      for _, entry in ipairs(entries) do
        reply[#reply + 1] = tonumber(entry[1]:match('^(%d+)'))
        reply[#reply + 1] = entry[2][2]
      end
    end
    return reply
  end,
}
