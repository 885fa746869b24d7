"""The production run store: Cassandra, ScyllaDB or AstraDB through ``scylla-driver``.

Schema and statement texts live in :mod:`cassandra_schema`. Decisions worth knowing:

* **asyncio bridge.** The driver's ``ResponseFuture`` completes on its own I/O thread;
  :meth:`CassandraRunStore._run` is the one place that hands results (all pages) back to
  the event loop with ``call_soon_threadsafe``; ``_execute`` turns driver errors into
  ``BackendUnavailable`` (503), so an unreachable database is refused quickly, never
  accepted.
* **Stage changes are lightweight transactions** (``UPDATE ... IF lifecycle_stage = ?``)
  in a read / :func:`lifecycle.check` / compare-and-set loop. An LWT cannot share a batch
  with other tables, so the lookup row of the new (host, stage) is written *before* the
  LWT and the old one deleted *after* it; a crash in between leaves a stale row, which
  readers filter out by re-checking the run itself. A run is therefore always found under
  its current stage.
* **Ambiguous LWT timeouts.** A ``WriteTimeout`` (or client timeout) on the LWT does not
  say whether it was applied. The store then reads the row at SERIAL consistency, which
  completes any unfinished Paxos round, and counts the change as applied if the row shows
  the target stage with this write's ``last_modified``. If even that read fails, the
  caller gets ``BackendUnavailable`` saying the outcome is unknown.
* **Creation** writes the run, its submission entry and its lookup rows in one LOGGED
  batch. An idempotency key is claimed first with ``INSERT ... IF NOT EXISTS``; if the
  batch then fails the claim is released. A key left behind by a crash at that moment
  points at a run that never existed; once it is older than any in-flight request could
  be, the next request with that key takes it over instead of answering a ghost id.
  A create that fails is refused (503). A batch that timed out after reaching the batch
  log is still applied later; such a run was refused to its client but is then picked up
  by recovery like any other NEW run — a timeout cannot tell the two cases apart.
* **TTLs.** ``checkpoint-ttl`` counts from when the run was received: later writes use
  the time that is left, so every cell of a record (and its lookup rows and idempotency
  key) expires at the same moment and no half-expired record is ever read.
* **Write timestamps.** The stage is written once without Paxos (the create) and then
  only by LWTs, whose cells carry the Paxos ballot time of a server, not this client's
  clock. Should this client's clock run ahead of the server's, the create would look
  newer than the first stage change and shadow it; so the create's checkpoint row is
  written with a timestamp a minute in the past (the row is new, nothing older exists).
* Times are CQL timestamps (UTC, millisecond precision); the store truncates to
  milliseconds before writing so the run it returns equals the run read back later. The
  Go writer stores an unset time as an empty value; it reads back as unset.
* **The Go system's keyspace** (:mod:`cassandra_go`): its layout is detected at open, its
  JSON columns are read and written in its ``b64__`` form, so both systems can share the
  keyspace during a switch.
* **AWS Keyspaces** (``cassandra-keyspaces``): the bare layout, tables created with
  client-side timestamps and TTL on, and the outcome of an ambiguous LWT read at
  LOCAL_QUORUM (Keyspaces has no SERIAL reads; its LWTs leave no Paxos round to finish).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from cassandra import OperationTimedOut, WriteTimeout, WriteType
from cassandra.cluster import Cluster
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType

from nexus.backends.store.cassandra_cluster import (
    DRIVER_ERRORS,
    build_cluster,
    consistency_levels,
)
from nexus.backends.store.cassandra_go import (
    adopt_go_runs,
    check_keyspaces,
    detect_layout,
    migrate_cql,
    needs_adoption,
    wait_active,
)
from nexus.backends.store.cassandra_listing import TimeIndex
from nexus.backends.store.cassandra_schema import (
    ALL_SCOPE,
    CALLBACK_BUCKETS,
    Layout,
    LookupRow,
    Statements,
    check_keyspace,
    hour_of,
    keyspace_cql,
    lookup_rows,
    tables_cql,
)
from nexus.backends.store.rows import (
    COLUMNS,
    TIME_COLUMNS,
    check_fields,
    encode_json_column,
    encode_value,
    run_from_columns,
    run_to_columns,
    utc,
)
from nexus.core import lifecycle
from nexus.core.callbacks import callback_pending
from nexus.core.history import (
    created_event,
    decode_event,
    encode_event,
    transition_event,
    webhook_event,
)
from nexus.core.listing import RunPage, RunQuery, StageCount, page_of
from nexus.core.models import (
    CallbackState,
    LifecycleStage,
    ParentRef,
    Run,
    RunEvent,
    SubmissionEntry,
)
from nexus.errors import BackendUnavailable, ConfigError, InvalidTransition, NotFound
from nexus.settings import ScyllaCqlStore

log = logging.getLogger("nexus.store.cassandra")

_CAS_ATTEMPTS = 20
_CREATE_BACKDATE_US = 60_000_000  # see "Write timestamps" above
_FETCH_CONCURRENCY = 8
_SERIAL_READ_ATTEMPTS = 3
_KEYSPACES_DDL_WAIT = 300.0  # seconds AWS Keyspaces may take to create the tables
_FETCH_PAGE = 100  # run ids per IN query: one coordinator fans out to their partitions
_manifest_encoder = msgspec.json.Encoder()
_manifest_decoder = msgspec.json.Decoder(dict)
_EPOCH = datetime.min.replace(tzinfo=UTC)
_HOUR_REWRITE_SECONDS = 600  # seconds between two writes of one run_hours row by one process
_HOURS_REMEMBERED = 10_000


def _now() -> datetime:
    return _ms(datetime.now(UTC))


def _ms(value: Any) -> Any:
    """CQL timestamps keep milliseconds; truncate so written and read-back values match."""
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    return value


def _not_found(run_id: str) -> NotFound:
    return NotFound(f"Provided request with identifier '{run_id}' not found")


def _read_time(value: datetime) -> datetime | None:
    """A stored time; the Go writer's zero time (year 1) means unset."""
    return None if value.year == 1 else utc(value)


