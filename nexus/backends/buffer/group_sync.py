"""Durable local writes, many at a time: one ``syncfs(2)`` for a batch of files.

obstore's ``LocalStore`` writes an object to a temporary file and renames it into place,
without ``fsync``: the file survives a killed process, but a power cut or kernel crash
could lose a payload whose run was already acknowledged with a 202. Syncing each file
and its folder would cost two flushes per accept. Instead every write waits for the next
``syncfs`` of the folder's file system that *starts after the write finished*, and one
thread runs them back to back, so all the writes that finished meanwhile share one flush
(group commit, as the SQLite store does for its rows). Without ``syncfs`` (not Linux) it
falls back to ``sync()``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from pathlib import Path


def _syncfs_call() -> Callable[[int], None]:
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
    syncfs = getattr(libc, "syncfs", None)
    if syncfs is None:
        return lambda fd: os.sync()

    def call(fd: int) -> None:  # ctypes lets go of the GIL for the call
        if syncfs(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return call


_SYNCFS = _syncfs_call()
Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]


class GroupSync:
    def __init__(self, folder: str | Path) -> None:
        self._folder = Path(folder)
        self._fd = -1
        self._waiting: list[Waiter] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.flushes = 0  # how many syncfs calls: a test reads it to see batching

    def open(self) -> None:
        self._fd = os.open(self._folder, os.O_RDONLY | os.O_DIRECTORY)
        self._thread = threading.Thread(target=self._serve, name="payload-sync", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is None:
            return
        with self._lock:
            self._closing = True
            self._wake.set()
        self._thread.join()
        self._thread = None
        os.close(self._fd)

    async def sync(self) -> None:
        """Return once everything written before this call is on stable storage."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._closing or self._thread is None:
                raise OSError("the payload folder is closed")
            self._waiting.append((loop, future))
            self._wake.set()
        await future

    def _serve(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                batch, self._waiting = self._waiting, []
                self._wake.clear()
                closing = self._closing
            if batch:
                error: OSError | None = None
                try:
                    _SYNCFS(self._fd)
                    self.flushes += 1
                except OSError as exc:
                    error = exc
                _settle(batch, error)
            if closing:
                return


def _settle(batch: list[Waiter], error: OSError | None) -> None:
    def settle_here(futures: list[asyncio.Future[None]]) -> None:
        for future in futures:
            if future.done():  # its request was cancelled meanwhile
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(OSError(error.errno, f"syncing payloads failed: {error}"))

    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, future in batch:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(settle_here, futures)
        except RuntimeError:  # that loop is closed: nobody waits any more
            pass
