"""The ``nexus`` command: ``nexus --role scheduler|receiver|supervisor|all``."""

from __future__ import annotations

import argparse
import logging
import sys

from nexus.app import ROLES, create_app
from nexus.errors import ConfigError
from nexus.settings import load_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nexus", description="Run a nexus process.")
    parser.add_argument("--role", required=True, choices=ROLES,
                        help="what this process does; 'all' runs every role in one process")
    parser.add_argument("--config", help="settings file (YAML); NEXUS__A__B env vars override it")
    parser.add_argument("--host", help="address to listen on (bind-host)")
    parser.add_argument("--port", type=int, help="port to listen on (bind-port)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {}
    if args.host:
        overrides["bind_host"] = args.host
    if args.port is not None:
        overrides["bind_port"] = args.port
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"nexus: {exc.message}", file=sys.stderr)
        return 2
    level = "WARNING" if settings.log_level == "WARN" else settings.log_level
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings, args.role)
    try:
        app.run(host=settings.bind_host, port=settings.bind_port, single_process=True,
                access_log=False, motd=False)
    except ConfigError as exc:
        print(f"nexus: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
