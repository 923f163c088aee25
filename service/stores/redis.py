"""The Redis store (``redis://host:port/db``, or ``redis+cluster://host:port`` for a Redis Cluster):
shared by any number of service replicas.

Data model (per run, every key prefixed ``lw:{<project>/<run_id>}:``: a run is named by its project
and its run id, and ``/`` is in neither; the braces are a Cluster hash tag):

=========  ======================  ==========================================================
key        type                    holds
=========  ======================  ==========================================================
s          hash                    state: version ``v``, detector state ``eng``
                                   (``Engine.to_bytes``), project, metadata, counters, last
                                   values, health, recommendation, active alerts (JSON)
raw:<ci>   string (<= 38.5 KB)     steps ci*960 .. ci*960+959, packed float64 (see
                                   :mod:`.series`) + a presence bitmap; the newest
                                   ``raw_chunks`` (8) chunks stay raw
rc         sorted set              the raw chunks that exist (zero-padded chunk numbers): every
                                   loop over chunks runs over these, never over a step range
d1 d2 d3   hash bucket -> bytes    downsampled older steps (64 / 2,048 / 131,072 steps a point)
ds         hash                    watermarks: c0 (first raw chunk), w1, w2
x          hash step -> JSON       ``extra`` of raw steps (dropped when downsampled)
a ar ak    hashes id -> ...        alerts (JSON), raised_at, acknowledged_at
act        list                    action reports (JSON)
n          hash                    notification claims (dedupe key -> time claimed)
att<n>:*   the keys above          the steps of attempt n >= 2 (ds raw:<ci> rc d1 d2 d3 x under
                                   that prefix, :meth:`RedisStore._series_p`); attempt 1's
                                   are the run's own
=========  ======================  ==========================================================

The state hash also holds the run's timeline (``tl``, the pipeline's bytes about attempts) and
the summary's attempts (``att``, JSON). Its ``last_step`` is the current attempt's; an attempt
that a later one closed has its highest step in its ``ds`` hash (``last``).

And two indexes, each sharded into :data:`INDEX_SHARDS` sorted sets (``lw:runs:{<k>}``,
``lw:alerts:{<k>}``; shard = CRC-32 of the member, so the shards spread over a Cluster's nodes):
``<project>/<run_id>`` by last write time (list, metrics, retention; refreshed by a replica at
most every :data:`INDEX_REFRESH_S` per run) and ``<project>/<alert id>`` by last update time
(cross-run alert queries). Data of earlier layouts is brought to this one once by
:meth:`RedisStore.prepare` (see docs/storage.md).

On a Redis Cluster every command and script touches the keys of one run only (one hash tag, so
one slot). The index entries are written beside the COMMIT script, before it (in the same round
trip on a single Redis): an entry for a batch that then fails names a run that may not exist,
and listings skip it.

Concurrency (the :mod:`.base` snapshot contract): :meth:`RedisStore.commit` is one Lua script
(``COMMIT``) that applies a change (steps, extras, alerts, notification claims, detector state,
summary, counters) atomically, and only if the run's state version is the one the change was
computed from (compare-and-set); on a conflict it writes nothing and returns the current
snapshot, so the pipeline's retry needs no second round trip. The pipeline keeps the engines of
the runs it served last, so the usual batch is exactly one round trip (one EVALSHA).

Duplicates are found by the chunk's presence bit (SETBIT returns the old bit) inside the same
script; steps above the stored ``last_step`` need no check (nothing above it is stored).

Downsampling (bounded memory per run, the rules of :mod:`.series` that the memory store shares)
happens after a batch pushes the head into a new chunk: the chunks that fell out of the raw window
are folded into level-1 buckets under WATCH/MULTI (a late step written into one meanwhile aborts
and retries the fold). A late step that arrives for an already downsampled
range is folded into its bucket (counted out of order) unless the bucket's presence bitmap
already has it (duplicate).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import json
import logging
import time
import zlib
from collections import OrderedDict
from typing import Any, Callable, Iterable

import msgpack
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..settings import Settings
from . import redis_wire
from . import series as ser
from .base import (
    DEFAULT_PROJECT,
    Columns,
    Committed,
    RunCommit,
    RunSummary,
    Snapshot,
    Store,
    StoreUnavailable,
    alert_matches,
    summary_matches,
    wall_now,
)
from .redis_pool import NO_CONNECTION, STALLED, ConnectionTurns, QueuedConnectionPool
from .redis_scripts import ACK_ALERT, COMMIT, COMMIT_FIELDS, COMMIT_KEYS, RECORD_ACTION, SUMMARIES, ttl_slack

log = logging.getLogger("losswatch.redis")

_LEVEL_KEYS = ("d1", "d2", "d3")
CLUSTER_SCHEME = "redis+cluster://"   # a store URL naming one node of a Redis Cluster
INDEX_SHARDS = 16                     # sorted sets per index (runs, alerts)
INDEX_REFRESH_S = 60.0                # a run's index entry is rewritten at most this often by a replica
_STATE_FIELDS = ("project", "created_at", "last_seen", "last_step", "n_steps", "dups",
                 "ooo", "last", "health", "rec", "act", "meta", "att")

# Errors that mean "Redis cannot serve us right now" (the API answers 503 + Retry-After): no
# connection, no answer within the store timeout (a stall, a long script), or one of these
# error replies (redis-py strips the code from the message and keeps it as ``status_code``).
_DOWN = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError, asyncio.TimeoutError,
         rexc.ClusterError, rexc.SlotNotCoveredError)
_DOWN_REPLIES = {
    "OOM": "out of memory", "BUSY": "busy running a script", "MISCONF": "cannot persist",
    "NOREPLICAS": "not enough replicas", "LOADING": "loading its data", "MASTERDOWN": "primary down",
    "READONLY": "read-only replica", "TRYAGAIN": "cluster resharding", "CLUSTERDOWN": "cluster down",
    "NOSCRIPT": "script cache flushed",
}


def _reply_code(e: rexc.ResponseError) -> str:
    code = getattr(e, "status_code", None)
    return code if code else str(e).split(" ", 1)[0]


def _unavailable(fn):
    """Turn Redis failures into :class:`StoreUnavailable` saying why."""

    @functools.wraps(fn)
    async def wrapper(self, *a, **kw):
        try:
            result = await fn(self, *a, **kw)
        except StoreUnavailable:
            raise
        except rexc.ResponseError as e:
            why = _DOWN_REPLIES.get(_reply_code(e))
            if why is not None:
                raise StoreUnavailable(f"redis at {self._where}: {why} ({_reply_code(e)} {e})") from e
            raise
        except rexc.TimeoutError as e:
            raise StoreUnavailable(f"redis at {self._where} did not answer within "
                                   f"{self.timeout_ms} ms (stalled or busy)") from e
        except _DOWN as e:
            if str(e) == NO_CONNECTION:
                raise StoreUnavailable(f"redis at {self._where}: no free connection in time (all "
                                       f"{self.max_connections} busy)") from e
            if str(e) == STALLED:
                raise StoreUnavailable(f"redis at {self._where} did not answer within "
                                       f"{self.timeout_ms} ms (stalled or busy)") from e
            raise StoreUnavailable(f"redis at {self._where} unreachable: {e or type(e).__name__}") from e
        if self._turns is not None:
            self._turns.answered()
        return result

    return wrapper


def _s(b: bytes | None) -> str | None:
    return None if b is None else b.decode()


def _f(b: bytes | None) -> float | None:
    return None if b is None or b == b"" else float(b)


def _i(b: bytes | None) -> int | None:
    return None if b is None or b == b"" else int(b)


def script_args(values: list[Any]) -> bytes:
    """A script's arguments as one MessagePack array (the script reads it with Redis' built-in
    ``cmsgpack.unpack(ARGV[1])``): each value as the string redis-py would send for it (bytes and
    text as they are, an int or a float in decimal as ``repr`` writes it), packed as MessagePack
    raw strings, which cmsgpack reads as Lua strings. Integers never become Lua numbers, which
    are exact only up to 2^53."""
    return msgpack.packb([_WRITE.get(type(v), _script_arg)(v) for v in values], use_bin_type=False)


# how script_args writes a value of each usual type, in one look-up (str() and bytes() of a str and
# a bytes object are that object); a value of any other type goes through _script_arg
_WRITE: dict[type, Callable[[Any], str | bytes]] = {str: str, bytes: bytes, int: int.__repr__, float: float.__repr__}


def _script_arg(v: Any) -> str | bytes:
    if isinstance(v, bool) or not isinstance(v, (int, float, str, bytes, bytearray)):
        raise TypeError(f"a script argument must be bytes, text or a number, not {type(v).__name__}")
    return repr(v) if isinstance(v, (int, float)) else bytes(v) if isinstance(v, bytearray) else v


def _member(project: str, name: str) -> str:
    """A run's (or an alert's) name in the global indexes and in its keys' hash tag."""
    return f"{project}/{name}"


