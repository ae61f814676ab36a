/**
 * The Lua scripts of the Redis store (`store_redis.ts`), one per operation
 * and user group. The key layout they share is described in that module.
 *
 * @module
 */
import { ROUTE_LUA } from "./route_redis.ts";

/**
 * Lua: a pending copy of message `m` from `sender` is no longer pending (the
 * sender's quota). A copy stops being pending once: whoever sets its
 * `d:{user}` field first (the delivery mark, or the receipt) releases it.
 */
const RELEASE_LUA = `
local function release(m, sender)
  if sender == 'SYSTEM' then return end
  local key = P .. 'sb:' .. sender
  if redis.call('DECRBY', key, redis.call('HGET', m, 'b')) <= 0 then redis.call('DEL', key) end
end
`;

/**
 * Lua: `seq_of(value)` is the seq in a `k:` key's value (`{seq}\0{text}`),
 * or nil for none.
 */
const SEQ_OF_LUA = `
local function seq_of(value)
  if not value then return nil end
  return string.sub(value, 1, string.find(value, '\\0', 1, true) - 1)
end
`;

/**
 * Lua: `claim(P, sender, id, print, groups, ttl)` claims (sender, id) in the
 * group of prefix `P` (see CLAIM); true when the id is known with other
 * recipients (another message: a duplicate).
 */
const CLAIM_LUA = `
local function claim(P, sender, id, print, groups, ttl)
  local key = P .. 'd:' .. sender .. '\\0' .. id
  local prior = redis.call('GET', key)
  if prior then return string.sub(prior, string.find(prior, '\\0', 1, true) + 1) ~= print end
  redis.call('SET', key, groups .. '\\0' .. print, 'EX', ttl)
  return false
end
`;

/** Lua prelude: key names and the removal of one recipient's hold on a message. */
const PRELUDE = `
local P = KEYS[1]
${RELEASE_LUA}
local function pair(a, b)
  if a < b then return a .. '\\0' .. b end
  return b .. '\\0' .. a
end
-- Drops a recipient's hold on a message (popped: the caller took it off the head of the
-- recipient's held list already). Returns the state it had, the sender, the id, and whether
-- that was the group's last recipient of it (the group's copy is gone).
local function forget(user, seq, popped)
  local m = P .. 'm:' .. seq
  local v = redis.call('HMGET', m, 's:' .. user, 'sender', 'id', 'n', 'd:' .. user)
  local state = v[1]
  if not state then return false end
  if state == 'p' and not v[5] then release(m, v[2]) end
  if state ~= 'a' then
    redis.call('INCR', P .. 'done')
    -- Dropped oldest first, by the cap or retention: found near the head.
    redis.call('LREM', P .. 'in:' .. user, 1, seq)
  end
  -- The oldest first, by the cap or retention: found at the head of the list.
  if not popped then redis.call('LREM', P .. 'held:' .. user, 1, seq) end
  -- The oldest first, mostly: found near the head of the pair's list.
  redis.call('LREM', P .. 'h:' .. pair(v[2], user), 1, seq)
  if tonumber(v[4]) <= 1 then
    redis.call('DEL', m, P .. 'k:' .. v[2] .. '\\0' .. v[3])
    return state, v[2], v[3], true
  end
  redis.call('HDEL', m, 's:' .. user, 'd:' .. user)
  redis.call('HINCRBY', m, 'n', -1)
  return state, v[2], v[3], false
end
`;

