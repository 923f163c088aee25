"""Lua scripts of the Redis store. Each runs atomically inside Redis (no other command of any
client interleaves), which is what makes a batch all-or-nothing and the detector state's
read-modify-write safe across service replicas.

The per-run compare-and-set: the state hash ``v`` field is a version, bumped by every write of the
detector state. A replica computes the new state from version ``v`` in Python, then the script
applies the batch only if the stored version is still ``v``; otherwise it writes nothing and
returns the current state, so the replica recomputes and retries without another round trip.

Key names: every key of a run starts with ``<prefix>{<project>/<run_id>}:`` (a Redis Cluster hash
tag, so a run's keys share a slot); scripts derive the chunk keys from that prefix. A run is named
by its project and its run id: the global indexes hold ``<project>/<run_id>`` and
``<project>/<alert id>``.

Exact integers: Lua's numbers are doubles, exact only up to 2^53, and ``..`` writes numbers past
1e14 in exponent form, while steps go up to 2^63-1. So steps and chunk numbers stay decimal
strings here (written by Python, compared with :func:`int_lt` semantics below) and no script
counts through a range of chunk numbers: the chunks a run has are listed in its ``rc`` index,
and every loop runs over the keys that exist, never over the numbers between them.
"""

# Keys and fields shared with redis.py
#   s    state hash: v eng project created_at last_seen last_step n_steps dups ooo
#                    last health rec act meta ttl_at
#   ds   tier watermarks hash: c0 (first raw chunk), w1, w2 (first bucket kept at level 1 / 2)
#   raw:<ci>  raw chunk string      x  extras hash (step -> json)
#   rc   index of the raw chunks: sorted set, score 0, member = chunk number zero-padded to 20
#        digits (lexical order = numeric order; see series.chunk_member)
#   d1 d2 d3  downsampled levels (bucket index -> packed aggregate)
#   a    alerts hash (id -> json)   ar raised_at hash   ak acknowledged_at hash
#   act  action reports list

_COMMON = r"""
local prefix = ARGV[5]
local ttl = tonumber(ARGV[4])
-- Keys live ttl + slack after a refresh, and a write refreshes them only when the last refresh is
-- older than slack: a run lives at least ttl after its last write (at most ttl + slack) and the
-- usual batch pays for no EXPIRE at all.
local slack = math.min(3600, math.floor(ttl / 10))
local chunks_key = prefix .. 'rc'
-- chunk numbers: decimal strings without leading zeros (as Python writes them)
local function chunk_member(ci) return string.rep('0', 20 - #ci) .. ci end
local function int_lt(a, b) return #a < #b or (#a == #b and a < b) end
local function touch_all()
  if ttl > 0 then
    for _, k in ipairs({'s', 'ds', 'x', 'a', 'ar', 'ak', 'act', 'd1', 'd2', 'd3', 'rc'}) do
      redis.call('EXPIRE', prefix .. k, ttl + slack)
    end
    -- the raw chunks that exist (the raw window and what the last batches wrote): bounded by
    -- what is stored, whatever the step numbers
    for _, m in ipairs(redis.call('ZRANGE', chunks_key, 0, -1)) do
      redis.call('EXPIRE', prefix .. 'raw:' .. string.match(m, '^0*(%d+)$'), ttl + slack)
    end
    redis.call('HSET', prefix .. 's', 'ttl_at', ARGV[3])
  end
end
local function needs_touch()
  if ttl <= 0 then return false end
  local at = tonumber(redis.call('HGET', prefix .. 's', 'ttl_at') or '0')
  return tonumber(ARGV[3]) - at >= slack
end
local function create_run(v, proj, now)
  -- the project is part of the run's name (its key prefix); kept in the state for readers
  if v == 0 then redis.call('HSET', KEYS[1], 'project', proj, 'created_at', now) end
end
"""

