"""The Cassandra store's listing reads (core.listing) over its time index.

``runs_by_time`` holds every run under its algorithm and under ALL_SCOPE, in hour
partitions, newest first by (received_at, algorithm, id); ``run_hours`` names the hours
that have runs (cassandra_schema). Every read here is a single-partition read bounded by
a LIMIT: a page walks the hours that have runs, newest first, reading slices of time
rows from its cursor and loading their runs by id, and stops when the page is full or
when it has read _SCAN_PAGES times its size (then it answers with a cursor).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nexus.backends.store.cassandra_schema import ALL_SCOPE, hour_of
from nexus.backends.store.rows import utc
from nexus.core.listing import Position, RunPage, RunQuery, StageCount, position_of, sort_key
from nexus.core.models import LifecycleStage, Run

_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
_MIN_HOUR = -(2**31)
_HOURS_PER_QUERY = 48
_FETCH_CONCURRENCY = 8
# A listing page reads at most this many times its size of time rows: a filter that
# matches few runs (a rare stage) answers a short page with a cursor, never a long scan.
_SCAN_PAGES = 4

Execute = Callable[..., Awaitable[list[dict[str, Any]]]]


class TimeIndex:
    """Reads of the time index through the store's own statements and bridge."""

    def __init__(
        self,
        execute: Execute,
        prepared: Callable[[str], Any],
        load: Callable[[list[tuple[str, str]]], Awaitable[list[Run]]],
    ) -> None:
        self._execute = execute
        self._p = prepared
        self._load = load

    async def page(self, query: RunQuery) -> RunPage:
        """Walk ``runs_by_time`` newest first from the query's upper bound, a slice of
        rows per query, loading and re-checking each run, until the page is full or
        _SCAN_PAGES times its size was read (then the next page goes on from there)."""
        scope = query.algorithm or ALL_SCOPE
        upper = query.after or Position(query.until or _FAR_FUTURE, "", "")
        if query.until is not None and query.until < upper.received_at:
            upper = Position(query.until, "", "")
        lowest = hour_of(query.since) if query.since is not None else _MIN_HOUR
        budget = _SCAN_PAGES * (query.limit + 1)
        found: list[Run] = []
        async for hour in self.hours(scope, lowest, hour_of(upper.received_at)):
            while budget > 0:
                want = min(budget, query.limit + 1 - len(found))
                rows = await self._execute(
                    self._p("select_time"),
                    (scope, hour, upper.received_at, upper.algorithm, upper.id, want),
                )
                budget -= len(rows)
                if rows:
                    last = rows[-1]
                    upper = Position(utc(last["received_at"]), last["algorithm"], last["id"])
                runs = await self._load([(row["algorithm"], row["id"]) for row in rows])
                found += sorted(
                    (run for run in runs if query.matches(run)), key=sort_key, reverse=True
                )
                if len(found) > query.limit:
                    page = found[: query.limit]
                    return RunPage(runs=page, next=position_of(page[-1]))
                if query.since is not None and rows and upper.received_at < query.since:
                    return RunPage(runs=found)
                if len(rows) < want:
                    break  # this hour is done
            if budget <= 0:
                return RunPage(runs=found, next=upper)
        return RunPage(runs=found)

    async def hours(self, scope: str, lowest: int, highest: int) -> AsyncIterator[int]:
        """The hours of ``scope`` that have runs, newest first, a few at a time."""
        while highest >= lowest:
            rows = await self._execute(
                self._p("select_hours"), (scope, lowest, highest, _HOURS_PER_QUERY)
            )
            for row in rows:
                yield row["hour"]
            if len(rows) < _HOURS_PER_QUERY:
                return
            highest = rows[-1]["hour"] - 1

    async def counts(
        self, since: datetime, until: datetime, algorithm: str = ""
    ) -> list[StageCount]:
        scope = algorithm or ALL_SCOPE
        hours = [hour async for hour in self.hours(scope, hour_of(since), hour_of(until))]
        limit = asyncio.Semaphore(_FETCH_CONCURRENCY)

        async def read(hour: int) -> list[dict[str, Any]]:
            async with limit:
                return await self._execute(
                    self._p("select_time_stages"), (scope, hour, since, until)
                )

        counts: Counter[tuple[str, str]] = Counter()
        for rows in await asyncio.gather(*(read(hour) for hour in hours)):
            counts.update((row["algorithm"], row["stage"]) for row in rows)
        return [
            StageCount(algorithm=name, stage=LifecycleStage(stage), count=count)
            for (name, stage), count in sorted(counts.items())
        ]