/**
 * KEYS[1]: the group's store prefix. ARGV: presence prefix, sender, id, type,
 * text, acceptedAt, recipients JSON (all of them), maxPerUser,
 * maxPendingBytesPerSender ('' for none), route mode ('' none, 'i' append
 * inline, 'r' return the instances), entry text (inline), stream max length,
 * origin instance, echo user ('' for none), order stamp ('' for none: on a
 * Redis Cluster, history orders the copies of two groups by acceptedAt, then
 * by it), the claim's fingerprint, groups and ttl when this is the sender's
 * own group on a Redis Cluster (see CLAIM; '' for none), then the recipients
 * of this group. Returns {status, seq, drops, instances, gone}: status 1 for a
 * duplicate, 2 past the sender's quota (nothing stored), 3 when the claim
 * finds the id known with other recipients (nothing stored), else 0; drops lists
 * user, sender, id of each unacknowledged message the per-user cap dropped;
 * instances are those holding the recipients (or the echo user), see
 * ROUTE_LUA; gone lists sender, id of each message whose copy in this group
 * the cap removed.
 */
const ACCEPT = PRELUDE + ROUTE_LUA + CLAIM_LUA + `
local sender, id, text = ARGV[2], ARGV[3], ARGV[5]
local FIRST = 19
-- The claim of (sender, id), when this group is the sender's (CLAIM, without a script of its own).
if ARGV[16] ~= '' and claim(P, sender, id, ARGV[16], ARGV[17], ARGV[18]) then return {3} end
local count = #ARGV - FIRST + 1
-- Numbers as strings once: Lua formats a number with sprintf each time it passes one on.
local scount, size = tostring(count), tostring(string.len(text))
-- The seq advances by the copies stored: the seq is also the count of copies ever stored, and
-- the pending ones are that less done (one call per message instead of two).
local seq = tostring(redis.call('INCRBY', P .. 'seq', scount))
local key = P .. 'k:' .. sender .. '\\0' .. id
if not redis.call('SET', key, seq .. '\\0' .. text, 'NX') then
  redis.call('INCRBY', P .. 'done', scount)
  return {1}
end
-- A copy for a recipient with a connection somewhere is delivered at once: only copies that
-- wait count against the sender's quota (state 'p'; 'P' is pending, not counted). Presence is
-- looked up once, for the quota and the route.
local quota = sender ~= 'SYSTEM' and ARGV[9] ~= ''
local known, waiting = {}, 0
if quota or ARGV[10] ~= '' then
  for i = FIRST, #ARGV do
    local holders = route_holders(ARGV[1], ARGV[i])
    known[ARGV[i]] = holders
    if quota and next(holders) == nil then waiting = waiting + 1 end
  end
end
if waiting > 0 then
  local bytes = size
  if waiting > 1 then bytes = tostring(string.len(text) * waiting) end
  local counter = P .. 'sb:' .. sender
  local total = redis.call('INCRBY', counter, bytes)
  if total > tonumber(ARGV[9]) then
    if total == tonumber(bytes) then redis.call('DEL', counter)
    else redis.call('DECRBY', counter, bytes) end
    redis.call('DEL', key)
    redis.call('INCRBY', P .. 'done', scount)
    return {2}
  end
end
local m = P .. 'm:' .. seq
-- The text lives in the k: key: the hash keeps short values only, so Redis stores it as one
-- compact listpack rather than a table of fields (fewer allocations, a third less memory).
local fields = {'sender', sender, 'id', id, 'type', ARGV[4], 'b', size, 'at', ARGV[6],
  'rcpt', ARGV[7], 'n', scount}
if ARGV[15] ~= '' then fields[#fields + 1] = 'u'; fields[#fields + 1] = ARGV[15] end
-- One HSET for the common case; very long recipient lists go on in further calls.
local last = math.min(#ARGV, FIRST + 199)
local function state(user)
  if waiting > 0 and next(known[user]) == nil then return 'p' end
  return 'P'
end
for i = FIRST, last do
  fields[#fields + 1] = 's:' .. ARGV[i]; fields[#fields + 1] = state(ARGV[i])
end
redis.call('HSET', m, unpack(fields))
for i = last + 1, #ARGV do redis.call('HSET', m, 's:' .. ARGV[i], state(ARGV[i])) end
local max = tonumber(ARGV[8])
local drops, gone = {}, {}
for i = FIRST, #ARGV do
  local user = ARGV[i]
  local held = P .. 'held:' .. user
  redis.call('RPUSH', P .. 'in:' .. user, seq)
  redis.call('RPUSH', P .. 'h:' .. pair(sender, user), seq)
  local n = redis.call('RPUSH', held, seq)
  while n > max do
    n = n - 1
    local state, from, dropped, last = forget(user, redis.call('LPOP', held), true)
    if state and state ~= 'a' then
      drops[#drops + 1] = user; drops[#drops + 1] = from; drops[#drops + 1] = dropped
    end
    if last then gone[#gone + 1] = from; gone[#gone + 1] = dropped end
  end
end
-- What a delivery mark releases per copy: nothing when no copy counts, the text's bytes when
-- every copy does, '' (read the copy's state) when some do.
local release = ''
if waiting == 0 then release = '0' elseif waiting == count then release = size end
local instances = {}
if ARGV[10] ~= '' then
  instances = route(ARGV[1], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV, FIRST, seq,
    release, text, known)
end
return {0, seq, drops, instances, gone, release}
`;

