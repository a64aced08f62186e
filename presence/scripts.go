package presence

import "github.com/redis/go-redis/v9"

// Every script starts with luaPrelude and is called with
//
//	KEYS[1] = {prefix}presence:expiry (so a cluster client routes it; give the
//	          prefix a hash tag such as "{rt}" to keep every key on one slot)
//	ARGV[1] = key prefix, ARGV[2] = TTL in milliseconds, then its own ARGV.
//
// Each one is one atomic step, so a presence change is computed and claimed
// by exactly one caller fleet-wide, and costs one round trip.
//
// Data model (P = key prefix):
//
//	P agent:presence           hash  user -> {"status","last_seen"}, the card's key: users not offline
//	P agent:heartbeat:{user}   str   "1" PX TTL, the card's key: users not offline
//	P presence:expiry          zset  "{user}\0{conn}" scored by expiry time (ms, Redis clock)
//	P presence:conns:{user}    hash  conn -> its account ids, NUL-separated
//	P presence:status:{user}   str   the status the user chose; absent means online
//	P presence:accounts:{user} set   the union of the accounts of the user's connections
//	P presence:account:{acct}  set   users with a connection listing acct (for List)
//
// The clock is Redis's TIME, so instances with skewed clocks agree on expiry.
const luaPrelude = `
local P = ARGV[1]
local TTL = tonumber(ARGV[2])
local EXPIRY = KEYS[1]
local CARD = P .. 'agent:presence'
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function conns_key(uid) return P .. 'presence:conns:' .. uid end
local function status_key(uid) return P .. 'presence:status:' .. uid end
local function accounts_key(uid) return P .. 'presence:accounts:' .. uid end
local function account_key(acct) return P .. 'presence:account:' .. acct end
local function heartbeat_key(uid) return P .. 'agent:heartbeat:' .. uid end
local function member(uid, id) return uid .. '\0' .. id end
local function int(n) return string.format('%d', n) end

-- split parses a NUL-separated list; '' is the empty list.
local function split(s)
  local out = {}
  if not s or s == '' then return out end
  local i = 1
  while true do
    local j = string.find(s, '\0', i, true)
    if not j then
      out[#out + 1] = string.sub(s, i)
      return out
    end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end

-- iso formats a Unix time in ms as RFC 3339 in UTC, like JavaScript's
-- toISOString in the card; Redis's Lua has no os.date. The date comes from
-- the day count by the days-to-civil method (H. Hinnant).
local function iso(ms)
  local secs = math.floor(ms / 1000)
  local days = math.floor(secs / 86400)
  local sod = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(sod / 3600), math.floor(sod % 3600 / 60), sod % 60, ms - secs * 1000)
end

-- parse_card reads a value of the card's hash: the status other agents see
-- (offline when absent) and its last_seen.
local function parse_card(v)
  if not v then return 'offline', nil end
  return string.match(v, '"status":"(%a+)"') or 'online', string.match(v, '"last_seen":"([^"]*)"')
end

-- shown returns what other agents see of uid.
local function shown(uid)
  return parse_card(redis.call('HGET', CARD, uid))
end

-- register adds or refreshes connection id of uid.
local function register(uid, id, accts)
  redis.call('HSET', conns_key(uid), id, accts)
  redis.call('ZADD', EXPIRY, int(NOW + TTL), member(uid, id))
end

-- unregister forgets connection id of uid and reports whether it was known.
local function unregister(uid, id)
  redis.call('HDEL', conns_key(uid), id)
  return redis.call('ZREM', EXPIRY, member(uid, id)) == 1
end

-- purge forgets uid's connections whose heartbeat lapsed, so that a change
-- they cause is reported by whoever purges them, once; with the last one
-- goes the status the user chose.
local function purge(uid)
  local ids = redis.call('HKEYS', conns_key(uid))
  local left = #ids
  for _, id in ipairs(ids) do
    local score = redis.call('ZSCORE', EXPIRY, member(uid, id))
    if not score or tonumber(score) <= NOW then
      unregister(uid, id)
      left = left - 1
    end
  end
  if left == 0 then redis.call('DEL', status_key(uid)) end
end

-- settle recomputes what others see of uid after its connections or chosen
-- status changed, updates the account index and the card's keys, and
-- returns {uid, status, last_seen, changed, accounts}. touch rewrites
-- last_seen without a change, as the card did on connect and agent:status.
local function settle(uid, before, before_seen, touch)
  local after = 'offline'
  local union, has = {}, {}
  local vals = redis.call('HVALS', conns_key(uid))
  if #vals > 0 then
    after = redis.call('GET', status_key(uid)) or 'online'
    for _, v in ipairs(vals) do
      for _, a in ipairs(split(v)) do
        if not has[a] then
          has[a] = true
          union[#union + 1] = a
        end
      end
    end
  else
    redis.call('DEL', status_key(uid))
  end
  local ak = accounts_key(uid)
  local old = redis.call('SMEMBERS', ak)
  local had = {}
  for _, a in ipairs(old) do
    had[a] = true
    if not has[a] then
      redis.call('SREM', account_key(a), uid)
      redis.call('SREM', ak, a)
    end
  end
  for _, a in ipairs(union) do
    if not had[a] then
      redis.call('SADD', account_key(a), uid)
      redis.call('SADD', ak, a)
    end
  end
  local changed = before ~= after
  local rooms, seen = union, before_seen
  if after == 'offline' then
    redis.call('HDEL', CARD, uid)
    redis.call('DEL', heartbeat_key(uid))
    seen = iso(NOW)
    -- The last connection is gone: the change goes to the rooms it had.
    if #union == 0 then rooms = old end
  else
    if changed or touch or not seen then
      seen = iso(NOW)
      redis.call('HSET', CARD, uid, '{"status":"' .. after .. '","last_seen":"' .. seen .. '"}')
    end
    redis.call('SET', heartbeat_key(uid), '1', 'PX', int(TTL))
  end
  return {uid, after, seen, changed and 1 or 0, rooms}
end
`

