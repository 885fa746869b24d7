"""Logging: one line per event, JSON by default, with the request id when there is one.

``log-format: json`` (the default) writes each record as one JSON object::

    {"time": "2025-01-01T12:00:00.123Z", "level": "INFO", "logger": "nexus.scheduler",
     "message": "...", "request_id": "6f1c..."}

plus ``exception`` (the formatted traceback) when there is one and any ``extra={...}``
fields the caller passed. ``log-format: text`` writes the same facts as a readable line.

The request id lives in a context variable that the app's request middleware sets (from
the caller's ``X-Request-ID`` header, or a new one) and that every log call made while
serving that request — in handlers, use cases and backends — picks up.
"""

from __future__ import annotations

import contextvars
import logging
import random
import re
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

REQUEST_ID_HEADER = "X-Request-ID"
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nexus_request_id", default=None
)

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}
_encoder = msgspec.json.Encoder(decimal_format="number")


def new_request_id(offered: str | None = None) -> str:
    """The caller's id when it is a sane token, a fresh one otherwise."""
    if offered and _VALID_ID.match(offered):
        return offered
    # 128 random bits as 32 hex digits, like uuid4().hex, from the process's PRNG: an id
    # that ties log lines together needs to be unique, not unpredictable, and this is
    # made for every request (about 0.3 µs against uuid4's 3.7).
    return f"{random.getrandbits(128):032x}"


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        try:
            return _encoder.encode(entry).decode()
        except (TypeError, msgspec.EncodeError):
            return _encoder.encode(
                {
                    k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
                    for k, v in entry.items()
                }
            ).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        if rid:
            first, newline, rest = line.partition("\n")
            line = f"{first} request_id={rid}{newline}{rest}"
        return line


def make_handler(log_format: str, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(settings: Any, stream: Any = None) -> None:
    """Route every logger (nexus, sanic, libraries) through one handler on the root."""
    # DISABLED (the Go system's word) discards every record, as its Go counterpart does.
    levels: dict[str, int | str] = {"WARN": "WARNING", "DISABLED": logging.CRITICAL + 1}
    level = levels.get(settings.log_level, settings.log_level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = make_handler(settings.log_format, stream)
    # On the handler too: a logger with a level of its own (Sanic sets some) sends its
    # records to the root's handlers whatever the root's level is.
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(level)
    # Sanic's own loggers get handlers of their own when an app is built with
    # configure_logging=True; ours is built without, so they only need to propagate.
    for name in ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets"):
        sanic_logger = logging.getLogger(name)
        for handler in list(sanic_logger.handlers):
            sanic_logger.removeHandler(handler)
        sanic_logger.propagate = True