/**
 * KEYS[1]: store prefix. ARGV: user, after (seq), limit. Returns {seq,
 * sender, id, type, text, at} of up to limit + 1 unacknowledged messages
 * after the seq, oldest first.
 */
const UNACKNOWLEDGED = `
local P = KEYS[1]
local out = {}
local key = P .. 'in:' .. ARGV[1]
-- The inbox's seqs ascend (appended in seq order): the page starts after the cursor, found by
-- binary search.
local after, start, stop = tonumber(ARGV[2]), 0, 0
if after > 0 then
  stop = redis.call('LLEN', key)
  while start < stop do
    local mid = math.floor((start + stop) / 2)
    if tonumber(redis.call('LINDEX', key, mid)) <= after then start = mid + 1 else stop = mid end
  end
end
local seqs = redis.call('LRANGE', key, start, start + tonumber(ARGV[3]))
for _, seq in ipairs(seqs) do
  local v = redis.call('HMGET', P .. 'm:' .. seq, 'sender', 'id', 'type', 'at')
  local text = redis.call('GET', P .. 'k:' .. v[1] .. '\\0' .. v[2])
  out[#out + 1] = {seq, v[1], v[2], v[3], string.sub(text, #seq + 2), v[4]}
end
return out
`;

/**
 * KEYS[1]: store prefix. ARGV: user, sender, id, seq ('' when unknown), text
 * bytes ('' when unknown) of each (recipient, message) to mark delivered:
 * one HSETNX each, and one quota release per sender for the whole batch. (A
 * message dropped since it was delivered leaves a stray `d:` field under its
 * seq, which the retention walk deletes.)
 */
const MARK_DELIVERED = SEQ_OF_LUA + `
local P = KEYS[1]
local freed = {}
for i = 1, #ARGV, 5 do
  local seq = ARGV[i + 3]
  if seq == '' then
    seq = seq_of(redis.call('GET', P .. 'k:' .. ARGV[i + 1] .. '\\0' .. ARGV[i + 2]))
  end
  if seq then
    local m, sender = P .. 'm:' .. seq, ARGV[i + 1]
    if redis.call('HSETNX', m, 'd:' .. ARGV[i], '1') == 1 and sender ~= 'SYSTEM' then
      local bytes = tonumber(ARGV[i + 4])
      if not bytes then
        local v = redis.call('HMGET', m, 's:' .. ARGV[i], 'b')
        bytes = v[1] == 'p' and tonumber(v[2]) or 0
      end
      if bytes > 0 then freed[sender] = (freed[sender] or 0) + bytes end
    end
  end
end
for sender, bytes in pairs(freed) do
  local key = P .. 'sb:' .. sender
  if redis.call('DECRBY', key, bytes) <= 0 then
    redis.call('DEL', key)
  end
end
return 1
`;