def _unmember(member: str) -> tuple[str, str] | None:
    """(project, name) of an index member; None for one of the earlier layout (no project)."""
    project, sep, name = member.partition("/")
    return (project, name) if sep and project and name else None


def _run_of_alert(alert_id: str) -> str | None:
    parts = alert_id.rsplit(":", 2)   # f"{run_id}:{kind}:{first_step}"; run ids may hold ':'
    return parts[0] if len(parts) == 3 and parts[0] else None


class RedisStore(Store):
    """Store on Redis; see the module docstring.

    Parameters
    ----------
    url : ``redis://host:port/db`` (also ``rediss://``, ``unix://``), or ``redis+cluster://host:port``:
        one node of a Redis Cluster (the others are discovered).
    retention_seconds : runs expire this long after their last write (up to min(1 h, 10%) later:
        EXPIRE is refreshed by a write when the last refresh is older than that); 0 keeps them
        forever (30 days).
    raw_chunks : how many of the newest 960-step chunks stay at full resolution (8: 7,680 steps).
    levels : the downsampled levels (:data:`.series.LEVELS`; tests use narrow ones).
    wait_replicas : after each batch, WAIT until this many Redis replicas have it (0 = don't),
        for at most ``wait_timeout_ms``. A batch not replicated in time raises StoreUnavailable
        (503) although the primary has it: the client's retry then finds its steps as duplicates.
        Not on a Cluster (refused).
    timeout_ms : a connection or a reply that takes longer is a StoreUnavailable (503): a stalled
        Redis answers promptly instead of after seconds; so is a wait for a free pooled
        connection once Redis has not answered for this long.
    max_connections : connections to Redis per process (per node on a Cluster).
    queue_timeout_ms : how long a request may wait for a free pooled connection while Redis
        answers (a burst): requests are served in arrival order (:mod:`.redis_pool`).

    The defaults are those of :class:`~losswatch.service.settings.Settings` (the service passes
    its settings through :func:`.base.open_store`).
    """

    FOLD_CHUNKS = 64     # raw chunks folded per downsampling transaction

    def __init__(self, url: str, *, retention_seconds: int = Settings.retention_seconds,
                 raw_chunks: int = Settings.raw_chunks, wait_replicas: int = Settings.redis_wait_replicas,
                 wait_timeout_ms: int = Settings.redis_wait_timeout_ms, prefix: str = "lw:",
                 max_connections: int = Settings.redis_connections,
                 levels: tuple[ser.Level, ...] | None = None,
                 timeout_ms: int = Settings.store_timeout_ms,
                 queue_timeout_ms: int = Settings.store_queue_ms) -> None:
        self._where = _redact(url)                 # never echo a password (/readyz shows it)
        self.url = self._where
        self.retention = retention_seconds
        self.raw_chunks = max(1, raw_chunks)
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.timeout_ms = timeout_ms
        self.max_connections = max_connections
        self.prefix = prefix
        self.levels = tuple(levels or ser.LEVELS)
        ser.check_levels(self.levels)
        t = timeout_ms / 1000
        # a batch waiting for replicas waits up to wait_timeout_ms for the reply on purpose
        reply_t = t + (wait_timeout_ms / 1000 if wait_replicas else 0)
        self.cluster = url.startswith(CLUSTER_SCHEME)
        if self.cluster:
            if wait_replicas:
                raise ValueError("LOSSWATCH_REDIS_WAIT_REPLICAS needs a single Redis primary: a Redis Cluster "
                                 "acknowledges writes per node (use its own replicas and failover)")
            # one quick retry after a refused connection or a moved slot (it refreshes the map of
            # the slots), then StoreUnavailable: a node that is down answers 503 promptly
            self._r = RedisCluster.from_url(
                "redis://" + url[len(CLUSTER_SCHEME):], max_connections=max_connections,
                socket_connect_timeout=t, socket_timeout=reply_t, require_full_coverage=False,
                retry=Retry(NoBackoff(), 1))
            self._turns: ConnectionTurns | None = None
        else:
            self._turns = ConnectionTurns(limit=max_connections, timeout=t, queue_timeout=queue_timeout_ms / 1000)
            pool = QueuedConnectionPool.from_url(
                url, turns=self._turns, max_connections=max_connections, timeout=t,
                socket_connect_timeout=t, socket_timeout=reply_t, health_check_interval=30)
            self._r = aioredis.Redis(connection_pool=pool)
        # the hot path (a batch's COMMIT, a snapshot's load) on a lean pool of its own, where it can
        # run (a single Redis, not TLS): redis-py's per-command machinery costs more than the round
        # trip; it queues on the same turns as redis-py's pool
        self._wire = (redis_wire.WirePool(url, turns=self._turns, connect_timeout=t, reply_timeout=reply_t)
                      if self._turns is not None and redis_wire.serves(url) else None)
        self._commit = self._r.register_script(COMMIT)
        self._ack = self._r.register_script(ACK_ALERT)
        self._action = self._r.register_script(RECORD_ACTION)
        self._summaries = self._r.register_script(SUMMARIES)
        self._indexed: OrderedDict[str, float] = OrderedDict()   # run -> when this replica last indexed it
        self._trimmed_at = -1e18                                  # when it last trimmed the indexes
        from .redis_policies import RedisPolicies  # (it builds on this module's error mapping)

        self.policies = RedisPolicies(self)

    # --- keys -----------------------------------------------------------------------------
    def _p(self, rk: str) -> str:
        """The key prefix of the run ``rk`` (``_member(project, run_id)``)."""
        return f"{self.prefix}{{{rk}}}:"

    def _index_key(self, index: str, member: str) -> str:
        """The shard of ``index`` ("runs" or "alerts") that holds ``member``."""
        return self._shard(index, zlib.crc32(member.encode()) % INDEX_SHARDS)

    def _shard(self, index: str, k: int) -> str:
        return f"{self.prefix}{index}:{{{k}}}"

    def _shards(self, index: str) -> list[str]:
        return [self._shard(index, k) for k in range(INDEX_SHARDS)]

    def _series_p(self, rk: str, attempt: int) -> str:
        """The key prefix of the steps of one attempt of the run ``rk`` (attempt 1: the run's)."""
        return self._p(rk) if attempt == 1 else f"{self._p(rk)}att{attempt}:"

    @property
    def _legacy_runs_key(self) -> str:
        """The one-key run index of earlier layouts (moved into the shards by :meth:`prepare`)."""
        return self.prefix + "runs"

    @property
    def _legacy_alerts_key(self) -> str:
        return self.prefix + "alerts"

    # --- load and commit (the ingest pipeline's two calls) ---------------------------------
    @_unavailable
    async def load(self, project: str, run_id: str) -> Snapshot:
        cmd = ("HMGET", self._p(_member(project, run_id)) + "s", "v", "eng", "last_step", "tl")
        v, eng, last, tl = (await self._round_trip([cmd]))[0]
        return Snapshot(version=_i(v) or 0, engine_state=eng or None, last_step=_i(last), timeline=tl or None)

    @_unavailable
    async def commit(self, change: RunCommit) -> Committed | Snapshot:
        """One COMMIT script call (the change, all or nothing, under the version check); then
        the late steps of already downsampled chunks are folded into their buckets and the
        chunks that left the raw window are downsampled (each its own transaction: a failure
        there leaves the batch stored, and the client's retry completes it)."""
        c = change
        rk = _member(c.project, c.run_id)
        p = self._p(rk)
        q = self._series_p(rk, c.attempt)
        keys, args = self._commit_call(p, rk, c)
        index = self._index_writes(rk, c)
        if self.cluster:
            # the index entries first (harmless if the commit is then refused), in their own round
            # trip: a Cluster pipeline cannot load the script into a node that lacks it (one
            # restarted), a plain call does
            if index:
                await self._round_trip(index)
                self._indexed_now(rk, index)
            reply, replicas = await self._commit(keys=keys, args=args), None
        else:
            # one round trip: the index entries, the script, and WAIT on the same connection
            # (it counts the replicas that have this connection's writes)
            replies = await self._pipelined_commit(index, keys, args)
            reply = replies[len(index)]
            replicas = replies[-1] if self.wait_replicas else None
            self._indexed_now(rk, index)
        if int(reply[0]) == 0:
            return Snapshot(version=int(reply[1]), engine_state=reply[2] or None, last_step=_i(reply[3] or None),
                            timeline=reply[4] or None)
        version, flags, c0, alert_info, claims = int(reply[1]), reply[2].decode(), int(reply[3]), reply[4], reply[5]
        if replicas is not None and int(replicas) < self.wait_replicas:
            raise StoreUnavailable(f"batch reached {int(replicas)} of {self.wait_replicas} Redis replicas "
                                   f"in {self.wait_timeout_ms} ms (stored on the primary; a retry is safe)")
        stored, dups = flags.count("N"), flags.count("D")
        below = [i for i, fl in zip(c.late, flags) if fl == "L"]
        if below:
            n, d = await self._fold_late(p, q, c.cols, below)
            stored += n
            dups += d
        last_step = c.cols.step[c.in_order[-1]] if c.in_order else None
        if last_step is not None and ser.raw_start(last_step, self.raw_chunks) > c0:
            try:
                await self._compact(p, q)
            except (StoreUnavailable, *_DOWN) as e:     # the batch is stored; the next one retries
                log.warning("downsampling run %s postponed: %s", rk, e)
        return Committed(
            version=version, stored_late=stored, duplicate_late=dups,
            alerts=[(float(r), float(ack) if ack else None, bool(int(created))) for r, ack, created in alert_info],
            claimed=[ch == ord("1") for ch in claims])

    async def _pipelined_commit(self, index: list[tuple], keys: list[str], args: list[Any]) -> list:
        """The index entries, the COMMIT script by its digest, and WAIT, in one round trip (on the
        lean pool where there is one). The script is called by digest alone (a script object in a
        pipeline costs a SCRIPT EXISTS round trip on every call); a server whose script cache was
        emptied (a restart) is given the script once and sent the same commands again, whose
        index writes repeat harmlessly and whose script had not run."""
        cmds = [*index, ("EVALSHA", self._commit.sha, len(keys), *keys, *args)]
        if self.wait_replicas:
            cmds.append(("WAIT", self.wait_replicas, self.wait_timeout_ms))
        try:
            return await self._round_trip(cmds)
        except rexc.NoScriptError:
            self._commit.sha = (await self._round_trip([("SCRIPT", "LOAD", COMMIT)]))[0].decode()
            return await self._round_trip(cmds)

    async def _round_trip(self, cmds: list[tuple]) -> list:
        """Commands in one round trip (on the lean pool where there is one; on a Cluster, one per
        node their keys live on); their replies (the first error raised)."""
        if self._wire is not None:
            return await self._wire.execute(cmds)
        async with self._r.pipeline(transaction=False) as pipe:
            for cmd in cmds:
                pipe.execute_command(*cmd)
            return await pipe.execute()

    def _index_writes(self, rk: str, c: RunCommit) -> list[tuple[str, str, str, str]]:
        """The index commands due with this commit: the run's entry when this replica has not
        written it for INDEX_REFRESH_S (or the change is a metadata change), one entry per
        changed alert, and the trimming of entries past the retention once per refresh slack.
        Each is a command as Redis takes it (scores written as redis-py writes a float)."""
        out: list[tuple[str, str, str, str]] = []
        now = repr(c.now)
        seen = self._indexed.get(rk)
        if seen is None or time.monotonic() - seen >= INDEX_REFRESH_S or c.meta is not None:
            out.append(("ZADD", self._index_key("runs", rk), now, rk))
        for d in c.alerts:
            m = _member(c.project, d["id"])
            out.append(("ZADD", self._index_key("alerts", m), now, m))
        slack = ttl_slack(self.retention)
        if self.retention and time.monotonic() - self._trimmed_at >= slack:
            cutoff = repr(c.now - self.retention - slack)
            out += [("ZREMRANGEBYSCORE", key, "-inf", cutoff)
                    for key in (*self._shards("runs"), *self._shards("alerts"))]
        return out

    def _indexed_now(self, rk: str, done: list[tuple[str, str, str, str]]) -> None:
        """Remember what the index writes of a successful round trip did."""
        now = time.monotonic()
        if any(cmd[0] == "ZADD" and cmd[3] == rk for cmd in done):
            self._indexed[rk] = now
            self._indexed.move_to_end(rk)
            while len(self._indexed) > 100_000:
                self._indexed.popitem(last=False)
        if any(cmd[0] == "ZREMRANGEBYSCORE" for cmd in done):
            self._trimmed_at = now

    def _commit_call(self, p: str, rk: str, c: RunCommit) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the COMMIT script for ``c`` (their layout: redis_scripts.COMMIT_KEYS
        and COMMIT_FIELDS): the named scalars first, in COMMIT_FIELDS' order, then the sections,
        all in one argument (:func:`script_args`)."""
        cols = c.cols
        in_order = c.in_order
        sections: list[Any] = []
        # in-order steps, grouped into runs of consecutive steps within one chunk (one SETRANGE)
        segs = _segments(in_order, cols.step)       # in_order is increasing in step already
        packed = ser.pack_rows(cols, in_order) if in_order else b""   # once: segments slice it
        pos = 0
        for ci, first_slot, idx in segs:
            sections += [ci, first_slot, len(idx), packed[pos * ser.SLOT_BYTES:(pos + len(idx)) * ser.SLOT_BYTES]]
            pos += len(idx)
        late_no: dict[int, int] = {}
        for n, i in enumerate(c.late, 1):
            s = cols.step[i]
            sections += [s // ser.CHUNK, s % ser.CHUNK, ser.pack_rows(cols, [i])]
            late_no[i] = n
        n_extra = 0
        if any(cols.extra):
            for i in (*in_order, *c.late):
                x = cols.extra[i]
                if x:
                    sections += [cols.step[i], json.dumps(x), late_no.get(i, 0)]
                    n_extra += 1
        for d in c.alerts:
            sections += [d["id"], json.dumps(d)]
        sections += c.claims
        later = [self._series_p(rk, a) for a in range(2, c.attempt + 1)]   # attempts only go up
        sections += later
        q = self._series_p(rk, c.attempt)
        advice = c.advice
        head = {
            "expected": c.expected_version, "project": c.project, "now": repr(c.now),
            "ttl": self.retention, "slack": ttl_slack(self.retention), "prefix": p, "engine": c.engine.to_bytes(),
            "last_step": cols.step[in_order[-1]] if in_order else "", "batch_dups": c.batch_duplicates,
            "in_order": len(in_order), "advice": "1" if advice is not None else "",
            "health": advice.health if advice else "", "rec": json.dumps(advice.recommendation) if advice else "",
            "last": json.dumps(advice.last) if advice and advice.last is not None else "",
            "active": json.dumps(advice.active_alerts) if advice and advice.active_alerts is not None else "",
            "meta": json.dumps(c.meta) if c.meta is not None else "",
            "attempt": c.attempt, "series": q, "timeline": c.timeline if c.timeline is not None else "",
            "attempts": json.dumps(c.attempts) if c.attempts is not None else "",
            "segments": len(segs), "late": len(c.late), "extras": n_extra, "alerts": len(c.alerts),
            "claims": len(c.claims), "later": len(later),
        }
        args = [head[name] for name in COMMIT_FIELDS]
        by_name = {"state": p + "s", "tiers": q + "ds", "extras": q + "x", "alerts": p + "a", "raised": p + "ar",
                   "acked": p + "ak", "claims": p + "n",
                   "closed_tiers": self._series_p(rk, max(1, c.attempt - 1)) + "ds"}
        return [by_name[k] for k in COMMIT_KEYS], [script_args(args + sections)]

    # --- downsampling ---------------------------------------------------------------------
    @staticmethod
    async def _series_last(pipe, p: str, q: str) -> int | None:
        """The highest step of the series under ``q`` (an attempt of the run whose prefix is
        ``p``): a closed attempt's own, else (the current attempt) the run's."""
        last = _i(await pipe.hget(q + "ds", "last"))
        return _i(await pipe.hget(p + "s", "last_step")) if last is None else last

    async def _compact(self, run_p: str, p: str) -> None:
        """Fold the raw chunks that fell out of the raw window into level-1 buckets, and move
        buckets past a level's ``keep`` to the next level (:func:`.series.plan_cascade`), under
        WATCH/MULTI. Only chunks and buckets that exist are read (the ``rc`` index lists the
        chunks), so a gap in the steps costs nothing; each transaction folds at most
        ``FOLD_CHUNKS`` chunks, so one batch's work stays bounded by what it wrote. ``run_p``:
        the run's key prefix, ``p``: the attempt's series prefix."""
        L1 = self.levels[0]
        async with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(p + "ds", p + "rc", p + "d1", p + "d2", p + "d3")
                    c0, w1, w2 = (int(x or 0) for x in await pipe.hmget(p + "ds", "c0", "w1", "w2"))
                    last = await self._series_last(pipe, run_p, p)
                    target = -1 if last is None else ser.raw_start(last, self.raw_chunks)
                    if target <= c0:
                        await pipe.reset()
                        return
                    members = await pipe.zrangebylex(p + "rc", "-", "(" + ser.chunk_member(target),
                                                     start=0, num=self.FOLD_CHUNKS)
                    chunks = [int(m) for m in members]
                    new_c0 = target if len(chunks) < self.FOLD_CHUNKS else chunks[-1] + 1
                    raw_keys = [f"{p}raw:{ci}" for ci in chunks]
                    blobs = []
                    if raw_keys:
                        await pipe.watch(*raw_keys)     # a late step written meanwhile: fold again
                        # (a command, not pipe.mget: a Cluster pipeline refuses mget, keys of one slot or not)
                        blobs = await pipe.execute_command("MGET", *raw_keys)
                    d1_new: dict[int, bytes] = {}
                    extra_steps: list[int] = []
                    has_extras = bool(raw_keys) and bool(await pipe.hlen(p + "x"))   # only runs that log extras
                    for ci, blob in zip(chunks, blobs):
                        d1_new.update(ser.aggregate_chunk(ci, blob, L1.width))
                        if blob and has_extras:
                            slots, _ = ser.decode_slots(blob)
                            extra_steps += (slots + ci * ser.CHUNK).tolist()
                    plan = ser.plan_cascade(self.levels, new_c0, w1, w2, (), ())
                    d1_keys: set[int] = set(d1_new)
                    if plan.w1 > w1:
                        d1_keys |= {int(k) for k in await pipe.hkeys(p + "d1")}
                    d2_keys: set[int] = set()
                    if plan.w2 > w2:
                        d2_keys = {int(k) for k in await pipe.hkeys(p + "d2")}
                    plan = ser.plan_cascade(self.levels, new_c0, w1, w2, d1_keys, d2_keys)
                    d1 = dict(d1_new)
                    d1.update(await self._hget_many(pipe, p + "d1",
                                                    [b for subs in plan.into_d2.values() for b in subs if b not in d1_new]))
                    d2 = await self._hget_many(pipe, p + "d2",
                                               list(plan.into_d2) + [b for subs in plan.into_d3.values() for b in subs])
                    d3 = await self._hget_many(pipe, p + "d3", list(plan.into_d3))
                    set2, set3 = ser.apply_cascade(self.levels, plan, d1, d2, d3)
                    moved1 = {b for subs in plan.into_d2.values() for b in subs}
                    moved2 = [b for subs in plan.into_d3.values() for b in subs]
                    set1 = {b: blob for b, blob in d1_new.items() if b not in moved1}
                    ttl = await pipe.ttl(run_p + "s") if self.retention else 0
                    pipe.multi()
                    if set1:
                        pipe.hset(p + "d1", mapping=set1)
                    if moved1:
                        pipe.hdel(p + "d1", *moved1)
                    if set2:
                        pipe.hset(p + "d2", mapping=set2)
                    if moved2:
                        pipe.hdel(p + "d2", *moved2)
                    if set3:
                        pipe.hset(p + "d3", mapping=set3)
                    if raw_keys:
                        pipe.delete(*raw_keys)
                        pipe.zrem(p + "rc", *members)
                    if extra_steps:
                        pipe.hdel(p + "x", *extra_steps)
                    pipe.hset(p + "ds", mapping={"c0": new_c0, "w1": plan.w1, "w2": plan.w2})
                    if self.retention:   # as long as the run's other keys (see redis_scripts)
                        for k in ("ds", "d1", "d2", "d3"):
                            pipe.expire(p + k, max(ttl, 1))
                    await pipe.execute()
                except rexc.WatchError:
                    continue

    @staticmethod
    async def _hget_many(pipe, key: str, fields: list[int]) -> dict[int, bytes]:
        """The stored fields among ``fields`` (a missing one is left out)."""
        if not fields:
            return {}
        return {f: v for f, v in zip(fields, await pipe.hmget(key, fields)) if v is not None}

    async def _fold_late(self, run_p: str, p: str, cols: Columns, idx: list[int]) -> tuple[int, int]:
        """Fold late steps of already downsampled chunks into their buckets (``run_p``: the run's
        key prefix, ``p``: the attempt's series prefix).

        Returns (stored, duplicates): the bucket's presence bitmap tells a duplicate.
        """
        async with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(p + "ds", p + "d1", p + "d2", p + "d3")
                    w1, w2 = (int(x or 0) for x in await pipe.hmget(p + "ds", "w1", "w2"))
                    where = []  # per late step: (level, its width, bucket index)
                    buckets: dict[tuple[str, int], set[int]] = {}
                    for i in idx:
                        s = cols.step[i]
                        k = ser.late_level(self.levels, w1, w2, s)
                        lvl, width = _LEVEL_KEYS[k], self.levels[k].width
                        where.append((lvl, width, s // width))
                        buckets.setdefault((lvl, width), set()).add(s // width)
                    updates: dict[tuple[str, int], ser.Agg] = {}
                    for (lvl, width), bset in buckets.items():          # one HMGET per level
                        bs = sorted(bset)
                        for b, blob in zip(bs, await pipe.hmget(p + lvl, bs)):
                            updates[(lvl, b)] = ser.Agg.unpack(blob, width) if blob else ser.Agg(width=width)
                    stored = dups = 0
                    changed: set[tuple[str, int]] = set()
                    for i, (lvl, width, b) in zip(idx, where):
                        s = cols.step[i]
                        agg = updates[(lvl, b)]
                        if agg.has(s - b * width):
                            dups += 1
                            continue
                        agg.add(s - b * width, [getattr(cols, f)[i] for f in ser.VALUE_FIELDS], cols.ts[i])
                        changed.add((lvl, b))
                        stored += 1
                    pipe.multi()
                    for lvl, b in changed:
                        pipe.hset(p + lvl, b, updates[(lvl, b)].pack())
                    pipe.hincrby(run_p + "s", "n_steps", stored)
                    pipe.hincrby(run_p + "s", "ooo", stored)
                    pipe.hincrby(run_p + "s", "dups", dups)
                    await pipe.execute()
                    return stored, dups
                except rexc.WatchError:
                    continue

    # --- other writes ---------------------------------------------------------------------
    @_unavailable
    async def ack_alert(self, alert_id: str, *, project: str = DEFAULT_PROJECT,
                        now: float | None = None) -> dict[str, Any] | None:
        run_id = _run_of_alert(alert_id)
        if run_id is None:
            return None
        p = self._p(_member(project, run_id))
        reply = await self._ack(keys=[p + "a", p + "ar", p + "ak"], args=[alert_id, repr(wall_now(now))])
        if reply is None:
            return None
        return _alert(reply[0], reply[1], reply[2], project)

    @_unavailable
    async def record_action(self, run_id: str, report: dict[str, Any], *,
                            project: str = DEFAULT_PROJECT) -> dict[str, Any]:
        p = self._p(_member(project, run_id))
        ok = await self._action(keys=[p + "s", p + "act"], args=[json.dumps(report), self.retention])
        if not int(ok):
            raise KeyError(run_id)
        return report

    # --- reads ----------------------------------------------------------------------------
    @_unavailable
    async def get_run(self, run_id: str, *, project: str = DEFAULT_PROJECT) -> RunSummary | None:
        p = self._p(_member(project, run_id))
        st = await self._r.hmget(p + "s", *_STATE_FIELDS)
        if st[0] is None:
            return None
        s = _summary(run_id, project, st)
        await self._enrich_active([s])
        return s

    async def _enrich_active(self, runs: list[RunSummary]) -> None:
        """Active alerts carry raised_at / acknowledged like the stored alerts."""
        todo = [s for s in runs if s.active_alerts]
        if not todo:
            return
        async with self._r.pipeline(transaction=False) as pipe:
            for s in todo:
                ids = [a["id"] for a in s.active_alerts]
                p = self._p(_member(s.project, s.run_id))
                pipe.hmget(p + "ar", ids)
                pipe.hmget(p + "ak", ids)
            res = await pipe.execute()
        for k, s in enumerate(todo):
            for a, r, ak in zip(s.active_alerts, res[2 * k], res[2 * k + 1]):
                a["raised_at"] = _f(r)
                a.setdefault("updated_at", a["raised_at"])
                a["acknowledged"] = ak is not None
                if ak is not None:
                    a["acknowledged_at"] = float(ak)

    @_unavailable
    async def list_runs(self, *, projects: Iterable[str] | None = None, health: str | None = None,
                        active_since: float | None = None) -> list[RunSummary]:
        # an entry's score (a write of the run) trails its last write by up to INDEX_REFRESH_S:
        # read that much earlier, then filter on last_seen exactly
        since = None if active_since is None else active_since - INDEX_REFRESH_S
        entries = await self._index_range("runs", since)
        pset = set(projects) if projects is not None else None
        runs = sorted((pr[1], pr[0], score) for pr, score in ((_unmember(m.decode()), score) for m, score in entries)
                      if pr is not None and (pset is None or pr[0] in pset))
        out: list[RunSummary] = []
        gone: list[str] = []
        old = time.time() - INDEX_REFRESH_S      # younger entries may belong to a run's first batch in flight
        for lo in range(0, len(runs), 1000):
            part = [_member(project, rid) for rid, project, _ in runs[lo:lo + 1000]]
            res = await self._summaries_of([self._p(rk) + "s" for rk in part])
            for (rid, project, score), rk, st in zip(runs[lo:lo + 1000], part, res):   # (a missing field is None)
                if st[0] is None:
                    if score < old:
                        gone.append(rk)       # expired, or a batch that never committed: drop it
                    continue
                s = _summary(rid, project, st)
                if summary_matches(s, pset, health, active_since):
                    out.append(s)
        if gone:
            async with self._r.pipeline(transaction=False) as pipe:
                for rk in gone:
                    pipe.zrem(self._index_key("runs", rk), rk)
                await pipe.execute()
        await self._enrich_active(out)
        return out

    async def _index_range(self, index: str, since: float | None) -> list[tuple[bytes, float]]:
        """(member, score) of every shard of ``index`` with score >= ``since`` (None: all)."""
        async with self._r.pipeline(transaction=False) as pipe:
            for key in self._shards(index):
                pipe.zrangebyscore(key, "-inf" if since is None else since, "+inf", withscores=True)
            shards = await pipe.execute()
        return [e for shard in shards for e in shard]

    async def _summaries_of(self, state_keys: list[str]) -> list[list[bytes | None]]:
        """The summary fields of many runs: one script call on a single Redis; one HMGET per run
        on a Cluster, where a script's keys must share a slot (the pipeline groups them by node)."""
        if not self.cluster:
            return await self._summaries(keys=state_keys, args=_STATE_FIELDS)
        async with self._r.pipeline(transaction=False) as pipe:
            for k in state_keys:
                pipe.hmget(k, _STATE_FIELDS)
            return await pipe.execute()

    @_unavailable
    async def read_attempt(self, run_id: str, start: int | None = None, end: int | None = None, *,
                           project: str = DEFAULT_PROJECT, attempt: int = 1) -> Columns | None:
        """One consistent snapshot (WATCH on the watermarks and the chunk index: a concurrent
        downsampling reads again) of the buckets and the raw chunks that exist in the range:
        the work and the memory are those of the stored data, not of the range's width."""
        rk = _member(project, run_id)
        run_p, p = self._p(rk), self._series_p(rk, attempt)
        async with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(p + "ds", p + "rc")
                    last = await self._series_last(pipe, run_p, p)
                    if last is None:
                        # (HGET, not EXISTS: a Cluster pipeline drops EXISTS between WATCH and MULTI)
                        return Columns() if await pipe.hget(run_p + "s", "project") is not None else None
                    c0, w1, w2 = (int(x or 0) for x in await pipe.hmget(p + "ds", "c0", "w1", "w2"))
                    lo = 0 if start is None else start
                    hi = last if end is None else min(end, last)
                    if hi < lo:
                        await pipe.reset()
                        return Columns()
                    wanted = [(k, s0, s1) for k, s0, s1 in ser.level_spans(self.levels, c0, w1, w2)
                              if s1 > s0 and lo < s1 and hi >= s0]
                    members = await pipe.zrangebylex(p + "rc", "[" + ser.chunk_member(max(c0, lo // ser.CHUNK)),
                                                     "[" + ser.chunk_member(hi // ser.CHUNK))
                    chunks = [int(m) for m in members]
                    pipe.multi()
                    for k, _, _ in wanted:
                        pipe.hgetall(p + _LEVEL_KEYS[k])
                    for ci in chunks:
                        pipe.get(f"{p}raw:{ci}")
                    pipe.hgetall(p + "x")
                    res = await pipe.execute()
                    break
                except rexc.WatchError:
                    continue
        out = Columns()
        for (k, _, _), buckets in zip(wanted, res):
            width = self.levels[k].width
            for r in ser.bucket_rows({int(b): v for b, v in buckets.items()}, width, lo, hi):
                _append(out, r)
        extras = res[-1]
        for ci, blob in zip(chunks, res[len(wanted):-1]):
            if not blob:
                continue
            slots, data = ser.decode_slots(blob)
            steps = (slots + ci * ser.CHUNK).tolist()
            vals = ser.values_to_lists(data)
            a, b = bisect.bisect_left(steps, lo), bisect.bisect_right(steps, hi)
            out.step += steps[a:b]
            for j, f in enumerate(ser.FIELDS):
                getattr(out, f).extend(vals[j][a:b])
            if extras:
                out.extra += [_extra(extras.get(str(s).encode())) for s in steps[a:b]]
            else:
                out.extra += [None] * (b - a)
        return out

    @_unavailable
    async def list_alerts(self, *, run_id: str | None = None, project: str = DEFAULT_PROJECT,
                          projects: Iterable[str] | None = None, kind: str | None = None,
                          severity: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        pset = set(projects) if projects is not None else None
        by_run: dict[tuple[str, str], list[str] | None] = {}     # (project, run id) -> alert ids
        if run_id is not None:
            if pset is None or project in pset:
                by_run[(project, run_id)] = None                 # all of the run's alerts
        else:
            for i, _ in await self._index_range("alerts", since):
                pa = _unmember(i.decode())
                rid = None if pa is None else _run_of_alert(pa[1])
                if pa is not None and rid is not None and (pset is None or pa[0] in pset):
                    by_run.setdefault((pa[0], rid), []).append(pa[1])   # type: ignore[union-attr]
        runs = list(by_run.items())
        async with self._r.pipeline(transaction=False) as pipe:
            for (proj, rid), aids in runs:
                p = self._p(_member(proj, rid))
                if aids is None:
                    pipe.hgetall(p + "a")
                    pipe.hgetall(p + "ar")
                    pipe.hgetall(p + "ak")
                else:
                    pipe.hmget(p + "a", aids)
                    pipe.hmget(p + "ar", aids)
                    pipe.hmget(p + "ak", aids)
            res = await pipe.execute()
        out = []
        for k, ((proj, _rid), aids) in enumerate(runs):
            a, ar, ak = res[3 * k: 3 * k + 3]
            if aids is None:
                triples = [(a[i], ar.get(i), ak.get(i)) for i in a]
            else:
                triples = list(zip(a, ar, ak))
            for j, r, ackd in triples:
                if j is None:
                    continue
                d = _alert(j, r, ackd, proj)
                if alert_matches(d, kind, severity, since):
                    out.append(d)
        out.sort(key=lambda d: d["updated_at"], reverse=True)
        return out

    @_unavailable
    async def get_alert(self, alert_id: str, *, project: str = DEFAULT_PROJECT) -> dict[str, Any] | None:
        run_id = _run_of_alert(alert_id)
        if run_id is None:
            return None
        p = self._p(_member(project, run_id))
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hget(p + "a", alert_id)
            pipe.hget(p + "ar", alert_id)
            pipe.hget(p + "ak", alert_id)
            j, r, ak = await pipe.execute()
        return None if j is None else _alert(j, r, ak, project)

    @_unavailable
    async def list_actions(self, run_id: str, *, project: str = DEFAULT_PROJECT) -> list[dict[str, Any]]:
        p = self._p(_member(project, run_id))
        return [json.loads(x) for x in await self._r.lrange(p + "act", 0, -1)]

    # --- lifecycle ------------------------------------------------------------------------
    @_unavailable
    async def ping(self) -> None:
        # a write, not a PING: Redis out of memory, unable to persist or a read-only replica
        # still answers PING but refuses every batch
        await self._r.set(self.prefix + "ready", "1", ex=60)

    # 2: raw chunks listed in each run's rc index; 3: a run's keys and index entries carry its project;
    # 4: the run and alert indexes are sharded (a Cluster spreads them over its nodes)
    LAYOUT = 4
    _RUN_KEYS = ("s", "ds", "x", "a", "ar", "ak", "n", "act", "d1", "d2", "d3", "rc")

    async def prepare(self) -> None:
        """Bring data of earlier layouts to this one, once per Redis (``<prefix>layout`` records
        it), retried while Redis cannot serve: index the raw chunks of runs written before the
        ``rc`` index existed (one SCAN of the keyspace), move runs named by their run id alone
        into their project (:meth:`_name_old_runs`), then move the one-key run and alert indexes
        into their shards (:meth:`_shard_indexes`). Until it is done, such runs are not read
        back (they are kept)."""
        while True:
            try:
                await self._upgrade()
                return
            except (StoreUnavailable, *_DOWN) as e:
                log.warning("upgrading the Redis layout postponed: %s", e)
                await asyncio.sleep(5)

    @_unavailable
    async def _upgrade(self) -> None:
        layout = _i(await self._r.get(self.prefix + "layout")) or 0
        if layout >= self.LAYOUT:
            return
        if layout < 2:
            await self._index_old_chunks()
        if layout < 3:
            await self._name_old_runs()
        await self._shard_indexes()
        await self._r.set(self.prefix + "layout", self.LAYOUT)

    async def _index_old_chunks(self) -> None:
        slack = ttl_slack(self.retention)
        keys: list[bytes] = []
        async for key in self._r.scan_iter(match=self.prefix + "{*}:raw:*", count=1000):
            keys.append(key)
            if len(keys) >= 1000:
                await self._index(keys, slack)
                keys = []
        await self._index(keys, slack)

    async def _name_old_runs(self) -> None:
        """Rename the keys of each run of the earlier layout (``<prefix>{<run_id>}:``) to
        ``<prefix>{<project>/<run_id>}:`` with the project its state holds, and rewrite its
        entries in the run and alert indexes. A run written under the new name meanwhile (a
        client that went on writing before this ran) keeps the new data; the old keys are left
        to expire. RENAME needs both names on one node: this upgrade is for a single Redis (the
        earlier layout never ran on a Cluster)."""
        projects: dict[str, str] = {}          # old run id -> its project
        for member, score in await self._r.zrange(self._legacy_runs_key, 0, -1, withscores=True):
            rid = member.decode()
            if _unmember(rid) is not None:
                continue
            old = self._p(rid)
            project = _s(await self._r.hget(old + "s", "project")) or DEFAULT_PROJECT
            new = self._p(_member(project, rid))
            if await self._r.exists(new + "s"):
                log.warning("run %r of project %r was written under its new name before the upgrade: "
                            "its data of the earlier layout is left to expire", rid, project)
            else:
                chunks = [f"raw:{int(m)}" for m in await self._r.zrange(old + "rc", 0, -1)]
                names = [*self._RUN_KEYS, *chunks]
                async with self._r.pipeline(transaction=False) as pipe:
                    for n in names:
                        pipe.exists(old + n)
                    found = await pipe.execute()
                async with self._r.pipeline(transaction=True) as pipe:
                    for n, there in zip(names, found):
                        if there:
                            pipe.rename(old + n, new + n)
                    pipe.zadd(self._legacy_runs_key, {_member(project, rid): score})
                    pipe.zrem(self._legacy_runs_key, rid)
                    await pipe.execute()
            projects[rid] = project
        for member, score in await self._r.zrange(self._legacy_alerts_key, 0, -1, withscores=True):
            aid = member.decode()
            if _unmember(aid) is not None:
                continue
            rid = _run_of_alert(aid)
            project = projects.get(rid or "")
            async with self._r.pipeline(transaction=True) as pipe:
                if project is not None:
                    pipe.zadd(self._legacy_alerts_key, {_member(project, aid): score})
                pipe.zrem(self._legacy_alerts_key, aid)
                await pipe.execute()

    async def _shard_indexes(self) -> None:
        """Move the entries of the one-key run and alert indexes of earlier layouts into the
        shards (keeping the later score of an entry a service of this layout wrote meanwhile),
        then drop the old keys. Only entries that name their project move: ``_name_old_runs``
        has moved the others."""
        for index, legacy in (("runs", self._legacy_runs_key), ("alerts", self._legacy_alerts_key)):
            entries = await self._r.zrange(legacy, 0, -1, withscores=True)
            for lo in range(0, len(entries), 1000):
                async with self._r.pipeline(transaction=False) as pipe:
                    for member, score in entries[lo:lo + 1000]:
                        m = member.decode()
                        if _unmember(m) is not None:
                            pipe.zadd(self._index_key(index, m), {m: score}, gt=True)
                    await pipe.execute()
            await self._r.delete(legacy)

    async def _index(self, keys: list[bytes], slack: int) -> None:
        async with self._r.pipeline(transaction=False) as pipe:
            for key in keys:
                run_prefix, _, ci = key.decode().rpartition("raw:")
                pipe.zadd(run_prefix + "rc", {ser.chunk_member(int(ci)): 0})
                if self.retention:
                    pipe.expire(run_prefix + "rc", self.retention + slack)
            await pipe.execute()

    async def close(self) -> None:
        if self._wire is not None:
            await self._wire.aclose()
        await self._r.aclose()


# --- helpers --------------------------------------------------------------------------------

def _redact(url: str) -> str:
    """The URL without its password: redis://user:secret@host -> redis://user:***@host."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0]
    return f"{scheme}{sep}{user + ':' if user else ''}***@{host}"


def _segments(order: list[int], steps: list[int]) -> list[tuple[int, int, list[int]]]:
    """Positions (sorted by step) cut into runs of consecutive steps inside one chunk:
    [(chunk, first slot, positions)]."""
    out: list[tuple[int, int, list[int]]] = []
    if order and steps[order[-1]] - steps[order[0]] == len(order) - 1:
        # consecutive steps (the usual batch): cut at chunk boundaries only
        s = steps[order[0]]
        k = 0
        while k < len(order):
            ci, slot = divmod(s + k, ser.CHUNK)
            n = min(ser.CHUNK - slot, len(order) - k)
            out.append((ci, slot, order[k:k + n]))
            k += n
        return out
    for i in order:
        s = steps[i]
        ci, slot = divmod(s, ser.CHUNK)
        if out and out[-1][0] == ci and steps[out[-1][2][-1]] == s - 1:
            out[-1][2].append(i)
        else:
            out.append((ci, slot, [i]))
    return out


def _extra(b: bytes | None) -> dict[str, float] | None:
    return None if b is None else json.loads(b)


def _append(out: Columns, row: dict[str, Any]) -> None:
    out.step.append(row["step"])
    for f in ser.FIELDS:
        getattr(out, f).append(row[f])
    out.extra.append(row["extra"])


def _alert(j: bytes, raised: bytes | None, ack: bytes | None, project: str) -> dict[str, Any]:
    d = json.loads(j)
    d.setdefault("project", project)     # alerts stored by the earlier layout lack it
    d["raised_at"] = _f(raised) if raised else d.get("updated_at")
    if ack:
        d["acknowledged"] = True
        d["acknowledged_at"] = float(ack)
    return d


def _summary(run_id: str, project: str, st: list[bytes | None]) -> RunSummary:
    f = dict(zip(_STATE_FIELDS, st))
    meta = f["meta"]
    return RunSummary(
        run_id=run_id,
        project=project,
        meta=json.loads(meta) if meta else {},
        created_at=_f(f["created_at"]) or 0.0,
        last_seen=_f(f["last_seen"]),
        last_step=_i(f["last_step"]),
        n_steps=_i(f["n_steps"]) or 0,
        duplicates=_i(f["dups"]) or 0,
        out_of_order=_i(f["ooo"]) or 0,
        last=json.loads(f["last"]) if f["last"] else {},
        health=_s(f["health"]) or "ok",
        # alerts stored before alerts named their project get it here
        active_alerts=[{"project": project, **a} for a in json.loads(f["act"])] if f["act"] else [],
        recommendation=json.loads(f["rec"]) if f["rec"] else None,
        **({"attempts": json.loads(f["att"])} if f["att"] else {}),
    )
