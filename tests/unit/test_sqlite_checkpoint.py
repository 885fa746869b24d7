"""The embedded store checkpoints its WAL on its own thread, never inside a commit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from nexus.backends.store.sqlite import SqliteRunStore
from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run


async def fill(store: SqliteRunStore, runs: int) -> None:
    now = datetime.now(UTC)
    await asyncio.gather(
        *(
            store.create(
                Run(
                    algorithm="algo",
                    id=str(uuid.uuid4()),
                    lifecycle_stage=S.NEW,
                    received_at=now,
                    payload_uri="x" * 500,
                ),
                None,
            )
            for _ in range(runs)
        )
    )


async def test_commits_leave_the_wal_to_the_checkpointer(tmp_path):
    """With the checkpointer parked, commits alone never copy the WAL into the file
    (SQLite's default would, every 1,000 pages); once it runs, the pages get there."""
    path = tmp_path / "runs.db"
    store = SqliteRunStore(path, checkpoint_interval=3600)
    await store.open()
    try:
        empty = path.stat().st_size
        for _ in range(30):  # 30 group commits, well past 1,000 WAL pages in all
            await fill(store, 100)
        assert path.with_name("runs.db-wal").stat().st_size > 1000 * 4096
        assert path.stat().st_size == empty
    finally:
        await store.close()

    store = SqliteRunStore(path, checkpoint_interval=0.05)
    await store.open()
    try:
        await fill(store, 10)
        deadline = asyncio.get_running_loop().time() + 10
        while path.stat().st_size == empty:  # the close above may have checkpointed too
            assert asyncio.get_running_loop().time() < deadline, "never checkpointed"
            await asyncio.sleep(0.05)
        assert len(await store.by_host_stage("", S.NEW)) == 3010
    finally:
        await store.close()
