"""Durations and Kubernetes quantities (settings, payloadValidFor, CPU requests)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nexus.core.units import (
    cpu_request_from_limit,
    format_duration,
    parse_duration,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("100ms", 0.1),
        ("1s", 1.0),
        ("90m", 5400.0),
        ("24h", 86400.0),
        ("1h30m", 5400.0),
        ("2h45m30s", 9930.0),
        ("1.5s", 1.5),
        ("500us", 0.0005),
        ("500µs", 0.0005),
        ("10ns", 1e-8),
        ("2d", 172800.0),
        ("0s", 0.0),
        ("30", 30.0),
        ("0.25", 0.25),
        (" 5s ", 5.0),
        (7, 7.0),
        (1.5, 1.5),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "  ", "abc", "5x", "s", "1h 30m", "1h-30m", "h1", "-5s", "-1", "1.2.3s", "5sm", True, -3],
)
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert "duration" in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "inf",
        "Infinity",
        "-inf",
        "nan",
        "NaN",
        "1e309",
        "1" * 400 + "h",
        float("inf"),
        float("nan"),
        10**400,
    ],
)
def test_parse_duration_refuses_what_is_not_finite(text):
    with pytest.raises(ValueError, match="not a finite duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["999999999999", "876001h", "36501d", 1e308])
def test_parse_duration_refuses_more_than_a_century(text):
    """Now + the duration must stay a timestamp: 100 years is the most anything takes."""
    with pytest.raises(ValueError, match="longer than the allowed 876000h"):
        parse_duration(text)


def test_parse_duration_takes_a_tighter_maximum():
    assert parse_duration("365d", maximum=365 * 86400) == 365 * 86400
    with pytest.raises(ValueError, match="longer than the allowed 8760h"):
        parse_duration("366d", maximum=365 * 86400)


def test_parse_duration_error_names_the_text():
    with pytest.raises(ValueError, match="'12 parsecs'"):
        parse_duration("12 parsecs")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (86400, "24h"),
        (3600, "1h"),
        (5400, "90m"),
        (60, "1m"),
        (90, "90s"),
        (1, "1s"),
        (0, "0s"),
        (0.1, "100ms"),
        (1.5, "1500ms"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.1, 1, 59, 60, 61, 3599, 3600, 5400, 86400, 90061])
def test_format_then_parse_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", Decimal(2)),
        ("250m", Decimal("0.25")),
        ("1.5", Decimal("1.5")),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("1G", Decimal(10**9)),
        ("1T", Decimal(10**12)),
        ("1Ki", Decimal(1024)),
        ("500Mi", Decimal(500 * 2**20)),
        ("2Gi", Decimal(2 * 2**30)),
        ("1Ti", Decimal(2**40)),
        ("0.5Gi", Decimal(2**29)),
        (3, Decimal(3)),
        (0.5, Decimal("0.5")),
    ],
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Zi", "1 Gi", "Mi", "1.2.3", "1e", True])
def test_parse_quantity_refuses(text):
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("1", "100m"),
        ("2", "200m"),
        ("500m", "50m"),
        ("1500m", "150m"),
        ("4", "400m"),
        ("0.5", "50m"),
        # Go's fmt.Sprintf("%.0fm", milli*0.1): halves round to even, tiny limits to 0m
        ("5m", "0m"),
        ("15m", "2m"),
        ("1m", "0m"),
        ("1005m", "100m"),
        ("0.0001", "0m"),
        (3, "300m"),
    ],
)
def test_cpu_request_is_ten_percent_of_the_limit(limit, expected):
    assert cpu_request_from_limit(limit) == expected


def test_cpu_request_factor_is_configurable():
    assert cpu_request_from_limit("2", 0.5) == "1000m"
    assert cpu_request_from_limit("3", 1 / 3) == "1000m"
