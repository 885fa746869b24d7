"""The client's operations without I/O: what to send for each call and how to read the
answer. The sync and async clients share all of it and differ only in how they send."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from nexus_run_client import models
from nexus_run_client.errors import (
    BadRequest,
    NexusClientError,
    NotFound,
    ServerError,
    error_for_status,
)
from nexus_run_client.version import DISTRIBUTION, client_version

API = "/algorithm/v1"
RETRY_STATUSES = frozenset({429, 503})

TokenSource = str | Callable[[], str] | None


T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP exchange: the request to send and the function that reads a success."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] | list[tuple[str, str]] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    receiver: bool = False
    # True when sending it twice cannot create anything twice, so a transport error after
    # the request may have reached the server can still be retried.
    idempotent: bool = True
    timeout: float | None = None
    ok: tuple[int, ...] = (200,)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on 429/503 (and on connection failures), honouring ``Retry-After``.

    ``attempts`` bounds the number of tries; ``max_delay`` bounds any one sleep, whatever
    the server asks; without ``Retry-After`` the delay doubles from ``base_delay`` with
    jitter.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        backoff = self.base_delay * 2.0**attempt
        return min(backoff * (0.5 + random.random() / 2), self.max_delay)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def user_agent() -> str:
    return f"{DISTRIBUTION}/{client_version()}"


def segment(value: str) -> str:
    """One path segment, percent-encoded so an id or tag can never change the route: '/',
    '?', '#', '%', spaces and non-ASCII text are escaped, and so is a segment of dots alone
    (quote leaves '.' as it is, and HTTP clients resolve '.'/'..' segments away)."""
    if value and value.strip(".") == "":
        return "%2E" * len(value)
    return quote(value, safe="")


def error_from(response: httpx.Response) -> NexusClientError:
    message = response.text.strip() or response.reason_phrase or f"HTTP {response.status_code}"
    return error_for_status(
        response.status_code, message, parse_retry_after(response.headers.get("retry-after"))
    )


def _decode(decoder: msgspec.json.Decoder[T], response: httpx.Response) -> T:
    try:
        return decoder.decode(response.content)
    except msgspec.DecodeError as exc:
        raise ServerError(
            f"Unexpected answer from {response.request.url}: {exc}", status=response.status_code
        ) from None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        return msgspec.json.decode(response.content, type=dict[str, Any])
    except msgspec.DecodeError as exc:
        raise ServerError(
            f"Unexpected answer from {response.request.url}: {exc}", status=response.status_code
        ) from None


def _duration(value: str | float | timedelta) -> str:
    if isinstance(value, str):
        return value
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return f"{int(seconds * 1000)}ms" if seconds != int(seconds) else f"{int(seconds)}s"


def _parent(value: models.ParentRequest | tuple[str, str] | Mapping[str, str]) -> Any:
    if isinstance(value, tuple):
        algorithm, request_id = value
        return models.ParentRequest(request_id=request_id, algorithm_name=algorithm)
    return value


def create_run(
    algorithm: str,
    parameters: Mapping[str, Any] | bytes,
    *,
    custom_configuration: Mapping[str, Any] | msgspec.Struct | None = None,
    tag: str | None = None,
    parent: models.ParentRequest | tuple[str, str] | Mapping[str, str] | None = None,
    payload_valid_for: str | float | timedelta | None = None,
    request_api_version: str | None = None,
    dry_run: bool = False,
    idempotency_key: str | None = None,
) -> Call[str]:
    if isinstance(parameters, (bytes, bytearray, memoryview)):
        params: Any = msgspec.Raw(bytes(parameters))
    elif isinstance(parameters, Mapping):
        params = parameters
    else:
        raise BadRequest("algorithm parameters must be a mapping or the bytes of a JSON object")
    body: dict[str, Any] = {"algorithmParameters": params}
    if custom_configuration is not None:
        body["customConfiguration"] = custom_configuration
    if tag is not None:
        body["tag"] = tag
    if parent is not None:
        body["parentRequest"] = _parent(parent)
    if payload_valid_for is not None:
        body["payloadValidFor"] = _duration(payload_valid_for)
    if request_api_version is not None:
        body["requestApiVersion"] = request_api_version
    headers = {"Content-Type": "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return Call(
        "POST",
        f"{API}/run/{segment(algorithm)}",
        lambda r: _decode(models.run_created_decoder, r).request_id,
        params={"dryRun": "true"} if dry_run else {},
        content=models.encoder.encode(body),
        headers=headers,
        idempotent=bool(idempotency_key),
        ok=(202,),
    )


def get_run(
    algorithm: str, request_id: str, wait: float | None = None, read_timeout: float = 30.0
) -> Call[models.RunResult]:
    params = {"wait": f"{wait:g}"} if wait else {}
    return Call(
        "GET",
        f"{API}/results/{segment(algorithm)}/requests/{segment(request_id)}",
        lambda r: _decode(models.run_result_decoder, r),
        params=params,
        timeout=(wait or 0) + read_timeout,
    )


def runs_by_tag(tag: str) -> Call[list[models.RunResult]]:
    return Call(
        "GET",
        f"{API}/results/tags/{segment(tag)}",
        lambda r: _decode(models.run_results_decoder, r),
    )


def metadata(algorithm: str, request_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"{API}/metadata/{segment(algorithm)}/requests/{segment(request_id)}", _json)


def buffered_job(algorithm: str, request_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"{API}/buffer/{segment(algorithm)}/requests/{segment(request_id)}", _json)


def list_runs(filters: Mapping[str, str | list[str]]) -> Call[models.RunPage]:
    """A page of ``GET runs``: filters algorithm, stage (a list), tag, since, until,
    parent ("algorithm/id"), limit, cursor; empty ones are left out."""
    params: list[tuple[str, str]] = []
    for name, value in filters.items():
        values = value if isinstance(value, list) else [value]
        params.extend((name, item) for item in values if item)
    return Call("GET", f"{API}/runs", lambda r: _decode(models.run_page_decoder, r), params=params)


def history(algorithm: str, request_id: str) -> Call[models.RunHistory]:
    return Call(
        "GET",
        f"{API}/runs/{segment(algorithm)}/requests/{segment(request_id)}/events",
        lambda r: _decode(models.run_history_decoder, r),
    )


def resubmit_run(
    algorithm: str,
    request_id: str,
    *,
    tag: str | None = None,
    custom_configuration: Mapping[str, Any] | msgspec.Struct | bytes | None = None,
) -> Call[str]:
    body: dict[str, Any] = {}
    if tag is not None:
        body["tag"] = tag
    if isinstance(custom_configuration, bytes):
        body["customConfiguration"] = msgspec.Raw(custom_configuration)
    elif custom_configuration is not None:
        body["customConfiguration"] = custom_configuration
    return Call(
        "POST",
        f"{API}/resubmit/{segment(algorithm)}/requests/{segment(request_id)}",
        lambda r: _decode(models.run_created_decoder, r).request_id,
        content=models.encoder.encode(body),
        headers={"Content-Type": "application/json"},
        idempotent=False,  # each resubmit is a new run
        ok=(202,),
    )


def logs(algorithm: str, request_id: str, tail: int) -> Call[str]:
    return Call(
        "GET",
        f"{API}/logs/{segment(algorithm)}/requests/{segment(request_id)}",
        lambda r: r.text,
        params={"tail": str(tail)},
    )


def result_location(result: models.RunResult, algorithm: str) -> str:
    """Where a finished run's result is; NotFound while it has none."""
    if not result.result_uri:
        state = "has not finished" if not result.finished else "finished without a result"
        raise NotFound(
            f"Run {algorithm}/{result.request_id} {state} ({result.status}): no result to download"
        )
    return result.result_uri