// connectScript registers a connection. ARGV[3..5]: user, conn, accounts.
var connectScript = redis.NewScript(luaPrelude + `
local uid, id = ARGV[3], ARGV[4]
local before, seen = shown(uid)
purge(uid)
register(uid, id, ARGV[5])
return settle(uid, before, seen, true)
`)

// disconnectScript forgets a connection. ARGV[3..4]: user, conn.
var disconnectScript = redis.NewScript(luaPrelude + `
local uid, id = ARGV[3], ARGV[4]
local before, seen = shown(uid)
purge(uid)
unregister(uid, id)
return settle(uid, before, seen, false)
`)

// setStatusScript records the chosen status and (re-)registers the
// connection that chose it. ARGV[3..6]: user, conn, accounts, status.
var setStatusScript = redis.NewScript(luaPrelude + `
local uid, id = ARGV[3], ARGV[4]
local before, seen = shown(uid)
purge(uid)
register(uid, id, ARGV[5])
redis.call('SET', status_key(uid), ARGV[6])
return settle(uid, before, seen, true)
`)

// heartbeatScript refreshes connections, re-registering those Redis lost.
// ARGV[3..]: triples of user, conn, accounts; a user's connections are all
// in one call, so a user who comes back is reported once with every account.
// The steady state costs a few variadic commands per batch (ZMSCORE, ZADD,
// HMGET) and one SET per visible user, not several calls per connection.
// Returns the changed presences.
var heartbeatScript = redis.NewScript(luaPrelude + `
-- multi runs a variadic command (with an optional flag) over list in
-- slices, since unpack is bounded by Lua's C stack, and returns the replies
-- concatenated.
local function multi(cmd, key, flag, list)
  local out = {}
  for i = 1, #list, 1000 do
    local j = math.min(i + 999, #list)
    local r
    if flag then
      r = redis.call(cmd, key, flag, unpack(list, i, j))
    else
      r = redis.call(cmd, key, unpack(list, i, j))
    end
    if type(r) == 'table' then
      for j = 1, #r do out[#out + 1] = r[j] end
    end
  end
  return out
end

local members, uids, seen_uid = {}, {}, {}
for i = 3, #ARGV, 3 do
  members[#members + 1] = member(ARGV[i], ARGV[i + 1])
  if not seen_uid[ARGV[i]] then
    seen_uid[ARGV[i]] = true
    uids[#uids + 1] = ARGV[i]
  end
end
if #members == 0 then return {} end

-- ZMSCORE answers false for a member Redis lost.
local scores = multi('ZMSCORE', EXPIRY, nil, members)
local refresh, lost = {}, {}
local deadline = int(NOW + TTL)
for k = 1, #members do
  if scores[k] then
    refresh[#refresh + 1] = deadline
    refresh[#refresh + 1] = members[k]
  else
    local i = 3 * k
    lost[ARGV[i]] = true
    register(ARGV[i], ARGV[i + 1], ARGV[i + 2])
  end
end
if #refresh > 0 then multi('ZADD', EXPIRY, 'XX', refresh) end

local cards = multi('HMGET', CARD, nil, uids)
local out = {}
for j, uid in ipairs(uids) do
  if lost[uid] then
    local before, seen = parse_card(cards[j])
    local r = settle(uid, before, seen, false)
    if r[4] == 1 then out[#out + 1] = r end
  elseif cards[j] then
    redis.call('SET', heartbeat_key(uid), '1', 'PX', int(TTL))
  end
end
return out
`)

