"""The blocking client: ``NexusClient``."""

from __future__ import annotations

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

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"


class NexusClient:
    """A client for a nexus scheduler (and receiver).

    ``token`` is sent as ``Authorization: Bearer <token>``; pass a callable to fetch a
    fresh token for every request. Responses 429 and 503 are retried as ``retry`` says
    (honouring ``Retry-After``); every other error raises the matching
    :class:`~nexus_run_client.errors.NexusClientError` with the server's message.
    """

    def __init__(
        self,
        scheduler_url: str = DEFAULT_URL,
        *,
        receiver_url: str | None = None,
        token: calls.TokenSource = None,
        timeout: float = 30.0,
        retry: calls.RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = calls.ClientCore(
            scheduler_url,
            receiver_url=receiver_url,
            token=token,
            timeout=timeout,
            retry=retry,
            user_agent=calls.user_agent(),
        )
        self._http = httpx.Client(transport=transport, follow_redirects=False)

    def __enter__(self) -> NexusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: calls.Call[T]) -> T:
        policy = self._core.retry
        attempt = 0
        while True:
            args = self._core.request_args(call)
            try:
                response = self._http.request(**args)
            except httpx.TransportError as exc:
                if attempt + 1 >= policy.attempts or not self._core.retryable_transport(call, exc):
                    raise Unavailable(
                        f"Cannot reach {args['url']}: {exc or type(exc).__name__}", status=None
                    ) from exc
                time.sleep(policy.delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in calls.RETRY_STATUSES and attempt + 1 < policy.attempts:
                time.sleep(
                    policy.delay(
                        attempt, calls.parse_retry_after(response.headers.get("retry-after"))
                    )
                )
                attempt += 1
                continue
            return self._core.outcome(call, response)

    # --- scheduler -----------------------------------------------------------------------

    def create_run(
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
        """Start a run and return its request id (202: it is durably recorded).

        ``parameters`` is the payload: a mapping, or the bytes of a JSON object. ``parent``
        is ``(algorithm, request_id)`` or a ParentRequest. With ``idempotency_key``, a
        repeated call returns the first run's id instead of starting another.
        """
        return self._send(
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

    def get_run(self, algorithm: str, request_id: str, *, wait: float | None = None) -> RunResult:
        """The run's status; with ``wait``, the server answers as soon as it finishes or
        after ``wait`` seconds (capped by the server's max-wait)."""
        return self._send(calls.get_run(algorithm, request_id, wait, self._core.timeout))

    def await_run(
        self,
        algorithm: str,
        request_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        wait_step: float = 30.0,
        on_status: Callable[[RunResult], None] | None = None,
    ) -> RunResult:
        """Long-poll until the run finishes; raise WaitTimeout after ``timeout`` seconds.

        Each poll asks the server to hold the answer for up to ``wait_step`` seconds; a
        server that answers early (one without ``?wait=``) is polled no more often than
        every ``poll_interval`` seconds. ``on_status`` gets every answer whose status
        differs from the previous one (the server's long poll ends only when the run
        finishes: a caller showing stages passes a short ``wait_step``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        status = None
        while True:
            started = time.monotonic()
            wait = wait_step if deadline is None else max(0.0, min(wait_step, deadline - started))
            result = self.get_run(algorithm, request_id, wait=wait)
            if on_status is not None and result.status != status:
                status = result.status
                on_status(result)
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
                time.sleep(pause)

    def await_runs(
        self,
        runs: Iterable[tuple[str, str]],
        *,
        timeout: float | None = None,
        on_result: Callable[[int, RunResult | NexusClientError], None] | None = None,
    ) -> list[RunResult | NexusClientError]:
        """Await several ``(algorithm, request_id)`` runs under one deadline.

        Returns, in order, each run's last result (unfinished when the deadline passed) or
        the error that stopped following it (e.g. NotFound). See AsyncNexusClient for the
        concurrent version.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        outcomes: list[RunResult | NexusClientError] = []
        for index, (algorithm, request_id) in enumerate(runs):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                outcome: RunResult | NexusClientError = self.await_run(
                    algorithm, request_id, timeout=left
                )
            except WaitTimeout as exc:
                outcome = exc.last_result  # type: ignore[assignment]
            except NexusClientError as exc:
                outcome = exc
            outcomes.append(outcome)
            if on_result is not None:
                on_result(index, outcome)
        return outcomes

    def runs_by_tag(self, tag: str) -> list[RunResult]:
        return self._send(calls.runs_by_tag(tag))

    def get_metadata(self, algorithm: str, request_id: str) -> dict[str, Any]:
        """The full run record (checkpoint), snake_case keys."""
        return self._send(calls.metadata(algorithm, request_id))

    def get_buffered_job(self, algorithm: str, request_id: str) -> dict[str, Any]:
        """The Kubernetes Job manifest that was (or will be) submitted for the run."""
        return self._send(calls.buffered_job(algorithm, request_id))

    def get_payload_url(self, algorithm: str, request_id: str) -> str:
        """Where the run's payload can be downloaded (the redirect target)."""
        return self._send(calls.payload_url(algorithm, request_id))

    def list_runs(self, **filters: str | list[str]) -> RunPage:
        """One page of runs, newest first: ``algorithm``, ``stage`` (a list), ``tag``,
        ``since``/``until`` (RFC 3339), ``parent`` ("algorithm/id"), ``limit``, and the
        previous page's ``next_cursor`` as ``cursor``."""
        return self._send(calls.list_runs(filters))

    def get_history(self, algorithm: str, request_id: str) -> RunHistory:
        """Every stage change of the run (and webhook attempt), oldest first."""
        return self._send(calls.history(algorithm, request_id))

    def resubmit_run(
        self,
        algorithm: str,
        request_id: str,
        *,
        tag: str | None = None,
        custom_configuration: Mapping[str, Any] | msgspec.Struct | bytes | None = None,
    ) -> str:
        """Start a new run with a finished run's payload and configuration; its id."""
        return self._send(
            calls.resubmit_run(
                algorithm, request_id, tag=tag, custom_configuration=custom_configuration
            )
        )

    def get_logs(self, algorithm: str, request_id: str, *, tail: int = 200) -> str:
        """The last ``tail`` lines of the run's Pod (or local process) log."""
        return self._send(calls.logs(algorithm, request_id, tail))

    def get_result_data(self, algorithm: str, request_id: str) -> bytes:
        """The bytes of the run's result (from its signed ``resultUri``); NotFound while
        it has none."""
        url = calls.result_location(self.get_run(algorithm, request_id), algorithm)
        try:
            response = self._http.get(url, timeout=self._core.timeout)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"Cannot reach {url}: {exc or type(exc).__name__}", status=None
            ) from exc
        if response.status_code != 200:
            raise calls.error_from(response)
        return response.content

    def cancel_run(
        self,
        algorithm: str,
        request_id: str,
        *,
        reason: str = "",
        initiator: str = "nexus-client",
        policy: str = "Background",
    ) -> None:
        """Cancel the run (and its children); Conflict when it already finished."""
        if policy not in CANCELLATION_POLICIES:
            raise ValueError(f"policy must be one of {', '.join(CANCELLATION_POLICIES)}")
        self._send(
            calls.cancel_run(
                algorithm, request_id, reason=reason, initiator=initiator, policy=policy
            )
        )

    def update_tag(self, algorithm: str, request_id: str, new_tag: str) -> None:
        self._send(calls.update_tag(algorithm, request_id, new_tag))

    # --- receiver ------------------------------------------------------------------------

    def complete_run(
        self,
        algorithm: str,
        request_id: str,
        *,
        result_uri: str = "",
        error_cause: str | None = None,
        error_details: str | None = None,
    ) -> None:
        """Report a run's outcome (as an algorithm does); a non-empty cause means failure."""
        self._send(
            calls.complete_run(
                algorithm,
                request_id,
                result_uri=result_uri,
                error_cause=error_cause,
                error_details=error_details,
            )
        )

    def check_run(self, algorithm: str, request_id: str) -> bool:
        """True when the run is finished."""
        return self._send(calls.check_run(algorithm, request_id))