# KEYS: 1 state, 2 ds, 3 extras, 4 alerts, 5 raised, 6 ack, 7 runs zset, 8 alert index zset
# ARGV: 1 expected version, 2 project, 3 now, 4 ttl (0 = none), 5 key prefix,
#   6 engine state bytes, 7 new last_step ('' = unchanged), 8 health, 9 recommendation json,
#   10 last values json ('' = unchanged), 11 active alerts json ('' = unchanged),
#   12 number of in-order segments, 13 number of candidates, 14 number of extras,
#   15 number of alerts, 16 run member (<project>/<run_id>), 17 chunk growth block (bytes), 18 data offset,
#   19 steps per chunk, 20 slot bytes, 21 in-batch duplicates, 22 in-order step count,
#   then segments (chunk, first slot, count, packed values) x n,
#   candidates (chunk, slot, packed values) x n, extras (step, json, candidate number or 0) x n,
#   alerts (id, json) x n
# Returns {0, version, eng, last_step} on a version conflict,
#         {1, new version, candidate flags ('N' stored, 'D' duplicate, 'L' in a downsampled
#          chunk: not handled here), c0, n_steps, {raised_at, acknowledged_at or '', created 1/0}
#          per alert}
INGEST = _COMMON + r"""
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then
  local st = redis.call('HMGET', KEYS[1], 'eng', 'last_step')
  return {0, v, st[1] or '', st[2] or ''}
end
local now = ARGV[3]
create_run(v, ARGV[2], now)

local n_seg, n_cand, n_extra, n_alert = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local run_member = ARGV[16]
local data_off, per_chunk, slot_bytes = tonumber(ARGV[18]), tonumber(ARGV[19]), tonumber(ARGV[20])
local c0 = redis.call('HGET', KEYS[2], 'c0') or '0'
local grow = tonumber(ARGV[17])
local chunk_bytes = data_off + per_chunk * slot_bytes
-- The chunk key (ci: the chunk number as a string), at least long enough for slots up to
-- last_slot. It grows by whole blocks of ARGV[17] bytes through SET (an exact-size allocation):
-- SETRANGE/SETBIT past the end would grow the string greedily, keeping up to twice its length
-- allocated. A new chunk enters the run's chunk index.
local function chunk(ci, last_slot)
  local key = prefix .. 'raw:' .. ci
  local need = data_off + (last_slot + 1) * slot_bytes
  local len = redis.call('STRLEN', key)
  if len == 0 then
    redis.call('ZADD', chunks_key, 0, chunk_member(ci))
    if ttl > 0 then redis.call('EXPIRE', chunks_key, ttl + slack) end
  end
  if need > len then
    local new_len = math.min(chunk_bytes, math.ceil(need / grow) * grow)
    if len == 0 then
      -- a new string of new_len zero bytes, allocated at that size (no Lua string built)
      redis.call('SETRANGE', key, new_len - 1, '\0')
    else
      local val = redis.call('GET', key)
      redis.call('SET', key, val .. string.rep('\0', new_len - #val))
    end
    if ttl > 0 then redis.call('EXPIRE', key, ttl + slack) end
  end
  return key
end

-- each chunk grows once per batch, to the highest slot the batch writes in it (a sparse run
-- writes a few slots in many chunks: growing at each one copied the string again and again)
local top = {}
local i = 23
for _ = 1, n_seg do
  local last_slot = tonumber(ARGV[i + 1]) + tonumber(ARGV[i + 2]) - 1
  if (top[ARGV[i]] or -1) < last_slot then top[ARGV[i]] = last_slot end
  i = i + 4
end
i = 23
for _ = 1, n_seg do
  local first, count = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local key = chunk(ARGV[i], top[ARGV[i]])
  for s = first, first + count - 1 do redis.call('SETBIT', key, s, 1) end
  redis.call('SETRANGE', key, data_off + first * slot_bytes, ARGV[i + 3])
  i = i + 4
end

local flags = {}
local stored, dups = 0, 0
for c = 1, n_cand do
  local ci = ARGV[i]
  if int_lt(ci, c0) then
    flags[c] = 'L'
  else
    local slot = tonumber(ARGV[i + 1])
    local key = chunk(ci, slot)
    if redis.call('SETBIT', key, slot, 1) == 1 then
      flags[c] = 'D'; dups = dups + 1
    else
      redis.call('SETRANGE', key, data_off + slot * slot_bytes, ARGV[i + 2])
      flags[c] = 'N'; stored = stored + 1
    end
  end
  i = i + 3
end

for _ = 1, n_extra do
  local cand = tonumber(ARGV[i + 2])
  if cand == 0 or flags[cand] == 'N' then redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
  i = i + 3
end
if n_extra > 0 and ttl > 0 then redis.call('EXPIRE', KEYS[3], ttl + slack) end

local alert_info = {}
for a = 1, n_alert do
  local id = ARGV[i]
  redis.call('HSET', KEYS[4], id, ARGV[i + 1])
  local created = redis.call('HSETNX', KEYS[5], id, now)
  local r = redis.call('HGET', KEYS[5], id)
  local ack = redis.call('HGET', KEYS[6], id) or ''
  alert_info[a] = {r, ack, created}
  redis.call('ZADD', KEYS[8], now, ARGV[2] .. '/' .. id)
  i = i + 2
end
if n_alert > 0 and ttl > 0 then
  for k = 4, 6 do redis.call('EXPIRE', KEYS[k], ttl + slack) end
end

local accepted = tonumber(ARGV[22]) + stored
local st = {'v', v + 1, 'eng', ARGV[6], 'health', ARGV[8], 'rec', ARGV[9]}
if ARGV[7] ~= '' then table.insert(st, 'last_step'); table.insert(st, ARGV[7]) end
if ARGV[10] ~= '' then table.insert(st, 'last'); table.insert(st, ARGV[10]) end
if ARGV[11] ~= '' then table.insert(st, 'act'); table.insert(st, ARGV[11]) end
if accepted > 0 then table.insert(st, 'last_seen'); table.insert(st, now) end
redis.call('HSET', KEYS[1], unpack(st))
local n_steps = redis.call('HINCRBY', KEYS[1], 'n_steps', accepted)
redis.call('HINCRBY', KEYS[1], 'dups', tonumber(ARGV[21]) + dups)
redis.call('HINCRBY', KEYS[1], 'ooo', stored)
redis.call('ZADD', KEYS[7], now, run_member)
if needs_touch() then
  local cutoff = tonumber(now) - ttl - slack
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', cutoff)
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', cutoff)
  touch_all()
end
return {1, v + 1, table.concat(flags), c0, n_steps, alert_info}
"""

