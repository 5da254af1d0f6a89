"""How long does the ``videokit`` command take to start? (run by hand; prints a table)

Times ``videokit --help`` and ``videokit --version`` as a user runs them (the installed console
script, a new process each time), next to a bare ``python -c pass`` in the same run, so the
interpreter's own start-up is visible. Runs are interleaved, so a busy moment on the machine
hits every command alike. Goal: median <= 0.3 s for ``--help`` and ``--version``.

    .venv/bin/python benchmarks/cli_start.py [--runs 10] [--check]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_S = 0.3


def _time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args(argv)
    script = Path(sys.executable).with_name("videokit")
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "videokit --version": [str(script), "--version"],
        "videokit --help": [str(script), "--help"],
    }
    for command in commands.values():
        _time(command)  # warm the page cache; not counted
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(_time(command))
    print(f"{'command':<22} {'median s':>9} {'min s':>7} {'max s':>7}  goal")
    missed = False
    for name, samples in times.items():
        median = statistics.median(samples)
        goal = ""
        if name.startswith("videokit"):
            met = median <= GOAL_S
            missed |= not met
            goal = f"<= {GOAL_S} s {'met' if met else 'MISSED'}"
        print(f"{name:<22} {median:>9.3f} {min(samples):>7.3f} {max(samples):>7.3f}  {goal}")
    print(f"({args.runs} runs each, interleaved; {sys.executable})")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
