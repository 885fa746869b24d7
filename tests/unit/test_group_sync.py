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


async def test_the_local_buffer_flushes_each_write_before_it_returns(tmp_path, monkeypatch):
    """The wiring: a payload or result written to the local folder has been through a
    flush that started after the file was in place, when put() returns."""
    from nexus.backends.buffer.local import local_buffer
    from nexus.core.signing import UrlSigner

    files_at_flush: list[int] = []

    def counting(fd: int) -> None:
        files_at_flush.append(sum(1 for p in tmp_path.rglob("*") if p.is_file()))

    monkeypatch.setattr(group_sync, "_SYNCFS", counting)
    buffer = local_buffer(tmp_path, UrlSigner(b"k" * 32, "http://127.0.0.1"))
    await buffer.open()
    try:
        await buffer.put("algo", "r1", b'{"a": 1}')
        assert files_at_flush and files_at_flush[-1] >= 1
        flushes = len(files_at_flush)
        await buffer.put_result("algo", "r1", b"done")
        assert len(files_at_flush) > flushes and files_at_flush[-1] >= 2
    finally:
        await buffer.close()
