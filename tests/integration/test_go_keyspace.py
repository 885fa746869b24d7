"""The switch from the Go system: nexus opens a keyspace the Go system created and filled.

For each Go layout the schema comes from the Go repository's own CQL files
(``go_schema/``, vendored unchanged but for the keyspace name), and runs are written as
the Go store code writes them (:class:`GoStore` reproduces ``cassandra_models.go``,
``cassandra_store_bare.go`` and ``cassandra_store_indexed.go``: every JSON column as
``b64__`` + base64, unset times as gocql's empty value, the bare layout's lookup rows in
the same logged batch and never deleted). nexus then opens the keyspace with
``create-schema`` on, and the test checks that nothing was lost or changed, that every
read nexus serves finds the Go runs, that the recovery queries see the Go system's
in-flight runs, and that what nexus writes afterwards reads back through Go's read path.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from contract.servers import (
    cassandra_config,
    cassandra_settings_env,
    cql_session,
    drop_keyspace,
    unique,
)

from nexus.backends.store.cassandra import CassandraRunStore
from nexus.core.models import AlgorithmSpec, ParentRef, Run, SpecOverride, SubmissionEntry
from nexus.core.models import LifecycleStage as S
from nexus.core.ports import ClusterSnapshot, JobObservation, Outcome
from nexus.core.supervision import LOST_CAUSE, Supervision, SupervisionConfig

GO_SCHEMA = Path(__file__).parent / "go_schema"
GO_SPEC, GO_OVERRIDE, GO_PARENT = (
    line for line in (GO_SCHEMA / "go_json.txt").read_text().splitlines() if line[:1] != "#"
)
GO_COLUMNS = (
    "algorithm id lifecycle_stage payload_uri result_uri algorithm_failure_cause "
    "algorithm_failure_details received_by_host received_at sent_at applied_configuration "
    "configuration_overrides content_hash last_modified tag api_version job_uid parent"
).split()
TIMES = ("received_at", "sent_at", "last_modified")
PREFIX = "b64__"
GO_HOST = "go-scheduler-0"
PARENT = json.loads(GO_PARENT)  # the parent the Go JSON fixture names
BARE = ["checkpoints", "checkpoints_by_host", "checkpoints_by_tag"]
# test-resources/scylla-config/prepare-scylla.sh creates all of these for the Go tests.
PREPARE_SCYLLA = ["checkpoints_indexed", "submission_buffer", "checkpoints_by_host"]
PREPARE_SCYLLA += ["checkpoints_by_tag", "payload_buffer"]
LAYOUTS = {
    # name: (CQL files, Go store type, nexus's indexes-supported)
    "bare": ([*BARE, "submission_buffer", "payload_buffer"], "bare", False),
    "indexed": (PREPARE_SCYLLA, "indexed", True),
    "indexed-detected": (
        ["checkpoints_indexed", "submission_buffer", "payload_buffer"],
        "indexed",
        False,
    ),
}


def load_go_schema(session: Any, keyspace: str, files: list[str]) -> None:
    session.execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    for name in files:
        text = (GO_SCHEMA / f"{name}.cql").read_text()
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        for statement in re.split(r";\s*(?:\n|$)", text.replace("nexus.", f"{keyspace}.")):
            if statement.strip():
                session.execute(statement)


def ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def go_b64(json_text: str) -> str:
    return PREFIX + base64.b64encode(json_text.encode()).decode()


def go_time(value: datetime | None) -> bytes:
    """gocql's encoding of a time.Time: the zero time is an empty value, not a null."""
    if value is None:
        return b""
    return struct.pack(">q", int(value.timestamp() * 1000))


