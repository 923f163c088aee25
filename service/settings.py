"""Service settings, each from a LOSSWATCH_* environment variable (the ``serve`` command's flags
set the same variables, so uvicorn workers started as separate processes see them too).

| variable                        | default      | meaning                                          |
|---------------------------------|--------------|--------------------------------------------------|
| LOSSWATCH_HOST                  | 127.0.0.1 without tokens, 0.0.0.0 with tokens     |
| LOSSWATCH_PORT                  | 8000         |                                                  |
| LOSSWATCH_STORE                 | memory://    | or redis://host:port/db                          |
| LOSSWATCH_WORKERS               | 1            | uvicorn workers (>1 needs a shared store)        |
| LOSSWATCH_TOKENS                | (none)       | "tok1=projA,projB;tok2=projC": auth on when set  |
| LOSSWATCH_MAX_BATCH_RECORDS     | 10000        | records per POST /steps                          |
| LOSSWATCH_MAX_BODY_BYTES        | 8388608      | request body size (8 MiB)                        |
| LOSSWATCH_METRICS_TTL           | 900          | seconds a quiet run stays exported to /metrics   |
| LOSSWATCH_RETRY_AFTER           | 2            | Retry-After seconds on 503 (store down)          |
| LOSSWATCH_STORE_TIMEOUT_MS      | 2000         | a store call slower than this is a 503           |
| LOSSWATCH_RETENTION_SECONDS     | 2592000      | a run expires this long after its last write     |
|                                 | (30 days)    | (both stores; 0 = never)                         |
| LOSSWATCH_RAW_CHUNKS            | 8            | newest 960-step chunks kept at full resolution   |
|                                 |              | (both stores; older steps are downsampled)       |
| LOSSWATCH_REDIS_WAIT_REPLICAS   | 0            | acknowledge a batch once this many replicas have |
| LOSSWATCH_REDIS_WAIT_TIMEOUT_MS | 1000         | how long to wait for them (then 503)             |
| LOSSWATCH_REDIS_ENGINE_CACHE    | 10000        | detector engines a replica keeps in memory       |

``LOSSWATCH_REDIS_RAW_CHUNKS``, the older name of LOSSWATCH_RAW_CHUNKS, is still read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping


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


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    store_url: str = "memory://"
    workers: int = 1
    tokens: dict[str, frozenset[str]] = field(default_factory=dict)
    max_batch_records: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    metrics_ttl: int = 900
    retry_after: int = 2
    store_timeout_ms: int = 2000
    retention_seconds: int = 30 * 86400
    raw_chunks: int = 8
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    redis_engine_cache: int = 10_000

    @property
    def auth_enabled(self) -> bool:
        return bool(self.tokens)

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
            retention_seconds=_int(env, "LOSSWATCH_RETENTION_SECONDS", cls.retention_seconds, 0),
            raw_chunks=_int(env, "LOSSWATCH_RAW_CHUNKS",
                            _int(env, "LOSSWATCH_REDIS_RAW_CHUNKS", cls.raw_chunks)),
            redis_wait_replicas=_int(env, "LOSSWATCH_REDIS_WAIT_REPLICAS", cls.redis_wait_replicas, 0),
            redis_wait_timeout_ms=_int(env, "LOSSWATCH_REDIS_WAIT_TIMEOUT_MS", cls.redis_wait_timeout_ms),
            redis_engine_cache=_int(env, "LOSSWATCH_REDIS_ENGINE_CACHE", cls.redis_engine_cache, 0),
        )
