"""Leader election: of the controller replicas, only the lease holder syncs.

The holder renews the lease every third of its duration. A replica that cannot renew
(its API server does not answer, another took the lease) stops its work before the
lease could have expired for the others (the renew deadline, two thirds of the
duration), so two replicas never sync at once; a standby takes the lease once its
holder has not renewed it for a whole duration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from nexus.core.ports import LeaderLease
from nexus.errors import NexusError

log = logging.getLogger("nexus.controller")


class Leadership:
    def __init__(
        self,
        lease: LeaderLease,
        duration: float,
        *,
        on_lead: Callable[[], Awaitable[None]],
        on_follow: Callable[[], Awaitable[None]],
    ) -> None:
        self._lease = lease
        self._duration = duration
        self._on_lead = on_lead
        self._on_follow = on_follow
        self.leading = False
        self._renewed = 0.0

    async def step(self) -> None:
        """Try to take or keep the lease once, and start or stop the work to match."""
        try:
            # Bounded: a renewal still under way when the lease could expire is useless.
            held = await asyncio.wait_for(self._lease.acquire_or_renew(), self._duration / 3)
        except (NexusError, TimeoutError) as exc:
            log.warning("leader lease not renewed: %s", getattr(exc, "message", "timed out"))
            held = self.leading and time.monotonic() - self._renewed < self._duration * 2 / 3
        else:
            if held:
                self._renewed = time.monotonic()
        if held and not self.leading:
            log.info("leading: this replica syncs now")
            self.leading = True
            await self._on_lead()
        elif not held and self.leading:
            log.warning("no longer leading: stopping work")
            self.leading = False
            await self._on_follow()

    async def run_forever(self) -> None:
        try:
            while True:
                await self.step()
                await asyncio.sleep(self._duration / 3)
        finally:
            if self.leading:
                self.leading = False
                await self._on_follow()