class GoStore:
    """The Go system's checkpoint store on this keyspace, statement for statement."""

    def __init__(self, session: Any, keyspace: str, kind: str) -> None:
        from cassandra.query import BatchStatement, BatchType

        self._session, self._ks, self._kind = session, keyspace, kind
        self._batch = lambda: BatchStatement(BatchType.LOGGED)
        marks = ", ".join("blobAsTimestamp(?)" if c in TIMES else "?" for c in GO_COLUMNS)
        self._insert = session.prepare(
            f"INSERT INTO {keyspace}.checkpoints ({', '.join(GO_COLUMNS)}) VALUES ({marks})"
        )
        self._get = session.prepare(
            f"SELECT {', '.join(GO_COLUMNS)} FROM {keyspace}.checkpoints "
            "WHERE algorithm = ? AND id = ?"
        )
        if kind == "bare":
            self._by_host = session.prepare(
                f"INSERT INTO {keyspace}.checkpoints_by_host (host, lifecycle_stage, algorithm, "
                "id) VALUES (?, ?, ?, ?)"
            )
            self._by_tag = session.prepare(
                f"INSERT INTO {keyspace}.checkpoints_by_tag (tag, algorithm, id) VALUES (?, ?, ?)"
            )

    def upsert_checkpoint(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        """UpsertCheckpoint: LastModified = now, then ToCassandraModel and the insert."""
        checkpoint["last_modified"] = ms(datetime.now(UTC))
        model = dict(checkpoint)
        model["applied_configuration"] = go_b64(checkpoint["applied_configuration"] or "null")
        model["configuration_overrides"] = go_b64(checkpoint["configuration_overrides"] or "{}")
        model["parent"] = go_b64(checkpoint["parent"] or "{}")
        values = [go_time(model[c]) if c in TIMES else model[c] for c in GO_COLUMNS]
        if self._kind == "indexed":
            self._session.execute(self._insert, values)
            return checkpoint
        batch = self._batch()
        batch.add(self._insert, values)
        batch.add(
            self._by_host,
            (model["received_by_host"], model["lifecycle_stage"], model["algorithm"], model["id"]),
        )
        batch.add(self._by_tag, (model["tag"], model["algorithm"], model["id"]))
        self._session.execute(batch)
        return checkpoint

    def upsert_metadata(self, algorithm: str, run_id: str, cluster: str, template: dict) -> None:
        self._session.execute(
            f"INSERT INTO {self._ks}.submission_buffer (algorithm, id, cluster, template) "
            "VALUES (%s, %s, %s, %s)",
            (algorithm, run_id, cluster, json.dumps(template)),
        )

    def read_checkpoint(self, algorithm: str, run_id: str) -> dict[str, Any] | None:
        """ReadCheckpoint + FromCassandraModel: the spec columns are base64 after the
        prefix is trimmed (only `{}` and empty pass as they are); the parent may be plain."""
        rows = list(self._session.execute(self._get, (algorithm, run_id)))
        if not rows:
            return None
        row = dict(rows[0])
        for name in ("applied_configuration", "configuration_overrides"):
            text = row[name]
            if text in ("{}", "", None):
                row[name] = None
                continue
            raw = base64.b64decode(text.removeprefix(PREFIX), validate=True)
            row[name] = None if raw in (b"{}", b"") else json.loads(raw)
        parent = row["parent"]
        if parent in ("", "{}", None):
            row["parent"] = None
        elif parent.startswith(PREFIX):
            raw = base64.b64decode(parent.removeprefix(PREFIX), validate=True)
            row["parent"] = None if raw in (b"{}", b"") else json.loads(raw)
        else:
            row["parent"] = json.loads(parent)
        return row

    def ids_by_tag(self, tag: str) -> set[str]:
        if self._kind == "bare":
            query = f"SELECT id FROM {self._ks}.checkpoints_by_tag WHERE tag = %s"
        else:
            query = f"SELECT id FROM {self._ks}.checkpoints WHERE tag = %s"
        return {row["id"] for row in self._session.execute(query, (tag,))}

    def ids_by_host(self, host: str, stage: S) -> set[str]:
        if self._kind == "bare":
            query = (
                f"SELECT id FROM {self._ks}.checkpoints_by_host "
                "WHERE host = %s AND lifecycle_stage = %s"
            )
        else:
            query = (
                f"SELECT id FROM {self._ks}.checkpoints WHERE received_by_host = %s "
                "AND lifecycle_stage = %s ALLOW FILTERING"
            )
        return {row["id"] for row in self._session.execute(query, (host, stage.value))}


FINAL = {
    S.COMPLETED: {"result_uri": "s3://results/ok"},
    S.FAILED: {"algorithm_failure_cause": "error", "algorithm_failure_details": "exit 2"},
    S.SCHEDULING_FAILED: {"algorithm_failure_cause": "scheduling failed"},
    S.DEADLINE_EXCEEDED: {"algorithm_failure_cause": "deadline exceeded"},
    S.CANCELLED: {"algorithm_failure_cause": "cancelled", "algorithm_failure_details": "by me"},
}


def go_run(go: GoStore, stage: S, **fields: Any) -> dict[str, Any]:
    """A run taken to ``stage`` the way the Go scheduler and receiver take it."""
    received = ms(datetime.now(UTC))
    checkpoint: dict[str, Any] = {
        "algorithm": "go-algorithm",
        "id": str(uuid.uuid4()),
        "lifecycle_stage": S.NEW.value,
        "payload_uri": "s3a://payloads/go",
        "result_uri": "",
        "algorithm_failure_cause": "",
        "algorithm_failure_details": "",
        "received_by_host": GO_HOST,
        "received_at": received,
        "sent_at": None,
        "applied_configuration": GO_SPEC,
        "configuration_overrides": None,
        "content_hash": "hash-" + stage.value,
        "tag": f"go-{stage.value.lower()}-{uuid.uuid4().hex[:6]}",
        "api_version": "1.2",
        "job_uid": "",
        "parent": None,
        **fields,
    }
    go.upsert_checkpoint(checkpoint)
    if stage is S.NEW:
        return checkpoint
    go.upsert_metadata(checkpoint["algorithm"], checkpoint["id"], "shard-a", {"kind": "Job"})
    checkpoint["lifecycle_stage"] = S.BUFFERED.value
    go.upsert_checkpoint(checkpoint)
    if stage in (S.BUFFERED, S.SCHEDULING_FAILED):
        checkpoint["lifecycle_stage"] = stage.value
        checkpoint.update(FINAL.get(stage, {}))
        return go.upsert_checkpoint(checkpoint) if stage is not S.BUFFERED else checkpoint
    checkpoint.update(lifecycle_stage=S.RUNNING.value, job_uid=str(uuid.uuid4()))
    checkpoint["sent_at"] = ms(datetime.now(UTC))
    go.upsert_checkpoint(checkpoint)
    if stage is not S.RUNNING:
        checkpoint.update(lifecycle_stage=stage.value, **FINAL[stage])
        go.upsert_checkpoint(checkpoint)
    return checkpoint


def expected_run(checkpoint: dict[str, Any]) -> Run:
    """The Run nexus must read back for a checkpoint the Go store wrote."""
    fields = dict(checkpoint)
    spec, override, parent = (
        fields.pop(name) for name in ("applied_configuration", "configuration_overrides", "parent")
    )
    stage = S(fields.pop("lifecycle_stage"))
    return Run(
        **fields,
        lifecycle_stage=stage,
        applied_configuration=msgspec.json.decode(spec, type=AlgorithmSpec) if spec else None,
        configuration_overrides=(
            msgspec.json.decode(override, type=SpecOverride) if override else None
        ),
        parent=msgspec.json.decode(parent, type=ParentRef) if parent else None,
    )


def table_rows(session: Any, keyspace: str, table: str) -> list[dict[str, Any]]:
    return sorted(
        (dict(row) for row in session.execute(f"SELECT * FROM {keyspace}.{table}")),
        key=lambda row: sorted((k, str(v)) for k, v in row.items()),
    )


def go_rows(session: Any, keyspace: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table the Go system made, in its own columns."""
    tables = [
        row["table_name"]
        for row in session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
        )
    ]
    rows = {table: table_rows(session, keyspace, table) for table in tables}
    rows["checkpoints"] = [
        {k: v for k, v in row.items() if k in GO_COLUMNS} for row in rows["checkpoints"]
    ]
    return rows


@pytest.fixture
def go_keyspace():
    name = unique("nexus_go_")
    yield name
    drop_keyspace(name)


@pytest.mark.cassandra
@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_nexus_takes_over_a_go_keyspace(layout, go_keyspace):
    files, kind, indexes_supported = LAYOUTS[layout]
    with cql_session() as session:
        load_go_schema(session, go_keyspace, files)
        go = GoStore(session, go_keyspace, kind)
        runs = {stage: go_run(go, stage) for stage in S}
        parent = go_run(go, S.RUNNING, algorithm=PARENT["algorithmName"], id=PARENT["requestId"])
        child = go_run(go, S.RUNNING, parent=GO_PARENT, configuration_overrides=GO_OVERRIDE)
        before = go_rows(session, go_keyspace)

        store = CassandraRunStore(
            cassandra_config(go_keyspace, indexes_supported=indexes_supported)
        )
        await store.open()
        try:
            await check_go_runs_read_back(store, session, go_keyspace, runs, parent, child)
            after = go_rows(session, go_keyspace)
            assert {t: after[t] for t in before} == before  # nothing lost, nothing changed
            await check_nexus_runs_read_by_go(store, go, runs, parent, child)
        finally:
            await store.close()

        # A restart finds the same layout and adopts nothing twice.
        again = CassandraRunStore(
            cassandra_config(go_keyspace, indexes_supported=indexes_supported)
        )
        await again.open()
        try:
            assert await again.get("go-algorithm", runs[S.NEW]["id"]) == expected_run(runs[S.NEW])
        finally:
            await again.close()


async def check_go_runs_read_back(store, session, keyspace, runs, parent, child) -> None:
    columns = {
        row["column_name"]
        for row in session.execute(
            "SELECT column_name FROM system_schema.columns "
            "WHERE keyspace_name = %s AND table_name = 'checkpoints'",
            (keyspace,),
        )
    }
    assert {"cluster", "payload_valid_for"} <= columns
    everyone = [*runs.values(), parent, child]
    for checkpoint in everyone:  # by id, every field as the Go system wrote it
        run = await store.get(checkpoint["algorithm"], checkpoint["id"])
        assert run == expected_run(checkpoint)
        assert await store.by_tag(checkpoint["tag"]) == [run]
    assert runs[S.NEW]["sent_at"] is None and runs[S.RUNNING]["sent_at"] is not None
    assert (await store.get("go-algorithm", child["id"])).parent == ParentRef(
        PARENT["requestId"], PARENT["algorithmName"]
    )
    assert await store.children(ParentRef(PARENT["requestId"], PARENT["algorithmName"])) == [
        expected_run(child)
    ]
    # The Go system's own fixture rows (plain `{}` JSON columns) read as well.
    fixture = await store.get("test-algorithm", "8a0c8aa9-fc9d-4b2e-9c5c-2c8d7f1e7a3f")
    assert fixture is not None and fixture.lifecycle_stage is S.RUNNING
    assert fixture.applied_configuration is None and fixture.parent is None
    assert [run.id for run in await store.by_tag("running_tag")] == [fixture.id]

    # What the supervisor and recovery ask: the Go scheduler's unfinished runs, by stage,
    # under a lease that has already expired, so recovery takes them over.
    def ids(found: list[Run]) -> set[str]:
        return {run.id for run in found}

    assert ids(await store.by_host_stage(GO_HOST, S.NEW)) == {runs[S.NEW]["id"]}
    assert ids(await store.by_host_stage(GO_HOST, S.BUFFERED)) == {runs[S.BUFFERED]["id"]}
    assert ids(await store.by_host_stage(GO_HOST, S.RUNNING)) == {
        runs[S.RUNNING]["id"],
        parent["id"],
        child["id"],
    }
    assert {GO_HOST, "host123", "host789"} <= set(await store.expired_hosts())
    entry = await store.get_submission("go-algorithm", runs[S.BUFFERED]["id"])
    assert entry is not None and (entry.cluster, entry.template) == ("shard-a", {"kind": "Job"})


async def check_nexus_runs_read_by_go(store, go: GoStore, runs, parent, child) -> None:
    # In-flight Go runs go on to their end through nexus: launched, then completed.
    buffered, running = runs[S.BUFFERED]["id"], runs[S.RUNNING]["id"]
    now = ms(datetime.now(UTC))
    await store.transition("go-algorithm", buffered, S.RUNNING, job_uid="job-1", sent_at=now)
    await store.transition("go-algorithm", running, S.COMPLETED, result_uri="s3://done")
    assert go.read_checkpoint("go-algorithm", running)["lifecycle_stage"] == "COMPLETED"
    assert buffered in go.ids_by_host(GO_HOST, S.RUNNING)
    assert (await store.get("go-algorithm", buffered)).applied_configuration == (
        expected_run(runs[S.BUFFERED]).applied_configuration
    )

    # A run nexus accepts now, read by a Go receiver or supervisor still running.
    spec = msgspec.json.decode(GO_SPEC, type=AlgorithmSpec)
    override = msgspec.json.decode(GO_OVERRIDE, type=SpecOverride)
    run = Run(
        algorithm="go-algorithm",
        id=str(uuid.uuid4()),
        lifecycle_stage=S.NEW,
        received_by_host="nexus-scheduler-0",
        received_at=now,
        last_modified=now,
        applied_configuration=spec,
        configuration_overrides=override,
        tag="nexus-" + uuid.uuid4().hex[:6],
        parent=ParentRef(parent["id"], parent["algorithm"]),
        payload_uri="s3a://payloads/nexus",
    )
    await store.create(run, None)
    await store.buffer(
        SubmissionEntry(
            algorithm="go-algorithm", id=run.id, cluster="shard-b", template={"kind": "Job"}
        )
    )
    await store.transition("go-algorithm", run.id, S.RUNNING, job_uid="job-2", sent_at=now)
    seen = go.read_checkpoint("go-algorithm", run.id)
    assert seen is not None
    assert seen["lifecycle_stage"] == "RUNNING" and seen["job_uid"] == "job-2"
    assert seen["applied_configuration"] == json.loads(msgspec.json.encode(spec))
    assert seen["configuration_overrides"] == json.loads(msgspec.json.encode(override))
    assert seen["parent"] == {"requestId": parent["id"], "algorithmName": parent["algorithm"]}
    assert seen["applied_configuration"]["container"]["image"] == "word-stats"
    assert go.ids_by_tag(run.tag) == {run.id}
    assert run.id in go.ids_by_host("nexus-scheduler-0", S.RUNNING)
    assert run.id not in go.ids_by_host("nexus-scheduler-0", S.NEW)  # its old row went
    assert {r.id for r in await store.children(run.parent)} == {run.id, child["id"]}


API = "/algorithm/v1"


@pytest.mark.cassandra
def test_go_runs_through_every_route(nexus_factory, go_keyspace):
    """Runs a Go scheduler still writes after nexus took the keyspace over, through nexus's
    HTTP API, and what nexus changes seen by the Go reader."""
    with cql_session() as session:
        load_go_schema(session, go_keyspace, LAYOUTS["bare"][0])
        nexus = nexus_factory(env=cassandra_settings_env(go_keyspace))
        go = GoStore(session, go_keyspace, "bare")
        runs = {stage: go_run(go, stage) for stage in (S.BUFFERED, S.RUNNING, S.COMPLETED)}
        runs[S.FAILED] = go_run(go, S.FAILED, tag=runs[S.COMPLETED]["tag"])
        child = go_run(go, S.RUNNING, parent=GO_PARENT, configuration_overrides=GO_OVERRIDE)
        with httpx.Client(base_url=nexus.url, timeout=30) as http:
            check_scheduler_routes(http, go, runs, child)
            running = runs[S.RUNNING]["id"]
            done = http.post(
                f"{API}/complete/go-algorithm/requests/{running}", json={"resultUri": "s3://r"}
            )
            assert done.status_code == 202, done.text
            check = http.get(f"{API}/check/go-algorithm/requests/{running}")
            assert check.json() == {"is_processed": True}
        seen = go.read_checkpoint("go-algorithm", running)
        assert (seen["lifecycle_stage"], seen["result_uri"]) == ("COMPLETED", "s3://r")


def check_scheduler_routes(http: httpx.Client, go: GoStore, runs, child) -> None:
    def path(route: str, checkpoint: dict) -> str:
        return f"{API}/{route}/{checkpoint['algorithm']}/requests/{checkpoint['id']}"

    completed = http.get(path("results", runs[S.COMPLETED])).json()
    assert (completed["requestId"], completed["status"]) == (runs[S.COMPLETED]["id"], "COMPLETED")
    failed = http.get(path("results", runs[S.FAILED])).json()
    assert (failed["status"], failed["runErrorMessage"]) == ("FAILED", "error")
    tagged = http.get(f"{API}/results/tags/{runs[S.COMPLETED]['tag']}").json()
    assert {item["requestId"] for item in tagged} == {
        runs[S.COMPLETED]["id"],
        runs[S.FAILED]["id"],
    }
    metadata = http.get(path("metadata", child)).json()
    assert metadata["applied_configuration"]["container"]["image"] == "word-stats"
    assert metadata["configuration_overrides"]["container"]["versionTag"] == "1.2.4"
    assert metadata["parent"] == PARENT
    assert metadata["lifecycle_stage"] == "RUNNING"
    manifest = http.get(path("buffer", runs[S.BUFFERED]))
    assert manifest.status_code == 200 and json.loads(manifest.text) == {"kind": "Job"}

    tag = "retagged-" + uuid.uuid4().hex[:6]
    retag = http.post(path("metadata/tags", runs[S.COMPLETED]), json={"newTag": tag})
    assert retag.status_code == 200, retag.text
    assert go.ids_by_tag(tag) == {runs[S.COMPLETED]["id"]}
    cancel = http.post(
        path("cancel", runs[S.BUFFERED]),
        json={"reason": "switch", "initiator": "test", "cancellationPolicy": "Background"},
    )
    assert cancel.status_code == 200, cancel.text
    assert go.read_checkpoint("go-algorithm", runs[S.BUFFERED]["id"])["lifecycle_stage"] == (
        "CANCELLED"
    )


class Watcher:
    """The clusters as the supervisor sees them: one Go Job, past its deadline."""

    def __init__(self, *observations: JobObservation) -> None:
        self.observations = list(observations)
        self.deleted: list[tuple[str, str]] = []

    async def snapshot(self) -> ClusterSnapshot:
        return ClusterSnapshot(observations=self.observations)

    async def delete_job(self, cluster: str, run_id: str) -> None:
        self.deleted.append((cluster, run_id))


class Payloads:
    async def exists(self, algorithm: str, run_id: str) -> bool:
        return True


@pytest.mark.cassandra
async def test_go_in_flight_runs_are_supervised_to_their_end(go_keyspace):
    """nexus's supervisor on a Go keyspace: a Go run whose Job ran out of time ends
    DEADLINE_EXCEEDED, one whose Job is gone ends FAILED, and the Go reader sees both."""
    with cql_session() as session:
        load_go_schema(session, go_keyspace, LAYOUTS["bare"][0])
        go = GoStore(session, go_keyspace, "bare")
        late, gone = go_run(go, S.RUNNING), go_run(go, S.RUNNING)
        # Launched an hour ago: a Job missing for longer than the grace (success_grace,
        # counted from sent_at) is lost. Launched just now, the run would still be within
        # the grace when reconcile runs on a fast machine (CI saw it stay RUNNING).
        go.upsert_checkpoint({**gone, "sent_at": ms(datetime.now(UTC) - timedelta(hours=1))})
        store = CassandraRunStore(cassandra_config(go_keyspace))
        await store.open()
        try:
            observed = JobObservation(
                algorithm=late["algorithm"],
                run_id=late["id"],
                cluster="shard-a",
                outcome=Outcome.DEADLINE_EXCEEDED,
                since=datetime.now(UTC),
                message="Job was active longer than specified deadline",
            )
            config = SupervisionConfig(
                success_grace=1.0,
                backoff_grace=1.0,
                host="nexus-supervisor-0",
                reconcile_interval=1.0,
                lease_ttl=10.0,
            )
            since = datetime.now(UTC) - timedelta(hours=1)  # past the grace of a lost Job
            supervisor = Supervision(
                store, Payloads(), Watcher(observed), None, config, observing_since=since
            )
            await supervisor.reconcile()
        finally:
            await store.close()
        assert go.read_checkpoint("go-algorithm", late["id"])["lifecycle_stage"] == (
            "DEADLINE_EXCEEDED"
        )
        lost = go.read_checkpoint("go-algorithm", gone["id"])
        assert (lost["lifecycle_stage"], lost["algorithm_failure_cause"]) == ("FAILED", LOST_CAUSE)
