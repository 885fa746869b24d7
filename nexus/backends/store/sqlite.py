"""The embedded run store: one SQLite file in WAL mode.

All statements run on one dedicated thread that owns the connection. Writes that arrive
together are committed together (group commit): the thread drains every queued operation,
runs each inside its own SAVEPOINT (so one failure does not undo the others) and commits
once, which is what lets the accept path answer only after its row is durable without
paying one fsync per request. Stage changes are conditional UPDATEs on the stage read in
the same transaction, and ``BEGIN IMMEDIATE`` keeps them safe when several nexus processes
share the file.

WAL checkpoints run on a second connection and thread (:class:`_Checkpointer`), not
inside a commit: by default SQLite checkpoints in the commit that pushes the WAL past
1,000 pages, so every thousandth group commit also copied the WAL into the database file
and stalled the accepts waiting on it (30-200 ms, the p99 of the accept path).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from nexus.backends.store.rows import (
    COLUMNS,
    JSON_COLUMNS,
    TIME_COLUMNS,
    check_fields,
    encode_json_column,
    encode_value,
    run_from_columns,
)
from nexus.core import lifecycle
from nexus.core.history import (
    created_event,
    decode_event,
    encode_event,
    transition_event,
    webhook_event,
)
from nexus.core.listing import RunPage, RunQuery, StageCount, page_of
from nexus.core.models import (
    TERMINAL_STAGES,
    CallbackState,
    LifecycleStage,
    ParentRef,
    Run,
    RunEvent,
    SubmissionEntry,
)
from nexus.errors import BackendUnavailable, NotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    algorithm TEXT NOT NULL, id TEXT NOT NULL, lifecycle_stage TEXT NOT NULL,
    payload_uri TEXT, result_uri TEXT, algorithm_failure_cause TEXT,
    algorithm_failure_details TEXT, received_by_host TEXT, received_at TEXT, sent_at TEXT,
    applied_configuration TEXT, configuration_overrides TEXT, content_hash TEXT,
    last_modified TEXT, tag TEXT, api_version TEXT, job_uid TEXT, parent TEXT, cluster TEXT,
    payload_valid_for TEXT, parent_key TEXT, callback_url TEXT, callback_state TEXT,
    callback_done_at TEXT,
    PRIMARY KEY (algorithm, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS checkpoints_by_tag ON checkpoints (tag) WHERE tag != '';
CREATE INDEX IF NOT EXISTS checkpoints_by_host ON checkpoints (received_by_host, lifecycle_stage);
CREATE INDEX IF NOT EXISTS checkpoints_by_parent ON checkpoints (parent_key) WHERE parent_key != '';
CREATE TABLE IF NOT EXISTS submission_buffer (
    algorithm TEXT NOT NULL, id TEXT NOT NULL, cluster TEXT NOT NULL, template TEXT NOT NULL,
    PRIMARY KEY (algorithm, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    algorithm TEXT NOT NULL, key TEXT NOT NULL, id TEXT NOT NULL,
    PRIMARY KEY (algorithm, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (host TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS run_events (
    algorithm TEXT NOT NULL, id TEXT NOT NULL, event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS run_events_by_run ON run_events (algorithm, id);
CREATE INDEX IF NOT EXISTS checkpoints_by_time ON checkpoints (received_at, algorithm, id);
CREATE INDEX IF NOT EXISTS checkpoints_by_algorithm_time ON checkpoints (algorithm, received_at);
"""
_FINISHED = ", ".join(f"'{stage.value}'" for stage in sorted(TERMINAL_STAGES))
# Finished runs whose webhook is still to be delivered (a partial index: only those rows).
_CALLBACK_PENDING = (
    f"callback_url != '' AND callback_done_at IS NULL AND lifecycle_stage IN ({_FINISHED})"
)
# After the columns a file made by an older nexus lacks are added (_add_columns).
INDEXES = f"""
CREATE INDEX IF NOT EXISTS checkpoints_by_callback ON checkpoints (last_modified)
    WHERE {_CALLBACK_PENDING};
"""

_INSERT_RUN = (
    f"INSERT INTO checkpoints ({', '.join(COLUMNS)}, parent_key) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)}, ?)"
)
_SELECT_RUN = f"SELECT {', '.join(COLUMNS)} FROM checkpoints"
_INSERT_EVENT = "INSERT INTO run_events VALUES (?, ?, ?)"
_manifest_encoder = msgspec.json.Encoder()
_manifest_decoder = msgspec.json.Decoder(dict)