def payload_url(algorithm: str, request_id: str) -> Call[str]:
    def location(response: httpx.Response) -> str:
        target = response.headers.get("location")
        if not target:
            raise ServerError(
                "The payload redirect carries no Location header", status=response.status_code
            )
        return str(response.request.url.join(target))

    return Call(
        "GET",
        f"{API}/payload/{segment(algorithm)}/requests/{segment(request_id)}",
        location,
        ok=(301, 302, 303, 307, 308),
    )


def cancel_run(
    algorithm: str, request_id: str, *, reason: str, initiator: str, policy: str
) -> Call[None]:
    body = {"reason": reason, "initiator": initiator, "cancellationPolicy": policy}
    return Call(
        "POST",
        f"{API}/cancel/{segment(algorithm)}/requests/{segment(request_id)}",
        lambda r: None,
        content=models.encoder.encode(body),
        headers={"Content-Type": "application/json"},
    )


def update_tag(algorithm: str, request_id: str, new_tag: str) -> Call[None]:
    return Call(
        "POST",
        f"{API}/metadata/tags/{segment(algorithm)}/requests/{segment(request_id)}",
        lambda r: None,
        content=models.encoder.encode({"newTag": new_tag}),
        headers={"Content-Type": "application/json"},
    )


def complete_run(
    algorithm: str,
    request_id: str,
    *,
    result_uri: str,
    error_cause: str | None,
    error_details: str | None,
) -> Call[None]:
    body: dict[str, str] = {"resultUri": result_uri}
    if error_cause:
        body["errorCause"] = error_cause
    if error_details:
        body["errorDetails"] = error_details
    return Call(
        "POST",
        f"{API}/complete/{segment(algorithm)}/requests/{segment(request_id)}",
        lambda r: None,
        content=models.encoder.encode(body),
        headers={"Content-Type": "application/json"},
        receiver=True,
        ok=(202,),
    )


def check_run(algorithm: str, request_id: str) -> Call[bool]:
    return Call(
        "GET",
        f"{API}/check/{segment(algorithm)}/requests/{segment(request_id)}",
        lambda r: _decode(models.check_decoder, r).is_processed,
        receiver=True,
    )


class ClientCore:
    """Configuration and request building shared by the sync and async clients."""

    def __init__(
        self,
        scheduler_url: str,
        *,
        receiver_url: str | None,
        token: TokenSource,
        timeout: float,
        retry: RetryPolicy | None,
        user_agent: str,
    ) -> None:
        self.scheduler_url = scheduler_url.rstrip("/")
        self.receiver_url = (receiver_url or scheduler_url).rstrip("/")
        self._token = token
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.user_agent = user_agent

    def request_args(self, call: Call[Any]) -> dict[str, Any]:
        headers = {
            "User-Agent": self.user_agent,
            "Accept": "application/json, text/plain",
            **call.headers,
        }
        token = self._token() if callable(self._token) else self._token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        base = self.receiver_url if call.receiver else self.scheduler_url
        return {
            "method": call.method,
            "url": base + call.path,
            "params": call.params,
            "content": call.content,
            "headers": headers,
            "timeout": call.timeout or self.timeout,
        }

    @staticmethod
    def retryable_transport(call: Call[Any], exc: httpx.TransportError) -> bool:
        """Connect failures never reached the server; others only for idempotent calls."""
        return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) or call.idempotent

    def outcome(self, call: Call[T], response: httpx.Response) -> T:
        if response.status_code in call.ok:
            return call.parse(response)
        raise error_from(response)
