"""Signed payload/result URLs of the embedded buffer (HMAC over method, path, expiry)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from nexus.core.signing import UrlSigner
from nexus.errors import Forbidden

SECRET = b"0123456789abcdef-test-secret"
BASE = "http://127.0.0.1:8080"
PATH = "/data/v1/payloads/behave/requests/8e0d5c4c-1b0a-4f4e-9d1e-0c6a3c1f2b7a"
NOW = 1_700_000_000.0


def _parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path, query["exp"][0], query["sig"][0]


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(SECRET, BASE + "/")


def test_signed_url_shape(signer):
    url = signer.sign("GET", PATH, 60, now=NOW)
    assert url.startswith(f"{BASE}{PATH}?")
    path, exp, sig = _parts(url)
    assert path == PATH
    assert int(exp) == int(NOW + 60)
    assert sig and "=" not in sig


def test_valid_url_verifies(signer):
    path, exp, sig = _parts(signer.sign("GET", PATH, 60, now=NOW))
    signer.verify("GET", path, exp, sig, now=NOW)
    signer.verify("GET", path, exp, sig, now=NOW + 59)


def test_valid_url_verifies_against_the_real_clock(signer):
    path, exp, sig = _parts(signer.sign("PUT", PATH, 3600))
    signer.verify("PUT", path, exp, sig)


def test_tampered_path_is_refused(signer):
    path, exp, sig = _parts(signer.sign("GET", PATH, 60, now=NOW))
    other = path.replace("8e0d5c4c", "9e0d5c4c")
    with pytest.raises(Forbidden, match="signature does not match"):
        signer.verify("GET", other, exp, sig, now=NOW)
    with pytest.raises(Forbidden):
        signer.verify("GET", path.replace("payloads", "results"), exp, sig, now=NOW)
    with pytest.raises(Forbidden):
        signer.verify("GET", path.replace("/behave/", "/other/"), exp, sig, now=NOW)


def test_tampered_method_is_refused(signer):
    path, exp, sig = _parts(signer.sign("GET", PATH, 60, now=NOW))
    with pytest.raises(Forbidden, match="signature does not match"):
        signer.verify("PUT", path, exp, sig, now=NOW)


def test_tampered_expiry_is_refused(signer):
    path, exp, sig = _parts(signer.sign("GET", PATH, 60, now=NOW))
    with pytest.raises(Forbidden, match="signature does not match"):
        signer.verify("GET", path, str(int(exp) + 3600), sig, now=NOW)


def test_tampered_signature_is_refused(signer):
    path, exp, sig = _parts(signer.sign("GET", PATH, 60, now=NOW))
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(Forbidden, match="signature does not match"):
        signer.verify("GET", path, exp, flipped, now=NOW)


def test_expired_url_is_refused(signer):
    path, exp, sig = _parts(signer.sign("GET", PATH, 60, now=NOW))
    with pytest.raises(Forbidden, match="expired"):
        signer.verify("GET", path, exp, sig, now=NOW + 61)


@pytest.mark.parametrize(("exp", "sig"), [(None, "x"), ("123", None), ("", ""), (None, None)])
def test_missing_parameters_are_refused(signer, exp, sig):
    with pytest.raises(Forbidden, match="not signed"):
        signer.verify("GET", PATH, exp, sig, now=NOW)


def test_malformed_expiry_is_refused(signer):
    _, _, sig = _parts(signer.sign("GET", PATH, 60, now=NOW))
    with pytest.raises(Forbidden, match="malformed expiry"):
        signer.verify("GET", PATH, "tomorrow", sig, now=NOW)


def test_another_secret_does_not_verify(signer):
    path, exp, sig = _parts(signer.sign("GET", PATH, 60, now=NOW))
    stranger = UrlSigner(b"another-secret-of-16+bytes", BASE)
    with pytest.raises(Forbidden):
        stranger.verify("GET", path, exp, sig, now=NOW)


def test_forbidden_is_a_403():
    assert Forbidden("x").status == 403


def test_short_secret_is_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        UrlSigner(b"short", BASE)