/**
 * KEYS[1]: the user's store prefix. ARGV: presence prefix, user, sender, id,
 * route mode, entry text, stream max length, origin instance, echo user,
 * users to route to (of this group)…. Returns {known, instances}: known is 1
 * when the message to the user is known (and only then is it routed, see
 * ACCEPT).
 */
const ACKNOWLEDGE = ROUTE_LUA + SEQ_OF_LUA + `
local P = KEYS[1]
${RELEASE_LUA}
local user = ARGV[2]
local seq = seq_of(redis.call('GET', P .. 'k:' .. ARGV[3] .. '\\0' .. ARGV[4]))
if not seq then return {0} end
local m = P .. 'm:' .. seq
local state = redis.call('HGET', m, 's:' .. user)
if not state then return {0} end
if state ~= 'a' then
  -- Not marked delivered yet: the receipt releases the copy ('d' is the state's old encoding).
  if state == 'p' and redis.call('HSETNX', m, 'd:' .. user, '1') == 1 then release(m, ARGV[3]) end
  redis.call('HSET', m, 's:' .. user, 'a')
  -- Receipts come mostly oldest first: found near the head.
  redis.call('LREM', P .. 'in:' .. user, 1, seq)
  redis.call('INCR', P .. 'done')
end
local instances = {}
if ARGV[5] ~= '' then
  instances = route(ARGV[1], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV, 10, nil)
end
return {1, instances}
`;

/**
 * KEYS[1]: store prefix. ARGV: user, peer, before (seq, or ''), limit.
 * Returns {seq, sender, id, type, text, at, rcpt, state, order stamp} per message of the
 * pair stored in this group, newest first, up to limit + 1 of them.
 */
const HISTORY = PRELUDE + `
local user, peer = ARGV[1], ARGV[2]
local key = P .. 'h:' .. pair(user, peer)
-- The list's seqs ascend (appended in seq order): the page ends before the first seq that is
-- not below the cursor, found by binary search.
local stop = redis.call('LLEN', key)
if ARGV[3] ~= '' then
  local before, low = tonumber(ARGV[3]), 0
  while low < stop do
    local mid = math.floor((low + stop) / 2)
    if tonumber(redis.call('LINDEX', key, mid)) < before then low = mid + 1 else stop = mid end
  end
end
local seqs = {}
if stop > 0 then
  local found = redis.call('LRANGE', key, math.max(0, stop - tonumber(ARGV[4]) - 1), stop - 1)
  for i = #found, 1, -1 do seqs[#seqs + 1] = found[i] end
end
local out = {}
for _, seq in ipairs(seqs) do
  local m = P .. 'm:' .. seq
  local v = redis.call('HMGET', m, 'sender', 'id', 'type', 'at', 'at', 'rcpt', 'u')
  v[4] = string.sub(redis.call('GET', P .. 'k:' .. v[1] .. '\\0' .. v[2]), #seq + 2)
  local other = user
  if v[1] == user then other = peer end
  local s = redis.call('HMGET', m, 's:' .. other, 'd:' .. other)
  local state = s[1] or 'a'
  if state == 'P' then state = 'p' end
  if state == 'p' and s[2] then state = 'd' end
  out[#out + 1] = {seq, v[1], v[2], v[3], v[4], v[5], v[6], state, v[7] or '0'}
end
return out
`;

/**
 * KEYS[1]: store prefix. ARGV: cutoff (ms), batch size. Walks the seqs after
 * `swept` upward, dropping messages accepted before cutoff, up to the first
 * one that is not (seqs the cap, a dedupe or a drop left empty are passed
 * over); returns {messages dropped, unacknowledged (recipient, message)
 * pairs among them, seqs looked at, sender and id of each copy removed}.
 */
