"""Service settings, each from a LOSSWATCH_* environment variable (the ``serve`` command's flags
set the same variables, so uvicorn workers started as separate processes see them too).

Each field's metadata names its variable and says what it does; docs/service.md's settings table
is generated from it (``python docs/generate.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from ..client.flush import HINT_MAX
from .notify import Receiver, ReceiverError, parse_receivers


class SettingsError(ValueError):
    """A LOSSWATCH_* variable has a value that cannot be used; the message names it."""


def parse_tokens(spec: str) -> dict[str, frozenset[str]]:
    """``"tok1=projA,projB;tok2=projC"`` -> {"tok1": {"projA", "projB"}, "tok2": {"projC"}}.

    >>> sorted(parse_tokens("a=p1,p2; b=p3")["a"])
    ['p1', 'p2']
    >>> list(parse_tokens("c2VjcmV0==projA"))
    ['c2VjcmV0=']
    """
    from .ingest import valid_label

    out: dict[str, frozenset[str]] = {}
    for part in spec.split(";"):
        part = part.strip()
        if not part:
            continue
        # the last "=" splits: project names cannot contain one, base64 tokens may end with "="
        tok, sep, projs = part.rpartition("=")
        tok = tok.strip()
        projects = frozenset(p.strip() for p in projs.split(",") if p.strip())
        if not sep or not tok or not projects:
            raise SettingsError(f"LOSSWATCH_TOKENS: entry {part!r} is not token=project[,project...]")
        for p in projects:
            if not valid_label(p):
                raise SettingsError(f"LOSSWATCH_TOKENS: project name {p!r} is not [A-Za-z0-9._:-]{{1,128}}")
        out[tok] = projects
    return out


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if v < minimum:
        raise SettingsError(f"{name}={v} must be >= {minimum}")
    return v


def _receivers(spec: str) -> tuple[Receiver, ...]:
    try:
        return parse_receivers(spec)
    except ReceiverError as e:
        raise SettingsError(str(e)) from None


def _public_url(url: str) -> str:
    url = url.strip().rstrip("/")
    p = urlsplit(url)
    if url and (p.scheme not in ("http", "https") or not p.netloc):
        raise SettingsError(f"LOSSWATCH_PUBLIC_URL={url!r} is not an http:// or https:// URL")
    return url


def _setting(env: str, doc: str, default: object = None, **kw: object):
    """A Settings field read from ``env``; ``doc`` is its line in the generated settings table."""
    if "default_factory" not in kw:
        kw["default"] = default
    return field(metadata={"env": env, "doc": doc}, **kw)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Settings:
    host: str = _setting("LOSSWATCH_HOST", "bind address; `0.0.0.0` when tokens are set (without tokens the "
                         "service stays on loopback and says so at start)", "127.0.0.1")
    port: int = _setting("LOSSWATCH_PORT", "port (0: a free one)", 8000)
    store_url: str = _setting("LOSSWATCH_STORE", "`memory://` (embedded, one process), "
                              "`redis://host:port/db` (shared by replicas) or `redis+cluster://host:port` (a Redis "
                              "Cluster, named by any one of its nodes)", "memory://")
    workers: int = _setting("LOSSWATCH_WORKERS", "uvicorn worker processes; more than one needs Redis (refused "
                            "with `memory://`: each worker would see part of each run)", 1)
    tokens: dict[str, frozenset[str]] = _setting(
        "LOSSWATCH_TOKENS", "`tok1=projA,projB;tok2=projC`: authentication on, each token limited to its "
        "projects (the last `=` of an entry separates the token, so base64 tokens work)", default_factory=dict)
    max_batch_records: int = _setting("LOSSWATCH_MAX_BATCH_RECORDS", "records per POST (413 beyond, naming the "
                                      "limit)", 10_000)
    max_body_bytes: int = _setting("LOSSWATCH_MAX_BODY_BYTES", "any request body (413; chunked bodies are "
                                   "counted as they stream)", 8 * 1024 * 1024)
    metrics_ttl: int = _setting("LOSSWATCH_METRICS_TTL", "seconds a quiet run stays in /metrics", 900)
    retry_after: int = _setting("LOSSWATCH_RETRY_AFTER", "Retry-After seconds on a 503 (store down)", 2)
    store_timeout_ms: int = _setting("LOSSWATCH_STORE_TIMEOUT_MS", "a store call slower than this (connect, "
                                     "reply, a wait for a pooled connection while Redis answers nothing) answers "
                                     "503 with Retry-After", 2000)
    store_queue_ms: int = _setting("LOSSWATCH_STORE_QUEUE_MS", "how long a request may wait for a free Redis "
                                   "connection while Redis answers (a burst, such as many runs closing at "
                                   "once; requests are served in arrival order; a single Redis, not a "
                                   "Cluster; at least `LOSSWATCH_STORE_TIMEOUT_MS`); a request that waited "
                                   "`LOSSWATCH_STORE_TIMEOUT_MS` with no answer from Redis answers 503 then",
                                   4000)
    redis_connections: int = _setting("LOSSWATCH_REDIS_CONNECTIONS", "connections to Redis in use at once per "
                                      "service process (per node on a Redis Cluster; up to twice as many "
                                      "stay open, idle)", 64)
    retention_seconds: int = _setting("LOSSWATCH_RETENTION_SECONDS", "a run expires this long after its last "
                                      "write, on both stores (0: never)", 30 * 86400)
    raw_chunks: int = _setting("LOSSWATCH_RAW_CHUNKS", "newest 960-step chunks kept at full resolution, on both "
                               "stores (older steps are downsampled); `LOSSWATCH_REDIS_RAW_CHUNKS` is the older "
                               "name, still read", 8)
    redis_wait_replicas: int = _setting("LOSSWATCH_REDIS_WAIT_REPLICAS", "acknowledge a batch once this many "
                                        "Redis replicas have it", 0)
    redis_wait_timeout_ms: int = _setting("LOSSWATCH_REDIS_WAIT_TIMEOUT_MS", "how long to wait for them (then "
                                          "503)", 1000)
    redis_engine_cache: int = _setting("LOSSWATCH_REDIS_ENGINE_CACHE", "detector engines a replica keeps in "
                                       "memory", 10_000)
    notify: tuple[Receiver, ...] = _setting(
        "LOSSWATCH_NOTIFY", "webhooks that get each raised or escalated alert of warning or worse: URLs separated "
        "by spaces or commas, `URL#project=NAME` for one project's alerts only ([notifications.md]"
        "(notifications.md))", default_factory=tuple)
    public_url: str = _setting("LOSSWATCH_PUBLIC_URL", "the service's address as users reach it, for the run "
                               "links in notifications (default: `http://HOST:PORT`)", "")
    notify_per_minute: int = _setting("LOSSWATCH_NOTIFY_PER_MINUTE", "notifications per run per minute; more "
                                      "are held back and counted", 10)
    flush_hint_inflight: int = _setting(
        "LOSSWATCH_FLUSH_HINT_INFLIGHT", "runs' requests (POST /steps, metadata PUT, action reports) that one "
        "arriving at a process finds in flight there, on average over a second, from which its answers ask "
        "clients to send less often (`X-Losswatch-Flush-Interval`, [service-api.md](service-api.md)); 0: never", 1)
    flush_hint_max: int = _setting("LOSSWATCH_FLUSH_HINT_MAX", "the longest flush interval, seconds, that "
                                   "hint asks for", int(HINT_MAX))

    @property
    def auth_enabled(self) -> bool:
        return bool(self.tokens)

    @property
    def link_base(self) -> str:
        """Where the run links in notifications point."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        tokens = parse_tokens(env.get("LOSSWATCH_TOKENS", ""))
        host = env.get("LOSSWATCH_HOST") or ("0.0.0.0" if tokens else "127.0.0.1")
        # the defaults are the fields' own (class attributes of the dataclass)
        return cls(
            host=host,
            port=_int(env, "LOSSWATCH_PORT", cls.port, 0),
            store_url=env.get("LOSSWATCH_STORE") or cls.store_url,
            workers=_int(env, "LOSSWATCH_WORKERS", cls.workers),
            tokens=tokens,
            max_batch_records=_int(env, "LOSSWATCH_MAX_BATCH_RECORDS", cls.max_batch_records),
            max_body_bytes=_int(env, "LOSSWATCH_MAX_BODY_BYTES", cls.max_body_bytes),
            metrics_ttl=_int(env, "LOSSWATCH_METRICS_TTL", cls.metrics_ttl),
            retry_after=_int(env, "LOSSWATCH_RETRY_AFTER", cls.retry_after),
            store_timeout_ms=_int(env, "LOSSWATCH_STORE_TIMEOUT_MS", cls.store_timeout_ms),
            store_queue_ms=_int(env, "LOSSWATCH_STORE_QUEUE_MS", cls.store_queue_ms),
            redis_connections=_int(env, "LOSSWATCH_REDIS_CONNECTIONS", cls.redis_connections, 1),
            retention_seconds=_int(env, "LOSSWATCH_RETENTION_SECONDS", cls.retention_seconds, 0),
            raw_chunks=_int(env, "LOSSWATCH_RAW_CHUNKS",
                            _int(env, "LOSSWATCH_REDIS_RAW_CHUNKS", cls.raw_chunks)),
            redis_wait_replicas=_int(env, "LOSSWATCH_REDIS_WAIT_REPLICAS", cls.redis_wait_replicas, 0),
            redis_wait_timeout_ms=_int(env, "LOSSWATCH_REDIS_WAIT_TIMEOUT_MS", cls.redis_wait_timeout_ms),
            redis_engine_cache=_int(env, "LOSSWATCH_REDIS_ENGINE_CACHE", cls.redis_engine_cache, 0),
            notify=_receivers(env.get("LOSSWATCH_NOTIFY", "")),
            public_url=_public_url(env.get("LOSSWATCH_PUBLIC_URL", "")),
            notify_per_minute=_int(env, "LOSSWATCH_NOTIFY_PER_MINUTE", cls.notify_per_minute),
            flush_hint_inflight=_int(env, "LOSSWATCH_FLUSH_HINT_INFLIGHT", cls.flush_hint_inflight, 0),
            flush_hint_max=_int(env, "LOSSWATCH_FLUSH_HINT_MAX", cls.flush_hint_max),
        )
