"""Real servers for the benchmarks: started on 127.0.0.1, free ports, a folder of their own.

Each ``start_*`` returns the process and its address; stop them with :func:`stop`. A missing
binary ends the benchmark with the Debian package to install.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

INFLUXD_CONF = """\
reporting-enabled = false
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http}"
  auth-enabled = false
  log-enabled = false
[logging]
  level = "warn"
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary(name: str, package: str) -> str:
    """The path of a server binary, or exit naming its Debian package."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        sys.exit(f"{name} not found: apt-get install {package}")
    return found


def start(argv: list[str], ready: Callable[[], bool], folder: Path) -> subprocess.Popen[bytes]:
    """Start a server with its output in ``folder`` and wait until ``ready()``."""
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / f"{Path(argv[0]).name}.log", "ab")  # noqa: SIM115  (closed with it)
    proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=folder)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{argv[0]} exited with {proc.returncode}; see {folder}")
        if ready():
            return proc
        time.sleep(0.02)
    proc.kill()
    sys.exit(f"{argv[0]} did not become ready; see {folder}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait (SIGKILL after 10 s)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def answers(address: str | tuple[str, int], command: bytes) -> bool:
    """Whether a server at ``address`` answers ``command`` at all."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family) as sock:
            sock.settimeout(0.5)
            sock.connect(address)
            sock.sendall(command)
            return bool(sock.recv(16))
    except OSError:
        return False


def start_memcached(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """memcached (as root it needs -u root)."""
    port = free_port()
    argv = [binary("memcached", "memcached"), "-u", "root", "-l", "127.0.0.1", "-p", str(port)]
    argv += ["-U", "0", "-m", "64"]
    proc = start(argv, lambda: answers(("127.0.0.1", port), b"version\r\n"), folder / "memcached")
    return proc, port


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """redis-server without persistence."""
    port = free_port()
    work = folder / "redis"
    work.mkdir(parents=True, exist_ok=True)
    argv = [binary("redis-server", "redis-server"), "--bind", "127.0.0.1", "--port", str(port)]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(work)]
    proc = start(argv, lambda: answers(("127.0.0.1", port), b"PING\r\n"), work)
    return proc, port


def start_influxd(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """influxd 1.x; returns the process and its base URL."""
    http = free_port()
    work = folder / "influxd"
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "influxdb.conf"
    conf.write_text(INFLUXD_CONF.format(rpc=free_port(), http=http, dir=work))
    base = f"http://127.0.0.1:{http}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=0.5) as answer:
                return answer.status == 204
        except OSError:
            return False

    proc = start([binary("influxd", "influxdb"), "run", "-config", str(conf)], ready, work)
    return proc, base
