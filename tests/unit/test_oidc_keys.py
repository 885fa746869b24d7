"""The OIDC key set (nexus.backends.auth.oidc.JwksKeys) in virtual time, its fetches
scripted: discovery, refetch on an unknown key id (at most once a second), a failed
fetch as 503 (also for the second after it), stale keys kept through an outage."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from nexus.backends.auth import oidc
from nexus.errors import BackendUnavailable
from nexus.settings import Oidc

ISSUER = "https://idp.example"


def jwk(kid: str) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key)), "kid": kid}


class Idp:
    def __init__(self) -> None:
        self.published = [jwk("k1")]
        self.down = False
        self.answer: Any = None
        self.fetched: list[str] = []

    def get_json(self, url: str, timeout: float) -> Any:
        self.fetched.append(url)
        if self.down:
            raise OSError("connection refused")
        if url.endswith("/.well-known/openid-configuration"):
            return {"jwks_uri": f"{ISSUER}/keys"}
        return self.answer if self.answer is not None else {"keys": self.published}


@pytest.fixture
def idp(monkeypatch: pytest.MonkeyPatch) -> Idp:
    fake = Idp()
    monkeypatch.setattr(oidc, "_get_json", fake.get_json)
    return fake


@pytest.fixture
def now() -> list[float]:
    return [1000.0]


@pytest.fixture
def keys(now: list[float]) -> oidc.JwksKeys:
    return oidc.JwksKeys(Oidc(issuer=ISSUER, audience="nexus"), clock=lambda: now[0])


async def test_keys_are_discovered_then_served_from_memory(idp: Idp, keys: oidc.JwksKeys) -> None:
    assert (await keys.key("k1")) is not None
    assert await keys.key(None) is not None  # the only key, for a token naming none
    assert idp.fetched == [f"{ISSUER}/.well-known/openid-configuration", f"{ISSUER}/keys"]


async def test_an_unknown_key_id_refetches_at_most_once_a_second(
    idp: Idp, keys: oidc.JwksKeys, now: list[float]
) -> None:
    await keys.key("k1")
    idp.published.append(jwk("k2"))
    assert await keys.key("k2") is None  # within a second of the last fetch
    now[0] += 1.0
    assert await keys.key("k2") is not None
    assert idp.fetched.count(f"{ISSUER}/keys") == 2


async def test_a_failed_fetch_is_503_and_stays_so_until_the_next_try(
    idp: Idp, keys: oidc.JwksKeys, now: list[float]
) -> None:
    idp.down = True
    with pytest.raises(BackendUnavailable, match="could not be fetched: connection refused"):
        await keys.key("k1")
    with pytest.raises(BackendUnavailable):  # no new fetch yet, and no 401 meanwhile
        await keys.key("k1")
    assert len(idp.fetched) == 1
    idp.down = False
    now[0] += 1.0
    assert await keys.key("k1") is not None


@pytest.mark.parametrize("answer", [{"keys": []}, {"keys": [{"kty": "zzz"}]}, ["not", "a", "set"]])
async def test_an_unusable_key_set_is_503(idp: Idp, keys: oidc.JwksKeys, answer: Any) -> None:
    idp.answer = answer
    with pytest.raises(BackendUnavailable, match="could not be fetched"):
        await keys.key("k1")


async def test_old_keys_keep_verifying_when_a_refresh_fails(
    idp: Idp, keys: oidc.JwksKeys, now: list[float]
) -> None:
    await keys.key("k1")
    now[0] += oidc.MAX_KEY_AGE
    idp.down = True
    assert await keys.key("k1") is not None  # stale but still the issuer's key
    with pytest.raises(BackendUnavailable):  # an unknown one cannot be looked up
        now[0] += 1.0
        await keys.key("k9")
