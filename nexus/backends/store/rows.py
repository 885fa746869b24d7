"""Mapping between a :class:`Run` and the column values every store writes.

Shared by the SQLite and Cassandra stores so both keep exactly the same columns: JSON
columns (specs, parent) as compact JSON text, ``{}``/empty read back as unset.

The Go system writes its JSON columns as ``b64__`` + base64 of the JSON, and its reader
base64-decodes the spec columns unconditionally (only ``{}`` and empty pass as they
are). The Cassandra store therefore writes that form (``b64=True``) so a Go receiver or
supervisor sharing the keyspace can read nexus's runs; every reader here takes both.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import msgspec

from nexus.core.models import (
    AlgorithmSpec,
    CallbackState,
    LifecycleStage,
    ParentRef,
    Run,
    SpecOverride,
)

COLUMNS = (
    "algorithm",
    "id",
    "lifecycle_stage",
    "payload_uri",
    "result_uri",
    "algorithm_failure_cause",
    "algorithm_failure_details",
    "received_by_host",
    "received_at",
    "sent_at",
    "applied_configuration",
    "configuration_overrides",
    "content_hash",
    "last_modified",
    "tag",
    "api_version",
    "job_uid",
    "parent",
    "cluster",
    "payload_valid_for",
    "callback_url",
    "callback_state",
    "callback_done_at",
    "resubmitted_from",
    "created_by",
)
JSON_COLUMNS = {
    "applied_configuration": AlgorithmSpec,
    "configuration_overrides": SpecOverride,
    "parent": ParentRef,
    "callback_state": CallbackState,
}
TIME_COLUMNS = ("received_at", "sent_at", "last_modified", "callback_done_at")
GO_PREFIX = "b64__"
_UNSET_JSON = (b"", b"{}", b"null")

_encoder = msgspec.json.Encoder()
_decoders = {name: msgspec.json.Decoder(kind) for name, kind in JSON_COLUMNS.items()}


def encode_json_column(value: Any, b64: bool = False) -> str:
    if value is None:
        return "{}"
    text = _encoder.encode(value)
    return GO_PREFIX + base64.b64encode(text).decode() if b64 else text.decode()


def decode_json_column(name: str, text: str | None) -> Any:
    if not text or text == "{}":
        return None
    if text.startswith(GO_PREFIX):
        raw = base64.b64decode(text[len(GO_PREFIX) :], validate=True)
        # The Go writer encodes an unset spec as `null` and an unset parent as `{}`.
        return None if raw in _UNSET_JSON else _decoders[name].decode(raw)
    return _decoders[name].decode(text)


def encode_value(name: str, value: Any, b64: bool = False) -> Any:
    """A column value from a Run attribute value (times stay datetimes)."""
    if name in JSON_COLUMNS:
        return encode_json_column(value, b64)
    if name == "lifecycle_stage":
        return LifecycleStage(value).value
    return value


def run_to_columns(run: Run, b64: bool = False) -> dict[str, Any]:
    return {name: encode_value(name, getattr(run, name), b64) for name in COLUMNS}


def run_from_columns(row: dict[str, Any], parse_time=None) -> Run:
    values: dict[str, Any] = {}
    for name in COLUMNS:
        value = row.get(name)
        if name in JSON_COLUMNS:
            value = decode_json_column(name, value)
        elif name == "lifecycle_stage":
            value = LifecycleStage(value)
        elif name in TIME_COLUMNS:
            value = parse_time(value) if (parse_time and value is not None) else value
        elif value is None:
            value = ""
        values[name] = value
    return Run(**values)


def check_fields(fields: dict[str, Any]) -> None:
    unknown = set(fields) - set(COLUMNS) - {"lifecycle_stage"}
    protected = {"algorithm", "id"} & set(fields)
    if unknown or protected:
        raise ValueError(f"cannot write columns {sorted(unknown | protected)}")


def utc(value: datetime) -> datetime:
    """Naive datetimes read back from a driver are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
