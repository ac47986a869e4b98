"""The agent's last known state in ``STATE_DIR/status.json``, and ``agent status`` to print it.

The running agent rewrites the file atomically every few seconds; ``agent status`` reads it
and needs no running agent (it then says when the state was last written). This module imports
only the standard library: ``agent status`` starts fast.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FILENAME = "status.json"


def write(state_dir: Path, status: Mapping[str, Any]) -> None:
    """Replace the status file atomically."""
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".status.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(status, handle, indent=1, sort_keys=True, default=str)
    os.replace(tmp, state_dir / FILENAME)


def read(state_dir: Path) -> dict[str, Any] | None:
    """The last status written, or None when there is none."""
    try:
        return json.loads((state_dir / FILENAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ago(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    seconds = max(0.0, now - then)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _table(rows: Sequence[Sequence[Any]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render(status: Mapping[str, Any], now: float | None = None) -> str:
    """The status as tables: agent, sources, sinks, devices."""
    now = time.time() if now is None else now
    pid = int(status.get("pid", 0))
    running = bool(pid) and _alive(pid) and not status.get("stopped")
    state = f"running (pid {pid})" if running else "not running"
    lines = [
        f"agent {state}; state written {_ago(status.get('updated'), now)}, "
        f"started {_ago(status.get('started'), now)}, kansoku {status.get('version', '?')}",
        "",
    ]
    sources = status.get("sources", {})
    if sources:
        rows: list[Sequence[Any]] = [
            ("SOURCE", "INTERVAL", "LAST SUCCESS", "COLLECT", "ERRORS", "LAST ERROR")
        ]
        for name, s in sorted(sources.items()):
            rows.append(
                (
                    name,
                    f"{s['interval']:g}s",
                    _ago(s.get("last_success"), now),
                    f"{s.get('collect_seconds', 0):.2f}s",
                    s.get("errors", 0),
                    s.get("last_error") or "-",
                )
            )
        lines += [*_table(rows), ""]
    sinks = status.get("sinks", {})
    if sinks:
        rows = [("SINK", "SPOOL", "QUARANTINE", "LAST DELIVERY", "WRITTEN", "LAST ERROR")]
        for name, s in sorted(sinks.items()):
            rows.append(
                (
                    name,
                    s.get("spool_depth", 0),
                    s.get("quarantine_depth", 0),
                    _ago(s.get("last_delivery"), now),
                    s.get("written", 0),
                    s.get("last_error") or "-",
                )
            )
        lines += [*_table(rows), ""]
    for name, s in sorted(sources.items()):
        device = s.get("device")
        if not device:
            continue
        lines.append(f"{name}:")
        rows_of_devices = device.pop("devices", None) if isinstance(device, dict) else None
        for key, value in sorted(device.items()):
            lines.append(f"  {key}: {value}")
        if rows_of_devices:
            header = list(rows_of_devices[0])
            rows = [tuple(h.upper() for h in header)]
            rows += [tuple(d.get(h, "") for h in header) for d in rows_of_devices]
            lines += ["  " + line for line in _table(rows)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
