"""Cold-start time of the poller commands (``agent get``, ``agent cacti``) against bare Python.

Cacti and Zabbix start ``agent get`` / ``agent cacti`` once per item and poll, so their start-up
is the cost that matters (goal: well under 0.2 s on a small machine). This script fills a
last-values cache with the real pipeline (``agent once``, ``system`` source, ``cacti`` sink),
then times, in the same run and interleaved:

- ``python -c pass`` (the floor: interpreter start-up),
- ``agent get`` and ``agent cacti`` (``python -m kansoku.cli``, and the console script when it
  is installed next to this interpreter),
- ``python -c "import ..."`` of the heavy libraries the poller commands must not import
  (bleak, apscheduler, influxdb, redis, pymemcache, serial), together and one by one,

and prints the median and best wall time of each and its ratio to ``python -c pass``. A
regression (something heavy creeping into the import chain) shows as a ratio jump.

Usage: python benchmarks/cli_start.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("bleak", "apscheduler", "influxdb", "redis", "pymemcache", "serial")
GOAL_SECONDS = 0.2


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one run; a failing command aborts the benchmark."""
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode()}")
    return elapsed


def fill_cache(folder: Path, env: dict[str, str]) -> Path:
    """Run the real pipeline once; return the state directory."""
    state = folder / "state"
    config = folder / "agent.ini"
    config.write_text(
        f"[agent]\nstate_dir = {state}\n\n[source.system]\n\n[sink.cacti]\nflush_interval = 1s\n"
    )
    once = subprocess.run(
        [sys.executable, "-m", "kansoku.cli", "-c", str(config), "once"],
        capture_output=True,
        text=True,
        env=env,
    )
    if once.returncode != 0:
        sys.exit(f"agent once failed: {once.stderr}")
    return state


def commands(state: Path) -> dict[str, list[str]]:
    """Label -> argv of everything to time."""
    python = sys.executable
    module = [python, "-m", "kansoku.cli"]
    where = ["--state-dir", str(state)]
    out = {
        "python -c pass": [python, "-c", "pass"],
        "agent get (python -m)": [*module, "get", "system.uptime_s", *where],
        "agent cacti (python -m)": [*module, "cacti", "system", *where],
    }
    script = Path(python).with_name("agent")
    if script.exists():
        out["agent get (console script)"] = [str(script), "get", "system.uptime_s", *where]
        out["agent cacti (console script)"] = [str(script), "cacti", "system", *where]
    out["import heavy set"] = [python, "-c", "import " + ", ".join(HEAVY)]
    for name in HEAVY:
        out[f"import {name}"] = [python, "-c", f"import {name}"]
    return out


def main() -> None:
    """Time every command, interleaved, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per command (default 20)")
    args = parser.parse_args()
    env = {**os.environ, "KANSOKU_NO_ENTRYPOINTS": "1"}
    with tempfile.TemporaryDirectory(prefix="kansoku-bench-") as folder:
        state = fill_cache(Path(folder), env)
        todo = commands(state)
        for argv in todo.values():  # warm the page cache and .pyc files
            timed(argv, env)
        times: dict[str, list[float]] = {label: [] for label in todo}
        for _ in range(args.runs):
            for label, argv in todo.items():
                times[label].append(timed(argv, env))
    floor = statistics.median(times["python -c pass"])
    print(
        f"cold start, {args.runs} runs each, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'command':32} {'median ms':>10} {'best ms':>8} {'x pass':>7} {'+ms':>7}")
    for label, values in times.items():
        median = statistics.median(values)
        print(
            f"{label:32} {median * 1000:10.1f} {min(values) * 1000:8.1f} "
            f"{median / floor:7.2f} {(median - floor) * 1000:7.1f}"
        )
    worst = max(statistics.median(v) for k, v in times.items() if k.startswith("agent "))
    heavy = statistics.median(times["import heavy set"])
    verdict = "OK" if worst < GOAL_SECONDS else "OVER GOAL"
    print(
        f"slowest poller command {worst * 1000:.0f} ms (goal < {GOAL_SECONDS * 1000:.0f} ms "
        f"on a small machine): {verdict}; importing the heavy set would add "
        f"{(heavy - floor) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
