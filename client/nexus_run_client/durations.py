"""Durations typed on the command line: ``90s``, ``5m``, ``1h30m``, ``250ms`` or seconds.

The client keeps its own small parser so it installs without the server. It is stricter
than the server's settings parser (no ``ns``/``us``): a wait timeout finer than a
millisecond means nothing to a command that polls over HTTP.
"""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TERM = r"(\d+(?:\.\d+)?)(ms|s|m|h|d)"
_WHOLE = re.compile(f"(?:{_TERM})+")


def parse_seconds(text: str) -> float:
    """Seconds in ``text``; ValueError, with the text, unless finite and not negative."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        if not _WHOLE.fullmatch(value):
            raise ValueError(
                f"invalid duration {text[:40]!r}: expected e.g. '90s', '5m', "
                "'1h30m' or a number of seconds"
            ) from None
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in re.findall(_TERM, value))
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text[:40]!r}: must be finite and not negative")
    return seconds
