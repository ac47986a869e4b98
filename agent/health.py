"""The optional health endpoint (``[agent] health_listen``): 200 when all is well, 503 with reasons.

A source is healthy when it collected within ``health_staleness`` × its interval; a sink when
nothing waits in its spool, or it delivered within ``health_staleness`` × its flush interval
(at least 30 s). ``GET /health`` (or ``/``) answers with a JSON body listing the problems.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("kansoku.health")

Check = Callable[[], list[str]]


def problems_of(agent: object, staleness: float, now: float | None = None) -> list[str]:
    """Why the agent is not healthy (empty when it is)."""
    now = time.time() if now is None else now
    found = []
    started = agent.started  # type: ignore[attr-defined]
    for runner in agent.sources:  # type: ignore[attr-defined]
        limit = staleness * runner.interval
        last = runner.stats.last_success
        if now - (last or started) > limit:
            when = f"last success {now - last:.0f}s ago" if last else "never collected"
            error = f": {runner.stats.last_error}" if runner.stats.last_error else ""
            found.append(f"source {runner.name}: {when} (limit {limit:g}s){error}")
    for worker in agent.sinks:  # type: ignore[attr-defined]
        limit = max(30.0, staleness * worker.flush_interval)
        last = worker.stats.last_delivery
        if worker.spool.depth() and now - (last or started) > limit:
            found.append(
                f"sink {worker.name}: {worker.spool.depth()} points waiting, "
                f"no delivery for {now - (last or started):.0f}s (limit {limit:g}s)"
                + (f": {worker.stats.last_error}" if worker.stats.last_error else "")
            )
    return found


class HealthServer:
    """A tiny HTTP server in a thread of its own."""

    def __init__(self, host: str, port: int, check: Check) -> None:
        self.check = check

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path not in ("/", "/health"):
                    self.send_error(404)
                    return
                problems = outer.check()
                body = json.dumps(
                    {"status": "fail" if problems else "pass", "problems": problems}
                ).encode()
                self.send_response(503 if problems else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("health %s", format % args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on (useful when 0 was asked for)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Serve in the background."""
        self.thread.start()
        log.info("health endpoint on http://%s:%d/health", *self.server.server_address[:2])

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