// expireScript claims up to ARGV[3] lapsed connections (ZREM decides who
// owns each, though the script's atomicity already makes it exclusive) and
// returns {claimed, changes}.
var expireScript = redis.NewScript(luaPrelude + `
local lapsed = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', int(NOW), 'LIMIT', 0, tonumber(ARGV[3]))
local users, order = {}, {}
for _, m in ipairs(lapsed) do
  local j = string.find(m, '\0', 1, true)
  if j and redis.call('ZREM', EXPIRY, m) == 1 then
    local uid = string.sub(m, 1, j - 1)
    if not users[uid] then
      local st, seen = shown(uid)
      users[uid] = {st, seen}
      order[#order + 1] = uid
    end
    redis.call('HDEL', conns_key(uid), string.sub(m, j + 1))
  elseif not j then
    redis.call('ZREM', EXPIRY, m)
  end
end
local out = {}
for _, uid in ipairs(order) do
  purge(uid)
  local r = settle(uid, users[uid][1], users[uid][2], false)
  if r[4] == 1 then out[#out + 1] = r end
end
return {#lapsed, out}
`)

// listScript returns the users of account ARGV[3] who are not offline and
// have an unexpired connection listing it; it writes nothing, so lapsed
// connections not yet expired are skipped rather than removed.
var listScript = redis.NewScript(luaPrelude + `
local acct = ARGV[3]
local out = {}
for _, uid in ipairs(redis.call('SMEMBERS', account_key(acct))) do
  local st, seen = shown(uid)
  if st ~= 'offline' then
    local h = redis.call('HGETALL', conns_key(uid))
    local live = false
    for k = 1, #h, 2 do
      local score = redis.call('ZSCORE', EXPIRY, member(uid, h[k]))
      if score and tonumber(score) > NOW then
        for _, a in ipairs(split(h[k + 1])) do
          if a == acct then live = true end
        end
      end
      if live then break end
    end
    if live then
      out[#out + 1] = {uid, st, seen or iso(NOW), 0, redis.call('SMEMBERS', accounts_key(uid))}
    end
  end
end
return out
`)
