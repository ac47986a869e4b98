"""``agent spool``: what waits in each sink's spool and quarantine, and retry or drop it.

Works on the files in the state directory, with or without a running agent (SQLite lets
both use a spool at once; a running agent picks up retried points at its next flush).

- ``status``: points waiting per sink, their size and age, and the quarantine count.
- ``show-quarantine``: one refused point per line, tab-separated: sink, id, time (UTC),
  the sink's reason, the point as JSON.
- ``retry-quarantine``: move quarantined points back to the end of the queue (after fixing
  the cause, e.g. dropping a wrongly typed measurement).
- ``drop-quarantine``: delete the quarantined points for good.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from kansoku.spool import Spool


def _spools(folder: Path, sink: str | None) -> list[Spool]:
    paths = sorted(folder.glob("*.sqlite"))
    if sink is not None:
        paths = [p for p in paths if p.stem == sink]
    return [Spool(p, max_bytes=2**62, max_age=math.inf, create=False) for p in paths]


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _status(spool: Spool) -> str:
    depth = spool.depth()
    line = f"{spool.name}: {depth} points waiting"
    if depth:
        oldest = spool.oldest()
        age = f", oldest spooled {_age(time.time() - oldest)} ago" if oldest else ""
        line += f" ({spool.size() / 1000:.1f} kB{age})"
    return f"{line}, {spool.quarantine_depth()} in quarantine"


def _show_quarantine(spool: Spool, limit: int) -> None:
    for item in spool.quarantined(limit):
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item.quarantined))
        point = item.body
        if item.metric is not None:
            point = json.dumps(item.metric.to_dict(), ensure_ascii=False)
        reason = " ".join(item.reason.split())  # one line per point
        print(f"{spool.name}\t{item.id}\t{when}\t{reason}\t{point}")


def spool_command(folder: Path, action: str, sink: str | None, limit: int) -> int:
    """Run one ``agent spool`` action; returns the exit status."""
    spools = _spools(folder, sink)
    if not spools:
        if sink is not None:
            print(f"agent spool: no spool for sink {sink!r} in {folder}", file=sys.stderr)
            return 1
        print(f"no spools in {folder}")
        return 0
    try:
        for spool in spools:
            if action == "status":
                print(_status(spool))
            elif action == "show-quarantine":
                _show_quarantine(spool, limit)
            elif action == "retry-quarantine":
                print(f"{spool.name}: {spool.retry_quarantine()} points queued again")
            elif action == "drop-quarantine":
                print(f"{spool.name}: {spool.drop_quarantine()} quarantined points dropped")
    finally:
        for spool in spools:
            spool.close()
    return 0
