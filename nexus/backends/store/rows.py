"""Mapping between a :class:`Run` and the column values every store writes.

Shared by the SQLite and Cassandra stores so both keep exactly the same columns: JSON
columns (specs, parent) as compact JSON text, ``{}``/empty read back as unset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from nexus.core.models import AlgorithmSpec, LifecycleStage, ParentRef, Run, SpecOverride

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
)
JSON_COLUMNS = {
    "applied_configuration": AlgorithmSpec,
    "configuration_overrides": SpecOverride,
    "parent": ParentRef,
}
TIME_COLUMNS = ("received_at", "sent_at", "last_modified")

_encoder = msgspec.json.Encoder()
_decoders = {name: msgspec.json.Decoder(kind) for name, kind in JSON_COLUMNS.items()}


def encode_json_column(value: Any) -> str:
    return "{}" if value is None else _encoder.encode(value).decode()


def decode_json_column(name: str, text: str | None) -> Any:
    if not text or text == "{}":
        return None
    return _decoders[name].decode(text)


def encode_value(name: str, value: Any) -> Any:
    """A column value from a Run attribute value (times stay datetimes)."""
    if name in JSON_COLUMNS:
        return encode_json_column(value)
    if name == "lifecycle_stage":
        return LifecycleStage(value).value
    return value


def run_to_columns(run: Run) -> dict[str, Any]:
    return {name: encode_value(name, getattr(run, name)) for name in COLUMNS}


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
