"""How fast is the durable spool? Enqueue cost, and draining a backlog into a real influxd.

Prints:
- the cost of putting points into the influxdb sink's spool (per point, in collections of
  10 points: what a source hands over; each collection is one committed transaction and
  includes the sink's prepared line protocol);
- the drain rate of a 100,000-point backlog into a real ``influxd`` through the influxdb
  sink and the sink worker (peek, encode, POST, acknowledge);
- the rate of POSTing the same points, encoded beforehand, with plain HTTP in the same run
  (same batch size; every run starts on an empty database);
- the ratio of the two (the goal is at least 0.5).

Each figure is the best of three runs (``--rounds``), as ``timeit`` does: on a small or
shared machine influxd and the agent compete for the CPU cores with everything else, and
single runs wander by a third; the best run shows what the code can do. Every run is
printed too.

Needs ``influxd`` (Debian package ``influxdb``). Run: ``python benchmarks/spool.py``
(``--points N`` to change the backlog). Exits 1 when the ratio misses the goal.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import requests
from servers import start_influxd, stop

from kansoku import lineprotocol
from kansoku.delivery import SinkWorker
from kansoku.metric import Metric
from kansoku.spool import Spool
from kansoku.types import PluginContext
from kansoku_plugins.influxdb import OPTIONS, make_sink

GOAL = 0.5
BATCH = 5000


def query(base: str, db: str, text: str) -> dict:
    """Run one InfluxQL statement."""
    answer = requests.post(f"{base}/query", params={"db": db, "q": text}, timeout=30)
    answer.raise_for_status()
    return answer.json()


def count(base: str, db: str) -> int:
    """How many points the database holds in measurement switchbot."""
    series = query(base, db, "SELECT count(temperature_c) FROM switchbot")["results"][0]
    return int(series["series"][0]["values"][0][1]) if "series" in series else 0


def points(total: int) -> list[Metric]:
    """SwitchBot-like points: 100 devices, typed fields, distinct times."""
    start = time.time_ns() - total * 1_000_000
    out = []
    for i in range(total):
        device = i % 100
        tags = {"address": f"c0:ff:ee:00:00:{device:02x}", "model": "meter", "host": "bench"}
        fields = {
            "temperature_c": 20.0 + (i % 97) / 10,
            "humidity_pct": 40 + i % 30,
            "battery_pct": 100 - device % 20,
            "rssi_dbm": -60 - i % 25,
        }
        out.append(Metric("switchbot", fields, tags, start + i * 1_000_000, "switchbot"))
    return out


def make_worker(folder: Path, base: str) -> SinkWorker:
    """A sink worker with the influxdb sink writing to database ``spool`` and a fresh spool."""
    options = {o.name: o.default for o in OPTIONS}
    options.update(url=base, database="spool")
    context = PluginContext("influxdb", folder, logging.getLogger("bench"), folder)
    spool = Spool(folder / "influxdb.sqlite", max_bytes=2**40, max_age=1e9, name="influxdb")
    return SinkWorker("influxdb", make_sink(options, context), spool, BATCH, 3600.0, 1.0)


def enqueue_cost(worker: SinkWorker, metrics: list[Metric]) -> float:
    """Seconds per point to spool collections of 10 points (what ``publish`` does)."""
    started = time.perf_counter()
    for i in range(0, len(metrics), 10):
        worker.offer(metrics[i : i + 10])
    return (time.perf_counter() - started) / len(metrics)


def drain_rate(worker: SinkWorker, base: str, total: int) -> float:
    """Points per second: the worker drains its whole spool into database ``spool``."""
    query(base, "", "CREATE DATABASE spool")
    started = time.perf_counter()
    emptied = worker.drain(time.monotonic() + 600)
    elapsed = time.perf_counter() - started
    if not emptied or count(base, "spool") != total:
        sys.exit(f"the drain did not deliver every point: {worker.stats}")
    query(base, "", "DROP DATABASE spool")
    return total / elapsed


def plain_rate(base: str, metrics: list[Metric]) -> float:
    """Points per second: the same points, encoded beforehand, POSTed with requests."""
    query(base, "", "CREATE DATABASE plain")
    bodies = [
        lineprotocol.encode_many(metrics[i : i + BATCH]).encode()
        for i in range(0, len(metrics), BATCH)
    ]
    session = requests.Session()
    started = time.perf_counter()
    for body in bodies:
        answer = session.post(f"{base}/write", params={"db": "plain"}, data=body, timeout=30)
        if answer.status_code != 204:
            sys.exit(f"plain write failed: {answer.status_code} {answer.text}")
    elapsed = time.perf_counter() - started
    if count(base, "plain") != len(metrics):
        sys.exit("the plain writes did not store every point")
    query(base, "", "DROP DATABASE plain")
    return len(metrics) / elapsed


def main() -> int:
    """Run the measurements and print figures and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000, help="backlog size")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (the best counts)")
    args = parser.parse_args()
    metrics = points(args.points)
    enqueue, drained, plain = [], [], []
    with tempfile.TemporaryDirectory(prefix="kansoku-bench-") as tmp:
        folder = Path(tmp)
        proc, base = start_influxd(folder)
        try:
            worker = make_worker(folder, base)
            # Every run starts on an empty database (the previous one is dropped, so its
            # background compaction does not slow the next run); runs alternate.
            for _ in range(args.rounds):
                enqueue.append(enqueue_cost(worker, metrics))
                drained.append(drain_rate(worker, base, len(metrics)))
                plain.append(plain_rate(base, metrics))
            worker.close()
        finally:
            stop(proc)
    ratio = max(drained) / max(plain)
    runs = f"best of {args.rounds} runs each"
    print(f"enqueue, collections of 10 points:   {min(enqueue) * 1e6:10.1f} µs/point")
    print(f"drain of {args.points} spooled points: {max(drained):10,.0f} points/s")
    print(f"plain HTTP, lines encoded before:    {max(plain):10,.0f} points/s")
    print(f"ratio drain / plain:                 {ratio:10.2f}   (goal >= {GOAL}; {runs})")
    print("runs, drain:", ", ".join(f"{r:,.0f}" for r in drained))
    print("runs, plain:", ", ".join(f"{r:,.0f}" for r in plain))
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