const SWEEP = PRELUDE + `
local cutoff, batch = tonumber(ARGV[1]), tonumber(ARGV[2])
local from = tonumber(redis.call('GET', P .. 'swept') or '0')
local top = tonumber(redis.call('GET', P .. 'seq') or '0')
local dropped, unacked, looked, gone = 0, 0, 0, {}
local seq = from
while seq < top and looked < batch do
  local m = P .. 'm:' .. (seq + 1)
  local v = redis.call('HMGET', m, 'sender', 'id', 'rcpt', 'at')
  if v[4] and tonumber(v[4]) >= cutoff then break end
  seq = seq + 1
  looked = looked + 1
  if v[3] then
    local users = cjson.decode(v[3])
    -- Counted once, by the copy of the group of its first recipient.
    if redis.call('HEXISTS', m, 's:' .. users[1]) == 1 then dropped = dropped + 1 end
    for _, user in ipairs(users) do
      local state = forget(user, tostring(seq))
      if state and state ~= 'a' then unacked = unacked + 1 end
    end
    if redis.call('EXISTS', m) == 1 then
      redis.call('DEL', m, P .. 'k:' .. v[1] .. '\\0' .. v[2])
    end
    gone[#gone + 1] = v[1]; gone[#gone + 1] = v[2]
  else
    redis.call('DEL', m)
  end
end
if seq > from then redis.call('SET', P .. 'swept', seq) end
return {dropped, unacked, looked, gone}
`;

/**
 * On a Redis Cluster a message is known by its sender in the sender's group:
 * `d:{sender}\0{id}` = `{groups}\0{recipients fingerprint}`, the number of
 * groups holding a copy and a hash of its recipient list; it expires with the
 * retention period and is released as the copies go (RELEASE). KEYS[1]: the
 * sender's store prefix. ARGV: presence prefix, sender, id, ttl (s), origin,
 * echo user ('' for none), fingerprint, groups. Returns {1} when the id is
 * known with other recipients (a duplicate), else {0, instances holding the
 * echo user}: a new message, or a resend of the same one (its groups then
 * store what they miss and answer duplicate for the rest).
 */
const CLAIM = ROUTE_LUA + CLAIM_LUA + `
if claim(KEYS[1], ARGV[2], ARGV[3], ARGV[7], ARGV[8], ARGV[4]) then return {1} end
local instances = {}
if ARGV[6] ~= '' then instances = route(ARGV[1], 'r', '', '', ARGV[5], ARGV[6], ARGV, 9, nil) end
return {0, instances}
`;

/**
 * KEYS[1]: the sender's store prefix. ARGV: sender, id pairs of messages
 * whose copy in a group was removed (the cap, retention): their claims count
 * one group less, and go with the last.
 */
const RELEASE = `
local P = KEYS[1]
for i = 1, #ARGV, 2 do
  local key = P .. 'd:' .. ARGV[i] .. '\\0' .. ARGV[i + 1]
  local prior = redis.call('GET', key)
  if prior then
    local cut = string.find(prior, '\\0', 1, true)
    local groups = tonumber(string.sub(prior, 1, cut - 1))
    if groups <= 1 then redis.call('DEL', key)
    else redis.call('SET', key, (groups - 1) .. string.sub(prior, cut), 'KEEPTTL') end
  end
end
return 1
`;

/**
 * KEYS[1]: store prefix. ARGV: sender, id, users: takes back the group's copy
 * of a message stored by a resend that its claim found known (a repeat of
 * the id to other recipients).
 */
const REVOKE = PRELUDE + SEQ_OF_LUA + `
local seq = seq_of(redis.call('GET', P .. 'k:' .. ARGV[1] .. '\\0' .. ARGV[2]))
if not seq then return 0 end
for i = 3, #ARGV do forget(ARGV[i], seq) end
return 1
`;

export const SCRIPTS = {
  CLAIM,
  REVOKE,
  RELEASE,
  ACCEPT,
  UNACKNOWLEDGED,
  MARK_DELIVERED,
  ACKNOWLEDGE,
  HISTORY,
  SWEEP,
};