# Replace the metadata and the detector state (Engine.set_meta) under the same version check.
# KEYS: 1 state, 2 runs zset. ARGV: 1 expected version, 2 project, 3 now, 4 ttl,
#   5 prefix, 6 engine bytes, 7 meta json, 8 run member (<project>/<run_id>)
# Returns {0, version, eng, last_step} | {1, new version}
PUT_META = _COMMON + r"""
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then
  local st = redis.call('HMGET', KEYS[1], 'eng', 'last_step')
  return {0, v, st[1] or '', st[2] or ''}
end
create_run(v, ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], 'v', v + 1, 'eng', ARGV[6], 'meta', ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[8])
touch_all()
return {1, v + 1}
"""

# KEYS: 1 alerts, 2 raised, 3 ack. ARGV: 1 alert id, 2 now. Returns nil | {json, raised, ack}
ACK_ALERT = r"""
local j = redis.call('HGET', KEYS[1], ARGV[1])
if not j then return nil end
redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2])
return {j, redis.call('HGET', KEYS[2], ARGV[1]) or '', redis.call('HGET', KEYS[3], ARGV[1])}
"""

# KEYS: 1 state, 2 actions list. ARGV: 1 json, 2 ttl. Returns 0 if the run does not exist.
RECORD_ACTION = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return 1
"""

# The summary fields of many runs in one command (a pipeline of one HMGET per run spends most of
# its client CPU encoding the same field names again and again).
# KEYS: state hashes. ARGV: field names. Returns one array of values per key.
SUMMARIES = r"""
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('HMGET', k, unpack(ARGV)) end
return out
"""