def _time_text(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _column_value(name: str, value: Any) -> Any:
    value = encode_value(name, value)
    return _time_text(value) if isinstance(value, datetime) else value


# Run's fields are the columns, in order: a row is one astuple() (in C) plus the few
# columns that need encoding, instead of one lookup and type test per column per insert.
assert Run.__struct_fields__ == COLUMNS
_STAGE_AT = COLUMNS.index("lifecycle_stage")
_JSON_AT = tuple(COLUMNS.index(name) for name in JSON_COLUMNS)
_TIME_AT = tuple(COLUMNS.index(name) for name in TIME_COLUMNS)


def _run_values(run: Run) -> list[Any]:
    values = list(msgspec.structs.astuple(run))
    values[_STAGE_AT] = LifecycleStage(values[_STAGE_AT]).value
    for at in _JSON_AT:
        values[at] = encode_json_column(values[at])
    for at in _TIME_AT:
        values[at] = _time_text(values[at])
    return values


def _utc_text(value: datetime) -> str:
    """A query bound in the form times are stored in (UTC ISO 8601, which sorts as text)."""
    return value.astimezone(UTC).isoformat()


def _parent_key(parent: ParentRef | None) -> str:
    return f"{parent.algorithm_name}/{parent.request_id}" if parent else ""


def list_statement(query: RunQuery) -> tuple[str, list[Any]]:
    """The SELECT of a listing page (one more row than the page: is there a next?). The
    indexes by time, and by algorithm and time, answer it in order, with no sort."""
    where, args = ["received_at IS NOT NULL"], []
    # A tag's or a parent's runs are few: read them by their index (its partial WHERE
    # repeated, so it applies), never by walking the time index past other runs.
    index = ""
    if query.tag:
        index, where = " INDEXED BY checkpoints_by_tag", [*where, "tag != ''"]
    elif query.parent is not None:
        index, where = " INDEXED BY checkpoints_by_parent", [*where, "parent_key != ''"]
    if query.algorithm:
        where.append("algorithm = ?")
        args.append(query.algorithm)
    if query.stages:
        where.append(f"lifecycle_stage IN ({', '.join('?' for _ in query.stages)})")
        args += sorted(stage.value for stage in query.stages)
    if query.tag:
        where.append("tag = ?")
        args.append(query.tag)
    if query.parent is not None:
        where.append("parent_key = ?")
        args.append(_parent_key(query.parent))
    if query.since is not None:
        where.append("received_at >= ?")
        args.append(_utc_text(query.since))
    if query.until is not None:
        where.append("received_at < ?")
        args.append(_utc_text(query.until))
    if query.after is not None:
        after = query.after
        where.append("(received_at, algorithm, id) < (?, ?, ?)")
        args += [_utc_text(after.received_at), after.algorithm, after.id]
    statement = (
        f"{_SELECT_RUN}{index} WHERE {' AND '.join(where)} "
        "ORDER BY received_at DESC, algorithm DESC, id DESC LIMIT ?"
    )
    return statement, [*args, query.limit + 1]


def _add_columns(conn: sqlite3.Connection) -> None:
    """A file written by an older nexus lacks the columns added since: add them (NULL in
    the old rows, read back as unset)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(checkpoints)")}
    for name in COLUMNS:
        if name not in have:
            conn.execute(f"ALTER TABLE checkpoints ADD COLUMN {name} TEXT")


def _row_to_run(row: sqlite3.Row) -> Run:
    return run_from_columns(dict(zip(COLUMNS, row, strict=True)), parse_time=datetime.fromisoformat)


_STOP = object()
log = logging.getLogger("nexus.store.sqlite")


class _Checkpointer(threading.Thread):
    """Copies the WAL into the database file every ``interval`` seconds (PASSIVE: it
    never waits for or blocks a writer), on its own connection, so commits never do."""

    def __init__(self, path: Path, interval: float, busy_timeout: float) -> None:
        super().__init__(name="sqlite-checkpoint", daemon=True)
        self._path, self._interval, self._busy_timeout = path, interval, busy_timeout
        self._halt = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=self._busy_timeout)
        try:
            while not self._halt.wait(self._interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # a busy file: the next round catches up
                    log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join()


class SqliteRunStore:
    def __init__(
        self, path: str | Path, *, busy_timeout: float = 10.0, checkpoint_interval: float = 1.0
    ) -> None:
        self._path = Path(path)
        self._busy_timeout = busy_timeout
        self._ops: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._checkpointer = _Checkpointer(self._path, checkpoint_interval, busy_timeout)

    # --- the store thread --------------------------------------------------------------

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="sqlite-store", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            self._thread = None
            raise
        self._checkpointer.start()

    async def close(self) -> None:
        if self._thread is not None:
            await asyncio.to_thread(self._checkpointer.stop)
            self._ops.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def _serve(self, ready: Future[None]) -> None:
        try:
            conn = sqlite3.connect(
                self._path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_timeout,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the _Checkpointer's job
            conn.executescript(SCHEMA)
            _add_columns(conn)
            conn.executescript(INDEXES)
        except sqlite3.Error as exc:
            ready.set_exception(
                BackendUnavailable(f"Cannot open the run store {self._path}: {exc}")
            )
            return
        self._conn = conn
        ready.set_result(None)
        while True:
            batch = [self._ops.get()]
            while True:
                try:
                    batch.append(self._ops.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            self._run_batch(conn, [op for op in batch if op is not _STOP])
            if stop:
                conn.close()
                return

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[tuple[Callable, Future, Any]]
    ) -> None:
        if not batch:
            return
        results = self._commit(conn, batch, isolate=False)
        if results is None:  # an operation failed after writing: redo, each in a SAVEPOINT
            results = self._commit(conn, batch, isolate=True)
            assert results is not None  # isolated, a failed operation undoes only its own writes
        # One wake-up per event loop for the whole batch, not one per operation: each
        # call_soon_threadsafe pokes the loop's self-pipe.
        settled: dict[Any, list[tuple[Future, BaseException | None, Any]]] = {}
        for (_, future, loop), (error, value) in zip(batch, results, strict=True):
            settled.setdefault(loop, []).append((future, error, value))
        for loop, outcomes in settled.items():
            loop.call_soon_threadsafe(_settle_all, outcomes)

    @staticmethod
    def _commit(
        conn: sqlite3.Connection, batch: list[tuple[Callable, Future, Any]], *, isolate: bool
    ) -> list[tuple[BaseException | None, Any]] | None:
        """Run every operation of ``batch`` in one transaction and commit it.

        Most operations succeed, and those that fail (NotFound, InvalidTransition) do so
        before they write, so by default no SAVEPOINT is paid per operation. An operation
        that raises after it changed rows (``total_changes`` moved), or with an SQLite
        error, makes this roll back and return None; the caller then redoes the batch
        with ``isolate``, one SAVEPOINT per operation, so one failure undoes only its
        own writes. Operations only talk to the connection, so running one again after
        a rollback is safe.
        """
        results: list[tuple[BaseException | None, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, _ in batch:
                if isolate:
                    conn.execute("SAVEPOINT op")
                before = conn.total_changes
                try:
                    value = fn(conn)
                except Exception as exc:  # noqa: BLE001 - delivered to the caller
                    if isolate:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                    elif isinstance(exc, sqlite3.Error) or conn.total_changes != before:
                        conn.execute("ROLLBACK")
                        return None
                    if isinstance(exc, sqlite3.Error):
                        exc = BackendUnavailable(f"Run store operation failed: {exc}")
                    results.append((exc, None))
                    continue
                if isolate:
                    conn.execute("RELEASE op")
                results.append((None, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = BackendUnavailable(f"Run store write failed: {exc}")
            return [(error, None)] * len(batch)
        return results

    async def _call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._thread is None:
            raise BackendUnavailable("The run store is not open")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ops.put((fn, future, loop))
        return await future

    # --- RunStore ----------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def create(
        self, run: Run, submission: SubmissionEntry | None, idempotency_key: str | None = None
    ) -> str:
        values = _run_values(run)
        values.append(_parent_key(run.parent))
        event = encode_event(created_event(run))
        manifest = _manifest_encoder.encode(submission.template).decode() if submission else None

        def write(conn: sqlite3.Connection) -> str:
            if idempotency_key:
                row = conn.execute(
                    "SELECT id FROM idempotency_keys WHERE algorithm = ? AND key = ?",
                    (run.algorithm, idempotency_key),
                ).fetchone()
                if row is not None:
                    return row[0]
                conn.execute(
                    "INSERT INTO idempotency_keys VALUES (?, ?, ?)",
                    (run.algorithm, idempotency_key, run.id),
                )
            conn.execute(_INSERT_RUN, values)
            conn.execute(_INSERT_EVENT, (run.algorithm, run.id, event))
            if submission is not None:
                conn.execute(
                    "INSERT INTO submission_buffer VALUES (?, ?, ?, ?)",
                    (submission.algorithm, submission.id, submission.cluster, manifest),
                )
            return run.id

        return await self._call(write)

    async def buffer(
        self,
        submission: SubmissionEntry,
        from_stage: LifecycleStage = LifecycleStage.NEW,
        *,
        known: Run | None = None,  # not needed: the read is local, in the same transaction
    ) -> Run:
        manifest = _manifest_encoder.encode(submission.template).decode()

        def store_job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO submission_buffer VALUES (?, ?, ?, ?)",
                (submission.algorithm, submission.id, submission.cluster, manifest),
            )

        # One operation, so one transaction (and one group commit) for both writes.
        return await self._call(
            self._transition_op(
                submission.algorithm,
                submission.id,
                LifecycleStage.BUFFERED,
                {"last_modified": datetime.now(UTC)},
                also=store_job,
                expected=from_stage,
            )
        )

    async def find_idempotent(self, algorithm: str, key: str) -> str | None:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT id FROM idempotency_keys WHERE algorithm = ? AND key = ?", (algorithm, key)
            ).fetchone()
        )
        return row[0] if row else None

    async def get(self, algorithm: str, run_id: str) -> Run | None:
        row = await self._call(
            lambda conn: conn.execute(
                f"{_SELECT_RUN} WHERE algorithm = ? AND id = ?", (algorithm, run_id)
            ).fetchone()
        )
        return _row_to_run(row) if row else None

    async def get_submission(self, algorithm: str, run_id: str) -> SubmissionEntry | None:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT cluster, template FROM submission_buffer WHERE algorithm = ? AND id = ?",
                (algorithm, run_id),
            ).fetchone()
        )
        if row is None:
            return None
        return SubmissionEntry(
            algorithm=algorithm,
            id=run_id,
            cluster=row[0],
            template=_manifest_decoder.decode(row[1]),
        )

    async def transition(
        self,
        algorithm: str,
        run_id: str,
        target: LifecycleStage,
        *,
        known: Run | None = None,  # not needed: the read is local, in the same transaction
        **fields: Any,
    ) -> Run:
        check_fields(fields)
        fields["last_modified"] = fields.get("last_modified") or datetime.now(UTC)
        return await self._call(self._transition_op(algorithm, run_id, target, fields))

    @staticmethod
    def _transition_op(
        algorithm: str,
        run_id: str,
        target: LifecycleStage,
        fields: dict[str, Any],
        also: Callable[[sqlite3.Connection], None] | None = None,
        expected: LifecycleStage | None = None,
    ) -> Callable[[sqlite3.Connection], Run]:
        """The compare-and-set of a stage change, run on the store thread; ``also`` writes
        in the same transaction once the change is known to be allowed; ``expected``, if
        given, is the only stage it is allowed from."""

        def write(conn: sqlite3.Connection) -> Run:
            row = conn.execute(
                f"{_SELECT_RUN} WHERE algorithm = ? AND id = ?", (algorithm, run_id)
            ).fetchone()
            if row is None:
                raise NotFound(f"Provided request with identifier '{run_id}' not found")
            current = _row_to_run(row)
            lifecycle.check(run_id, current.lifecycle_stage, target, expected)
            if also is not None:
                also(conn)
            changes = {**fields, "lifecycle_stage": target}
            event = transition_event(current, target, fields)
            conn.execute(_INSERT_EVENT, (algorithm, run_id, encode_event(event)))
            assignments = ", ".join(f"{name} = ?" for name in changes)
            conn.execute(
                f"UPDATE checkpoints SET {assignments} "
                "WHERE algorithm = ? AND id = ? AND lifecycle_stage = ?",
                [
                    *(_column_value(n, v) for n, v in changes.items()),
                    algorithm,
                    run_id,
                    current.lifecycle_stage.value,
                ],
            )
            return msgspec.structs.replace(current, **changes)

        return write

    async def update_tag(self, algorithm: str, run_id: str, tag: str) -> Run:
        def write(conn: sqlite3.Connection) -> Run:
            cursor = conn.execute(
                "UPDATE checkpoints SET tag = ?, last_modified = ? WHERE algorithm = ? AND id = ?",
                (tag, _time_text(datetime.now(UTC)), algorithm, run_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"Provided request with identifier '{run_id}' not found")
            row = conn.execute(
                f"{_SELECT_RUN} WHERE algorithm = ? AND id = ?", (algorithm, run_id)
            ).fetchone()
            return _row_to_run(row)

        return await self._call(write)

    async def pending_callbacks(self, limit: int) -> list[Run]:
        rows = await self._call(
            lambda conn: conn.execute(
                f"{_SELECT_RUN} WHERE {_CALLBACK_PENDING} ORDER BY last_modified LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [_row_to_run(row) for row in rows]

    async def update_callback(
        self,
        algorithm: str,
        run_id: str,
        expected: CallbackState | None,
        state: CallbackState,
        *,
        done: bool = False,
    ) -> Run | None:
        def write(conn: sqlite3.Connection) -> Run | None:
            row = conn.execute(
                f"{_SELECT_RUN} WHERE algorithm = ? AND id = ?", (algorithm, run_id)
            ).fetchone()
            if row is None:
                raise NotFound(f"Provided request with identifier '{run_id}' not found")
            current = _row_to_run(row)
            if current.callback_state != expected or current.callback_done_at is not None:
                return None
            now = datetime.now(UTC)
            done_at = now if done else None
            event = webhook_event(expected, state, now)
            if event is not None:
                conn.execute(_INSERT_EVENT, (algorithm, run_id, encode_event(event)))
            conn.execute(
                "UPDATE checkpoints SET callback_state = ?, callback_done_at = ? "
                "WHERE algorithm = ? AND id = ?",
                (encode_json_column(state), _time_text(done_at), algorithm, run_id),
            )
            return msgspec.structs.replace(current, callback_state=state, callback_done_at=done_at)

        return await self._call(write)

    # --- RunStore: listing and history -------------------------------------------------

    async def list_runs(self, query: RunQuery) -> RunPage:
        statement, args = list_statement(query)
        rows = await self._call(lambda conn: conn.execute(statement, args).fetchall())
        return page_of([_row_to_run(row) for row in rows], query.limit)

    async def count_runs(
        self, since: datetime, until: datetime, algorithm: str = ""
    ) -> list[StageCount]:
        where, args = "received_at >= ? AND received_at < ?", [_utc_text(since), _utc_text(until)]
        if algorithm:
            where += " AND algorithm = ?"
            args.append(algorithm)
        rows = await self._call(
            lambda conn: conn.execute(
                f"SELECT algorithm, lifecycle_stage, count(*) FROM checkpoints WHERE {where} "
                "GROUP BY algorithm, lifecycle_stage ORDER BY algorithm, lifecycle_stage",
                args,
            ).fetchall()
        )
        return [StageCount(algorithm=a, stage=LifecycleStage(s), count=n) for a, s, n in rows]

    async def history(self, algorithm: str, run_id: str) -> list[RunEvent] | None:
        def read(conn: sqlite3.Connection) -> list[str] | None:
            known = conn.execute(
                "SELECT 1 FROM checkpoints WHERE algorithm = ? AND id = ?", (algorithm, run_id)
            ).fetchone()
            if known is None:
                return None
            rows = conn.execute(
                "SELECT event FROM run_events WHERE algorithm = ? AND id = ? ORDER BY rowid",
                (algorithm, run_id),
            ).fetchall()
            return [row[0] for row in rows]

        texts = await self._call(read)
        return None if texts is None else [decode_event(text) for text in texts]

    async def _select(self, where: str, args: tuple[Any, ...]) -> list[Run]:
        rows = await self._call(
            lambda conn: conn.execute(
                f"{_SELECT_RUN} WHERE {where} ORDER BY received_at", args
            ).fetchall()
        )
        return [_row_to_run(row) for row in rows]

    async def by_tag(self, tag: str) -> list[Run]:
        if not tag:
            return []
        return await self._select("tag = ?", (tag,))

    async def by_host_stage(self, host: str, stage: LifecycleStage) -> list[Run]:
        lifecycle.require_unfinished(stage)
        return await self._select(
            "received_by_host = ? AND lifecycle_stage = ?", (host, stage.value)
        )

    async def children(self, parent: ParentRef) -> list[Run]:
        return await self._select("parent_key = ?", (_parent_key(parent),))

    async def heartbeat(self, host: str, ttl: float) -> None:
        expires = time.time() + ttl
        await self._call(
            lambda conn: conn.execute(
                "INSERT INTO leases VALUES (?, ?) ON CONFLICT (host) DO UPDATE SET expires_at = ?",
                (host, expires, expires),
            )
        )

    async def expired_hosts(self) -> list[str]:
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT host FROM leases WHERE expires_at < ?", (time.time(),)
            ).fetchall()
        )
        return [row[0] for row in rows]

    async def drop_lease(self, host: str) -> None:
        await self._call(
            lambda conn: conn.execute(
                "DELETE FROM leases WHERE host = ? AND expires_at < ?", (host, time.time())
            )
        )


def _settle_all(outcomes: list[tuple[asyncio.Future, BaseException | None, Any]]) -> None:
    for future, error, value in outcomes:
        if future.done():  # its caller was cancelled meanwhile
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
