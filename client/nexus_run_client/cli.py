"""The ``nexus`` command's client side (run, get, wait, cancel, runs; ls, history, logs,
result and resubmit are in cli_inspect) and its console script.

This distribution owns the ``nexus`` script. With the nexus server installed beside it,
the server's command takes over (``--role`` and the other server flags, then these same
client commands): the server registers it as the entry point ``nexus`` in the group
``nexus_run_client.server``. Without the server, ``nexus`` offers the client commands only.

Exit codes (a script can rely on them; also in ``nexus --help`` and docs/client.md):

    0  success; for run --wait / get / wait: every run COMPLETED (or is still going, for get)
    1  a run ended unsuccessfully (FAILED, CANCELLED, SCHEDULING_FAILED, DEADLINE_EXCEEDED)
    2  usage error or a request the server refused as bad (400, 401, 403, 413, 417, other 4xx)
    3  not found (404: unknown run)
    4  timeout: a run was still unfinished when --timeout ran out
    5  server unavailable: unreachable, 503 / 429 through every retry, or a 5xx
    6  conflict (409): e.g. cancelling a run that already finished
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib.metadata
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec

from nexus_run_client import models
from nexus_run_client.async_ import AsyncNexusClient
from nexus_run_client.cli_inspect import HANDLERS, add_inspect_commands
from nexus_run_client.cli_support import (
    UsageError,
    columns,
    print_data,
    read_json_object,
    structured,
)
from nexus_run_client.durations import parse_seconds
from nexus_run_client.errors import (
    Conflict,
    NexusClientError,
    NotFound,
    QueueFull,
    ServerError,
    Unavailable,
    WaitTimeout,
)
from nexus_run_client.models import RunResult
from nexus_run_client.progress import Progress, StageLine, describe
from nexus_run_client.sync import DEFAULT_URL, NexusClient
from nexus_run_client.version import DISTRIBUTION, client_version

SERVER_ENTRY_POINTS = "nexus_run_client.server"

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
EXIT_TIMEOUT, EXIT_UNAVAILABLE, EXIT_CONFLICT = 4, 5, 6

EXIT_CODES_HELP = """exit codes:
  0  success (every awaited run COMPLETED)
  1  a run ended unsuccessfully (FAILED, CANCELLED, SCHEDULING_FAILED, DEADLINE_EXCEEDED)
  2  usage error, or the server refused the request as bad (400/401/403/413/417)
  3  not found (unknown run)
  4  timeout: a run was still unfinished when --timeout ran out
  5  server unavailable (unreachable, 429/503 after retries, 5xx)
  6  conflict (e.g. cancelling a run that already finished)"""

COMMANDS = (
    "run",
    "get",
    "wait",
    "cancel",
    "runs",
    "ls",
    "history",
    "logs",
    "result",
    "resubmit",
    "completion",
)
SHELLS = ("bash", "zsh", "fish")


def exit_code_for(exc: NexusClientError) -> int:
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Conflict):
        return EXIT_CONFLICT
    if isinstance(exc, (Unavailable, QueueFull, ServerError)):
        return EXIT_UNAVAILABLE
    return EXIT_USAGE


def _seconds(text: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _scheduler_url(text: str) -> str:
    """--scheduler: refused at once (exit 2) unless it is an http(s) URL with a host."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a scheduler URL: expected http:// or https:// and a host, "
            "e.g. http://127.0.0.1:8080"
        )
    return text


OUTPUTS = ("text", "json", "yaml", "wide")


