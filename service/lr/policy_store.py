"""Where the service keeps the LR policy database: in its own store, so every replica serves the
same policies (the offline CLI keeps its SQLite file, :class:`~.policy_db.PolicyDB`).

:class:`PolicyStore` is what ``/v1/policies`` needs. The rules of a query are written once, in
:mod:`.policy_db` beside :class:`~.policy_db.PolicyEntry`, and shared by every backend, PolicyDB
included: ``entry_matches`` (the filters), ``rank_best`` (which entry is best), ``query`` (filter,
order by id, limit) and ``best_of``. :class:`EntryPolicies` applies them; a backend only stores
entries: :class:`MemoryPolicies` (a dict, the memory store's) and the Redis store's
(:mod:`losswatch.service.stores.redis_policies`).

The seeded public recipes (:data:`~.policy_db.SEED_RECIPES`) are not stored by these backends:
:func:`seed_entries` serves them read-only from the code, with ids 1..N, so a fresh service numbers
them as a fresh SQLite file does and every replica agrees; the entries written over HTTP get ids
from N+1 on. Nobody can delete them through the API (public entries are read-only there).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from .policy_db import SEED_RECIPES, PolicyEntry, best_of, query

#: the seeded recipes' created_at (2024-01-01 UTC): fixed, so every replica answers the same bytes
SEED_CREATED_AT = 1704067200.0


def seed_entries() -> list[PolicyEntry]:
    """The public recipes as the service serves them (fresh objects: callers may change them)."""
    return [PolicyEntry(**e.to_dict()) for e in _SEEDS]


def _seed(recipe: dict[str, Any], entry_id: int) -> PolicyEntry:
    e = PolicyEntry.from_dict({**recipe, "created_at": SEED_CREATED_AT})
    e.id = entry_id
    return e


_SEEDS = tuple(_seed(r, i) for i, r in enumerate(SEED_RECIPES, start=1))


class PolicyStore(Protocol):
    """The policy operations of ``/v1/policies``. ``projects`` (the caller's token scope; None =
    every project) limits what is seen to public entries and those projects' own; a store
    failure raises :class:`~losswatch.service.stores.base.StoreUnavailable` (a 503)."""

    async def add_many(self, entries: list[PolicyEntry]) -> list[PolicyEntry]:
        """Store validated entries, all or nothing; returns them with their ids."""

    async def get(self, entry_id: int, projects: frozenset[str] | None = None) -> PolicyEntry | None:
        """One entry, if visible to ``projects``."""

    async def delete(self, entry_id: int, projects: frozenset[str] | None = None) -> bool:
        """Delete an entry owned by one of ``projects`` (never a public one); False if none."""

    async def list(self, limit: int = 1000, **filters: Any) -> list[PolicyEntry]:
        """Entries matching the filters (``entry_matches``), oldest first."""

    async def best(self, **filters: Any) -> PolicyEntry | None:
        """The best entry for the filters (``best_of``)."""


class EntryPolicies:
    """The queries of :class:`PolicyStore` over a backend that can list the entries of some
    projects (:meth:`entries`) and fetch one by id: a subclass adds storage only."""

    async def entries(self, projects: frozenset[str] | None) -> list[PolicyEntry]:
        """The stored (non-public) entries of ``projects`` (None: of every project)."""
        raise NotImplementedError

    async def _all(self, projects: frozenset[str] | None) -> list[PolicyEntry]:
        return [*seed_entries(), *await self.entries(projects)]

    async def list(self, limit: int = 1000, **filters: Any) -> list[PolicyEntry]:
        return query(await self._all(filters.get("projects")), limit=limit, **filters)

    async def best(self, **filters: Any) -> PolicyEntry | None:
        return best_of(await self._all(filters.get("projects")), **filters)

    async def get(self, entry_id: int, projects: frozenset[str] | None = None) -> PolicyEntry | None:
        if 1 <= entry_id <= len(_SEEDS):
            return seed_entries()[entry_id - 1]
        return await self._stored(entry_id, projects)

    async def _stored(self, entry_id: int, projects: frozenset[str] | None) -> PolicyEntry | None:
        return next((e for e in await self.entries(projects) if e.id == entry_id), None)


class MemoryPolicies(EntryPolicies):
    """The memory store's policies: a dict per project, lost when the process ends (as its runs)."""

    def __init__(self) -> None:
        self._by_project: dict[str, dict[int, PolicyEntry]] = {}
        self._next_id = len(_SEEDS) + 1
        self._lock = threading.Lock()

    async def entries(self, projects: frozenset[str] | None) -> list[PolicyEntry]:
        with self._lock:
            names = self._by_project if projects is None else [p for p in projects if p in self._by_project]
            return [PolicyEntry(**e.to_dict()) for p in names for e in self._by_project[p].values()]

    async def add_many(self, entries: list[PolicyEntry]) -> list[PolicyEntry]:
        if any(e.project is None for e in entries):
            raise ValueError("an entry stored by the service belongs to a project")
        with self._lock:
            for e in entries:
                e.id = self._next_id
                self._next_id += 1
                self._by_project.setdefault(e.project, {})[e.id] = PolicyEntry(**e.to_dict())
        return entries

    async def delete(self, entry_id: int, projects: frozenset[str] | None = None) -> bool:
        with self._lock:
            for p, held in self._by_project.items():
                if (projects is None or p in projects) and held.pop(entry_id, None) is not None:
                    return True
        return False
