"""What the ``nexus`` commands share: usage errors, reading JSON files, printing data
(``-o json|yaml``) and aligned tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec


class UsageError(Exception):
    """A bad argument found after parsing (unreadable payload file, bad duration)."""


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def print_data(value: Any, output: str) -> None:
    """-o json / -o yaml: the wire shapes (camelCase), the same in both."""
    if output == "yaml":
        import yaml

        sys.stdout.write(
            yaml.safe_dump(msgspec.to_builtins(value), sort_keys=False, allow_unicode=True)
        )
    else:
        print_json(value)


def structured(args: argparse.Namespace) -> bool:
    return args.output in ("json", "yaml")


def read_json_object(source: str, what: str) -> bytes:
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {source}: {exc.strerror}") from None
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise UsageError(f"{what} {source} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} {source} must hold a JSON object")
    return data


def columns(lines: Sequence[Sequence[str]]) -> str:
    """Aligned columns (the first line is the header); the last one is left ragged."""
    aligned = len(lines[0]) - 1
    widths = [max(len(line[i]) for line in lines) for i in range(aligned)]
    return (
        "\n".join(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:aligned]))
            + "  "
            + line[aligned]
            for line in lines
        ).rstrip()
        + "\n"
    )
