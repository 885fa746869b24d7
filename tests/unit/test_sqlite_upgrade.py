"""A SQLite file written by an older nexus (before the webhook and creator columns) opens,
keeps its runs, and takes the new columns."""

from __future__ import annotations

import sqlite3

from nexus.backends.store.sqlite import SqliteRunStore
from nexus.core.models import CallbackState
from nexus.core.models import LifecycleStage as S

OLD_CHECKPOINTS = """
CREATE TABLE checkpoints (
    algorithm TEXT NOT NULL, id TEXT NOT NULL, lifecycle_stage TEXT NOT NULL,
    payload_uri TEXT, result_uri TEXT, algorithm_failure_cause TEXT,
    algorithm_failure_details TEXT, received_by_host TEXT, received_at TEXT, sent_at TEXT,
    applied_configuration TEXT, configuration_overrides TEXT, content_hash TEXT,
    last_modified TEXT, tag TEXT, api_version TEXT, job_uid TEXT, parent TEXT, cluster TEXT,
    payload_valid_for TEXT, parent_key TEXT,
    PRIMARY KEY (algorithm, id)
) WITHOUT ROWID;
INSERT INTO checkpoints (algorithm, id, lifecycle_stage, received_at, last_modified, tag,
    parent_key) VALUES ('algo', 'old-run', 'COMPLETED', '2026-01-01T00:00:00+00:00',
    '2026-01-01T00:00:00+00:00', 'kept', '');
"""


async def test_an_older_file_gets_the_new_columns_and_keeps_its_runs(tmp_path):
    path = tmp_path / "nexus.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_CHECKPOINTS)
    conn.close()
    store = SqliteRunStore(path)
    await store.open()
    try:
        old = await store.get("algo", "old-run")
        assert old is not None and old.tag == "kept" and old.lifecycle_stage is S.COMPLETED
        assert old.callback_url == "" and old.callback_state is None
        assert old.created_by == ""  # no creator recorded: served as its template's tenant
        assert [run.id for run in await store.pending_callbacks(10)] == []
        assert await store.update_callback("algo", "old-run", None, CallbackState()) is not None
    finally:
        await store.close()
