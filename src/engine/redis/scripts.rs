//! The Lua scripts the Redis engine runs. Redis runs a script as one step:
//! nothing else happens in between, on any connection. That is what makes a
//! publish atomic (id, history and delivery together) and what lets a read
//! mark exactly where it stands among the published events.
//!
//! - `PUBLISH`: one per room event. INCR the hub-wide counter (raised first
//!   to the highest id this node has seen, so ids never go back after Redis
//!   restarted empty), give the room an epoch if its history is new, count
//!   the event in the room (`seq`), XADD it to the room's stream as entry
//!   `{id}-0`, trimmed to `--history`, and PUBLISH the same payload on the
//!   one channel every node subscribes to. Every node thus sees every event
//!   in the order the scripts ran: in id order, with no gap.
//! - `READ`: a history read (`since`, or the newest), then PUBLISH a marker
//!   on this node's own channel. The marker reaches this node's relay after
//!   every event the read saw and before every event it did not: the relay
//!   answers the read when the marker arrives (see `relay`).
//! - `PUBLISH` also keeps presence: a `joined` adds its member to the
//!   room's presence hash, a `left` takes it out, in the same step.
//! - `HEARTBEAT`: this node's beat (a sorted set scored by time), and the
//!   reaping of nodes whose last beat is too old: their members leave every
//!   room's presence, each with a `left` event published as a publish would.
//!   With `bye`, the same for this node's own members, when it stops
//!   cleanly: they leave at once, not a few heartbeats later.
//! - `SNAPSHOT`: every room's presence, read after a (re)subscription.
//! - `STORED`: which rooms have history, and each one's newest id (`GET
//!   /rooms`, `GET /rooms/{room}`).
//! - Expiry: a room's keys live while it has members on any node
//!   (`PERSIST`) and expire `--room-expiry` after the event that left it
//!   without any (`PEXPIRE`), as a room in memory does.
//! - `RECOVER`: after a reconnection, each room's epoch, count and the events
//!   after the last one this node relayed, so that it can tell what it missed
//!   and whether history was lost (see `recovery`).

/// KEYS: counter, stream, meta, presence, presence-rooms. ARGV: history,
/// floor, origin, ticket, draft JSON, channel, expiry ms (0: none),
/// presence op (`j`, `l` or ''), presence field, presence value, room.
/// Returns the new id.
pub const PUBLISH: &str = r#"
local id = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[2])
if id <= floor then
  id = floor + 1
  redis.call('SET', KEYS[1], string.format('%d', id))
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[3])
end
local epoch = redis.call('HGET', KEYS[3], 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('HSET', KEYS[3], 'epoch', epoch)
end
local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
local sid = string.format('%d', id)
local payload = sid .. ' ' .. epoch .. ' ' .. seq .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], sid .. '-0', 'p', payload)
redis.call('PUBLISH', ARGV[6], payload)
if ARGV[8] == 'j' then
  redis.call('HSET', KEYS[4], ARGV[9], ARGV[10])
  redis.call('SADD', KEYS[5], ARGV[11])
elseif ARGV[8] == 'l' then
  redis.call('HDEL', KEYS[4], ARGV[9])
end
local expiry = tonumber(ARGV[7])
if expiry > 0 then
  if redis.call('HLEN', KEYS[4]) > 0 then
    redis.call('PERSIST', KEYS[2])
    redis.call('PERSIST', KEYS[3])
  else
    redis.call('PEXPIRE', KEYS[2], expiry)
    redis.call('PEXPIRE', KEYS[3], expiry)
  end
end
return id
"#;

/// KEYS: nodes, presence-rooms, counter. ARGV: instance, now (ms), dead
/// before (ms), channel, history, expiry ms, and `bye` when this node
/// stops: then it reaps itself, not the silent ones. Returns how many
/// members it took out.
pub const HEARTBEAT: &str = r#"
local prefix = 'switchboard:'
local dead
if ARGV[7] == 'bye' then
  dead = {ARGV[1]}
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
end
if #dead == 0 then
  return 0
end
local gone = {}
for _, inst in ipairs(dead) do
  redis.call('ZREM', KEYS[1], inst)
  gone[inst] = true
