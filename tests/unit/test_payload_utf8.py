"""The UTF-8 check of algorithm payloads, including the piecewise pass for large ones."""

from __future__ import annotations

import pytest

from nexus.api.runs import _UTF8_CHUNK, _check_utf8
from nexus.errors import BadRequest


def large(tail: bytes) -> memoryview:
    # A 3-byte character straddles the first chunk boundary: a piecewise check that did
    # not carry state across pieces would refuse this valid text.
    head = b"a" * (_UTF8_CHUNK - 1) + "€".encode()
    return memoryview(head + b"b" * _UTF8_CHUNK + tail)


def test_valid_payloads_pass():
    _check_utf8(memoryview('{"a": "naïve ☃ 𝄞"}'.encode()))
    _check_utf8(large(b'"}'))


@pytest.mark.parametrize("bad", [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"])
def test_invalid_payloads_are_refused(bad):
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        _check_utf8(memoryview(b'{"a": "' + bad + b'"}'))
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        _check_utf8(large(bad))