class CassandraRunStore:
    def __init__(self, config: ScyllaCqlStore, *, keyspaces: bool = False) -> None:
        self._config = config
        self._keyspace = check_keyspace(config.keyspace)
        if keyspaces:
            check_keyspaces(config)
        self._consistency, self._serial = consistency_levels(config)
        # The consistency of the read that settles an ambiguous LWT: SERIAL completes a
        # Paxos round in flight; Keyspaces has no SERIAL reads and no rounds to complete.
        self._settle_read = self._consistency if keyspaces else self._serial
        self._layout = Layout(keyspaces=keyspaces)
        self._ttl = int(config.checkpoint_ttl)
        self._submission_ttl = int(config.submission_ttl)
        # A claimed idempotency key without its run is only abandoned once no request that
        # claimed it can still be writing (driver timeout plus its retries, with margin).
        self._key_grace = timedelta(seconds=max(30.0, 6 * config.request_timeout))
        self._text = Statements(self._keyspace)
        self._cluster: Cluster | None = None
        self._session: Any = None
        self._prepared: dict[str, Any] = {}
        # (scope, hour) -> when this process last wrote that row of run_hours
        self._hours_written: dict[tuple[str, int], float] = {}
        self._time_index = TimeIndex(self._execute, self._p, self._load)
        self._describe = (
            f"AstraDB bundle {config.secure_connect_bundle}"
            if config.secure_connect_bundle
            else f"{','.join(config.hosts)}:{config.port}"
        )

    # --- connection --------------------------------------------------------------------

    async def open(self) -> None:
        try:
            cluster = await asyncio.to_thread(
                build_cluster,
                config=self._config,
                consistency=self._consistency,
                serial=self._serial,
            )
            self._cluster = cluster
            self._session = await asyncio.to_thread(cluster.connect)
        except ConfigError:
            raise
        except (*DRIVER_ERRORS, ValueError) as exc:
            await self.close()
            # A refused login is a settings problem, not an outage: say which keys to fix.
            hint = (
                " (check scylla-cql-store.user and scylla-cql-store.password)"
                if "AuthenticationFailed" in repr(exc)
                else ""
            )
            raise BackendUnavailable(
                f"Cannot connect to the run store ({self._describe}){hint}: {exc}"
            ) from exc
        try:
            if self._config.create_schema:
                await asyncio.to_thread(self._create_schema, cluster)
            self._use_layout(cluster)
            await asyncio.to_thread(self._prepare_all)
        except DRIVER_ERRORS as exc:
            await self.close()
            hint = (
                ""
                if self._config.create_schema
                else " (scylla-cql-store.create-schema is false: create the keyspace and tables "
                "first, see docs/backends.md)"
            )
            raise BackendUnavailable(
                f"Run store schema in keyspace '{self._keyspace}' is not usable{hint}: {exc}"
            ) from exc

    def _use_layout(self, cluster: Cluster) -> None:
        metadata = cluster.metadata.keyspaces.get(self._keyspace)
        self._layout = detect_layout(metadata, self._config, keyspaces=self._layout.keyspaces)
        self._text = Statements(self._keyspace, self._layout)
        if self._layout != Layout(keyspaces=self._layout.keyspaces):
            log.info("keyspace %s: %s", self._keyspace, self._layout)

    def _create_schema(self, cluster: Cluster) -> None:
        config = self._config
        existing = cluster.metadata.keyspaces.get(self._keyspace)
        layout = detect_layout(existing, config, keyspaces=self._layout.keyspaces)
        # Managed services (AstraDB) refuse CREATE KEYSPACE even when it already exists.
        if existing is None:
            self._session.execute(
                keyspace_cql(self._keyspace, config.replication_factor, config.local_dc, layout)
            )
            if layout.keyspaces:
                wait_active(self._session, self._keyspace, _KEYSPACES_DDL_WAIT, tables=False)
        # Decided before any DDL: the driver updates ``existing`` in place as tables appear.
        adopt = needs_adoption(existing)
        statements = [
            *tables_cql(self._keyspace, layout),
            *migrate_cql(existing, self._keyspace, layout),
        ]
        for statement in statements:
            self._session.execute(statement)
            if layout.keyspaces:  # asynchronous there: each change done before the next
                wait_active(self._session, self._keyspace, _KEYSPACES_DDL_WAIT)
        if adopt:
            adopt_go_runs(self._session, self._keyspace, self._ttl)

    def _prepare_all(self) -> None:
        text = self._text
        fixed = {
            name: value
            for name, value in vars(text).items()
            if isinstance(value, str) and not name.startswith("_")
        }
        for name, statement in fixed.items():
            self._prepared[name] = self._prepare(statement)
        for kind in ("lookup_insert", "lookup_delete", "lookup_select", "index_select"):
            for table, statement in getattr(text, kind).items():
                self._prepared[f"{kind}:{table}"] = self._prepare(statement)

    def _prepare(self, statement: str) -> Any:
        prepared = self._session.prepare(statement)
        # Everything but a compare-and-set can be retried safely by the driver.
        prepared.is_idempotent = " IF " not in statement
        return prepared

    def _p(self, name: str) -> Any:
        """A prepared statement; BackendUnavailable before open() has prepared them."""
        try:
            return self._prepared[name]
        except KeyError:
            raise BackendUnavailable("The run store is not open") from None

    async def _statement(self, name: str, text: str) -> Any:
        if self._session is None:
            raise BackendUnavailable("The run store is not open")
        if name not in self._prepared:
            try:
                self._prepared[name] = await asyncio.to_thread(self._prepare, text)
            except DRIVER_ERRORS as exc:
                raise self._unavailable(exc) from exc
        return self._prepared[name]

    async def close(self) -> None:
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)

    # --- the asyncio bridge ------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"The run store ({self._describe}) did not answer: {type(exc).__name__}: {exc}"
        )

    async def _run(self, statement: Any, params: Any = None) -> list[dict[str, Any]]:
        """Execute on the driver's thread and await every page; raise driver errors as-is."""
        if self._session is None:
            raise BackendUnavailable("The run store is not open")
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        rows: list[dict[str, Any]] = []
        response = self._session.execute_async(statement, params)

        def on_page(page: list[dict[str, Any]] | None) -> None:
            rows.extend(page or ())  # writes answer with no rows at all
            try:
                more = response.has_more_pages
                if more:
                    response.start_fetching_next_page()
            except Exception as exc:  # noqa: BLE001 - delivered to the awaiting task
                on_error(exc)
                return
            if not more:
                loop.call_soon_threadsafe(_settle, done, None, rows)

        def on_error(exc: BaseException) -> None:
            loop.call_soon_threadsafe(_settle, done, exc, None)

        response.add_callbacks(on_page, on_error)
        return await done

    async def _execute(self, statement: Any, params: Any = None) -> list[dict[str, Any]]:
        try:
            return await self._run(statement, params)
        except DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from exc

    def _batch(self) -> BatchStatement:
        return BatchStatement(BatchType.LOGGED, consistency_level=self._consistency)

    def _ttl_left(self, run: Run) -> int:
        """Seconds until ``run`` expires (0: never), so that every write expires together."""
        if not self._ttl:
            return 0
        if run.received_at is None:
            return self._ttl
        elapsed = (datetime.now(UTC) - utc(run.received_at)).total_seconds()
        return max(1, math.ceil(self._ttl - elapsed))

    def _add_lookups(
        self, batch: BatchStatement, rows: set[LookupRow], run: Run, *, insert: bool, ttl: int = 0
    ) -> None:
        for row in rows:
            if insert:
                batch.add(
                    self._p(f"lookup_insert:{row.table}"), (*row.key, run.algorithm, run.id, ttl)
                )
            elif row.table in self._layout.go_tables:  # keyed by id alone, as Go keys it
                batch.add(self._p(f"lookup_delete:{row.table}"), (*row.key, run.id))
            else:
                batch.add(self._p(f"lookup_delete:{row.table}"), (*row.key, run.algorithm, run.id))

    # --- RunStore: single runs ---------------------------------------------------------

    async def ping(self) -> None:
        await self._execute(self._p("ping"))

    async def create(
        self, run: Run, submission: SubmissionEntry | None, idempotency_key: str | None = None
    ) -> str:
        run = msgspec.structs.replace(
            run, **{name: _ms(getattr(run, name)) for name in TIME_COLUMNS}
        )
        if idempotency_key:
            existing = await self._claim_key(run.algorithm, idempotency_key, run.id)
            if existing is not None:
                return existing
        columns = run_to_columns(run, b64=True)
        batch = self._batch()
        batch.add(
            self._p("insert_run"),
            [UNSET_VALUE if columns[n] is None else columns[n] for n in COLUMNS]
            + [
                [encode_event(created_event(run))],
                self._ttl,
                int(time.time() * 1e6) - _CREATE_BACKDATE_US,
            ],
        )
        if submission is not None:
            batch.add(self._p("insert_submission"), self._submission_values(submission))
        self._add_lookups(batch, lookup_rows(run, self._layout), run, insert=True, ttl=self._ttl)
        hours = self._add_time_rows(batch, run)
        try:
            await self._execute(batch)
        except BackendUnavailable:
            if idempotency_key:
                await self._release_key(run.algorithm, idempotency_key, run.id)
            raise
        # Only a written hour row may be skipped by the next runs (a timed-out batch may
        # still be applied: then the row is written once more, which is harmless).
        if len(self._hours_written) > _HOURS_REMEMBERED:
            self._hours_written.clear()
        now = time.monotonic()
        self._hours_written.update(dict.fromkeys(hours, now))
        return run.id

    def _add_time_rows(self, batch: BatchStatement, run: Run) -> list[tuple[str, int]]:
        """The listing's rows of a new run (cassandra_schema.ALL_SCOPE); the run_hours
        rows added, once the batch is written."""
        if run.received_at is None:
            return []
        hour = hour_of(run.received_at)
        hours = []
        now = time.monotonic()
        for scope in (run.algorithm, ALL_SCOPE):
            batch.add(
                self._p("insert_time"),
                (
                    scope,
                    hour,
                    run.received_at,
                    run.algorithm,
                    run.id,
                    run.lifecycle_stage.value,
                    self._ttl,
                ),
            )
            # The hour's row once in a while, not with every run (it is the same row):
            # it outlives every run this process writes under it until it is written
            # again, as its TTL is longer by more than the pause between two writes.
            if now - self._hours_written.get((scope, hour), -math.inf) > _HOUR_REWRITE_SECONDS:
                ttl = self._ttl and self._ttl + 2 * _HOUR_REWRITE_SECONDS
                batch.add(self._p("insert_hour"), (scope, hour, ttl))
                hours.append((scope, hour))
        return hours

    def _add_time_stage(self, batch: BatchStatement, run: Run, ttl: int) -> None:
        """After a stage change: the stage the counts read (the listing re-checks runs)."""
        if run.received_at is None:
            return
        for scope in (run.algorithm, ALL_SCOPE):
            batch.add(
                self._p("update_time_stage"),
                (
                    ttl,
                    run.lifecycle_stage.value,
                    scope,
                    hour_of(run.received_at),
                    run.received_at,
                    run.algorithm,
                    run.id,
                ),
            )

    def _submission_values(self, submission: SubmissionEntry) -> tuple[Any, ...]:
        return (
            submission.algorithm,
            submission.id,
            submission.cluster,
            _manifest_encoder.encode(submission.template).decode(),
            self._submission_ttl,
        )

    async def buffer(
        self,
        submission: SubmissionEntry,
        from_stage: LifecycleStage = LifecycleStage.NEW,
        *,
        known: Run | None = None,
    ) -> Run:
        # An LWT cannot share a batch with another table: the Job row goes first, so a
        # BUFFERED run always has one (a refused change leaves a harmless Job row).
        await self._execute(self._p("insert_submission"), self._submission_values(submission))
        return await self._transition(
            submission.algorithm, submission.id, LifecycleStage.BUFFERED, {}, from_stage, known
        )

    async def _claim_key(self, algorithm: str, key: str, run_id: str) -> str | None:
        """None when ``key`` is now ours, else the id of the run that holds it."""
        rows = await self._execute(self._p("claim_key"), (algorithm, key, run_id, self._ttl))
        if rows[0]["[applied]"]:
            return None
        holder = rows[0]["id"]
        if await self.get(algorithm, holder) is not None:
            return holder
        rows = await self._execute(self._p("select_key"), (algorithm, key))
        if not rows:  # expired or released meanwhile: claim again
            return await self._claim_key(algorithm, key, run_id)
        written = datetime.fromtimestamp(rows[0]["written"] / 1e6, UTC)
        if rows[0]["id"] != holder or datetime.now(UTC) - written < self._key_grace:
            return rows[0]["id"]  # still being written by the request that claimed it
        log.warning(
            "idempotency key %r of %s pointed at run %s, which was never stored; "
            "giving it to run %s",
            key,
            algorithm,
            holder,
            run_id,
        )
        rows = await self._execute(
            self._p("replace_key"), (self._ttl, run_id, algorithm, key, holder)
        )
        return None if rows[0]["[applied]"] else rows[0]["id"]

    async def _release_key(self, algorithm: str, key: str, run_id: str) -> None:
        try:
            await self._execute(self._p("release_key"), (algorithm, key, run_id))
        except BackendUnavailable as exc:
            log.warning(
                "could not release idempotency key %r of %s after a failed create "
                "(it is taken over later): %s",
                key,
                algorithm,
                exc,
            )

    async def find_idempotent(self, algorithm: str, key: str) -> str | None:
        rows = await self._execute(self._p("select_key"), (algorithm, key))
        if not rows or await self.get(algorithm, rows[0]["id"]) is None:
            return None  # create() decides, with a compare-and-set, who gets the key
        return rows[0]["id"]

    async def get(self, algorithm: str, run_id: str) -> Run | None:
        return await self._read(algorithm, run_id)

    async def _read(self, algorithm: str, run_id: str, *, serial: bool = False) -> Run | None:
        bound = self._p("select_run").bind((algorithm, run_id))
        if serial:
            bound.consistency_level = self._settle_read
        rows = await self._execute(bound)
        return run_from_columns(rows[0], parse_time=_read_time) if rows else None

    async def get_submission(self, algorithm: str, run_id: str) -> SubmissionEntry | None:
        rows = await self._execute(self._p("select_submission"), (algorithm, run_id))
        if not rows:
            return None
        return SubmissionEntry(
            algorithm=algorithm,
            id=run_id,
            cluster=rows[0]["cluster"],
            template=_manifest_decoder.decode(rows[0]["template"]),
        )

    async def transition(
        self,
        algorithm: str,
        run_id: str,
        target: LifecycleStage,
        *,
        known: Run | None = None,
        **fields: Any,
    ) -> Run:
        return await self._transition(algorithm, run_id, target, fields, None, known)

    async def _transition(
        self,
        algorithm: str,
        run_id: str,
        target: LifecycleStage,
        fields: dict[str, Any],
        expected: LifecycleStage | None,
        known: Run | None = None,
    ) -> Run:
        """``transition``; ``expected``, if given, is the only stage it is allowed from.
        ``known`` (RunStore.transition) saves the first read: the LWT's condition on the
        stage is what makes the change safe, whichever copy it was computed from."""
        check_fields(fields)
        fields.pop("lifecycle_stage", None)
        fields = {name: _ms(value) for name, value in fields.items()}
        fields["last_modified"] = fields.get("last_modified") or _now()
        names = tuple(sorted(fields))
        cas = await self._statement(f"transition:{','.join(names)}", self._text.transition(names))
        if known is not None and (known.algorithm, known.id) != (algorithm, run_id):
            known = None
        for _ in range(_CAS_ATTEMPTS):
            from_known, current = known is not None, known or await self.get(algorithm, run_id)
            known = None
            if current is None:
                raise _not_found(run_id)
            try:
                lifecycle.check(run_id, current.lifecycle_stage, target, expected)
            except InvalidTransition:
                if from_known:  # the copy may be older than the row: judge the row
                    continue
                raise
            updated = msgspec.structs.replace(current, lifecycle_stage=target, **fields)
            ttl = self._ttl_left(current)
            added = lookup_rows(updated, self._layout) - lookup_rows(current, self._layout)
            if added:
                batch = self._batch()
                self._add_lookups(batch, added, updated, insert=True, ttl=ttl)
                await self._execute(batch)
            params = (
                ttl,
                target.value,
                *(encode_value(n, fields[n], b64=True) for n in names),
                [encode_event(transition_event(current, target, fields))],
                algorithm,
                run_id,
                current.lifecycle_stage.value,
            )
            if await self._compare_and_set(cas, params, updated):
                await self._after_change(current, updated, ttl)
                return updated
        raise BackendUnavailable(
            f"Run {run_id} is being changed by many writers at once; "
            "its stage could not be set, retry"
        )

    async def _compare_and_set(self, cas: Any, params: tuple[Any, ...], updated: Run) -> bool:
        try:
            rows = await self._run(cas, params)
            return bool(rows[0]["[applied]"])
        except (WriteTimeout, OperationTimedOut) as exc:
            if isinstance(exc, WriteTimeout) and exc.write_type not in (WriteType.CAS, None):
                raise self._unavailable(exc) from exc
            cause = exc
        except DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from exc
        # Ambiguous: a SERIAL read finishes any Paxos round in flight, then tells. It is a
        # Paxos round itself, so under contention (the rival writers that made the write
        # time out) it can time out too: it is tried again after a jittered pause, which
        # lets the rivals' rounds finish instead of colliding with them once more.
        for attempt in range(_SERIAL_READ_ATTEMPTS):
            try:
                now = await self._read(updated.algorithm, updated.id, serial=True)
                break
            except BackendUnavailable as exc:
                if attempt + 1 == _SERIAL_READ_ATTEMPTS:
                    raise BackendUnavailable(
                        f"The run store ({self._describe}) timed out setting run {updated.id} "
                        f"to {updated.lifecycle_stage.value}; whether it was written is "
                        f"unknown: {cause}"
                    ) from exc
                await asyncio.sleep(random.uniform(0.05, 0.25) * (attempt + 1))
        # Ours only if the row holds everything this write set: a rival writer that reached
        # the same stage in the same millisecond differs in some field (a write identical in
        # every field is indistinguishable, and equivalent).
        return now == updated

    async def _after_change(self, current: Run, updated: Run, ttl: int) -> None:
        """The writes that follow a stage change, in one round trip: the lookup rows of
        the old stage go, and the listing's rows take the new stage. Neither needs to be
        atomic with the change or with each other (a stale lookup row is filtered out by
        its readers, the listing re-checks the runs it shows), so the batch is unlogged:
        it skips the batch log, the dearest part of a logged batch."""
        batch = BatchStatement(BatchType.UNLOGGED, consistency_level=self._consistency)
        stale = lookup_rows(current, self._layout) - lookup_rows(updated, self._layout)
        self._add_lookups(batch, stale, updated, insert=False)
        self._add_time_stage(batch, updated, ttl)
        if not len(batch):
            return
        try:
            await self._execute(batch)
        except BackendUnavailable as exc:  # the change is done; only lookups and counts lag
            log.warning(
                "lookup and listing rows of run %s not brought up to date: %s", updated.id, exc
            )

    async def _drop_lookups(self, rows: set[LookupRow], run: Run) -> None:
        if not rows:
            return
        batch = self._batch()
        self._add_lookups(batch, rows, run, insert=False)
        try:
            await self._execute(batch)
        except BackendUnavailable as exc:  # the change is done; a stale row is filtered out
            log.warning("stale lookup rows of run %s left behind: %s", run.id, exc)

    async def update_tag(self, algorithm: str, run_id: str, tag: str) -> Run:
        current = await self.get(algorithm, run_id)
        if current is None:
            raise _not_found(run_id)
        updated = msgspec.structs.replace(current, tag=tag, last_modified=_now())
        ttl = self._ttl_left(current)
        batch = self._batch()
        batch.add(self._p("update_tag"), (ttl, tag, updated.last_modified, algorithm, run_id))
        before, after = lookup_rows(current, self._layout), lookup_rows(updated, self._layout)
        self._add_lookups(batch, after - before, updated, insert=True, ttl=ttl)
        self._add_lookups(batch, before - after, updated, insert=False)
        await self._execute(batch)
        return updated

    # --- RunStore: completion webhooks -------------------------------------------------

    async def pending_callbacks(self, limit: int) -> list[Run]:
        found = await asyncio.gather(
            *(
                self._lookup("checkpoints_by_callback", (str(bucket),))
                for bucket in range(CALLBACK_BUCKETS)
            )
        )
        runs = [run for runs in found for run in runs if callback_pending(run)]
        return sorted(runs, key=lambda run: run.last_modified or _EPOCH)[:limit]

    async def update_callback(
        self,
        algorithm: str,
        run_id: str,
        expected: CallbackState | None,
        state: CallbackState,
        *,
        done: bool = False,
    ) -> Run | None:
        current = await self.get(algorithm, run_id)
        if current is None:
            raise _not_found(run_id)
        if current.callback_state != expected or current.callback_done_at is not None:
            return None
        now = _now()
        done_at = now if done else None
        updated = msgspec.structs.replace(current, callback_state=state, callback_done_at=done_at)
        event = webhook_event(expected, state, now)
        history = () if event is None else ([encode_event(event)],)
        params = (
            self._ttl_left(current),
            encode_json_column(state, b64=True),
            done_at,
            *history,
            algorithm,
            run_id,
            encode_json_column(expected, b64=True),
        )
        # An ambiguous timeout is an outage to the caller, which tries again later: at
        # worst the webhook is delivered twice (it is at-least-once, docs/webhooks.md).
        statement = "update_callback" if event is None else "update_callback_event"
        rows = await self._execute(self._p(statement), params)
        if not rows[0]["[applied]"]:
            return None
        if done:
            await self._drop_lookups(
                lookup_rows(current, self._layout) - lookup_rows(updated, self._layout), updated
            )
        return updated

    # --- RunStore: lookups -------------------------------------------------------------

    async def _lookup(self, table: str, key: tuple[str, ...]) -> list[Run]:
        if table in self._text.index_select:  # Go's indexed layout: the runs themselves
            indexed = await self._execute(self._p(f"index_select:{table}"), key)
            runs = [run_from_columns(row, parse_time=_read_time) for row in indexed]
            return sorted(runs, key=lambda run: run.received_at or _EPOCH)
        rows = await self._execute(self._p(f"lookup_select:{table}"), key)
        runs = await self._load([(row["algorithm"], row["id"]) for row in rows])
        return sorted(runs, key=lambda run: run.received_at or _EPOCH)

    async def _load(self, keys: list[tuple[str, str]]) -> list[Run]:
        """The runs of (algorithm, id) ``keys`` that exist, a page of ids per query."""
        ids_of: dict[str, list[str]] = {}
        for algorithm, run_id in keys:
            ids_of.setdefault(algorithm, []).append(run_id)
        pages = [
            (algorithm, ids[start : start + _FETCH_PAGE])
            for algorithm, ids in ids_of.items()
            for start in range(0, len(ids), _FETCH_PAGE)
        ]
        limit = asyncio.Semaphore(_FETCH_CONCURRENCY)

        async def load(algorithm: str, ids: list[str]) -> list[dict[str, Any]]:
            async with limit:
                return await self._execute(self._p("select_runs"), (algorithm, ids))

        found = await asyncio.gather(*(load(algorithm, ids) for algorithm, ids in pages))
        return [run_from_columns(row, parse_time=_read_time) for page in found for row in page]

    async def by_tag(self, tag: str) -> list[Run]:
        if not tag:
            return []
        return [run for run in await self._lookup("checkpoints_by_tag", (tag,)) if run.tag == tag]

    async def by_host_stage(self, host: str, stage: LifecycleStage) -> list[Run]:
        lifecycle.require_unfinished(stage)
        runs = await self._lookup("checkpoints_by_host", (host, stage.value))
        return [
            run for run in runs if run.received_by_host == host and run.lifecycle_stage is stage
        ]

    async def children(self, parent: ParentRef) -> list[Run]:
        runs = await self._lookup(
            "checkpoints_by_parent", (parent.algorithm_name, parent.request_id)
        )
        return [run for run in runs if run.parent == parent]

    # --- RunStore: listing and history -------------------------------------------------

    async def list_runs(self, query: RunQuery) -> RunPage:
        # A tag's or a parent's runs are one lookup partition: read it whole.
        if query.tag or query.parent is not None:
            runs = await (
                self.children(query.parent) if query.parent is not None else self.by_tag(query.tag)
            )
            return page_of([run for run in runs if query.matches(run)], query.limit)
        return await self._time_index.page(query)

    async def count_runs(
        self, since: datetime, until: datetime, algorithm: str = ""
    ) -> list[StageCount]:
        return await self._time_index.counts(since, until, algorithm)

    async def history(self, algorithm: str, run_id: str) -> list[RunEvent] | None:
        rows = await self._execute(self._p("select_events"), (algorithm, run_id))
        if not rows:
            return None
        return [decode_event(text) for text in rows[0]["events"] or ()]

    # --- RunStore: scheduler leases ----------------------------------------------------
    # Expiry times come from the writer's clock and are compared with the reader's: keep
    # the hosts' clocks in sync (NTP) well within supervisor.lease-ttl.

    async def heartbeat(self, host: str, ttl: float) -> None:
        expires = _now() + timedelta(seconds=ttl)
        await self._execute(self._p("heartbeat"), (host, expires))

    async def expired_hosts(self) -> list[str]:
        now = datetime.now(UTC)
        rows = await self._execute(self._p("select_leases"))
        return sorted(row["host"] for row in rows if utc(row["expires_at"]) < now)

    async def drop_lease(self, host: str) -> None:
        """Delete the lease only if it is still expired (the host may have come back)."""
        await self._execute(self._p("drop_lease"), (host, _now()))


def _settle(future: asyncio.Future, error: BaseException | None, value: Any) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
