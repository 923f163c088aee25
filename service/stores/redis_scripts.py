"""Lua scripts of the Redis store. Each runs atomically inside Redis (no other command of any
client interleaves), which is what makes a batch all-or-nothing and the detector state's
read-modify-write safe across service replicas.

The per-run compare-and-set: the state hash ``v`` field is a version, bumped by every write of the
detector state. A replica computes the new state from version ``v`` in Python, then the script
applies the batch only if the stored version is still ``v``; otherwise it writes nothing and
returns the current state, so the replica recomputes and retries without another round trip.

Key names: every key of a run starts with ``<prefix>{<project>/<run_id>}:`` (a Redis Cluster hash
tag, so a run's keys share a slot); scripts derive the chunk keys from that prefix and touch no
other key, so each script runs on the one node that holds the run, on a single Redis or a
Cluster alike. A run is named by its project and its run id.

Exact integers: Lua's numbers are doubles, exact only up to 2^53, and ``..`` writes numbers past
1e14 in exponent form, while steps go up to 2^63-1. So steps and chunk numbers stay decimal
strings here (written by Python, compared with :func:`int_lt` semantics below) and no script
counts through a range of chunk numbers: the chunks a run has are listed in its ``rc`` index,
and every loop runs over the keys that exist, never over the numbers between them.
"""

from . import series as ser

# Keys and fields shared with redis.py
#   s    state hash: v eng project created_at last_seen last_step n_steps dups ooo
#                    last health rec act meta ttl_at
#   ds   tier watermarks hash: c0 (first raw chunk), w1, w2 (first bucket kept at level 1 / 2)
#   raw:<ci>  raw chunk string      x  extras hash (step -> json)
#   rc   index of the raw chunks: sorted set, score 0, member = chunk number zero-padded to 20
#        digits (lexical order = numeric order; see series.chunk_member)
#   d1 d2 d3  downsampled levels (bucket index -> packed aggregate)
#   a    alerts hash (id -> json)   ar raised_at hash   ak acknowledged_at hash
#   n    notification claims hash (dedupe key -> time claimed)
#   act  action reports list
# The steps of attempt 1 are the keys above (ds raw:<ci> x rc d1 d2 d3); those of a later attempt
# the same names under the attempt's series prefix (redis.py's _series_p). The current attempt's
# highest step is the state's last_step; an attempt that a later one closed keeps its own in its
# ds hash (``last``), written once by the commit that begins the next attempt.

#: The keys of one COMMIT call, in the order KEYS holds them (redis.py builds KEYS from this).
#: All of them are keys of one run, so they share its hash tag (one Cluster slot); the run and
#: alert indexes are written by redis.py beside the script, not by it. ``closed_tiers`` is the ds
#: hash of the attempt a commit closes (under the run's prefix too).
COMMIT_KEYS = ("state", "tiers", "extras", "alerts", "raised", "acked", "claims", "closed_tiers")

#: The named scalar arguments of one COMMIT call: its argument list starts with their values in
#: this order (redis.py's ``_commit_call`` writes them from a dict by these names) and the script
#: reads them into the table ``H`` by the same names (one list, here, for both sides). '' = absent.
#: The whole list travels as ARGV[1], one MessagePack array of strings (redis.py's
#: ``script_args``; the script unpacks it with Redis' built-in ``cmsgpack`` into the table ``A``):
#: one argument for redis-py to encode instead of ~40 for a batch of 10, which cost the service
#: ~20 us of CPU per batch (bench/results/ingest-breakdown.md).
#:   expected  the version the change was computed from     project       the run's project
#:   now       wall-clock seconds                          ttl           retention seconds (0: none)
#:   slack     :func:`ttl_slack` of ttl
#:   prefix    the run's key prefix                        engine        detector state bytes
#:   last_step new highest step ('' = unchanged)           batch_dups    repeats inside the batch
#:   in_order  in-order steps                              advice        '1': the summary fields follow
#:   health rec last active   the summary (last, active: '' = unchanged)
#:   meta      metadata JSON ('' = unchanged; a metadata change refreshes every key's TTL)
#:   attempt   the attempt the steps go to                 series        its series' key prefix
#:   timeline  the pipeline's timeline bytes ('' = unchanged)
#:   attempts  the summary's attempts JSON ('' = unchanged; set: this commit begins ``attempt``, and
#:             closes the one before it, whose ds hash is KEYS' closed_tiers)
#:   segments late extras alerts claims later   how many entries each section below holds
#: Then the sections, in this order: segments (chunk, first slot, count, packed values) of the
#: in-order steps, late steps (chunk, slot, packed values), extras (step, json, late number or 0),
#: alerts (id, json), claims (dedupe key), later (the series prefix of each attempt after the
#: first: their keys live as long as the run's).
COMMIT_FIELDS = ("expected", "project", "now", "ttl", "slack", "prefix", "engine", "last_step", "batch_dups",
                 "in_order", "advice", "health", "rec", "last", "active", "meta", "attempt", "series",
                 "timeline", "attempts", "segments", "late", "extras", "alerts", "claims", "later")



