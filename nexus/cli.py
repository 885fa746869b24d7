"""The ``nexus`` command with the server installed.

Server:  ``nexus --role scheduler|receiver|supervisor|controller|all [--config F]
         [--host H] [--port P]``
Client:  ``nexus run|get|wait|cancel|runs ...`` against a scheduler (``--scheduler URL`` or
         env NEXUS_SCHEDULER_URL); see ``nexus COMMAND --help`` and docs/client.md.

The console script belongs to the client distribution (nexus-run-client), which hands
over to :func:`main` here through the entry point this package registers (pyproject.toml,
group ``nexus_run_client.server``). The server side is imported only when a role is
given, so the client commands start fast.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from nexus.version import nexus_version
from nexus_run_client import cli as client_cli

ROLE_NAMES = "scheduler|receiver|supervisor|controller|all"

DESCRIPTION = f"""Run a nexus process (--role {ROLE_NAMES}), or talk to a running
scheduler with one of the commands below."""


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--role",
        metavar="ROLE",
        help=f"serve as {ROLE_NAMES}; 'all' runs every role in one process",
    )
    parser.add_argument("--config", help="settings file (YAML); NEXUS__A__B env vars override it")
    parser.add_argument("--host", help="address to listen on (bind-host)")
    parser.add_argument("--port", type=int, help="port to listen on (bind-port)")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT so several nexus processes (each with its "
        "own instance-id) share the port and the kernel spreads connections",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="serve with N processes on the port (scheduler or receiver; about one per "
        "core): each a --reuse-port worker with instance-id <instance-id>-<k>, restarted "
        "when it dies",
    )


def build_parser() -> argparse.ArgumentParser:
    return client_cli.build_parser(
        description=DESCRIPTION, version=f"nexus {nexus_version()}", add_flags=_add_server_flags
    )


def _check_workers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.workers is None:
        return
    from nexus.workers import SCALABLE_ROLES

    if args.workers < 1:
        parser.error(f"argument --workers: must be at least 1, not {args.workers}")
    if args.workers > 1 and args.role not in SCALABLE_ROLES:
        parser.error(
            f"argument --workers: --role {args.role} runs as one process; only "
            f"{' and '.join(SCALABLE_ROLES)} may run as several workers"
        )
    if args.workers > 1 and args.reuse_port:
        parser.error("argument --workers: its workers use --reuse-port already")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    client_cli.complete(parser, argv)
    args = parser.parse_args(argv)
    if args.command is None:
        from nexus.app import ROLES

        if args.role is None:
            parser.error(f"choose a role (--role {ROLE_NAMES}) or a command")
        if args.role not in ROLES:
            parser.error(
                f"argument --role: invalid choice: {args.role!r} (choose from {', '.join(ROLES)})"
            )
        _check_workers(parser, args)
    elif (
        args.role
        or args.config
        or args.host
        or args.port is not None
        or args.reuse_port
        or args.workers is not None
    ):
        parser.error(
            "--role/--config/--host/--port/--reuse-port/--workers start a server; "
            "they do not go with a client command"
        )
    return args


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other processes may bind too (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def serve(args: argparse.Namespace) -> int:
    from nexus.app import create_app
    from nexus.errors import ConfigError
    from nexus.logs import configure_logging
    from nexus.settings import load_settings_and_warnings

    overrides = {}
    if args.host:
        overrides["bind_host"] = args.host
    if args.port is not None:
        overrides["bind_port"] = args.port
    try:
        settings, warnings = load_settings_and_warnings(args.config, **overrides)
    except ConfigError as exc:
        print(f"nexus: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings)
    for warning in warnings:
        logging.getLogger("nexus.settings").warning(warning)
    if args.workers and args.workers > 1:
        from nexus.workers import run_workers, worker_command

        command = worker_command(args.role, args.config, args.host, args.port)
        return run_workers(args.workers, command, settings.instance_id)
    # Sanic's own multi-worker mode would give every worker the same settings, hence the
    # same instance-id, which names the scheduler's lease and the runs it recovers; separate
    # processes sharing a port keep one identity each.
    where = (
        {"sock": reuse_port_socket(settings.bind_host, settings.bind_port)}
        if args.reuse_port
        else {"host": settings.bind_host, "port": settings.bind_port}
    )
    try:
        app = create_app(settings, args.role)
        app.run(**where, single_process=True, access_log=False, motd=False)
    except ConfigError as exc:
        print(f"nexus: {exc.message}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command is not None:
        return client_cli.run_command(args)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
