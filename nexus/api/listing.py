"""Routes over many runs (docs/runs-api.md): the listing, stage counts, a run's history.

Query parameters are decoded strictly: an unknown name, a repeated single value, an empty
value, a time that is not RFC 3339 or a number that is not one is a 400 that says which,
before anything is read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import msgspec
from sanic import Blueprint
from sanic.response import HTTPResponse

from nexus.api import schemas
from nexus.api.runs import allow, json_response
from nexus.context import NexusRequest
from nexus.core.access import Verb
from nexus.core.listing import (
    DEFAULT_LIMIT,
    RunPage,
    RunQuery,
    decode_cursor,
    encode_cursor,
)
from nexus.core.models import LifecycleStage, ParentRef, Run
from nexus.errors import BadRequest

bp = Blueprint("runs_listing", url_prefix="/algorithm/v1")

LIST_PARAMETERS = frozenset(
    {"algorithm", "stage", "tag", "since", "until", "parent", "limit", "cursor"}
)
COUNT_PARAMETERS = frozenset({"algorithm", "since", "until"})
DEFAULT_COUNT_WINDOW = timedelta(days=1)
_VALUE_MAX_LENGTH = 1024
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)
_STAGES = ", ".join(stage.value for stage in LifecycleStage)


def _arguments(request: NexusRequest, allowed: frozenset[str]) -> dict[str, list[str]]:
    args = request.get_args(keep_blank_values=True)
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise BadRequest(
            f"Unknown query parameter {unknown[0][:40]!r}; known: {', '.join(sorted(allowed))}"
        )
    for name, values in args.items():
        for value in values:
            if not value:
                raise BadRequest(f"Invalid {name}: the value is empty")
            if len(value) > _VALUE_MAX_LENGTH:
                raise BadRequest(
                    f"Invalid {name}: {len(value)} characters, at most {_VALUE_MAX_LENGTH}"
                )
    return dict(args)


def _one(args: dict[str, list[str]], name: str) -> str | None:
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"Invalid {name}: given {len(values)} times, at most once")
    return values[0]


def _time(args: dict[str, list[str]], name: str) -> datetime | None:
    text = _one(args, name)
    if text is None:
        return None
    match = _RFC3339.match(text)
    try:
        if match is None:
            raise ValueError
        fraction = (match.group(7) or ".0")[1:7].ljust(6, "0")
        offset = match.group(8).upper().replace("Z", "+00:00")
        value = datetime.fromisoformat(
            f"{'-'.join(match.group(1, 2, 3))}T{':'.join(match.group(4, 5, 6))}.{fraction}{offset}"
        )
    except ValueError:
        raise BadRequest(
            f"Invalid {name} {text[:40]!r}: expected an RFC 3339 time such as 2026-01-31T09:30:00Z"
        ) from None
    value = value.astimezone(UTC)
    if not _EARLIEST <= value < _LATEST:  # so windows and time buckets stay computable
        raise BadRequest(
            f"Invalid {name} {text[:40]!r}: expected a time from {_EARLIEST.year} "
            f"to {_LATEST.year - 1}"
        )
    return value


def _stages(args: dict[str, list[str]]) -> frozenset[LifecycleStage]:
    stages = set()
    for value in args.get("stage", []):
        for name in value.split(","):
            try:
                stages.add(LifecycleStage(name.strip().upper()))
            except ValueError:
                raise BadRequest(
                    f"Invalid stage {name[:40]!r}: expected one of {_STAGES}"
                ) from None
    return frozenset(stages)


def _limit(args: dict[str, list[str]]) -> int:
    text = _one(args, "limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isascii() or not text.isdigit():
        raise BadRequest(f"Invalid limit {text[:40]!r}: expected a whole number")
    return int(text) if len(text) <= 6 else 10**6  # the use case says what is allowed


def _parent(args: dict[str, list[str]]) -> ParentRef | None:
    text = _one(args, "parent")
    if text is None:
        return None
    algorithm, slash, request_id = text.partition("/")
    if not slash or not algorithm or not request_id:
        raise BadRequest(
            f"Invalid parent {text[:80]!r}: expected algorithm/requestId of the parent run"
        )
    return ParentRef(request_id=request_id, algorithm_name=algorithm)


async def _check_algorithm(request: NexusRequest, algorithm: str | None) -> None:
    """One named algorithm: refused outright (403) rather than listed empty."""
    if algorithm:
        await allow(request, Verb.GET, algorithm)


def _list_query(request: NexusRequest) -> RunQuery:
    args = _arguments(request, LIST_PARAMETERS)
    query = RunQuery(
        algorithm=_one(args, "algorithm") or "",
        stages=_stages(args),
        tag=_one(args, "tag") or "",
        parent=_parent(args),
        since=_time(args, "since"),
        until=_time(args, "until"),
        limit=_limit(args),
    )
    cursor = _one(args, "cursor")
    if cursor is None:
        return query
    return msgspec.structs.replace(query, after=decode_cursor(cursor, query))


@bp.get("/runs")
async def list_runs(request: NexusRequest) -> HTTPResponse:
    pages: list[tuple[RunQuery, RunPage]] = []

    async def load() -> list[Run]:
        # Decoded once the caller is known: a caller without a valid token gets a 401,
        # whatever the query says.
        query = _list_query(request)
        await _check_algorithm(request, query.algorithm)
        page = await request.app.ctx.catalog.page(query)
        pages.append((query, page))
        return page.runs

    runs = await request.app.ctx.access.readable(request.headers.get("authorization"), load)
    query, page = pages[0]
    return json_response(
        schemas.RunList(
            runs=[schemas.run_summary(run) for run in runs],
            next_cursor=encode_cursor(page.next, query) if page.next is not None else None,
        )
    )


@bp.get("/runs/counts")
async def count_runs(request: NexusRequest) -> HTTPResponse:
    authorization = request.headers.get("authorization")
    await request.app.ctx.access.readable_algorithms(authorization, ())  # the caller first
    args = _arguments(request, COUNT_PARAMETERS)
    algorithm = _one(args, "algorithm") or ""
    until = _time(args, "until") or datetime.now(UTC)
    since = _time(args, "since") or until - DEFAULT_COUNT_WINDOW
    await _check_algorithm(request, algorithm)
    counts = await request.app.ctx.catalog.counts(since, until, algorithm)
    allowed = await request.app.ctx.access.readable_algorithms(
        authorization, (count.algorithm for count in counts)
    )
    return json_response(
        schemas.RunCounts(
            since=since,
            until=until,
            counts=[count for count in counts if count.algorithm in allowed],
        )
    )


@bp.get("/runs/<algorithm:str>/requests/<request_id:str>/events")
async def run_events(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    await allow(request, Verb.GET, algorithm)
    events = await request.app.ctx.catalog.history(algorithm, request_id)
    return json_response(
        schemas.RunHistory(algorithm=algorithm, request_id=request_id, events=events)
    )
