"""Listing runs: the query the stores answer, its pages and their opaque cursors (pure).

Runs are listed newest first by (received_at, algorithm, id). A page ends at a
:class:`Position`; the next page starts strictly after it. A store may answer a page
with fewer runs than the limit (the Cassandra store bounds the rows it reads per page,
and the caller's access filters some out) and still give a next position: only a page
without one is the last.

The cursor is the position plus a checksum of the query it belongs to, as unpadded
URL-safe base64 of JSON: garbled text, a forged position, or the cursor of another
query is refused (400) rather than answered with a page of some other listing.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from datetime import UTC, datetime, timedelta

import msgspec

from nexus.core.models import LifecycleStage, ParentRef, Run
from nexus.errors import BadRequest

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
CURSOR_MAX_LENGTH = 512


class Position(msgspec.Struct, frozen=True, array_like=True):
    """Where a listing stopped: the sort key of the last run it looked at."""

    received_at: datetime
    algorithm: str
    id: str


class RunQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Runs that match every filter given, received in [since, until), after ``after``."""

    algorithm: str = ""
    stages: frozenset[LifecycleStage] = frozenset()
    tag: str = ""
    parent: ParentRef | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    after: Position | None = None

    def matches(self, run: Run) -> bool:
        """Whether ``run`` is in this listing (stores re-check what their lookups find)."""
        at = run.received_at
        return (
            at is not None
            and (not self.algorithm or run.algorithm == self.algorithm)
            and (not self.stages or run.lifecycle_stage in self.stages)
            and (not self.tag or run.tag == self.tag)
            and (self.parent is None or run.parent == self.parent)
            and (self.since is None or at >= self.since)
            and (self.until is None or at < self.until)
            and (self.after is None or sort_key(run) < _key(self.after))
        )


class RunPage(msgspec.Struct, kw_only=True):
    runs: list[Run]
    next: Position | None = None  # None: this is the last page


class StageCount(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    algorithm: str
    stage: LifecycleStage
    count: int


def sort_key(run: Run) -> tuple[datetime, str, str]:
    assert run.received_at is not None
    return (run.received_at, run.algorithm, run.id)


def _key(position: Position) -> tuple[datetime, str, str]:
    return (position.received_at, position.algorithm, position.id)


def position_of(run: Run) -> Position:
    assert run.received_at is not None
    return Position(run.received_at, run.algorithm, run.id)


def page_of(matching: list[Run], limit: int) -> RunPage:
    """The first page of ``matching`` (every matching run, in any order)."""
    ordered = sorted(matching, key=sort_key, reverse=True)
    page = ordered[:limit]
    more = len(ordered) > limit
    return RunPage(runs=page, next=position_of(page[-1]) if more else None)


class _Cursor(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    at_us: int  # microseconds since the epoch: exact for both stores' times
    algorithm: str
    id: str
    query: int  # checksum of the query's filters


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_cursor_decoder = msgspec.json.Decoder(_Cursor)
_encoder = msgspec.json.Encoder()


def _fingerprint(query: RunQuery) -> int:
    filters = msgspec.structs.replace(query, limit=0, after=None)
    return zlib.crc32(_encoder.encode(filters))


def encode_cursor(position: Position, query: RunQuery) -> str:
    at_us = (position.received_at - _EPOCH) // _MICROSECOND
    text = _encoder.encode(_Cursor(at_us, position.algorithm, position.id, _fingerprint(query)))
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode()


def decode_cursor(text: str, query: RunQuery) -> Position:
    """The position ``text`` names, for ``query`` (its filters, without the cursor)."""
    bad = f"Invalid cursor {text[:40]!r}: pass back the nextCursor of the previous page as is"
    if len(text) > CURSOR_MAX_LENGTH:
        raise BadRequest(f"Invalid cursor: longer than {CURSOR_MAX_LENGTH} characters")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = _cursor_decoder.decode(raw)
        at = _EPOCH + cursor.at_us * _MICROSECOND
    except (binascii.Error, ValueError, msgspec.DecodeError, OverflowError, OSError):
        raise BadRequest(bad) from None
    if cursor.query != _fingerprint(query):
        raise BadRequest(
            "Invalid cursor: it belongs to a listing with other filters; "
            "keep the filters of the first page when paging"
        )
    return Position(at, cursor.algorithm, cursor.id)
