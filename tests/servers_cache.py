"""Real memcached and redis-server for tests, on free loopback ports in temp dirs.

Built on :mod:`tests.daemons`. memcached is stopped with SIGKILL (it holds nothing worth saving
and takes about a second to honour SIGTERM); redis-server with SIGTERM (it stops in ms).
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.daemons import Daemon, free_port, port_open, require_binary

if TYPE_CHECKING:
    import redis


def _answers(address: str | tuple[str, int], command: bytes, prefixes: tuple[bytes, ...]) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(address)
            sock.sendall(command)
            return sock.recv(64).startswith(prefixes)
    except OSError:
        return False


@pytest.fixture
def memcached_servers(daemons, tmp_path: Path):
    """``start(unix=False, port=None)`` starts a memcached and returns its ``servers`` entry."""
    binary = require_binary("memcached", "memcached")
    started: list[Daemon] = []

    def start(unix: bool = False, port: int | None = None) -> str:
        workdir = tmp_path / f"memcached-{len(started)}"
        workdir.mkdir()
        argv = [binary, "-U", "0", "-m", "64", "-c", "256", "-t", "2"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root without it
        address: str | tuple[str, int]
        if unix:
            address = str(workdir / "memcached.sock")
            argv += ["-s", address, "-a", "0700"]
            server = f"unix:{address}"
        else:
            port = port or free_port()
            address = ("127.0.0.1", port)
            argv += ["-l", "127.0.0.1", "-p", str(port)]
            server = f"127.0.0.1:{port}"
        started.append(
            daemons(argv, workdir, lambda: _answers(address, b"version\r\n", (b"VERSION",)))
        )
        return server

    yield start
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)


@pytest.fixture
def memcached_server(memcached_servers) -> str:
    """One memcached on a free TCP port: ``127.0.0.1:PORT``."""
    return memcached_servers()


@dataclass
class RedisServer:
    """A running redis-server: its port and the url a relay section would use."""

    port: int
    password: str | None = None
    tls_dir: Path | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (``rediss://`` when it speaks TLS)."""
        scheme = "rediss" if self.tls_dir else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A redis-py client for the test's own reads and writes."""
        import redis

        kwargs = {}
        if self.tls_dir is not None:
            kwargs["ssl_ca_certs"] = str(self.tls_dir / "cert.pem")
        return redis.Redis.from_url(self.url, password=self.password, **kwargs)


def _self_signed(folder: Path) -> None:
    openssl = require_binary("openssl", "openssl")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")]
        + ["-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def redis_servers(daemons, tmp_path: Path):
    """``start(password=None, tls=False)`` starts a redis-server and returns a RedisServer."""
    binary = require_binary("redis-server", "redis-server")
    count = 0

    def start(password: str | None = None, tls: bool = False) -> RedisServer:
        nonlocal count
        count += 1
        workdir = tmp_path / f"redis-{count}"
        workdir.mkdir()
        port = free_port()
        argv = [binary, "--bind", "127.0.0.1", "--daemonize", "no", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir), "--logfile", "redis.log"]
        if password:
            argv += ["--requirepass", password]
        if tls:
            _self_signed(workdir)
            argv += ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
            argv += ["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem"]
            ready = lambda: port_open(port)  # noqa: E731
        else:
            argv += ["--port", str(port)]
            replies = (b"+PONG", b"-NOAUTH")
            ready = lambda: _answers(("127.0.0.1", port), b"PING\r\n", replies)  # noqa: E731
        daemons(argv, workdir, ready)
        return RedisServer(port, password, workdir if tls else None)

    return start


@pytest.fixture
def redis_server(redis_servers) -> RedisServer:
    """One redis-server on a free port, no password."""
    return redis_servers()


@pytest.fixture
def in_process_agent(write_config):
    """``build(ini_text)`` loads a config and builds the Agent (sources, validators, spools).

    Tests then call ``agent.sources[0].source.collect()`` and the runner's real validator;
    every agent built is closed afterwards.
    """
    from kansoku.config import load
    from kansoku.plugins import Registry
    from kansoku.runtime import Agent

    built: list[Agent] = []

    def build(text: str, name: str = "agent.ini") -> Agent:
        registry = Registry()
        agent = Agent(load(write_config(text, name), registry), registry)
        built.append(agent)
        return agent

    yield build
    for agent in built:
        agent.close(flush=False)
