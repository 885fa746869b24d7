"""Signed payload/result URLs of the embedded buffer (HMAC over method, path, expiry)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from nexus.core.signing import RunTokens, UrlSigner, presented_token
from nexus.errors import Forbidden, Unauthenticated

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


# Per-run completion tokens (auth.receiver-tokens)

RUN = ("behave", "8e0d5c4c-1b0a-4f4e-9d1e-0c6a3c1f2b7a")


@pytest.fixture
def tokens() -> RunTokens:
    return RunTokens(SECRET)


def test_a_run_token_verifies_for_its_run_until_it_expires(tokens):
    token = tokens.issue(*RUN, 60, now=NOW)
    assert token.startswith("nxr1.") and len(token) < 80
    tokens.verify(token, *RUN, now=NOW + 60)
    with pytest.raises(Unauthenticated, match="it has expired") as caught:
        tokens.verify(token, *RUN, now=NOW + 61)
    assert caught.value.headers["WWW-Authenticate"].endswith('error="invalid_token"')


@pytest.mark.parametrize(
    "other",
    [
        ("behave", "00000000-0000-4000-8000-000000000000"),  # another run
        ("other-algorithm", RUN[1]),  # the same id under another algorithm
    ],
)
def test_another_runs_token_is_403(tokens, other):
    token = tokens.issue(*other, 60, now=NOW)
    with pytest.raises(Forbidden, match="not the run token of behave/") as caught:
        tokens.verify(token, *RUN, now=NOW)
    assert token not in caught.value.message


def test_a_token_of_another_secret_or_a_moved_expiry_is_403(tokens):
    foreign = RunTokens(b"another-deployment-secret").issue(*RUN, 60, now=NOW)
    with pytest.raises(Forbidden):
        tokens.verify(foreign, *RUN, now=NOW)
    prefix, exp, sig = tokens.issue(*RUN, 60, now=NOW).split(".")
    with pytest.raises(Forbidden):  # the expiry is signed: pushing it out breaks the MAC
        tokens.verify(f"{prefix}.{int(exp) + 3600}.{sig}", *RUN, now=NOW)


def test_no_token_is_401_without_an_invalid_token_error(tokens):
    for missing in (None, ""):
        with pytest.raises(Unauthenticated, match="Authentication required") as caught:
            tokens.verify(missing, *RUN, now=NOW)
        assert caught.value.headers == {"WWW-Authenticate": 'Bearer realm="nexus"'}
        assert "X-Nexus-Run-Token" in caught.value.message


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "nxr1",
        "nxr1..sig",
        "nxr1.12x.sig",
        "nxr1.\u00b2\u00b2.sig",  # digits to str.isdigit, not to int()
        "nxr2.1700000060.sig",
        "nxr1.1700000060.",
        "nxr1.1700000060.short",
        "nxr1.1700000060." + "\u00e9" * 43,  # not base64
        "nxr1.1700000060." + "A" * 200,  # oversized
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",  # a JWT is not a run token
    ],
)
def test_malformed_tokens_are_401(tokens, token):
    with pytest.raises(Unauthenticated, match="not a nexus run token") as caught:
        tokens.verify(token, *RUN, now=NOW)
    assert token not in caught.value.message


def test_a_short_run_token_secret_is_refused():
    with pytest.raises(ValueError, match="receiver token secret"):
        RunTokens(b"short")


@pytest.mark.parametrize(
    ("authorization", "header", "expected"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer  abc ", "", "abc"),
        ("Bearer mesh-token", "run-token", "run-token"),  # the dedicated header wins
        ("Basic dXNlcjpwYXNz", " run-token ", "run-token"),
        (None, None, None),
        ("  ", None, None),
    ],
)
def test_the_presented_token(authorization, header, expected):
    assert presented_token(authorization, header) == expected


def test_another_authorization_scheme_is_401():
    with pytest.raises(Unauthenticated, match="'Basic' is not accepted"):
        presented_token("Basic dXNlcjpwYXNz", None)
