"""The job store's Lua scripts. Each runs atomically in Redis; `broker.store.JobStore` is their only caller.

Replies are tables whose first item names the outcome (`created`/`exists`/`conflict`, `ok`/`missing`/`illegal`/
`unexpected`/`attempt`), so domain refusals never travel as Redis errors and a pipeline of many transitions reports
each one separately. Every key a script touches comes in `KEYS` (`broker.keys`); no script builds a key name.
"""

CREATE = """
-- KEYS: job, events, idx:all, idx:status:queued, idx:framework, idx:run_id, idx:namespace, entered:queued,
--       idx:tenant
-- ARGV: spec_hash, sort_key, now_ms, event_json, name, max_jobs (-1 = no cap), field, value, field, value, ...
if redis.call('EXISTS', KEYS[1]) == 1 then
  local same = redis.call('HGET', KEYS[1], 'spec_hash') == ARGV[1]
  return {same and 'exists' or 'conflict', redis.call('HGETALL', KEYS[1])}
end
local cap = tonumber(ARGV[6])
if cap >= 0 and redis.call('ZCARD', KEYS[9]) >= cap then return {'full', {}} end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
for i = 3, 7 do redis.call('ZADD', KEYS[i], 0, ARGV[2]) end
redis.call('ZADD', KEYS[9], 0, ARGV[2])
redis.call('ZADD', KEYS[8], tonumber(ARGV[3]), ARGV[5])
redis.call('RPUSH', KEYS[2], ARGV[4])
return {'created', {}}
"""

_TRANSITION_FUNCTION = """
-- KEYS: job, events, then idx:status:<s> for each s of status_order, then entered:<s> for each s of status_order,
--       then finished
-- ARGV: name, to, now_iso, now_ms, reason, allowed_from_csv, expect_from_csv, expect_attempt, terminal_csv,
--       status_order_csv, field, value, ...
local function transition(KEYS, ARGV)
local job, name, to, now = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local function has(csv, s) return string.find(',' .. csv .. ',', ',' .. s .. ',', 1, true) ~= nil end
local slot, n = {}, 0
for s in string.gmatch(ARGV[10], '[^,]+') do n = n + 1; slot[s] = n end
local cur = redis.call('HGET', job, 'status')
if not cur then return {'missing'} end
local attempt = tonumber(redis.call('HGET', job, 'attempt'))
if not has(ARGV[6], cur) then return {'illegal', cur, attempt} end
if ARGV[7] ~= '*' and not has(ARGV[7], cur) then return {'unexpected', cur, attempt} end
if ARGV[8] ~= '' and tonumber(ARGV[8]) ~= attempt then return {'attempt', cur, attempt} end
local set = {status = to, updated_at = now, detail = ARGV[5]}
if to == 'queued' and (cur == 'failed' or cur == 'cancelled') then
  attempt = attempt + 1
  set.attempt = tostring(attempt)
  set.submitted_at, set.started_at, set.finished_at, set.cluster_object = '', '', '', ''
  set.not_before = ''
end
if cur == 'waiting_quota' and to ~= 'waiting_quota' then set.queue_info = '' end
if to == 'queued' or to == 'waiting_quota' then set.enqueued_at = now end
if to == 'submitted' then set.submitted_at = now end
if to == 'running' and (redis.call('HGET', job, 'started_at') or '') == '' then set.started_at = now end
if has(ARGV[9], to) then
  set.finished_at = now
  redis.call('ZADD', KEYS[3 + 2 * n], tonumber(ARGV[4]), name)
elseif has(ARGV[9], cur) then
  redis.call('ZREM', KEYS[3 + 2 * n], name)
end
for i = 11, #ARGV, 2 do set[ARGV[i]] = ARGV[i + 1] end
local flat = {}
for k, v in pairs(set) do flat[#flat + 1] = k; flat[#flat + 1] = v end
redis.call('HSET', job, unpack(flat))
attempt = tonumber(set.attempt or attempt)
local sk = redis.call('HGET', job, 'sort_key')
redis.call('ZREM', KEYS[2 + slot[cur]], sk)
redis.call('ZADD', KEYS[2 + slot[to]], 0, sk)
redis.call('ZREM', KEYS[2 + n + slot[cur]], name)
redis.call('ZADD', KEYS[2 + n + slot[to]], tonumber(ARGV[4]), name)
local event = {at = now, from = cur, to = to, reason = ARGV[5], attempt = attempt}
redis.call('RPUSH', KEYS[2], cjson.encode(event))
return {'ok', redis.call('HGETALL', job)}
end
"""

