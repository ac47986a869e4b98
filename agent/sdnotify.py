"""systemd's notify protocol (READY, WATCHDOG, RELOADING, STOPPING) with no dependency on systemd.

A datagram to the unix socket named by ``$NOTIFY_SOCKET`` (``@name`` is the abstract
namespace). Without that variable (not started by systemd with ``Type=notify``) every call is
a no-op, so the agent runs the same anywhere.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("kansoku.sdnotify")


def notify(*lines: str) -> bool:
    """Send ``KEY=value`` lines to systemd; returns whether a manager was told."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:
        log.warning("cannot notify systemd through %s: %s", address, exc)
        return False
    return True


def ready(status: str) -> bool:
    """The agent is up: sources scheduled, sinks draining."""
    return notify("READY=1", f"STATUS={status}")


def reloading() -> bool:
    """A configuration reload starts (answer it with :func:`ready`)."""
    return notify(
        "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
    )


def stopping() -> bool:
    """The agent is shutting down."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """Tell the watchdog the agent is alive."""
    return notify("WATCHDOG=1")


def watchdog_period() -> float | None:
    """Seconds between watchdog pings (half of ``WatchdogSec``), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
