"""Start real server binaries for tests: loopback, a free port, a temp dir, stopped by PID.

A missing binary skips the test locally (with the package to install) and fails it when
``CI=true``: in CI a missing server is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def in_ci() -> bool:
    """Whether this run is CI (missing servers must fail, not skip)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip locally, fail in CI, with the reason."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: a missing server is a failure)")
    pytest.skip(f"{what}; set CI=true to make this a failure")


def require_binary(name: str, package: str) -> str:
    """The path of ``name`` (PATH and sbin folders), or skip/fail naming the Debian package."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))
    if found is None:
        missing(f"{name} not found: apt-get install {package}")
    return str(found)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on the port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Daemon:
    """One server process started by a test; its output goes to ``log``."""

    def __init__(
        self,
        argv: Sequence[str],
        workdir: Path,
        ready: Callable[[], bool],
        timeout: float = 20.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.workdir = workdir
        self.ready = ready
        self.timeout = timeout
        self.env = env
        self.log = workdir / f"{Path(argv[0]).name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        """Start and wait until ``ready()`` is true; fail with the log tail otherwise."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode}")
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        self._fail(f"not ready after {self.timeout}s")
        return self

    def _fail(self, why: str) -> None:
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        pytest.fail(f"{' '.join(self.argv)} {why}; log:\n{tail}")

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait; SIGKILL if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


@pytest.fixture
def daemons():
    """Start servers with ``daemons(argv, workdir, ready)``; all are stopped after the test."""
    started: list[Daemon] = []

    def start(argv: Sequence[str], workdir: Path, ready: Callable[[], bool], **kw) -> Daemon:
        daemon = Daemon(argv, workdir, ready, **kw)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in reversed(started):
        daemon.stop()
