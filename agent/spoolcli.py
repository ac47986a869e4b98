"""``agent spool``: what waits in each sink's spool and quarantine, and retry or drop it.

Works on the files in the state directory, with or without a running agent.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kansoku.spool import Spool


def _spools(folder: Path, sink: str | None) -> list[Spool]:
    paths = sorted(folder.glob("*.sqlite"))
    if sink is not None:
        paths = [p for p in paths if p.stem == sink]
        if not paths:
            print(f"agent spool: no spool for sink {sink!r} in {folder}", file=sys.stderr)
    return [Spool(p, max_bytes=2**62, max_age=float("inf")) for p in paths]


def spool_command(folder: Path, action: str, sink: str | None, limit: int) -> int:
    """Run one ``agent spool`` action; returns the exit status."""
    spools = _spools(folder, sink)
    if not spools:
        if sink is None:
            print(f"no spools in {folder}")
        return 0 if sink is None else 1
    try:
        for spool in spools:
            if action == "status":
                print(
                    f"{spool.name}: {spool.depth()} points waiting, "
                    f"{spool.quarantine_depth()} in quarantine"
                )
            elif action == "show-quarantine":
                for item in spool.quarantined(limit):
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item.quarantined))
                    point = json.dumps(item.metric.to_dict(), ensure_ascii=False)
                    print(f"{spool.name}\t{item.id}\t{when}\t{item.reason}\t{point}")
            elif action == "retry-quarantine":
                print(f"{spool.name}: {spool.retry_quarantine()} points queued again")
            elif action == "drop-quarantine":
                print(f"{spool.name}: {spool.drop_quarantine()} quarantined points dropped")
    finally:
        for spool in spools:
            spool.close()
    return 0
