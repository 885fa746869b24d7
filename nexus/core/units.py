"""Parsing of the human units used in settings and on the wire: durations and quantities.

Pure functions, shared by the settings loader, the run API (``payloadValidFor``) and the
Job renderer (CPU requests derived from limits).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


# The longest duration nexus takes anywhere (a settings TTL, a URL lifetime): 100 years.
# Far beyond any real setting, yet now + it fits every timestamp nexus computes (Unix
# seconds, datetime up to year 9999); "inf", "nan" and "1e309" are refused outright.
MAX_DURATION = 100 * 365 * 86400.0


def parse_duration(text: str | int | float, maximum: float = MAX_DURATION) -> float:
    """Seconds from a Go-style duration ("100ms", "1h30m", "24h"); bare numbers are seconds.

    Raises ValueError with the offending text, so callers can name the field; a duration
    must be finite, not negative and at most ``maximum`` seconds.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    try:
        seconds = float(text) if isinstance(text, (int, float)) else _parse_duration_text(text)
    except OverflowError:  # an int beyond any float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {_shown(text)}: not a finite duration")
    if seconds < 0:
        raise ValueError(f"invalid duration {_shown(text)}: must not be negative")
    if seconds > maximum:
        raise ValueError(
            f"invalid duration {_shown(text)}: longer than the allowed {format_duration(maximum)}"
        )
    return seconds


def _shown(text: str | int | float) -> str:
    return repr(text[:40] if isinstance(text, str) else text)


def _parse_duration_text(text: str) -> float:
    value = text.strip()
    if not value:
        raise ValueError("invalid duration '': expected e.g. '100ms', '90m', '24h'")
    try:
        return float(value)
    except ValueError:
        pass
    pos, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value) or pos == 0:
        raise ValueError(f"invalid duration {_shown(text)}: expected e.g. '100ms', '90m', '24h'")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest Go-style text for a whole number of seconds, milliseconds otherwise."""
    if seconds != int(seconds):
        return f"{int(round(seconds * 1000))}ms"
    whole = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


_QUANTITY = re.compile(r"^([+-]?\d+(?:\.\d+)?)([a-zA-Z]*)$")
_QUANTITY_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
}


def parse_quantity(text: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("500Mi", "250m", "2") as an exact Decimal."""
    if isinstance(text, bool):
        raise ValueError(f"invalid quantity {text!r}")
    if isinstance(text, (int, float)):
        return Decimal(str(text))
    match = _QUANTITY.match(text.strip())
    if not match or match.group(2) not in _QUANTITY_SUFFIX:
        raise ValueError(f"invalid quantity {text!r}: expected e.g. '500Mi', '250m', '2'")
    try:
        return Decimal(match.group(1)) * _QUANTITY_SUFFIX[match.group(2)]
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {text!r}") from exc


def cpu_request_from_limit(limit: str | int, factor: float = 0.1) -> str:
    """The CPU request the Go system derives from a limit: ``%.0fm`` of the limit's
    millicores (rounded up, as Kubernetes' MilliValue does) times the factor, computed in
    float64 as Go does, so 1000m -> 100m and 5m -> 0m (half rounds to even)."""
    millicores = math.ceil(parse_quantity(limit) * 1000)
    return f"{float(millicores) * factor:.0f}m"
