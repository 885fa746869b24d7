"""GroupSync: every write waits for a flush that started after it, and writes that
finish together share one flush."""

from __future__ import annotations

import asyncio

import pytest

from nexus.backends.buffer import group_sync
from nexus.backends.buffer.group_sync import GroupSync


@pytest.fixture
def syncer(tmp_path):
    syncer = GroupSync(tmp_path)
    syncer.open()
    yield syncer
    syncer.close()


async def test_concurrent_writers_share_flushes(syncer):
    await syncer.sync()
    assert syncer.flushes == 1
    await asyncio.gather(*(syncer.sync() for _ in range(200)))
    # Each waits for a flush that started after it asked: at most one running and one
    # gathering the rest, so 200 writers need far fewer than 200 flushes.
    assert 2 <= syncer.flushes <= 1 + 100


async def test_a_failed_flush_fails_its_writers(syncer, monkeypatch):
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(group_sync, "_SYNCFS", broken)
    with pytest.raises(OSError, match="syncing payloads failed"):
        await syncer.sync()
    monkeypatch.undo()
    await syncer.sync()  # the next flush works again


async def test_closed_syncer_refuses(tmp_path):
    syncer = GroupSync(tmp_path)
    syncer.open()
    syncer.close()
    with pytest.raises(OSError, match="closed"):
        await syncer.sync()
