"""The asyncio client: ``AsyncNexusClient``, the same operations as NexusClient."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import msgspec

from nexus_run_client import _calls as calls
from nexus_run_client.errors import NexusClientError, Unavailable, WaitTimeout
from nexus_run_client.models import (
    CANCELLATION_POLICIES,
    ParentRequest,
    RunHistory,
    RunPage,
    RunResult,
)
from nexus_run_client.sync import DEFAULT_URL

T = TypeVar("T")


class AsyncNexusClient:
    """Asyncio twin of :class:`~nexus_run_client.NexusClient`; see it for the behaviour."""

    def __init__(
        self,
        scheduler_url: str = DEFAULT_URL,
        *,
        receiver_url: str | None = None,
        token: calls.TokenSource = None,
        timeout: float = 30.0,
        retry: calls.RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self._core = calls.ClientCore(
            scheduler_url,
            receiver_url=receiver_url,
            token=token,
            timeout=timeout,
            retry=retry,
            user_agent=calls.user_agent(),
        )
        self._http = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def __aenter__(self) -> AsyncNexusClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: calls.Call[T]) -> T:
        policy = self._core.retry
        attempt = 0
        while True:
            args = self._core.request_args(call)
            try:
                response = await self._http.request(**args)
            except httpx.TransportError as exc:
                if attempt + 1 >= policy.attempts or not self._core.retryable_transport(call, exc):
                    raise Unavailable(
                        f"Cannot reach {args['url']}: {exc or type(exc).__name__}", status=None
                    ) from exc
                await asyncio.sleep(policy.delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in calls.RETRY_STATUSES and attempt + 1 < policy.attempts:
                await asyncio.sleep(
                    policy.delay(
                        attempt, calls.parse_retry_after(response.headers.get("retry-after"))
                    )
                )
                attempt += 1
                continue
            return self._core.outcome(call, response)

    # --- scheduler -----------------------------------------------------------------------

    async def create_run(
        self,
        algorithm: str,
        parameters: Mapping[str, Any] | bytes,
        *,
        custom_configuration: Mapping[str, Any] | msgspec.Struct | None = None,
        tag: str | None = None,
        parent: ParentRequest | tuple[str, str] | None = None,
        payload_valid_for: str | float | timedelta | None = None,
        request_api_version: str | None = None,
        dry_run: bool = False,
        idempotency_key: str | None = None,
    ) -> str:
        return await self._send(
            calls.create_run(
                algorithm,
                parameters,
                custom_configuration=custom_configuration,
                tag=tag,
                parent=parent,
                payload_valid_for=payload_valid_for,
                request_api_version=request_api_version,
                dry_run=dry_run,
                idempotency_key=idempotency_key,
            )
        )

    async def get_run(
        self, algorithm: str, request_id: str, *, wait: float | None = None
    ) -> RunResult:
        return await self._send(calls.get_run(algorithm, request_id, wait, self._core.timeout))

    async def await_run(
        self,
        algorithm: str,
        request_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        wait_step: float = 30.0,
    ) -> RunResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            started = time.monotonic()
            wait = wait_step if deadline is None else max(0.0, min(wait_step, deadline - started))
            result = await self.get_run(algorithm, request_id, wait=wait)
            if result.finished:
                return result
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(
                    f"Run {algorithm}/{request_id} is still {result.status} after {timeout:g}s",
                    last_result=result,
                )
            pause = poll_interval - (now - started)
            if deadline is not None:
                pause = min(pause, deadline - now)
            if pause > 0:
                await asyncio.sleep(pause)

    async def await_runs(
        self,
        runs: Iterable[tuple[str, str]],
        *,
        timeout: float | None = None,
        on_result: Callable[[int, RunResult | NexusClientError], None] | None = None,
        concurrency: int = 32,
    ) -> list[RunResult | NexusClientError]:
        """Await many runs concurrently (at most ``concurrency`` long-polls at once).

        Returns, in order, each run's last result (unfinished if ``timeout`` passed first)
        or the error that stopped following it; ``on_result(index, outcome)`` is called as
        each one settles.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        gate = asyncio.Semaphore(concurrency)

        async def follow(
            index: int, algorithm: str, request_id: str
        ) -> RunResult | NexusClientError:
            async with gate:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    outcome: RunResult | NexusClientError = await self.await_run(
                        algorithm, request_id, timeout=left
                    )
                except WaitTimeout as exc:
                    outcome = exc.last_result  # type: ignore[assignment]
                except NexusClientError as exc:
                    outcome = exc
            if on_result is not None:
                on_result(index, outcome)
            return outcome

        return list(
            await asyncio.gather(
                *(follow(i, algorithm, run_id) for i, (algorithm, run_id) in enumerate(runs))
            )
        )

    async def runs_by_tag(self, tag: str) -> list[RunResult]:
        return await self._send(calls.runs_by_tag(tag))

    async def get_metadata(self, algorithm: str, request_id: str) -> dict[str, Any]:
        return await self._send(calls.metadata(algorithm, request_id))

    async def get_buffered_job(self, algorithm: str, request_id: str) -> dict[str, Any]:
        return await self._send(calls.buffered_job(algorithm, request_id))

    async def get_payload_url(self, algorithm: str, request_id: str) -> str:
        return await self._send(calls.payload_url(algorithm, request_id))

    async def list_runs(self, **filters: str | list[str]) -> RunPage:
        return await self._send(calls.list_runs(filters))

    async def get_history(self, algorithm: str, request_id: str) -> RunHistory:
        return await self._send(calls.history(algorithm, request_id))

    async def resubmit_run(
        self,
        algorithm: str,
        request_id: str,
        *,
        tag: str | None = None,
        custom_configuration: Mapping[str, Any] | msgspec.Struct | bytes | None = None,
    ) -> str:
        return await self._send(
            calls.resubmit_run(
                algorithm, request_id, tag=tag, custom_configuration=custom_configuration
            )
        )

    async def get_logs(self, algorithm: str, request_id: str, *, tail: int = 200) -> str:
        return await self._send(calls.logs(algorithm, request_id, tail))

    async def get_result_data(self, algorithm: str, request_id: str) -> bytes:
        url = calls.result_location(await self.get_run(algorithm, request_id), algorithm)
        try:
            response = await self._http.get(url, timeout=self._core.timeout)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"Cannot reach {url}: {exc or type(exc).__name__}", status=None
            ) from exc
        if response.status_code != 200:
            raise calls.error_from(response)
        return response.content

    async def cancel_run(
        self,
        algorithm: str,
        request_id: str,
        *,
        reason: str = "",
        initiator: str = "nexus-client",
        policy: str = "Background",
    ) -> None:
        if policy not in CANCELLATION_POLICIES:
            raise ValueError(f"policy must be one of {', '.join(CANCELLATION_POLICIES)}")
        await self._send(
            calls.cancel_run(
                algorithm, request_id, reason=reason, initiator=initiator, policy=policy
            )
        )

    async def update_tag(self, algorithm: str, request_id: str, new_tag: str) -> None:
        await self._send(calls.update_tag(algorithm, request_id, new_tag))

    # --- receiver ------------------------------------------------------------------------

    async def complete_run(
        self,
        algorithm: str,
        request_id: str,
        *,
        result_uri: str = "",
        error_cause: str | None = None,
        error_details: str | None = None,
    ) -> None:
        await self._send(
            calls.complete_run(
                algorithm,
                request_id,
                result_uri=result_uri,
                error_cause=error_cause,
                error_details=error_details,
            )
        )

    async def check_run(self, algorithm: str, request_id: str) -> bool:
        return await self._send(calls.check_run(algorithm, request_id))
