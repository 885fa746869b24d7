"""Start nexus like its CLI does, with two bench-only extras.

    python -m bench.serve [--profile OUT] [--reuse-port] --role all --port 8080

``--profile OUT`` profiles the process from start to shutdown (SIGINT) and writes the
text report to OUT: with ``--profiler cprofile`` (the default) cProfile timed by the main
thread's CPU clock, plus OUT with a .json suffix, a flat profile the report summarises;
with ``--profiler pyinstrument`` (when installed) a sampled call tree in wall-clock time.

``--reuse-port`` is ``nexus --reuse-port``: several independent nexus processes (each
with its own instance id) share one port and the kernel spreads connections over them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nexus.app import create_app
from nexus.cli import parse_args, reuse_port_socket
from nexus.logs import configure_logging
from nexus.settings import load_settings


class _Profile:
    """pyinstrument (sampling, wall clock) or cProfile timed by the main thread's CPU
    clock, which leaves out the time the event loop spends waiting for the GIL."""

    def __init__(self, out: Path, kind: str) -> None:
        self.out = out
        try:
            from pyinstrument import Profiler
        except ImportError:
            kind = "cprofile"
        if kind == "cprofile":
            import cProfile
            import time

            self.kind, self.profiler = "cprofile", cProfile.Profile(time.thread_time)
        else:
            self.kind, self.profiler = (
                "pyinstrument",
                Profiler(interval=0.0005, async_mode="disabled"),
            )

    def start(self) -> None:
        if self.kind == "pyinstrument":
            self.profiler.start()
        else:
            self.profiler.enable()

    def stop(self) -> None:
        if self.kind == "pyinstrument":
            self.profiler.stop()
            self.out.write_text(
                self.profiler.output_text(
                    unicode=False, color=False, show_all=False, short_mode=False
                )
            )
            return
        import io
        import json
        import pstats

        self.profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(self.profiler, stream=text)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
        self.out.write_text(text.getvalue())
        # A machine-readable flat profile (CPU seconds of the main thread) for the report.
        rows = [
            {
                "function": f"{Path(file).name}:{line}({name})",
                "path": file,
                "calls": calls,
                "self": self_time,
                "total": total,
            }
            for (file, line, name), (_, calls, self_time, total, _) in stats.stats.items()
        ]
        rows.sort(key=lambda row: row["self"], reverse=True)
        self.out.with_suffix(".json").write_text(
            json.dumps({"total": stats.total_tt, "rows": rows[:400]})
        )


def main(argv: list[str] | None = None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--profile", type=Path)
    extra.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    ours, rest = extra.parse_known_args(argv)
    args = parse_args(rest)
    overrides = {"bind_host": args.host} if args.host else {}
    if args.port is not None:
        overrides["bind_port"] = args.port
    settings = load_settings(args.config, **overrides)
    configure_logging(settings)
    app = create_app(settings, args.role)
    run_args: dict = {"single_process": True, "access_log": False, "motd": False}
    if args.reuse_port:
        run_args["sock"] = reuse_port_socket(settings.bind_host, settings.bind_port)
    else:
        run_args.update(host=settings.bind_host, port=settings.bind_port)
    profile = _Profile(ours.profile, ours.profiler) if ours.profile else None
    if profile:
        profile.start()
    try:
        app.run(**run_args)
    finally:
        if profile:
            profile.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
