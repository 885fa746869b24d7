"""Completion webhooks over HTTP with httpx (core.callbacks decides what and when).

Redirects are not followed (a 3xx is a failed attempt): a redirect could send nexus to an
address the callback check refused. Proxies from the environment are ignored for the
same reason. Names are resolved by the event loop's resolver, in a thread.
"""

from __future__ import annotations

import asyncio
import socket

import httpx

from nexus.errors import BackendUnavailable, BadRequest

_RESOLVE_TIMEOUT = 5.0


class HttpWebhookSender:
    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={"User-Agent": "nexus-webhooks"},
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def addresses(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            raise BadRequest(f"callbackUrl host {host[:200]!r} does not resolve: {exc}") from None
        return sorted({str(info[4][0]) for info in infos})

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        if self._client is None:
            raise BackendUnavailable("the webhook sender is not open")
        try:
            response = await self._client.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from exc
        return response.status_code
