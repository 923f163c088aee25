"""The LR policies of the Redis store: every replica on one Redis serves the same policies.

Keys (``lw:`` is the store's prefix; the braces are Cluster hash tags, so each key lives whole
on one node, as the run keys do):

==========================  ===========  =====================================================
key                         type         holds
==========================  ===========  =====================================================
``lw:policies:{<project>}`` hash         entry id -> the entry as JSON (one project's entries)
``lw:policies:{#}:next``    string       the last entry id given out (INCRBY)
``lw:policies:{#}:owners``  set          the projects that have (or had) entries
==========================  ===========  =====================================================

``#`` is not a valid project name, so the two shared keys never meet a project's hash. A POST
takes its ids with one INCRBY, then writes its entries (all of one project) with one HSET: all
or nothing; a failure between the two only leaves a gap in the ids. The seeded public recipes
are not in Redis: :class:`~losswatch.service.lr.policy_store.EntryPolicies` serves them from the
code, read-only, with ids 1..N, and the counter starts above them. Policies do not expire.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..lr.policy_db import SEED_RECIPES, PolicyEntry
from ..lr.policy_store import EntryPolicies
from .redis import _unavailable

if TYPE_CHECKING:
    from .redis import RedisStore


class RedisPolicies(EntryPolicies):
    """:class:`~losswatch.service.lr.policy_store.PolicyStore` on the Redis store's connection."""

    def __init__(self, store: "RedisStore") -> None:
        self._r = store._r
        self._where = store._where          # for _unavailable's messages
        self.timeout_ms = store.timeout_ms
        self.max_connections = store.max_connections
        self._turns = store._turns          # _unavailable tells it that Redis answered
        self._next_key = f"{store.prefix}policies:{{#}}:next"
        self._owners_key = f"{store.prefix}policies:{{#}}:owners"
        self._prefix = store.prefix

    def _key(self, project: str) -> str:
        return f"{self._prefix}policies:{{{project}}}"

    async def _projects(self, projects: frozenset[str] | None) -> list[str]:
        if projects is not None:
            return sorted(projects)
        return sorted(p.decode() for p in await self._r.smembers(self._owners_key))

    @staticmethod
    def _decode(entry_id: bytes | int, raw: bytes) -> PolicyEntry:
        e = PolicyEntry(**json.loads(raw))
        e.id = int(entry_id)
        return e

    @_unavailable
    async def entries(self, projects: frozenset[str] | None) -> list[PolicyEntry]:
        out = []
        for p in await self._projects(projects):
            out += [self._decode(i, raw) for i, raw in (await self._r.hgetall(self._key(p))).items()]
        return out

    @_unavailable
    async def _stored(self, entry_id: int, projects: frozenset[str] | None) -> PolicyEntry | None:
        for p in await self._projects(projects):
            raw = await self._r.hget(self._key(p), str(entry_id))
            if raw is not None:
                return self._decode(entry_id, raw)
        return None

    @_unavailable
    async def add_many(self, entries: list[PolicyEntry]) -> list[PolicyEntry]:
        owners = {e.project for e in entries}
        if len(owners) != 1 or None in owners:
            raise ValueError("the entries of one write belong to one project")
        project = str(next(iter(owners)))
        # the first id given out is above the seeded recipes' (a fresh counter reads 0)
        last = await self._r.incrby(self._next_key, len(entries))
        if last - len(entries) < len(SEED_RECIPES):
            last = await self._r.incrby(self._next_key, len(SEED_RECIPES))
        first = last - len(entries) + 1
        mapping = {}
        for i, e in enumerate(entries):
            e.id = first + i
            mapping[str(e.id)] = json.dumps({k: v for k, v in e.to_dict().items() if k != "id"})
        await self._r.sadd(self._owners_key, project)
        await self._r.hset(self._key(project), mapping=mapping)
        return entries

    @_unavailable
    async def delete(self, entry_id: int, projects: frozenset[str] | None = None) -> bool:
        for p in await self._projects(projects):
            if await self._r.hdel(self._key(p), str(entry_id)):
                return True
        return False
