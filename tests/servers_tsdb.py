"""Real time-series servers for sink tests, and an agent fed by the test itself.

- ``influxd`` (InfluxDB 1.x) and ``victoria-metrics`` run on 127.0.0.1, free ports and a temp
  dir (tests/daemons.py), with the few HTTP calls the tests need to look at what arrived.
  ``influxd`` can be stopped and started again on the same port and data (outages) or
  paused with SIGSTOP (a hung server).
- ``build_agent`` builds a real :class:`kansoku.runtime.Agent` from an INI text, with a test
  source plugin ``feed`` registered on the plugin manager: each collection hands over the
  raw points the test put in the ``feed`` fixture's list (strings and bytes, as a redis relay
  would).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from kansoku import FieldSpec, MeasurementSchema, Metric, SourceSpec, hookimpl
from kansoku.config import load
from kansoku.plugins import Registry
from kansoku.runtime import Agent
from tests.daemons import Daemon, free_port, require_binary

#: raw points the ``feed`` source hands over at its next collection
FEED: list[Metric] = []
FEED_SCHEMA = {
    "sensor": MeasurementSchema(
        {
            "temperature": FieldSpec(float, "°C"),
            "humidity": FieldSpec(int, "%"),
            "door": FieldSpec(bool),
            "label": FieldSpec(str),
        }
    ),
    "counter": MeasurementSchema({"seq": FieldSpec(int, kind="counter")}),
}

INFLUXD_CONF = """\
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{folder}/meta"
[data]
  dir = "{folder}/data"
  wal-dir = "{folder}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {auth}
  log-enabled = false
[logging]
  level = "warn"
"""


def _answers(url: str, status: int) -> bool:
    try:
        return requests.get(url, timeout=0.5).status_code == status
    except requests.RequestException:
        return False


class Influxd:
    """One influxd with its own data folder; ``stop()`` and ``start()`` make an outage."""

    def __init__(self, folder: Path, auth: bool = False) -> None:
        self.binary = require_binary("influxd", "influxdb")
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth: tuple[str, str] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "influxdb.conf"
        self.conf.write_text(
            INFLUXD_CONF.format(
                rpc_port=free_port(),
                folder=folder,
                port=self.port,
                auth="true" if auth else "false",
            )
        )
        self.daemon: Daemon | None = None

    def start(self) -> Influxd:
        """Start (again) on the same port and data; wait until /ping answers 204."""
        self.daemon = Daemon(
            [self.binary, "run", "-config", str(self.conf)],
            self.folder,
            lambda: _answers(f"{self.url}/ping", 204),
        ).start()
        return self

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.daemon is not None:
            self.daemon.stop()

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung server)."""
        assert self.daemon is not None
        self.daemon.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.daemon is not None
        self.daemon.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

    def query(self, text: str, db: str = "", **params: str) -> list[dict[str, Any]]:
        """Run InfluxQL; return the results (each may hold ``series`` or ``error``)."""
        answer = requests.post(
            f"{self.url}/query",
            params={"db": db, "q": text, **params},
            auth=self.auth,
            timeout=10,
        )
        answer.raise_for_status()
        return list(answer.json()["results"])

    def rows(self, text: str, db: str) -> list[dict[str, Any]]:
        """The rows of the first series of a SELECT, as dicts (times in ns)."""
        result = self.query(text, db, epoch="ns")[0]
        assert "error" not in result, result["error"]
        if "series" not in result:
            return []
        series = result["series"][0]
        return [dict(zip(series["columns"], values, strict=True)) for values in series["values"]]

    def databases(self) -> list[str]:
        """``SHOW DATABASES``."""
        result = self.query("SHOW DATABASES")[0]
        return [name for (name,) in result["series"][0].get("values", [])]

    def field_types(self, measurement: str, db: str) -> dict[str, str]:
        """``SHOW FIELD KEYS``: field name -> float | integer | boolean | string."""
        result = self.query(f'SHOW FIELD KEYS FROM "{measurement}"', db)[0]
        return {key: kind for key, kind in result["series"][0]["values"]}

    def write(self, lines: str, db: str) -> requests.Response:
        """POST line protocol as a plain HTTP client would."""
        return requests.post(
            f"{self.url}/write", params={"db": db}, data=lines.encode(), auth=self.auth, timeout=10
        )

    def http_stats(self) -> dict[str, int]:
        """``SHOW STATS`` of the HTTP service (reset when influxd starts)."""
        result = self.query("SHOW STATS FOR 'httpd'")[0]
        series = result["series"][0]
        return dict(zip(series["columns"], series["values"][0], strict=True))