def add_client_flags(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """The flags every client command takes, before or after its name (as kubectl does).

    The top-level parser holds the defaults; each command's copy has none (SUPPRESS), so
    a flag given after the command overrides one given before it, and one given before
    it is not reset by the command's parser."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--scheduler",
        metavar="URL",
        type=_scheduler_url,
        default=default(os.environ.get("NEXUS_SCHEDULER_URL", DEFAULT_URL)),
        help="scheduler base URL (env NEXUS_SCHEDULER_URL; default "
        f"{os.environ.get('NEXUS_SCHEDULER_URL', DEFAULT_URL)})",
    )
    parser.add_argument(
        "--token",
        default=default(os.environ.get("NEXUS_TOKEN")),
        help="bearer token sent as Authorization (env NEXUS_TOKEN)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default=default("text"),
        help="text (default), json, yaml, or wide (every column)",
    )
    parser.add_argument(
        "--json",
        dest="output",
        action="store_const",
        const="json",
        default=argparse.SUPPRESS,
        help="the same as -o json",
    )


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the client commands on the ``nexus`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    add_client_flags(common, defaults=False)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    run = command("run", "start a run; prints its request id (or, with --wait, its result)")
    run.add_argument("algorithm")
    run.add_argument(
        "--payload",
        required=True,
        metavar="FILE|-",
        help="the run's payload, a JSON object; '-' reads standard input",
    )
    run.add_argument("--tag", help="client tag to find the run by (nexus runs --tag)")
    run.add_argument("--wait", action="store_true", help="wait until the run finishes")
    run.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="with --wait: give up after S seconds ('90s', '5m'); exit code 4",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="record the run and render its Job, but launch nothing",
    )
    run.add_argument(
        "--idempotency-key",
        metavar="K",
        help="a repeat with the same key returns the first run's id",
    )
    run.add_argument(
        "--custom-configuration",
        metavar="FILE",
        help="JSON file with template overrides (customConfiguration)",
    )
    run.add_argument(
        "--parent",
        metavar="ALGORITHM/ID",
        help="make this run a child of that run (cancelled with it)",
    )
    run.add_argument(
        "--payload-valid-for", metavar="DURATION", help="lifetime of the payload URL, e.g. '24h'"
    )

    get = command("get", "show a run's status")
    get.add_argument("algorithm")
    get.add_argument("request_id")

    wait = command("wait", "wait until runs finish; a live display on a terminal")
    wait.add_argument("algorithm")
    wait.add_argument("request_ids", nargs="+", metavar="ID")
    wait.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="give up after S seconds ('90s', '5m'); exit code 4",
    )

    cancel = command("cancel", "cancel a run (and its children)")
    cancel.add_argument("algorithm")
    cancel.add_argument("request_id")
    cancel.add_argument("--reason", default="", help="why; recorded with the run")
    cancel.add_argument(
        "--policy",
        default="Background",
        choices=models.CANCELLATION_POLICIES,
        help="how the run's Job is deleted (default %(default)s)",
    )
    cancel.add_argument(
        "--initiator", default=None, help="who cancels (default: the local user name)"
    )

    runs = command("runs", "list the runs that carry a tag, as a table")
    runs.add_argument("--tag", required=True)

    add_inspect_commands(command)

    completion = subparsers.add_parser(
        "completion",
        help="print the shell completion script",
        description="print the completion script for SHELL; e.g. in ~/.bashrc: "
        'eval "$(nexus completion bash)"; for fish: '
        "nexus completion fish > ~/.config/fish/completions/nexus.fish",
    )
    completion.add_argument("shell", choices=SHELLS)


# --- output --------------------------------------------------------------------------


def _result_code(result: RunResult) -> int:
    return EXIT_RUN_FAILED if result.failed else EXIT_OK


def _table(rows: list[RunResult], wide: bool = False) -> str:
    """Aligned columns; the last one is left ragged. Wide: result and error each in a
    column of their own, empty ones shown as '-'."""
    header: tuple[str, ...]
    lines: list[tuple[str, ...]]
    if wide:
        header = ("REQUEST ID", "ALGORITHM", "STATUS", "RESULT URI", "ERROR")
        lines = [
            header,
            *(
                (
                    r.request_id,
                    r.algorithm_name or "-",
                    r.status,
                    r.result_uri or "-",
                    r.run_error_message or "-",
                )
                for r in rows
            ),
        ]
    else:
        header = ("REQUEST ID", "ALGORITHM", "STATUS", "RESULT / ERROR")
        lines = [
            header,
            *(
                (
                    r.request_id,
                    r.algorithm_name,
                    r.status,
                    r.result_uri if r.succeeded else r.run_error_message,
                )
                for r in rows
            ),
        ]
    return columns(lines)


# --- commands ------------------------------------------------------------------------


def _cmd_run(client: NexusClient, args: argparse.Namespace) -> int:
    payload = read_json_object(args.payload, "payload")
    custom = None
    if args.custom_configuration:
        custom = msgspec.json.decode(
            read_json_object(args.custom_configuration, "custom configuration")
        )
    parent = None
    if args.parent:
        algorithm, _, request_id = args.parent.partition("/")
        if not algorithm or not request_id:
            raise UsageError("--parent must be ALGORITHM/REQUEST_ID")
        parent = (algorithm, request_id)
    request_id = client.create_run(
        args.algorithm,
        payload,
        custom_configuration=custom,
        tag=args.tag,
        parent=parent,
        payload_valid_for=args.payload_valid_for,
        dry_run=args.dry_run,
        idempotency_key=args.idempotency_key,
    )
    if not args.wait:
        if structured(args):
            print_data({"requestId": request_id}, args.output)
        else:
            print(request_id)
        return EXIT_OK
    # Stages on stderr (one poll a second: the server's long poll ends only at the end).
    stages = None if structured(args) else StageLine(request_id)
    step = 1.0 if stages else 30.0
    try:
        result = client.await_run(
            args.algorithm,
            request_id,
            timeout=args.timeout,
            on_status=stages.show if stages else None,
            wait_step=step,
            poll_interval=min(step, 2.0),
        )
    except WaitTimeout as exc:
        _show(exc.last_result, args)
        raise
    finally:
        if stages is not None:
            stages.finish()
    _show(result, args)
    return _result_code(result)


def _show(result: Any, args: argparse.Namespace) -> None:
    if result is None:
        return
    if structured(args):
        print_data(result, args.output)
    elif args.output == "wide":
        sys.stdout.write(_table([result], wide=True))
    else:
        print(describe(result))


def _cmd_get(client: NexusClient, args: argparse.Namespace) -> int:
    result = client.get_run(args.algorithm, args.request_id)
    _show(result, args)
    return _result_code(result)


def _cmd_cancel(client: NexusClient, args: argparse.Namespace) -> int:
    initiator = args.initiator or getpass.getuser()
    client.cancel_run(
        args.algorithm, args.request_id, reason=args.reason, initiator=initiator, policy=args.policy
    )
    if structured(args):
        print_data({"requestId": args.request_id, "cancelled": True}, args.output)
    else:
        print(f"{args.request_id}\tCANCELLED")
    return EXIT_OK


def _cmd_runs(client: NexusClient, args: argparse.Namespace) -> int:
    rows = client.runs_by_tag(args.tag)
    if structured(args):
        print_data(rows, args.output)
    else:
        sys.stdout.write(_table(rows, wide=args.output == "wide"))
    return EXIT_OK


async def _wait_all(args: argparse.Namespace) -> list[RunResult | NexusClientError]:
    progress = None if structured(args) else Progress(args.request_ids)
    async with AsyncNexusClient(args.scheduler, token=args.token) as client:
        task = client.await_runs(
            [(args.algorithm, rid) for rid in args.request_ids],
            timeout=args.timeout,
            on_result=progress.settle if progress else None,
        )
        if progress is None or not progress.live:
            return await task
        waiting = asyncio.ensure_future(task)
        while not waiting.done():
            progress.refresh()
            await asyncio.wait({waiting}, timeout=0.5)
        progress.finish()
        return waiting.result()


def _cmd_wait(args: argparse.Namespace) -> int:
    outcomes = asyncio.run(_wait_all(args))
    unfinished = [o for o in outcomes if isinstance(o, RunResult) and not o.finished]
    errors = [o for o in outcomes if isinstance(o, NexusClientError)]
    if structured(args):
        print_data(
            [
                {"requestId": rid, "error": str(o), "status": o.status}
                if isinstance(o, NexusClientError)
                else o
                for rid, o in zip(args.request_ids, outcomes, strict=True)
            ],
            args.output,
        )
    else:
        for result in unfinished:
            print(
                f"{result.request_id}\t{result.status}\tstill unfinished after {args.timeout:g}s",
                file=sys.stderr,
            )
    if errors:
        return max(exit_code_for(e) for e in errors)
    if unfinished:
        return EXIT_TIMEOUT
    return EXIT_RUN_FAILED if any(o.failed for o in outcomes) else EXIT_OK  # type: ignore[union-attr]


def run_command(args: argparse.Namespace) -> int:
    """Run one client command; print errors to stderr and return the exit code."""
    try:
        if args.command == "completion":
            import argcomplete

            sys.stdout.write(argcomplete.shellcode(["nexus"], shell=args.shell))
            return EXIT_OK
        if args.command == "wait":
            return _cmd_wait(args)
        handlers = {"run": _cmd_run, "get": _cmd_get, "cancel": _cmd_cancel, "runs": _cmd_runs}
        handler = {**handlers, **HANDLERS}[args.command]
        with NexusClient(args.scheduler, token=args.token) as client:
            return handler(client, args)
    except UsageError as exc:
        print(f"nexus {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NexusClientError as exc:
        print(f"nexus {args.command}: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130


# --- the console script ----------------------------------------------------------------

CLIENT_ONLY = f"""Talk to a running nexus scheduler with one of the commands below.
This is the client alone ({DISTRIBUTION}); serving (--role) needs the nexus server package."""


def build_parser(
    *,
    description: str = CLIENT_ONLY,
    version: str | None = None,
    add_flags: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """The ``nexus`` parser: the client commands and flags, plus what ``add_flags`` adds
    (the server's --role etc.); without ``add_flags``, the client-only command."""
    parser = argparse.ArgumentParser(
        prog="nexus",
        description=description,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=version or f"{DISTRIBUTION} {client_version()}"
    )
    if add_flags is None:
        # Accepted only to say why it cannot be honoured (argparse would say "unrecognized").
        parser.add_argument("--role", help=argparse.SUPPRESS)
    else:
        add_flags(parser)
    add_client_flags(parser)
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", title="client commands"))
    return parser


def complete(parser: argparse.ArgumentParser, argv: list[str] | None) -> None:
    """Answer a shell asking for completions (``nexus completion SHELL`` installs the hook;
    the process then exits here); otherwise return at once."""
    if argv is None:
        import argcomplete

        argcomplete.autocomplete(parser)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    complete(parser, argv)
    args = parser.parse_args(argv)
    if args.role is not None:
        parser.error(
            f"--role needs the nexus server, which is not installed here (only "
            f"{DISTRIBUTION} is); install the server package to serve"
        )
    if args.command is None:
        parser.error("choose a command")
    return args


def _server_main() -> Callable[[list[str] | None], int] | None:
    """The server's ``main`` when the server is installed, else None."""
    for entry in importlib.metadata.entry_points(group=SERVER_ENTRY_POINTS, name="nexus"):
        main: Callable[[list[str] | None], int] = entry.load()
        return main
    return None


def main(argv: list[str] | None = None) -> int:
    """The ``nexus`` console script."""
    server = _server_main()
    if server is not None:
        return server(argv)
    return run_command(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
