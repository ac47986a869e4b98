"""``agent switchbot scan`` (a live table of nearby devices) and ``agent switchbot record``.

Both listen exactly as the source does (same scanner, same bleak callback) for ``--seconds``;
``--replay FILE`` reads a capture instead of the radio. Errors are sentences on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from typing import Any

from kansoku import CommandSpec

log = logging.getLogger("kansoku.switchbot")
COLUMNS = (
    ("ADDRESS", "address", "{}"),
    ("NAME", "name", "{}"),
    ("MODEL", "model", "{}"),
    ("TEMP_C", "temperature_c", "{:.1f}"),
    ("HUM_%", "humidity_pct", "{}"),
    ("BATT_%", "battery_pct", "{}"),
    ("CO2_PPM", "co2_ppm", "{}"),
    ("RSSI", "rssi_dbm", "{}"),
    ("ADV/MIN", "adverts_per_min", "{:.1f}"),
    ("STATUS", "status", "{}"),
)


def _common(parser: argparse.ArgumentParser, seconds: float) -> None:
    from kansoku.options import choice
    from kansoku_plugins.switchbot.config import device_list, replay_speed

    parser.add_argument("--seconds", type=float, default=seconds, help="how long to listen")
    parser.add_argument("--adapter", default="hci0", help="Bluetooth adapter (default hci0)")
    parser.add_argument(
        "--scan-mode",
        type=choice("auto", "passive", "active"),
        default="active",
        help="active (default here: learns models and battery), passive or auto",
    )
    parser.add_argument("--devices", type=device_list, default={}, help="ADDRESS=name:model,...")
    parser.add_argument("--replay", help="read this capture instead of the radio (demo: shipped)")
    parser.add_argument("--speed", type=replay_speed, default=math.inf, help="replay speed")


def _listen(args: argparse.Namespace, listener: Any) -> Any:
    """The scanner feeding ``listener`` as ``args`` say, or ``None`` (the reason printed)."""
    from kansoku_plugins.switchbot.scanner import attach
    from kansoku_plugins.switchbot.source import listening

    options = {
        "adapter": args.adapter,
        "scan_mode": args.scan_mode,
        "duplicate_data": True,
        "watchdog": 90.0,
        "max_backoff": 30.0,
        "replay": args.replay,
        "speed": args.speed,
        "loop": False,
    }
    how = listening(options, log)
    if how.problem:
        print(f"agent switchbot: {how.problem}", file=sys.stderr)
        return None
    listener.clock = how.clock
    return attach(how.settings, listener, log)


def _finish(scanner: Any, listener: Any) -> int:
    from kansoku_plugins.switchbot.scanner import detach

    health = scanner.health
    detach(scanner, listener)
    if health.adverts == 0 and health.last_error:
        print(f"agent switchbot: {health.last_error}", file=sys.stderr)
        return 1
    return 0


class _TableListener:
    """Feeds a tracker, as the source does."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.clock: Any = time.monotonic

    def detected(self, device: Any, advertisement: Any) -> None:
        self.tracker.hear(device, advertisement, self.clock())

    def scanner_restarted(self) -> None:
        self.tracker.restart()


def run_scan(args: argparse.Namespace) -> int:
    """Listen for ``--seconds`` and show the devices (redrawn every second on a terminal)."""
    from kansoku_plugins.switchbot.stats import Thresholds
    from kansoku_plugins.switchbot.tracker import Tracker

    listener = _TableListener(Tracker(args.devices, Thresholds(), log))
    scanner = _listen(args, listener)
    if scanner is None:
        return 1
    live = sys.stdout.isatty()
    deadline = time.monotonic() + args.seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        if live:
            sys.stdout.write("\x1b[H\x1b[J" + table(listener.tracker.rows(listener.clock())))
            sys.stdout.flush()
    if not live:
        sys.stdout.write(table(listener.tracker.rows(listener.clock())))
    return _finish(scanner, listener)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text columns ('-' for values not heard)."""
    cells = [[title for title, _, _ in COLUMNS]]
    for row in rows:
        cells.append(["-" if row[key] is None else fmt.format(row[key]) for _, key, fmt in COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    if not rows:
        lines.append("(no SwitchBot devices heard)")
    return "\n".join(lines) + "\n"


class _RecordListener:
    """Writes one capture line per bleak callback that carries SwitchBot data."""

    def __init__(self) -> None:
        self.clock: Any = time.monotonic
        self._lock = threading.Lock()
        self.count = 0

    def detected(self, device: Any, advertisement: Any) -> None:
        from kansoku_plugins.switchbot.adv import is_switchbot
        from kansoku_plugins.switchbot.capture import record_from_bleak

        if not is_switchbot(advertisement.manufacturer_data, advertisement.service_data):
            return
        line = record_from_bleak(time.time(), device, advertisement).to_json()
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            self.count += 1

    def scanner_restarted(self) -> None:
        """Nothing to relearn: a capture records what was heard."""


def run_record(args: argparse.Namespace) -> int:
    """Write every SwitchBot advertisement heard for ``--seconds`` to stdout as capture lines."""
    listener = _RecordListener()
    scanner = _listen(args, listener)
    if scanner is None:
        return 1
    time.sleep(max(0.0, args.seconds))
    status = _finish(scanner, listener)
    print(f"agent switchbot record: {listener.count} advertisements", file=sys.stderr)
    return status


COMMANDS = [
    CommandSpec(
        ("switchbot", "scan"),
        "show nearby SwitchBot devices: model, values, RSSI, adverts per minute, status",
        lambda parser: _common(parser, 30.0),
        run_scan,
    ),
    CommandSpec(
        ("switchbot", "record"),
        "write the advertisements heard to stdout as a capture (JSON lines) for replay",
        lambda parser: _common(parser, 60.0),
        run_record,
    ),
]