class VictoriaMetrics:
    """One single-node victoria-metrics; data is searchable right after :meth:`flush`."""

    def __init__(self, folder: Path) -> None:
        binary = require_binary("victoria-metrics", "victoria-metrics")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.daemon = Daemon(
            [
                binary,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={folder / 'data'}",
                "-loggerLevel=ERROR",
                "-search.latencyOffset=0s",
            ],
            folder,
            lambda: _answers(f"{self.url}/health", 200),
        )

    def flush(self) -> None:
        """Make everything received so far searchable."""
        requests.get(f"{self.url}/internal/force_flush", timeout=10).raise_for_status()

    def export(self, match: str) -> list[dict[str, Any]]:
        """Raw samples of the series matching a selector (``/api/v1/export``, JSON lines)."""
        self.flush()
        answer = requests.post(f"{self.url}/api/v1/export", data={"match[]": match}, timeout=10)
        answer.raise_for_status()
        return [json.loads(line) for line in answer.text.splitlines() if line.strip()]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant PromQL query (``/api/v1/query``): the result vector."""
        self.flush()
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        answer.raise_for_status()
        return list(answer.json()["data"]["result"])


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[Callable[..., Influxd]]:
    """``influxd(auth=False, start=True)``: an InfluxDB 1.x server (``start=False``: its port
    and data folder only, for ``.start()`` later); all are stopped after the test."""
    started: list[Influxd] = []

    def make(auth: bool = False, start: bool = True) -> Influxd:
        server = Influxd(tmp_path / f"influxd{len(started)}", auth=auth)
        started.append(server)
        return server.start() if start else server

    yield make
    for server in started:
        if server.daemon is not None and server.daemon.proc is not None:
            server.resume()
        server.stop()


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A running victoria-metrics, stopped after the test."""
    server = VictoriaMetrics(tmp_path / "victoria-metrics")
    server.daemon.start()
    yield server
    server.daemon.stop()


class FeedSource:
    """Hands over (and forgets) what the test put in FEED."""

    schema = FEED_SCHEMA

    def __init__(self, options: Any, context: Any) -> None:
        pass

    def collect(self) -> Iterable[Metric]:
        """Everything fed since the last collection."""
        batch = list(FEED)
        FEED.clear()
        return batch

    def close(self) -> None:
        """Nothing to release."""


class FeedPlugin:
    """Registers the ``feed`` source."""

    @hookimpl
    def kansoku_register_sources(self) -> list[SourceSpec]:
        """The feed source."""
        return [SourceSpec("feed", FeedSource, schema=FEED_SCHEMA)]


@pytest.fixture
def feed() -> list[Metric]:
    """The list the ``feed`` source hands over (and empties) at each collection."""
    FEED.clear()
    return FEED


@pytest.fixture
def build_agent(write_config: Callable[..., Path]) -> Iterator[Callable[[str], Agent]]:
    """``build_agent(ini_text)``: an Agent with the ``feed`` source available (no self-metrics)."""
    FEED.clear()
    agents: list[Agent] = []

    def make(text: str) -> Agent:
        registry = Registry(load_entrypoints=False, extra_plugins=[("feed", FeedPlugin())])
        config = load(write_config(text), registry)
        config.agent.self_metrics = False
        agent = Agent(config, registry)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        if not agent.closed:
            agent.close(flush=False)
