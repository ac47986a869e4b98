"""``agent emulate smartmeter``: run the stick-and-meter emulator in the foreground.

Try the agent without hardware: start this in one terminal, then point a ``[source.smartmeter]``
section's ``device`` at the ``--link`` path. Stop with Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from kansoku.errors import KansokuError
from kansoku_plugins.smartmeter import emulator_settings


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's arguments: ``--link`` and one flag per emulator setting."""
    parser.add_argument(
        "--link",
        metavar="PATH",
        help="make PATH a symlink to the emulated stick (else the /dev/pts name is printed)",
    )
    emulator_settings.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM."""
    from kansoku_plugins.smartmeter.emulator import Emulator

    settings = emulator_settings.from_arguments(args)
    emulator = Emulator(settings, link=Path(args.link) if args.link else None)
    try:
        path = emulator.start()
    except OSError as exc:
        raise KansokuError(f"cannot start the emulator: {exc}") from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    accepted = (
        "only the configured Route-B ID and password are accepted"
        if settings.route_b_id or settings.password
        else "any route_b_id of 32 characters and any route_b_password are accepted"
    )
    print(
        f"emulating a {settings.dialect.upper()} Wi-SUN stick and a smart meter on {path}\n"
        f"use it with:  [source.smartmeter]  device = {path}\n"
        f"({accepted}); Ctrl-C stops",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        emulator.stop()
    print("emulator stopped", file=sys.stderr)
    return 0
