"""Completion webhooks: a run may name a ``callbackUrl``; once it is finished, nexus POSTs
its result there (docs/webhooks.md).

Durable without a queue of its own: the URL and the delivery's state are columns of the
run's row, and the store keeps an index (a lookup table on Cassandra, a partial index on
SQLite) of the finished runs whose webhook is neither delivered nor given up. Every
scheduler sweeps that index; an attempt is claimed with a compare-and-set on the state,
so two schedulers never make the same attempt, and a scheduler killed mid-attempt leaves
a claim that expires. Delivery is at-least-once (a receiver that answers after the
timeout is tried again): the ``X-Nexus-Delivery`` header is stable for the dedupe.

Nothing on a run's own path waits for a webhook: finishing a run only makes it show up
in the index.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

import msgspec

from nexus.core.launching import utcnow
from nexus.core.models import CallbackState, Run
from nexus.core.ports import RunStore
from nexus.errors import BackendUnavailable, BadRequest

log = logging.getLogger("nexus.callbacks")

MAX_URL_LENGTH = 2048
SIGNATURE_HEADER = "X-Nexus-Signature"
TIMESTAMP_HEADER = "X-Nexus-Timestamp"
DELIVERY_HEADER = "X-Nexus-Delivery"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookSender(Protocol):
    """Resolves names and sends the POSTs (one implementation: nexus.backends.webhooks)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def addresses(self, host: str, port: int) -> list[str]:
        """The IP addresses ``host`` resolves to; BadRequest when it does not resolve."""

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """The receiver's status code; BackendUnavailable when it did not answer."""


class CallbackBody(msgspec.Struct, rename="camel"):
    """What the receiver gets: the run's result as ``GET results/tags/{tag}`` lists it."""

    request_id: str
    algorithm_name: str
    status: str
    result_uri: str
    run_error_message: str


_body_encoder = msgspec.json.Encoder()


def callback_pending(run: Run) -> bool:
    """A finished run whose webhook is neither delivered nor given up yet."""
    return (
        bool(run.callback_url) and run.callback_done_at is None and run.lifecycle_stage.is_terminal
    )


def parse_networks(texts: Sequence[str]) -> list[Network]:
    """``webhooks.allowed-networks``: CIDRs whose addresses a callback may point at."""
    try:
        return [ipaddress.ip_network(text, strict=False) for text in texts]
    except ValueError as exc:
        raise ValueError(f"webhooks.allowed-networks: {exc}") from None


def _check_syntax(url: str) -> tuple[str, int]:
    """The host and port of a well-formed http(s) URL; BadRequest naming what is wrong."""
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"callbackUrl is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise BadRequest("callbackUrl must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"callbackUrl is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise BadRequest("callbackUrl must be an http:// or https:// URL")
    if not parts.hostname:
        raise BadRequest("callbackUrl has no host")
    if parts.username is not None or parts.password is not None:
        raise BadRequest("callbackUrl must not carry credentials (user:password@)")
    if parts.fragment:
        raise BadRequest("callbackUrl must not have a #fragment")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_addresses(url: str, addresses: Sequence[str], allowed: Sequence[Network]) -> None:
    """Refuse a callback that would make nexus call into a private network (SSRF): every
    address the host resolves to must be public, or inside ``allowed``."""
    if not addresses:
        raise BadRequest(f"callbackUrl host of {url[:200]!r} resolves to no address")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in allowed):
            continue
        if not address.is_global or address.is_multicast:
            raise BadRequest(
                f"callbackUrl points at {address}, a loopback, private or reserved address, "
                "which is refused (allow its network in webhooks.allowed-networks)"
            )


async def check_callback_url(url: str, sender: WebhookSender, allowed: Sequence[Network]) -> None:
    host, port = _check_syntax(url)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        addresses = await sender.addresses(host, port)
    else:
        addresses = [str(literal)]
    check_addresses(url, addresses, allowed)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``X-Nexus-Signature``: HMAC-SHA256 of ``<timestamp>.<body>``, hex (docs/webhooks.md)."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class CallbackPolicy(msgspec.Struct, frozen=True, kw_only=True):
    timeout: float = 10.0  # one POST
    max_attempts: int = 12
    retry_base: float = 2.0  # the wait after the first failure, doubled after each
    retry_max: float = 600.0
    batch: int = 200  # runs looked at per sweep

    def retry_after(self, attempts: int) -> float:
        return min(self.retry_max, self.retry_base * float(2 ** max(0, attempts - 1)))

    @property
    def claim_for(self) -> float:
        """How long an attempt belongs to the process that claimed it."""
        return self.timeout + 30.0


