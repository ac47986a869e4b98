"""Advisory locks that say which process collects a source instance right now.

A running agent holds an exclusive ``flock`` on ``STATE_DIR/locks/SOURCE.lock`` for every source
it runs; the file holds the agent's PID. ``agent cacti|get|discover --collect`` takes the same
lock before it collects directly, so it refuses with a sentence while an agent owns the device
instead of fighting it for the serial port or the radio. The kernel drops the lock when the
process ends, even after ``kill -9``, so a stale lock file never blocks anybody.

Device plugins still lock their device themselves (the smartmeter opens its port with pyserial's
``exclusive=True``): that also covers a second agent with another state directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kansoku.errors import SourceError

LOCK_FOLDER = "locks"
log = logging.getLogger("kansoku.sourcelock")


class SourceBusy(SourceError):
    """Another process (a running agent) collects this source."""


def lock_path(state_dir: Path, source: str) -> Path:
    """The lock file of one source instance."""
    return Path(state_dir) / LOCK_FOLDER / f"{source}.lock"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _write_pid(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # a read-only lock file still locks; the PID is only for messages


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="ascii").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def hold(state_dir: Path, sources: Iterable[str]) -> dict[str, int]:
    """Lock every source for the running agent; a source already locked is logged and skipped.

    Returns the open lock descriptors by source; pass them to :func:`release` at shutdown.
    """
    held: dict[str, int] = {}
    for source in sources:
        path = lock_path(state_dir, source)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            log.warning("cannot create the lock file %s (%s)", path, exc.strerror)
            continue
        if not _try_lock(fd):
            os.close(fd)
            log.warning(
                "source %s is already collected by %s using the state directory %s; "
                "two agents should not share one state directory",
                source,
                _holder(path),
                state_dir,
            )
            continue
        _write_pid(fd)
        held[source] = fd
    return held


def release(held: dict[str, int]) -> None:
    """Drop the locks taken by :func:`hold`."""
    for fd in held.values():
        os.close(fd)
    held.clear()


@contextmanager
def claim(state_dir: Path, source: str) -> Iterator[None]:
    """Hold the source's lock for a direct collection, or raise :class:`SourceBusy`.

    Without a lock folder no agent has ever run with this state directory, and without write
    access to it none can create a lock this process could not see; both count as free.
    """
    path = lock_path(state_dir, source)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield
            return
    except OSError:
        yield
        return
    try:
        if not _try_lock(fd):
            raise SourceBusy(
                f"a running agent ({_holder(path)}) collects source {source!r} and owns its "
                f"device (lock {path}); read its last values instead: run the same command "
                "without --collect"
            )
        _write_pid(fd)
        yield
    finally:
        os.close(fd)