def ttl_slack(ttl: int) -> int:
    """Seconds a run's keys may outlive the retention ``ttl``: a write refreshes their TTL only
    when the last refresh is older than this, so the usual batch pays for no EXPIRE (at most an
    hour, a tenth of a short retention)."""
    return min(3600, ttl // 10)


_KEY_LOCALS = "\n".join(f"local K_{k} = KEYS[{i}]" for i, k in enumerate(COMMIT_KEYS, 1))
_FIELD_NAMES = "local FIELDS = {" + ", ".join(f"'{f}'" for f in COMMIT_FIELDS) + "}"

# Returns {0, version, eng, last_step, timeline} on a version conflict (the current snapshot),
#         {1, new version, late flags ('N' stored, 'D' duplicate, 'L' in a downsampled chunk: not
#          handled here), c0, {raised_at, acknowledged_at or '', created 1/0} per alert,
#          claim flags ('1' won, '0' claimed before)}
COMMIT = _KEY_LOCALS + "\n" + _FIELD_NAMES + r"""
local A = cmsgpack.unpack(ARGV[1])        -- every argument, as strings: one MessagePack array
local H = {}
for j, name in ipairs(FIELDS) do H[name] = A[j] end
local i = #FIELDS + 1                        -- the first argument of the sections

local v = tonumber(redis.call('HGET', K_state, 'v') or '0')
if v ~= tonumber(H.expected) then
  local st = redis.call('HMGET', K_state, 'eng', 'last_step', 'tl')
  return {0, v, st[1] or '', st[2] or '', st[3] or ''}
end

local prefix, series, now = H.prefix, H.series, H.now
local ttl = tonumber(H.ttl)
-- Keys live ttl + slack after a refresh, and a write refreshes them only when the last refresh is
-- older than slack: a run lives at least ttl after its last write (at most ttl + slack) and the
-- usual batch pays for no EXPIRE at all.
local slack = tonumber(H.slack)
local chunks_key = series .. 'rc'
-- chunk numbers: decimal strings without leading zeros (as Python writes them)
local function chunk_member(ci) return string.rep('0', 20 - #ci) .. ci end
local function int_lt(a, b) return #a < #b or (#a == #b and a < b) end
-- the series keys under a series prefix sp, and its raw chunks that exist (the raw window and
-- what the last batches wrote): bounded by what is stored, whatever the step numbers
local function touch_series(sp)
  for _, k in ipairs({'ds', 'x', 'd1', 'd2', 'd3', 'rc'}) do redis.call('EXPIRE', sp .. k, ttl + slack) end
  for _, m in ipairs(redis.call('ZRANGE', sp .. 'rc', 0, -1)) do
    redis.call('EXPIRE', sp .. 'raw:' .. string.match(m, '^0*(%d+)$'), ttl + slack)
  end
end
local later = {}                              -- the series prefixes of the attempts after the first
local function touch_all()
  if ttl > 0 then
    for _, k in ipairs({'s', 'a', 'ar', 'ak', 'n', 'act'}) do
      redis.call('EXPIRE', prefix .. k, ttl + slack)
    end
    touch_series(prefix)
    for _, sp in ipairs(later) do touch_series(sp) end
    redis.call('HSET', K_state, 'ttl_at', now)
  end
end
local function needs_touch()
  if ttl <= 0 then return false end
  local at = tonumber(redis.call('HGET', K_state, 'ttl_at') or '0')
  return tonumber(now) - at >= slack
end
-- the project is part of the run's name (its key prefix); kept in the state for readers
if v == 0 then redis.call('HSET', K_state, 'project', H.project, 'created_at', now) end

local n_seg, n_late, n_extra = tonumber(H.segments), tonumber(H.late), tonumber(H.extras)
local n_alert, n_claim = tonumber(H.alerts), tonumber(H.claims)
local c0 = redis.call('HGET', K_tiers, 'c0') or '0'
local data_off, slot_bytes, grow = {data_offset}, {slot_bytes}, {grow_bytes}
local chunk_bytes = data_off + {chunk} * slot_bytes
-- The chunk key (ci: the chunk number as a string), at least long enough for slots up to
-- last_slot. It grows by whole blocks of grow bytes through SET (an exact-size allocation):
-- SETRANGE/SETBIT past the end would grow the string greedily, keeping up to twice its length
-- allocated. A new chunk enters the run's chunk index.
local function chunk(ci, last_slot)
  local key = series .. 'raw:' .. ci
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
local first_seg = i
for _ = 1, n_seg do
  local last_slot = tonumber(A[i + 1]) + tonumber(A[i + 2]) - 1
  if (top[A[i]] or -1) < last_slot then top[A[i]] = last_slot end
  i = i + 4
end
i = first_seg
for _ = 1, n_seg do
  local first, count = tonumber(A[i + 1]), tonumber(A[i + 2])
  local key = chunk(A[i], top[A[i]])
  for s = first, first + count - 1 do redis.call('SETBIT', key, s, 1) end
  redis.call('SETRANGE', key, data_off + first * slot_bytes, A[i + 3])
  i = i + 4
end

-- late steps: stored unless their slot's presence bit says they are (SETBIT returns the old bit)
local flags = {}
local stored, dups = 0, 0
for c = 1, n_late do
  local ci = A[i]
  if int_lt(ci, c0) then
    flags[c] = 'L'
  else
    local slot = tonumber(A[i + 1])
    local key = chunk(ci, slot)
    if redis.call('SETBIT', key, slot, 1) == 1 then
      flags[c] = 'D'; dups = dups + 1
    else
      redis.call('SETRANGE', key, data_off + slot * slot_bytes, A[i + 2])
      flags[c] = 'N'; stored = stored + 1
    end
  end
  i = i + 3
end

for _ = 1, n_extra do
  local late = tonumber(A[i + 2])
  if late == 0 or flags[late] == 'N' then redis.call('HSET', K_extras, A[i], A[i + 1]) end
  i = i + 3
end
if n_extra > 0 and ttl > 0 then redis.call('EXPIRE', K_extras, ttl + slack) end

local alert_info = {}
for a = 1, n_alert do
  local id = A[i]
  redis.call('HSET', K_alerts, id, A[i + 1])
  local created = redis.call('HSETNX', K_raised, id, now)
  local r = redis.call('HGET', K_raised, id)
  local ack = redis.call('HGET', K_acked, id) or ''
  alert_info[a] = {r, ack, created}
  i = i + 2
end
if n_alert > 0 and ttl > 0 then
  for _, k in ipairs({K_alerts, K_raised, K_acked}) do redis.call('EXPIRE', k, ttl + slack) end
end

-- notification claims: the first commit to make one wins it, so one replica sends it
local claimed = {}
for c = 1, n_claim do
  claimed[c] = tostring(redis.call('HSETNX', K_claims, A[i], now))
  i = i + 1
end
if n_claim > 0 and ttl > 0 then redis.call('EXPIRE', K_claims, ttl + slack) end
for c = 1, tonumber(H.later) do later[c] = A[i]; i = i + 1 end

-- the state's last_step is the current attempt's: the attempt this commit closes keeps its own
if H.attempts ~= '' and H.attempt ~= '1' then
  local closed_last = redis.call('HGET', K_state, 'last_step')
  if closed_last then
    redis.call('HSET', K_closed_tiers, 'last', closed_last)
    if ttl > 0 then redis.call('EXPIRE', K_closed_tiers, ttl + slack) end
  end
end

local accepted = tonumber(H.in_order) + stored
local st = {'v', v + 1, 'eng', H.engine}
if H.last_step ~= '' then table.insert(st, 'last_step'); table.insert(st, H.last_step) end
if H.timeline ~= '' then table.insert(st, 'tl'); table.insert(st, H.timeline) end
if H.attempts ~= '' then table.insert(st, 'att'); table.insert(st, H.attempts) end
if H.advice ~= '' then
  table.insert(st, 'health'); table.insert(st, H.health)
  table.insert(st, 'rec'); table.insert(st, H.rec)
  if H.last ~= '' then table.insert(st, 'last'); table.insert(st, H.last) end
  if H.active ~= '' then table.insert(st, 'act'); table.insert(st, H.active) end
end
if H.meta ~= '' then table.insert(st, 'meta'); table.insert(st, H.meta) end
if accepted > 0 then table.insert(st, 'last_seen'); table.insert(st, now) end
redis.call('HSET', K_state, unpack(st))
redis.call('HINCRBY', K_state, 'n_steps', accepted)
redis.call('HINCRBY', K_state, 'dups', tonumber(H.batch_dups) + dups)
redis.call('HINCRBY', K_state, 'ooo', stored)
if H.meta ~= '' or needs_touch() then touch_all() end
return {1, v + 1, table.concat(flags), c0, alert_info, table.concat(claimed)}
"""
for _name, _value in (("data_offset", ser.DATA_OFFSET), ("slot_bytes", ser.SLOT_BYTES),
                      ("grow_bytes", ser.GROW_BYTES), ("chunk", ser.CHUNK)):
    COMMIT = COMMIT.replace("{" + _name + "}", str(_value))   # the packed layout's constants (series.py)

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
