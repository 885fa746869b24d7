"""In-process notification of run changes, for long-polling clients.

Changes made by this process wake waiters at once; changes made by other processes are
seen by the waiter's own periodic re-read, so a wait never depends on a notification.
"""

from __future__ import annotations

import asyncio


class RunWatch:
    def __init__(self) -> None:
        self._waiters: dict[tuple[str, str], list[asyncio.Future[None]]] = {}

    def notify(self, algorithm: str, run_id: str) -> None:
        for future in self._waiters.pop((algorithm, run_id), ()):
            if not future.done():
                future.set_result(None)

    async def wait(self, algorithm: str, run_id: str, timeout: float) -> None:
        """Return when the run changes here, or after ``timeout`` seconds."""
        key = (algorithm, run_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(key)
            if waiters and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[key]
