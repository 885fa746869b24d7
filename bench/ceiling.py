"""The ceilings of target 10: the durable work of an accept and of a completion, bare.

    python -m bench.ceiling        # settings from the NEXUS__ environment, as nexus reads them

A process of its own (so its CPU is read from /proc like nexus's) that does, with the raw
drivers and nothing of Sanic or of nexus's use cases, exactly what reaches Cassandra and
S3 when nexus accepts or completes a run:

* **accept**: the LOGGED batch of ``CassandraRunStore.create`` (the run row with its
  history, its lookup rows and its two ``runs_by_time`` rows, at the configured
  consistency) and, concurrently, one obstore PUT of the payload bytes to the key the
  buffer uses.
* **complete**: the compare-and-set of ``CassandraRunStore.transition`` RUNNING ->
  COMPLETED (``UPDATE ... IF lifecycle_stage = ?``, serial consistency as configured) on
  runs prepared beforehand (``prepare``).

Same scylla-driver cluster settings (``build_cluster``), same statement texts
(``Statements``), same prepared-statement flags. The rows written are copies of a run
nexus wrote: at start the process reads one NEW run nexus accepted (its row, history and
payload) and, through nexus's own store, turns a copy of it into a RUNNING run; the loops
then write those rows again under fresh ids. nexus's modules are used only for that setup,
never inside a timed loop. Copies are filed under another host than nexus's
(:data:`HOST`), so nexus's sweeps never pick them up.

Commands, one JSON object per line on stdin; each answer is one JSON line on stdout:

    {"cmd": "accept", "seconds": 8, "concurrency": 64}
    {"cmd": "prepare", "count": 5000, "concurrency": 64}     -> {"ids": [...], ...}
    {"cmd": "complete", "ids": [...], "seconds": 8, "concurrency": 64}
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import obstore
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType

from nexus.backends.buffer.objects import payload_key
from nexus.backends.buffer.s3 import parse_storage_path, s3_buffer

# _settle: how the store hands a driver result to the event loop, reused as it is.
from nexus.backends.store.cassandra import CassandraRunStore, _settle
from nexus.backends.store.cassandra_cluster import build_cluster, consistency_levels
from nexus.backends.store.cassandra_schema import (
    ALL_SCOPE,
    Statements,
    hour_of,
    lookup_rows,
)
from nexus.backends.store.rows import COLUMNS, run_from_columns, utc
from nexus.core.history import encode_event, transition_event
from nexus.core.models import LifecycleStage
from nexus.settings import load_settings

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

HOST = "bench-ceiling"  # the received_by_host of every copy
RESULT_URI = "s3://nexus-results/results/algorithm=behave/0190a7c2-0000-7000-8000-000000000000"
# The create's row is written a minute in the past, as CassandraRunStore.create does.
_CREATE_BACKDATE_US = 60_000_000
_COMPLETE_FIELDS = ("last_modified", "result_uri")


def _ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


class Original(NamedTuple):
    """A stored run the loops copy: its row, its history and its lookup rows."""

    row: dict[str, Any]
    events: list[str]
    lookups: list[tuple[Any, tuple[str, ...]]]  # (prepared insert, key before algorithm, id)


class Ceiling:
    def __init__(self) -> None:
        settings = load_settings()
        self.config = config = settings.scylla_cql_store
        self.consistency, serial = consistency_levels(config)
        self.cluster = build_cluster(config, self.consistency, serial)
        self.session = self.cluster.connect()
        self.text = Statements(config.keyspace)
        self.ttl = int(config.checkpoint_ttl)
        self.buffer_config = settings.s3_buffer
        self.store = s3_buffer(settings.s3_buffer).object_store
        prefix = parse_storage_path(settings.s3_buffer.payload_storage_path)[1].strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.instance = settings.instance_id
        self.prepared: dict[str, Any] = {}

    def statement(self, text: str) -> Any:
        if text not in self.prepared:
            prepared = self.session.prepare(text)
            prepared.is_idempotent = " IF " not in text  # as CassandraRunStore._prepare
            self.prepared[text] = prepared
        return self.prepared[text]

    # --- setup: the rows to copy -------------------------------------------------------

    def read_run(self, algorithm: str, run_id: str, **changes: Any) -> Original:
        row = self.session.execute(self.statement(self.text.select_run), (algorithm, run_id))
        events = self.session.execute(self.statement(self.text.select_events), (algorithm, run_id))
        columns = {**row.one(), **changes}
        lookups = [
            (self.statement(self.text.lookup_insert[lookup.table]), lookup.key)
            for lookup in sorted(lookup_rows(run_from_columns(columns, parse_time=utc)))
        ]
        return Original(columns, list(events.one()["events"] or ()), lookups)

    def setup(self) -> dict[str, Any]:
        found = self.session.execute(
            self.statement(self.text.lookup_select["checkpoints_by_host"]),
            (self.instance, LifecycleStage.NEW.value),
        ).all()
        if not found:
            raise RuntimeError(f"no NEW run of host {self.instance} to copy: accept one first")
        algorithm, source = found[0]["algorithm"], found[0]["id"]
        self.algorithm = algorithm
        self.new = self.read_run(algorithm, source, received_by_host=HOST)
        self.payload = bytes(
            obstore.get(self.store, payload_key(self.prefix, algorithm, source)).bytes()
        )
        # A RUNNING run as nexus's store makes it (NEW -> BUFFERED -> RUNNING), to copy.
        first = str(uuid.uuid4())
        asyncio.run(self.accept_one(first))
        asyncio.run(self._to_running(algorithm, first))
        self.running = self.read_run(algorithm, first)
        run = run_from_columns(self.running.row, parse_time=utc)
        now = _ms(datetime.now(UTC))
        fields = {"result_uri": RESULT_URI, "last_modified": now}
        self.complete_event = encode_event(transition_event(run, LifecycleStage.COMPLETED, fields))
        self.cas = self.statement(self.text.transition(_COMPLETE_FIELDS))
        return {
            "algorithm": algorithm,
            "copied_run": source,
            "payload_bytes": len(self.payload),
            "row_chars": sum(len(str(v)) for v in self.new.row.values() if v is not None),
            "lookup_keys": [list(key) for _, key in self.new.lookups],
            "running_lookup_keys": [list(key) for _, key in self.running.lookups],
        }

    async def _to_running(self, algorithm: str, run_id: str) -> None:
        store = CassandraRunStore(self.config)
        await store.open()
        try:
            await store.transition(algorithm, run_id, LifecycleStage.BUFFERED)
            await store.transition(
                algorithm,
                run_id,
                LifecycleStage.RUNNING,
                job_uid=str(uuid.uuid4()),
                sent_at=_ms(datetime.now(UTC)),
            )
        finally:
            await store.close()

    # --- the asyncio bridge, as thin as it can be --------------------------------------

    def execute(self, statement: Any, params: Any = None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        response = self.session.execute_async(statement, params)
        response.add_callbacks(
            lambda rows: loop.call_soon_threadsafe(_settle, done, None, rows),
            lambda exc: loop.call_soon_threadsafe(_settle, done, exc, None),
        )
        return done

    # --- the durable work --------------------------------------------------------------

    def _copy_batch(self, original: Original, run_id: str) -> BatchStatement:
        """The create batch of CassandraRunStore.create for a copy of ``original``."""
        now = _ms(datetime.now(UTC))
        row = original.row
        values = {
            **row,
            "id": run_id,
            "received_at": now,
            "last_modified": now,
            "payload_uri": row["payload_uri"].replace(row["id"], run_id),
        }
        batch = BatchStatement(BatchType.LOGGED, consistency_level=self.consistency)
        batch.add(
            self.statement(self.text.insert_run),
            [UNSET_VALUE if values[n] is None else values[n] for n in COLUMNS]
            + [original.events, self.ttl, int(time.time() * 1e6) - _CREATE_BACKDATE_US],
        )
        algorithm = values["algorithm"]
        for insert, key in original.lookups:
            batch.add(insert, (*key, algorithm, run_id, self.ttl))
        for scope in (algorithm, ALL_SCOPE):
            batch.add(
                self.statement(self.text.insert_time),
                (scope, hour_of(now), now, algorithm, run_id, values["lifecycle_stage"], self.ttl),
            )
        return batch

    async def accept_one(self, run_id: str) -> None:
        key = payload_key(self.prefix, self.algorithm, run_id)
        upload = asyncio.ensure_future(
            obstore.put_async(
                self.store,
                key,
                self.payload,
                use_multipart=len(self.payload) > self.buffer_config.multipart_threshold,
            )
        )
        try:
            await self.execute(self._copy_batch(self.new, run_id))
        finally:
            await upload

    async def prepare_one(self, run_id: str) -> None:
        await self.execute(self._copy_batch(self.running, run_id))

    async def complete_one(self, run_id: str) -> None:
        params = (
            self.ttl,
            LifecycleStage.COMPLETED.value,
            _ms(datetime.now(UTC)),
            RESULT_URI,
            [self.complete_event],
            self.algorithm,
            run_id,
            LifecycleStage.RUNNING.value,
        )
        rows = await self.execute(self.cas, params)
        if not rows[0]["[applied]"]:
            raise RuntimeError(f"run {run_id} was not RUNNING")


async def closed_loop(
    op: Callable[[str], Awaitable[None]],
    ids: list[str] | None,
    *,
    seconds: float,
    concurrency: int,
) -> dict[str, Any]:
    """``concurrency`` workers calling ``op`` back to back until ``seconds`` passed (or
    ``ids`` ran out): the bare counterpart of bench.load.closed_loop."""
    latencies: list[float] = []
    errors: list[str] = []
    taken = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal taken
        while time.perf_counter() < deadline:
            if ids is not None and taken >= len(ids):
                return
            run_id = ids[taken] if ids is not None else str(uuid.uuid4())
            taken += 1
            began = time.perf_counter()
            try:
                await op(run_id)
            except Exception as exc:  # noqa: BLE001 - counted and sampled in the answer
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def quantile(q: float) -> float:
        if not latencies:
            return math.nan
        return round(latencies[min(len(latencies) - 1, math.ceil(q * len(latencies)) - 1)] * 1e3, 2)

    return {
        "ok": len(latencies),
        "errors": len(errors),
        "error_sample": errors[:3],
        "seconds": round(elapsed, 3),
        "rate": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
    }


def _answer(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def main() -> None:
    ceiling = Ceiling()
    _answer({"ready": True, **ceiling.setup()})
    factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        for line in sys.stdin:
            command = msgspec.json.decode(line)
            seconds = float(command.get("seconds", 8.0))
            concurrency = int(command.get("concurrency", 64))
            if command["cmd"] == "accept":
                result = runner.run(
                    closed_loop(ceiling.accept_one, None, seconds=seconds, concurrency=concurrency)
                )
            elif command["cmd"] == "prepare":
                ids = [str(uuid.uuid4()) for _ in range(int(command["count"]))]
                result = runner.run(
                    closed_loop(ceiling.prepare_one, ids, seconds=600, concurrency=concurrency)
                )
                result["ids"] = ids
            elif command["cmd"] == "complete":
                result = runner.run(
                    closed_loop(
                        ceiling.complete_one,
                        list(command["ids"]),
                        seconds=seconds,
                        concurrency=concurrency,
                    )
                )
            else:
                result = {"error": f"unknown command {command['cmd']!r}"}
            _answer(result)
    ceiling.cluster.shutdown()


if __name__ == "__main__":
    main()
