"""The ``nexus`` commands that look back at runs: ls, history, logs, result, resubmit.

They call the listing, history, log and resubmit routes (docs/runs-api.md, docs/ui.md);
``nexus get``, ``wait``, ``cancel`` and ``runs`` are in :mod:`nexus_run_client.cli`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nexus_run_client.cli_support import (
    UsageError,
    columns,
    print_data,
    read_json_object,
    structured,
)
from nexus_run_client.models import RunHistory, RunSummary
from nexus_run_client.sync import NexusClient

STAGES = (
    "NEW",
    "BUFFERED",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "SCHEDULING_FAILED",
    "DEADLINE_EXCEEDED",
    "CANCELLED",
)
MAX_TAIL = 10_000
Command = Callable[[str, str], argparse.ArgumentParser]


def _tail(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_TAIL:
        raise argparse.ArgumentTypeError(f"expected a whole number of lines from 1 to {MAX_TAIL}")
    return int(text)


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError("expected a page size from 1 to 1000")
    return int(text)


def add_inspect_commands(command: Command) -> None:
    ls = command("ls", "list runs, newest first, with filters; pages with --cursor or --all")
    ls.add_argument("--algorithm", "-a", help="only runs of this algorithm")
    ls.add_argument(
        "--stage",
        "-s",
        action="append",
        choices=STAGES,
        type=str.upper,
        help="only runs in this stage (repeat for several)",
    )
    ls.add_argument("--tag", help="only runs with this client tag")
    ls.add_argument("--since", metavar="RFC3339", help="received at or after this time")
    ls.add_argument("--until", metavar="RFC3339", help="received before this time")
    ls.add_argument("--parent", metavar="ALGORITHM/ID", help="only the children of this run")
    ls.add_argument("--limit", type=_limit, default=50, help="runs per page (default 50)")
    ls.add_argument("--cursor", help="the page after the one that printed this cursor")
    ls.add_argument("--all", action="store_true", help="follow every page to the end")

    history = command("history", "show every stage change of a run, with time and cause")
    history.add_argument("algorithm")
    history.add_argument("request_id")

    logs = command("logs", "print the last lines of a run's Pod (or local process) log")
    logs.add_argument("algorithm")
    logs.add_argument("request_id")
    logs.add_argument("--tail", type=_tail, default=200, help="lines (default 200)")

    result = command("result", "download a finished run's result")
    result.add_argument("algorithm")
    result.add_argument("request_id")
    result.add_argument("--file", "-f", metavar="PATH", help="write it here (default: stdout)")

    resubmit = command("resubmit", "run a finished run again with its payload and configuration")
    resubmit.add_argument("algorithm")
    resubmit.add_argument("request_id")
    resubmit.add_argument("--tag", help="the new run's tag (default: the original's)")
    resubmit.add_argument(
        "--custom-configuration", metavar="FILE", help="JSON file with new template overrides"
    )


def _summary_lines(runs: list[RunSummary], wide: bool) -> list[tuple[str, ...]]:
    if wide:
        header: tuple[str, ...] = (
            "REQUEST ID",
            "ALGORITHM",
            "STAGE",
            "RECEIVED",
            "CLUSTER",
            "TAG",
            "RESULT / ERROR",
        )
        rows: list[tuple[str, ...]] = [
            (
                r.request_id,
                r.algorithm,
                r.stage,
                r.received_at or "-",
                r.cluster or "-",
                r.tag or "-",
                r.result_uri or r.error_cause or "-",
            )
            for r in runs
        ]
    else:
        header = ("REQUEST ID", "ALGORITHM", "STAGE", "RECEIVED", "TAG")
        rows = [(r.request_id, r.algorithm, r.stage, r.received_at or "-", r.tag) for r in runs]
    return [header, *rows]


def _cmd_ls(client: NexusClient, args: argparse.Namespace) -> int:
    filters: dict[str, Any] = {
        "algorithm": args.algorithm or "",
        "stage": args.stage or [],
        "tag": args.tag or "",
        "since": args.since or "",
        "until": args.until or "",
        "parent": args.parent or "",
        "limit": str(args.limit),
        "cursor": args.cursor or "",
    }
    runs: list[RunSummary] = []
    while True:
        page = client.list_runs(**filters)
        runs.extend(page.runs)
        if not (args.all and page.next_cursor):
            break
        filters["cursor"] = page.next_cursor
    if structured(args):
        print_data({"runs": runs, "nextCursor": page.next_cursor}, args.output)
    else:
        sys.stdout.write(columns(_summary_lines(runs, args.output == "wide")))
        if page.next_cursor:
            print(f"more: nexus ls ... --cursor {page.next_cursor}", file=sys.stderr)
    return 0


def _history_lines(history: RunHistory) -> list[tuple[str, ...]]:
    return [
        ("AT", "KIND", "STAGE", "CAUSE"),
        *((e.at, e.kind, e.stage or "-", e.cause or "-") for e in history.events),
    ]


def _cmd_history(client: NexusClient, args: argparse.Namespace) -> int:
    history = client.get_history(args.algorithm, args.request_id)
    if structured(args):
        print_data(history, args.output)
    else:
        sys.stdout.write(columns(_history_lines(history)))
    return 0


def _cmd_logs(client: NexusClient, args: argparse.Namespace) -> int:
    sys.stdout.write(client.get_logs(args.algorithm, args.request_id, tail=args.tail))
    return 0


def _cmd_result(client: NexusClient, args: argparse.Namespace) -> int:
    data = client.get_result_data(args.algorithm, args.request_id)
    if args.file:
        try:
            Path(args.file).write_bytes(data)
        except OSError as exc:
            raise UsageError(f"cannot write {args.file}: {exc.strerror}") from None
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _cmd_resubmit(client: NexusClient, args: argparse.Namespace) -> int:
    custom = (
        read_json_object(args.custom_configuration, "custom configuration")
        if args.custom_configuration
        else None
    )
    new_id = client.resubmit_run(
        args.algorithm, args.request_id, tag=args.tag, custom_configuration=custom
    )
    if structured(args):
        print_data({"requestId": new_id, "resubmittedFrom": args.request_id}, args.output)
    else:
        print(new_id)
    return 0


HANDLERS: dict[str, Callable[[NexusClient, argparse.Namespace], int]] = {
    "ls": _cmd_ls,
    "history": _cmd_history,
    "logs": _cmd_logs,
    "result": _cmd_result,
    "resubmit": _cmd_resubmit,
}