end
local reaped = 0
for _, room in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local pkey = prefix .. 'presence:' .. room
  local fields = redis.call('HGETALL', pkey)
  for i = 1, #fields, 2 do
    local field, member = fields[i], fields[i + 1]
    local inst = string.match(field, '^(.-)|')
    if inst and gone[inst] then
      redis.call('HDEL', pkey, field)
      local stream, meta = prefix .. 'room:' .. room, prefix .. 'meta:' .. room
      local id = redis.call('INCR', KEYS[3])
      if redis.call('EXISTS', stream) == 0 then
        redis.call('DEL', meta)
      end
      local epoch = redis.call('HGET', meta, 'epoch')
      if not epoch then
        local t = redis.call('TIME')
        epoch = t[1] .. string.format('%06d', tonumber(t[2]))
        redis.call('HSET', meta, 'epoch', epoch)
      end
      local seq = redis.call('HINCRBY', meta, 'seq', 1)
      local sid = string.format('%d', id)
      local draft = '{"room":"' .. room .. '","ts":' .. ARGV[2] .. ',"kind":"left",' .. string.sub(member, 2)
      local payload = sid .. ' ' .. epoch .. ' ' .. seq .. ' ' .. inst .. ' 0 ' .. draft
      redis.call('XADD', stream, 'MAXLEN', ARGV[5], sid .. '-0', 'p', payload)
      local expiry = tonumber(ARGV[6])
      if expiry > 0 and redis.call('HLEN', pkey) == 0 then
        redis.call('PEXPIRE', stream, expiry)
        redis.call('PEXPIRE', meta, expiry)
      end
      redis.call('PUBLISH', ARGV[4], payload)
      reaped = reaped + 1
    end
  end
  if redis.call('HLEN', pkey) == 0 then
    redis.call('SREM', KEYS[2], room)
  end
end
return reaped
"#;

/// KEYS: presence-rooms. Returns {room, {field, value, …}} for each room.
pub const SNAPSHOT: &str = r#"
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = {room, redis.call('HGETALL', 'switchboard:presence:' .. room)}
end
return out
"#;

/// KEYS: one room's stream, or none for every room. Returns {room, newest
/// entry id, …} for the rooms whose stream has an entry. Every room is a
/// SCAN of the keyspace (in steps of 1000): for `GET /rooms`, not for a hot
/// path.
pub const STORED: &str = r#"
local prefix = 'switchboard:room:'
local out = {}
local function add(key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #last > 0 then
    out[#out + 1] = string.sub(key, #prefix + 1)
    out[#out + 1] = last[1][1]
  end
end
if #KEYS == 1 then
  add(KEYS[1])
else
  local cursor = '0'
  repeat
    local page = redis.call('SCAN', cursor, 'MATCH', prefix .. '*', 'COUNT', 1000)
    cursor = page[1]
    for _, key in ipairs(page[2]) do
      if redis.call('TYPE', key)['ok'] == 'stream' then
        add(key)
      end
    end
  until cursor == '0'
end
return out
"#;

/// KEYS: the rooms' streams. ARGV: since ('' for the newest), count,
/// marker channel, marker. Returns one array of entries per room.
pub const READ: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  if ARGV[1] == '' then
    out[i] = redis.call('XREVRANGE', key, '+', '-', 'COUNT', ARGV[2])
  else
    out[i] = redis.call('XRANGE', key, '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
  end
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return out
"#;

/// KEYS: stream and meta of each room, then the counter. ARGV: the highest
/// id this node has seen, then each room's last relayed id. Returns, per
/// room, {epoch or '', seq, entries after that id}.
pub const RECOVER: &str = r#"
local n = (#KEYS - 1) / 2
local counter = KEYS[#KEYS]
local current = tonumber(redis.call('GET', counter) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', counter, ARGV[1])
end
local out = {}
for i = 1, n do
  local meta = redis.call('HMGET', KEYS[2 * i], 'epoch', 'seq')
  local entries = redis.call('XRANGE', KEYS[2 * i - 1], '(' .. ARGV[i + 1] .. '-0', '+')
  out[i] = {meta[1] or '', meta[2] or '0', entries}
end
return out
"#;