TRANSITION = _TRANSITION_FUNCTION + "return transition(KEYS, ARGV)\n"

TRANSITION_AND_DUE = _TRANSITION_FUNCTION + """
-- KEYS: the transition's, then recovery:due; ARGV: the transition's, then due_ms.
-- A recovery's move (failed -> queued with not_before) and its entry in the due set, in one step: no moment where
-- the job waits out a backoff that no sync cycle will end, and no due entry for a move that was refused.
local due_key, due_ms = table.remove(KEYS), table.remove(ARGV)
local result = transition(KEYS, ARGV)
if result[1] == 'ok' then redis.call('ZADD', due_key, tonumber(due_ms), ARGV[1]) end
return result
"""

CLAIM_DUE = """
-- KEYS: recovery:due; ARGV: now_ms
-- Takes every entry whose time has come out of the set and returns their names, in one step: of two callers
-- racing, each name goes to exactly one.
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, name in ipairs(names) do redis.call('ZREM', KEYS[1], name) end
return names
"""

UPDATE = """
-- KEYS: job; ARGV: now_iso, field, value, ...
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1], unpack(ARGV, 2))
return {'ok', redis.call('HGETALL', KEYS[1])}
"""

LIST_PAGE = """
-- KEYS: index sorted sets to intersect (at least one); members are sort keys, all scores 0
-- ARGV: start (lex bound: '-' or '(' .. sort key), want (matches to find), budget (members to examine at most)
-- Scans the smallest index in lex order from start, keeping members present in every other index (ZSCORE):
-- no record is read. Returns {matches, resume}: resume is the last member examined, or '' when the index ended.
local best, size = 1, redis.call('ZCARD', KEYS[1])
for i = 2, #KEYS do
  local n = redis.call('ZCARD', KEYS[i])
  if n < size then best, size = i, n end
end
local start, want, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local found, seen, last = {}, 0, ''
while #found < want and seen < budget do
  local ask = math.min(500, budget - seen)
  local batch = redis.call('ZRANGE', KEYS[best], start, '+', 'BYLEX', 'LIMIT', 0, ask)
  for _, member in ipairs(batch) do
    seen = seen + 1
    last = member
    local ok = true
    for i = 1, #KEYS do
      if i ~= best and not redis.call('ZSCORE', KEYS[i], member) then ok = false; break end
    end
    if ok then
      found[#found + 1] = member
      if #found >= want then return {found, last} end
    end
  end
  if #batch < ask then return {found, ''} end
  start = '(' .. last
end
return {found, last}
"""

PURGE = """
-- KEYS: job, events, finished, idx:all, idx:status:<s>, idx:framework, idx:run_id, idx:namespace, idx:tenant,
--       entered:<s>, recovery:due, sync:nudged
-- ARGV: name, cutoff_ms, status (s), sort_key
-- Removes one finished job whose retention ended: its record, events and every index entry. The caller read the
-- record to name these keys; a job that moved since (retried, finished again) is left for a later cycle.
local name = ARGV[1]
local score = redis.call('ZSCORE', KEYS[3], name)
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
local f = redis.call('HMGET', KEYS[1], 'status', 'sort_key')
if f[1] then
  if f[1] ~= ARGV[3] or f[2] ~= ARGV[4] then return 0 end
  for i = 4, 9 do redis.call('ZREM', KEYS[i], ARGV[4]) end
  redis.call('ZREM', KEYS[10], name)
end
redis.call('ZREM', KEYS[3], name)
redis.call('ZREM', KEYS[11], name)
redis.call('HDEL', KEYS[12], name)
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""
