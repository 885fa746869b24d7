"""nexus on its production backends: a real Cassandra 5 and a real S3 (SeaweedFS).

The end-to-end runs start ``nexus --role all`` configured only through ``NEXUS__...``
environment variables, exactly as a deployment would be. The store and buffer checks
below them cover what the contract suites cannot see from outside: the schema, the TTLs,
stale lookup rows, abandoned idempotency keys and multipart uploads.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import httpx
import obstore
import pytest
from contract.servers import (
    REPO,
    cassandra_config,
    cassandra_settings_env,
    cql_session,
    delete_prefix,
    drop_keyspace,
    require,
    s3_config,
    s3_settings_env,
    unique,
)

from nexus.backends.buffer.s3 import s3_buffer
from nexus.backends.store.cassandra import CassandraRunStore
from nexus.backends.store.cassandra_schema import hour_of
from nexus.backends.store.rows import COLUMNS
from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run, SubmissionEntry

API = "/algorithm/v1"
EXAMPLE_TEMPLATES = REPO / "examples" / "templates"


@pytest.fixture(scope="module")
def keyspace():
    name = unique("nexus_it_")
    yield name
    drop_keyspace(name)


@pytest.fixture(scope="module")
def prefix():
    name = unique("nexus-it-")
    yield name
    delete_prefix(name)


def wait_finished(http: httpx.Client, algorithm: str, run_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"{API}/results/{algorithm}/requests/{run_id}", params={"wait": 10})
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] not in ("NEW", "BUFFERED", "RUNNING") or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


# --- end to end ------------------------------------------------------------------------


@pytest.mark.cassandra
@pytest.mark.s3
def test_word_stats_completes_on_cassandra_and_s3(nexus_factory, keyspace, prefix, tmp_path):
    env = {
        **cassandra_settings_env(keyspace),
        **s3_settings_env(prefix),
        "NEXUS__TEMPLATES_PATH": str(EXAMPLE_TEMPLATES),
    }
    nexus = nexus_factory(env=env)
    with httpx.Client(base_url=nexus.url, timeout=30) as http:
        response = http.post(
            f"{API}/run/word-stats",
            json={
                "algorithmParameters": {"text": "the cat saw the other cat", "top": 2},
                "tag": f"it-{uuid.uuid4()}",
            },
        )
        assert response.status_code == 202, response.text
        run_id = response.json()["requestId"]
        result = wait_finished(http, "word-stats", run_id)
        assert result["status"] == "COMPLETED", (result, nexus.log())
        # The result URL is a presigned S3 URL: any plain HTTP client can fetch it.
        assert result["resultUri"].startswith(env["NEXUS__S3_BUFFER__ENDPOINT"])
        assert httpx.get(result["resultUri"]).json() == {
            "words": 6,
            "distinct": 4,
            "top": [["the", 2], ["cat", 2]],
        }
        payload = http.get(f"{API}/payload/word-stats/requests/{run_id}")
        assert payload.status_code == 302
        assert httpx.get(payload.headers["location"]).json()["text"].startswith("the cat")
        metadata = http.get(f"{API}/metadata/word-stats/requests/{run_id}").json()
        assert metadata["lifecycle_stage"] == "COMPLETED" and metadata["id"] == run_id

    # The record is in Cassandra, not in the process: a fresh process (new data folder)
    # on the same keyspace serves it, and the submission entry kept its cluster.
    nexus.stop()
    again = nexus_factory(env=env, data_dir=tmp_path / "second")
    with httpx.Client(base_url=again.url, timeout=30) as http:
        assert http.get(f"{API}/results/word-stats/requests/{run_id}").json() == result
    with cql_session(keyspace) as session:
        row = session.execute(
            "SELECT cluster FROM submission_buffer WHERE algorithm = %s AND id = %s",
            ("word-stats", run_id),
        ).one()
    assert row == {"cluster": "local"}


@pytest.mark.cassandra
@pytest.mark.s3
def test_failures_cancels_and_tags_on_cassandra_and_s3(nexus_factory, keyspace, prefix):
    env = {**cassandra_settings_env(keyspace), **s3_settings_env(prefix)}
    nexus = nexus_factory(env=env)  # the test algorithm "behave" (tests/e2e/templates)
    tag = f"it-{uuid.uuid4()}"
    with httpx.Client(base_url=nexus.url, timeout=30) as http:

        def start(parameters: dict) -> str:
            response = http.post(
                f"{API}/run/behave", json={"algorithmParameters": parameters, "tag": tag}
            )
            assert response.status_code == 202, response.text
            return response.json()["requestId"]

        failing, sleeping = start({"error": "bad input"}), start({"sleep": 30})
        failed = wait_finished(http, "behave", failing)
        assert (failed["status"], failed["runErrorMessage"]) == ("FAILED", "bad input")
        cancel = http.post(
            f"{API}/cancel/behave/requests/{sleeping}",
            json={"reason": "test", "initiator": "it", "cancellationPolicy": "Background"},
        )
        assert cancel.status_code == 200, cancel.text
        assert wait_finished(http, "behave", sleeping)["status"] == "CANCELLED"
        tagged = http.get(f"{API}/results/tags/{tag}").json()
        assert sorted(item["requestId"] for item in tagged) == sorted([failing, sleeping])
        key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
        first = http.post(f"{API}/run/behave", json={"algorithmParameters": {}}, headers=key)
        second = http.post(f"{API}/run/behave", json={"algorithmParameters": {}}, headers=key)
        assert first.status_code == second.status_code == 202
        assert first.json() == second.json()
        assert wait_finished(http, "behave", first.json()["requestId"])["status"] == "COMPLETED"


# --- the Cassandra store, from behind --------------------------------------------------


def make_run(**fields) -> Run:
    now = datetime.now(UTC).replace(microsecond=0)
    values = dict(
        algorithm="it-algorithm",
        id=str(uuid.uuid4()),
        lifecycle_stage=S.NEW,
        received_by_host=f"host-{uuid.uuid4()}",
        received_at=now,
        last_modified=now,
    )
    values.update(fields)
    return Run(**values)


@pytest.fixture
async def store(keyspace):
    store = CassandraRunStore(cassandra_config(keyspace))
    await store.open()
    yield store
    await store.close()


@pytest.mark.cassandra
async def test_schema_has_the_spec_columns(store, keyspace):
    with cql_session() as session:
        rows = session.execute(
            "SELECT table_name, column_name FROM system_schema.columns WHERE keyspace_name = %s",
            (keyspace,),
        ).all()
        replication = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
        ).one()["replication"]
    columns: dict[str, set[str]] = {}
    for row in rows:
        columns.setdefault(row["table_name"], set()).add(row["column_name"])
    assert columns["checkpoints"] == set(COLUMNS) | {"events"}  # the run's history
    assert columns["submission_buffer"] == {"algorithm", "id", "cluster", "template"}
    assert {
        "checkpoints_by_tag",
        "checkpoints_by_host",
        "checkpoints_by_parent",
        "idempotency_keys",
        "leases",
        "runs_by_time",
        "run_hours",
    } <= set(columns)
    assert replication["replication_factor"] == "1"


@pytest.mark.cassandra
async def test_stale_lookup_rows_are_filtered_out(store, keyspace):
    run = make_run(tag="fresh")
    await store.create(run, None)
    await store.transition(run.algorithm, run.id, S.BUFFERED)
    with cql_session(keyspace) as session:  # what a crash between two writes leaves behind
        session.execute(
            "INSERT INTO checkpoints_by_host (host, lifecycle_stage, algorithm, id) "
            "VALUES (%s, 'NEW', %s, %s)",
            (run.received_by_host, run.algorithm, run.id),
        )
        session.execute(
            "INSERT INTO checkpoints_by_tag (tag, algorithm, id) VALUES ('stale', %s, %s)",
            (run.algorithm, run.id),
        )
    assert await store.by_host_stage(run.received_by_host, S.NEW) == []
    assert [r.id for r in await store.by_host_stage(run.received_by_host, S.BUFFERED)] == [run.id]
    assert await store.by_tag("stale") == []


@pytest.mark.cassandra
async def test_abandoned_idempotency_key_is_taken_over(store, keyspace):
    old, recent = f"key-{uuid.uuid4()}", f"key-{uuid.uuid4()}"
    ghost = str(uuid.uuid4())  # a run whose create crashed after claiming its key
    an_hour_ago = int((time.time() - 3600) * 1e6)
    with cql_session(keyspace) as session:
        session.execute(
            "INSERT INTO idempotency_keys (algorithm, key, id) VALUES (%s, %s, %s) "
            f"USING TIMESTAMP {an_hour_ago}",
            ("it-algorithm", old, ghost),
        )
        session.execute(
            "INSERT INTO idempotency_keys (algorithm, key, id) VALUES (%s, %s, %s)",
            ("it-algorithm", recent, ghost),
        )
    assert await store.find_idempotent("it-algorithm", old) is None
    run = make_run()
    assert await store.create(run, None, old) == run.id
    assert await store.find_idempotent("it-algorithm", old) == run.id
    # A recent claim may still be writing its run: it keeps the key.
    assert await store.create(make_run(), None, recent) == ghost


@pytest.mark.cassandra
async def test_checkpoint_ttl_expires_the_whole_record_at_once(keyspace):
    store = CassandraRunStore(cassandra_config(keyspace, checkpoint_ttl=3.0, submission_ttl=3.0))
    await store.open()
    try:
        run = make_run(received_at=datetime.now(UTC), tag=f"ttl-{uuid.uuid4()}")
        entry = SubmissionEntry(algorithm=run.algorithm, id=run.id, cluster="c", template={})
        await store.create(run, entry, f"key-{run.id}")
        await asyncio.sleep(1.2)
        await store.transition(run.algorithm, run.id, S.BUFFERED, job_uid="late-write")
        await store.update_tag(run.algorithm, run.id, run.tag)
        assert (await store.get(run.algorithm, run.id)).job_uid == "late-write"
        await asyncio.sleep(2.5)  # 3.7s after creation, 2.5s after the last writes
        assert await store.get(run.algorithm, run.id) is None
        assert await store.get_submission(run.algorithm, run.id) is None
        assert await store.find_idempotent(run.algorithm, f"key-{run.id}") is None
        assert await store.history(run.algorithm, run.id) is None
        with cql_session(keyspace) as session:
            left = session.execute(
                "SELECT id FROM checkpoints_by_host WHERE host = %s AND "
                "lifecycle_stage = 'BUFFERED'",
                (run.received_by_host,),
            ).all()
            # The listing's rows, whose stage the change wrote again, expire with the run.
            listed = [
                session.execute(
                    "SELECT id, stage FROM runs_by_time WHERE scope = %s AND hour = %s "
                    "AND received_at = %s",
                    (scope, hour_of(run.received_at), run.received_at),
                ).all()
                for scope in (run.algorithm, "*")
            ]
        assert left == [] and listed == [[], []]
    finally:
        await store.close()


@pytest.mark.cassandra
@pytest.mark.parametrize("user, password", [("cassandra", "wrong-password"), ("", "")])
async def test_a_refused_login_is_a_clear_backend_error(keyspace, user, password):
    """The test Cassandra checks logins (PasswordAuthenticator): the right credentials are
    what every other test uses; wrong or missing ones are refused, and the error says so
    in one line instead of a retry storm."""
    store = CassandraRunStore(
        cassandra_config(keyspace, user=user, password=password, connect_timeout=3.0)
    )
    with pytest.raises(Exception) as error:
        await asyncio.wait_for(store.open(), 60)
    assert error.type.__name__ == "BackendUnavailable"
    text = str(error.value)
    assert "\n" not in text and "127.0.0.1" in text
    assert "scylla-cql-store.password" in text and "Authentication" in text, text


@pytest.mark.cassandra
async def test_local_dc_places_the_keyspace_and_routes_to_that_dc():
    """``local-dc`` names the test node's data center (``datacenter1``): the keyspace nexus
    creates is NetworkTopologyStrategy in that DC, and the store works through the
    DC-aware policy."""
    keyspace = unique("nexus_dc_")
    store = CassandraRunStore(cassandra_config(keyspace, local_dc="datacenter1"))
    try:
        await store.open()
        run = make_run()
        await store.create(run, None)
        assert (await store.get(run.algorithm, run.id)).id == run.id
        with cql_session() as session:
            replication = session.execute(
                "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                (keyspace,),
            ).one()
        assert replication["replication"] == {
            "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
            "datacenter1": "1",
        }
    finally:
        await store.close()
        drop_keyspace(keyspace)


@pytest.mark.cassandra
async def test_tls_to_cassandra_with_the_servers_ca(keyspace):
    """The test Cassandra also speaks TLS on its CQL port (scripts/testenv): a store with
    ``tls`` and the server's certificate as ``tls-ca-path`` works over an encrypted
    connection, as the server itself reports (system_views.clients)."""
    ca = require("cassandra", ("NEXUS_TEST_CASSANDRA_TLS_CA",))["NEXUS_TEST_CASSANDRA_TLS_CA"]
    store = CassandraRunStore(cassandra_config(keyspace, tls=True, tls_ca_path=ca))
    await store.open()
    try:
        run = make_run()
        await store.create(run, None)
        assert (await store.get(run.algorithm, run.id)).id == run.id
        with cql_session() as session:  # a plain connection, looking at everyone's
            clients = session.execute(
                "SELECT ssl_enabled, ssl_protocol FROM system_views.clients"
            ).all()
        encrypted = [c for c in clients if c["ssl_enabled"]]
        assert encrypted and all(c["ssl_protocol"].startswith("TLS") for c in encrypted), clients
    finally:
        await store.close()


@pytest.mark.cassandra
async def test_tls_to_cassandra_refuses_a_certificate_it_cannot_verify(keyspace):
    """Without the server's CA (the system CAs only) its self-signed certificate is not
    trusted: the store does not open, with a one-line error."""
    require("cassandra", ("NEXUS_TEST_CASSANDRA_TLS_CA",))
    store = CassandraRunStore(
        cassandra_config(keyspace, tls=True, tls_ca_path="", connect_timeout=3.0)
    )
    with pytest.raises(Exception) as error:
        await asyncio.wait_for(store.open(), 60)
    assert error.type.__name__ == "BackendUnavailable"
    assert "\n" not in str(error.value) and "CERTIFICATE_VERIFY_FAILED" in str(error.value)


@pytest.mark.cassandra
def test_nexus_with_wrong_cassandra_password_stops_at_start_up(nexus_factory, keyspace, prefix):
    env = {
        **cassandra_settings_env(keyspace),
        **s3_settings_env(prefix),
        "NEXUS__SCYLLA_CQL_STORE__PASSWORD": "wrong-password",
    }
    with pytest.raises(RuntimeError, match="nexus exited") as error:
        nexus_factory(env=env)
    assert "scylla-cql-store.password" in str(error.value), str(error.value)


# --- the S3 buffer, from behind --------------------------------------------------------


@pytest.mark.s3
async def test_s3_layout_and_multipart_upload(prefix):
    buffer = s3_buffer(s3_config(prefix))
    await buffer.open()
    run_id, small_id = str(uuid.uuid4()), str(uuid.uuid4())
    await buffer.put("it-algorithm", run_id, b"x" * (12 * 1024 * 1024))
    await buffer.put("it-algorithm", small_id, b"{}")
    store = buffer.object_store
    large = await obstore.head_async(store, f"{prefix}/algorithm=it-algorithm/{run_id}")
    small = await obstore.head_async(store, f"{prefix}/algorithm=it-algorithm/{small_id}")
    # An S3 multipart ETag is "<md5 of the part md5s>-<number of parts>".
    assert large["size"] == 12 * 1024 * 1024 and large["e_tag"].strip('"').endswith("-3")
    assert "-" not in small["e_tag"]
    await buffer.close()


@pytest.mark.s3
async def test_s3_ping_names_a_missing_bucket(prefix):
    config = s3_config(prefix)
    config.payload_storage_path = f"s3a://no-such-bucket-{uuid.uuid4().hex[:8]}/x"
    with pytest.raises(Exception, match="no-such-bucket") as error:
        await s3_buffer(config).open()
    assert error.type.__name__ == "BackendUnavailable"
    assert "\n" not in str(error.value)
