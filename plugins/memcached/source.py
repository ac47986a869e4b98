"""Asks each configured memcached server for ``stats`` (pymemcache) and makes one point of each.

Servers are asked in parallel, so one that hangs costs at most ``server_timeout``. A server that
does not answer is an error for that server only: it is logged (once per distinct reason, and
again when it answers), its point carries just ``up=0``, and the others are collected as usual.
Only when no server answers does the collection fail with a :class:`SourceError`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheError

from kansoku import Metric, PluginContext
from kansoku.errors import SourceError

from .fields import MEASUREMENT, SCHEMA, typed_stats


class MemcachedSource:
    """One ``[source.memcached…]`` section: a list of servers and a per-server timeout."""

    schema = SCHEMA

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.servers: list[str] = list(options["servers"])
        self.server_timeout: float = options["server_timeout"]
        self.log = context.log
        self._clients: dict[str, Client] = {}
        self._failing: dict[str, str] = {}
        self._pool = (
            ThreadPoolExecutor(min(len(self.servers), 8), f"{context.name}-stats")
            if len(self.servers) > 1
            else None
        )

    def collect(self) -> list[Metric]:
        """One point per server: its stats and ``up=1``, or only ``up=0`` if it did not answer."""
        now = time.time_ns()
        if self._pool is None:
            outcomes = [self.stats_of(self.servers[0])]
        else:
            outcomes = list(self._pool.map(self.stats_of, self.servers))
        failures = {s: o for s, o in zip(self.servers, outcomes, strict=True) if isinstance(o, str)}
        if len(failures) == len(self.servers):
            self._failing.update(failures)
            reasons = "; ".join(f"{server}: {why}" for server, why in failures.items())
            raise SourceError(f"no memcached server answered ({reasons})")
        points = []
        for server, outcome in zip(self.servers, outcomes, strict=True):
            tags = {"server": server}
            if isinstance(outcome, str):
                self._report_down(server, outcome)
                points.append(Metric(MEASUREMENT, {"up": 0}, tags, now))
            else:
                self._report_up(server)
                points.append(Metric(MEASUREMENT, {**outcome, "up": 1}, tags, now))
        return points

    def stats_of(self, server: str) -> dict[str, Any] | str:
        """The typed stats of one server, or a sentence saying why it did not answer."""
        client = self._clients.get(server)
        if client is None:
            client = Client(
                server,
                connect_timeout=self.server_timeout,
                timeout=self.server_timeout,
                no_delay=True,
            )
            self._clients[server] = client
        try:
            return typed_stats(client.stats())
        except (OSError, MemcacheError) as exc:
            client.close()
            return self._explain(exc)

    def _explain(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused: is memcached running and listening there?"
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.server_timeout:g}s (server_timeout)"
        if isinstance(exc, FileNotFoundError):
            return "no such socket file: is memcached started with -s at that path?"
        if isinstance(exc, PermissionError):
            return "permission denied on the socket: let the agent's user read and write it"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve the host name ({exc.strerror})"
        if isinstance(exc, OSError):
            return exc.strerror or str(exc)
        return f"unexpected answer to stats ({type(exc).__name__}: {exc})"

    def _report_down(self, server: str, why: str) -> None:
        if self._failing.get(server) != why:
            self.log.error(
                "memcached server %s does not answer: %s; the other servers are still "
                "collected, its point carries up=0",
                server,
                why,
            )
        self._failing[server] = why

    def _report_up(self, server: str) -> None:
        if self._failing.pop(server, None) is not None:
            self.log.info("memcached server %s answers again", server)

    def close(self) -> None:
        """Close the connections."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self._clients.values():
            client.close()
