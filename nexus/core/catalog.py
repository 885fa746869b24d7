"""Use cases over many runs for people and UIs: the listing, stage counts, a run's
history. Inputs are checked here (the routes only decode), so every store gets a sane
query and a bad one is a clear 400 that reads nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

from nexus.core.listing import MAX_LIMIT, RunPage, RunQuery, StageCount
from nexus.core.models import RunEvent
from nexus.core.ports import RunStore
from nexus.core.scheduling import check_algorithm_name, check_request_id, check_tag
from nexus.errors import BadRequest, NotFound

# The Cassandra store counts by reading the window's time rows: a bounded window keeps a
# count a bounded read.
MAX_COUNT_WINDOW = timedelta(days=31)


def _check_window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise BadRequest(
            f"Invalid window: since ({since.isoformat()}) must be before until "
            f"({until.isoformat()})"
        )


class RunCatalog:
    def __init__(self, store: RunStore) -> None:
        self.store = store

    async def page(self, query: RunQuery) -> RunPage:
        if query.algorithm:
            check_algorithm_name(query.algorithm)
        if query.tag:
            check_tag(query.tag)
        if query.parent is not None:
            check_algorithm_name(query.parent.algorithm_name)
            try:
                check_request_id(query.parent.request_id)
            except NotFound:
                raise BadRequest(
                    f"Invalid parent {query.parent.request_id[:80]!r}: not a request id"
                ) from None
        if not 1 <= query.limit <= MAX_LIMIT:
            raise BadRequest(f"Invalid limit {query.limit}: expected 1 to {MAX_LIMIT}")
        _check_window(query.since, query.until)
        return await self.store.list_runs(query)

    async def counts(
        self, since: datetime, until: datetime, algorithm: str = ""
    ) -> list[StageCount]:
        if algorithm:
            check_algorithm_name(algorithm)
        _check_window(since, until)
        if until - since > MAX_COUNT_WINDOW:
            raise BadRequest(
                f"Invalid window: {until - since} is longer than the "
                f"{MAX_COUNT_WINDOW.days} days a count may span"
            )
        return await self.store.count_runs(since, until, algorithm)

    async def history(self, algorithm: str, run_id: str) -> list[RunEvent]:
        check_algorithm_name(algorithm)
        check_request_id(run_id)
        events = await self.store.history(algorithm, run_id)
        if events is None:
            raise NotFound(f"Provided request with identifier '{run_id}' not found")
        return events