class Notifier:
    """Delivers the webhooks of finished runs; :meth:`sweep` is one pass."""

    def __init__(
        self,
        store: RunStore,
        sender: WebhookSender,
        secret: bytes,
        policy: CallbackPolicy,
        allowed: Sequence[Network],
        *,
        now: Callable[[], datetime] = utcnow,
        concurrency: int = 16,
    ) -> None:
        self.store = store
        self.sender = sender
        self.policy = policy
        self.allowed = list(allowed)
        self.now = now
        self._secret = secret
        self._limit = asyncio.Semaphore(concurrency)

    async def check(self, url: str) -> None:
        """BadRequest unless ``url`` is a callback this deployment may call (at accept)."""
        await check_callback_url(url, self.sender, self.allowed)

    async def sweep(self) -> int:
        """Make every attempt that is due now; the number made."""
        now = self.now()
        runs = await self.store.pending_callbacks(self.policy.batch)
        due = [run for run in runs if _due(run.callback_state, now)]
        outcomes = await asyncio.gather(*(self._bounded(run) for run in due))
        return sum(outcomes)

    async def _bounded(self, run: Run) -> bool:
        async with self._limit:
            try:
                return await self.attempt(run)
            except BackendUnavailable as exc:  # the store: the next sweep tries again
                log.warning("webhook of run %s not attempted: %s", run.id, exc)
                return False

    async def attempt(self, run: Run) -> bool:
        """One delivery attempt, if this process wins its claim; whether it made one."""
        expected = run.callback_state
        state = expected or CallbackState()
        now = self.now()
        claim = msgspec.structs.replace(
            state,
            attempts=state.attempts + 1,
            next_at=now + timedelta(seconds=self.policy.claim_for),
        )
        if await self.store.update_callback(run.algorithm, run.id, expected, claim) is None:
            return False  # another scheduler has it, or it is done
        status, error = await self._post(run)
        now = self.now()
        if 200 <= status < 300:
            final = msgspec.structs.replace(
                claim, next_at=None, last_status=status, last_error="", delivered_at=now
            )
            done = True
        else:
            given_up = claim.attempts >= self.policy.max_attempts
            final = msgspec.structs.replace(
                claim,
                next_at=None
                if given_up
                else now + timedelta(seconds=self.policy.retry_after(claim.attempts)),
                last_status=status,
                last_error=error[:500],
                gave_up=given_up,
            )
            done = given_up
            log.info(
                "webhook of run %s, attempt %d: %s%s",
                run.id,
                claim.attempts,
                error,
                " (given up)" if given_up else "",
            )
        await self.store.update_callback(run.algorithm, run.id, claim, final, done=done)
        return True

    async def _post(self, run: Run) -> tuple[int, str]:
        """The status (0: no answer) and what went wrong, if anything."""
        try:
            # Checked again at delivery: the name may resolve elsewhere by now.
            await check_callback_url(run.callback_url, self.sender, self.allowed)
        except BadRequest as exc:
            return 0, f"refused: {exc}"
        body = _body_encoder.encode(
            CallbackBody(
                request_id=run.id,
                algorithm_name=run.algorithm,
                status=run.lifecycle_stage.value,
                result_uri=run.result_uri if run.lifecycle_stage.value == "COMPLETED" else "",
                run_error_message=run.algorithm_failure_cause,
            )
        )
        timestamp = str(int(self.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._secret, timestamp, body),
            DELIVERY_HEADER: f"{run.algorithm}/{run.id}",
        }
        try:
            status = await self.sender.post(run.callback_url, body, headers, self.policy.timeout)
        except BackendUnavailable as exc:
            return 0, str(exc)
        return status, "" if 200 <= status < 300 else f"HTTP {status}"


def _due(state: CallbackState | None, now: datetime) -> bool:
    return state is None or state.next_at is None or state.next_at <= now
