"""Run every benchmark and write the table of ratios to bench/RESULTS.md.

    .venv/bin/python -m bench.report            # everything (about 7-10 minutes)
    .venv/bin/python -m bench.report --quick    # a smoke run with short loads
    .venv/bin/python -m bench.report -k accept  # a subset (pytest -k expression)
    .venv/bin/python -m bench.report --append -k test_4  # rerun one, keep the others

It runs ``pytest bench/`` (pytest-benchmark tables go to the terminal and their JSON to
bench/.benchmarks.json), collects the figures every test filed (bench/.results.json), and
writes RESULTS.md: the machine, one row per figure with its goal and whether it is met,
then each figure's details (rates, latencies, CPU per request by thread, profiles).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.profiling import summarise

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_JSON = HERE / ".results.json"
# Where one run's figures land first: only a run that measured something touches
# RESULTS_JSON, so a selection that measures nothing leaves the last figures alone.
RUN_JSON = HERE / ".results.run.json"
RESULTS_MD = HERE / "RESULTS.md"
PROFILES = HERE / "profiles"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ""
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load average at the end": load,
    }


def _value(figure: dict) -> str:
    value = figure["value"]
    if value is None:
        return "—"
    return f"{value:.2f}" if abs(value) < 1000 else f"{value:,.0f}"


def _status(figure: dict) -> str:
    if figure["met"] is True:
        return "met"
    if figure["met"] is False:
        return "**not met**"
    note = " ".join((figure["note"] or "not judged").split()).replace("|", "/")
    return note if len(note) <= 200 else note[:197] + "..."


def render(figures: list[dict], info: dict[str, str], command: str, seconds: float) -> str:
    lines = [
        "# nexus benchmark results",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')} ({seconds / 60:.1f} min); "
        "each figure's measurement time is in its details (`--append` keeps older ones).",
        "Every figure is a ratio against a baseline measured in the same run, interleaved",
        "round by round (the machine is shared and noisy): compare ratios, not the raw rates.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "| target | figure | value | goal | status |",
        "|---|---|---|---|---|",
    ]
    for f in figures:
        quick = " (quick)" if f.get("quick") else ""
        lines.append(
            f"| {f['target']} | {f['figure']}{quick} | {_value(f)} | {f['goal']} | {_status(f)} |"
        )
    lines += ["", "## Details", ""]
    for f in figures:
        lines.append(f"### {f['target']}: {f['figure']}")
        lines.append(f"_measured {f.get('at', '?')}_")
        if f.get("note"):
            lines.append(f"_{f['note']}_")
        lines.append("")
        detail = dict(f.get("detail") or {})
        if detail.get("profile_file"):
            flat = Path(detail["profile_file"]).with_suffix(".json")
            if flat.exists():  # re-read: the summary's grouping may be newer
                detail.update(summarise(flat))
        profile = {k: detail.pop(k) for k in ("areas_pct", "top_self_pct") if k in detail}
        for key, value in detail.items():
            lines.append(f"- {key}: `{json.dumps(value)}`")
        if "areas_pct" in profile:
            lines += [
                "",
                "Main-thread (event loop) CPU by area of the code, % of its total:",
                "",
                "| area | % |",
                "|---|---|",
            ]
            lines += [f"| {k} | {v} |" for k, v in profile["areas_pct"].items()]
        if "top_self_pct" in profile:
            lines += [
                "",
                "Functions with the most self time (% of the main thread's CPU):",
                "",
                "| function | % |",
                "|---|---|",
            ]
            lines += [f"| `{k}` | {v} |" for k, v in profile["top_self_pct"]]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short loads (smoke run)")
    parser.add_argument("--strict", action="store_true", help="fail on a missed target")
    parser.add_argument("-k", dest="select", help="pytest -k expression: a subset")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite RESULTS.md from the last bench/.results.json",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the last run's figures for what this run does not measure",
    )
    args = parser.parse_args(argv)
    command = "scripts/bench" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    started = time.monotonic()
    code = 0
    kept: list[dict] = []
    if (args.append or args.render_only) and RESULTS_JSON.exists():
        kept = json.loads(RESULTS_JSON.read_text())["figures"]
    figures: list[dict] = []
    if not args.render_only:
        PROFILES.mkdir(exist_ok=True)
        RUN_JSON.unlink(missing_ok=True)
        pytest_args = [
            sys.executable,
            "-m",
            "pytest",
            str(HERE),
            "-p",
            "no:cacheprovider",
            "-q",
            "-s",
            "-o",
            "testpaths=bench",
            "--rootdir",
            str(REPO),
            f"--benchmark-json={HERE / '.benchmarks.json'}",
            "--benchmark-columns=min,median,max,rounds",
        ]
        if args.quick:
            pytest_args.append("--bench-quick")
        if args.strict:
            pytest_args.append("--bench-strict")
        if args.select:
            pytest_args += ["-k", args.select]
        env = {**os.environ, "BENCH_RESULTS": str(RUN_JSON), "BENCH_PROFILE_DIR": str(PROFILES)}
        code = subprocess.call(pytest_args, cwd=REPO, env=env)
        if RUN_JSON.exists():
            figures = json.loads(RUN_JSON.read_text())["figures"]
            RUN_JSON.unlink()
        if not figures:
            print(
                "no figures were recorded; bench/.results.json and RESULTS.md are unchanged",
                file=sys.stderr,
            )
            return code or 1
    elif not kept:
        print("no figures were recorded", file=sys.stderr)
        return code or 1
    fresh = {(f["target"], f["figure"]) for f in figures}
    figures += [f for f in kept if (f["target"], f["figure"]) not in fresh]
    RESULTS_JSON.write_text(json.dumps({"figures": figures}, indent=1))
    figures.sort(key=lambda f: (f["target"], f["figure"]))
    text = render(figures, machine(), command, time.monotonic() - started)
    RESULTS_MD.write_text(text)
    print(text.split("## Details")[0])
    print(f"written to {RESULTS_MD}")
    return code


if __name__ == "__main__":
    sys.exit(main())
