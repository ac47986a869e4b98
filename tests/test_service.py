"""Running as a service: sd_notify, agent status, the health endpoint, SIGHUP reload, the unit."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest

from kansoku import Metric, Option, SinkSpec, SourceSpec, hookimpl, sdnotify, sourcelock, status
from kansoku.config import load
from kansoku.errors import RetryLater, SourceError
from kansoku.plugins import Registry
from kansoku.runtime import Agent
from tests.conftest import start_agent
from tests.daemons import free_port, missing

ROOT = Path(__file__).parent.parent


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch):
    """A real unix datagram socket standing where systemd's would."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_notify_sends_datagrams(notify_socket) -> None:
    assert sdnotify.ready("collecting from 2 sources")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=collecting from 2 sources"
    assert sdnotify.watchdog()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"


def test_notify_abstract_namespace(monkeypatch) -> None:
    name = f"kansoku-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.stopping()
        assert sock.recv(100) == b"STOPPING=1"


def test_notify_without_systemd_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready("x") is False
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_period() is None  # meant for another process
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_period() == 10.0


def test_agent_run_speaks_notify_protocol(notify_socket, write_config) -> None:
    config = write_config("""
        [agent]
        self_metrics = false
        [source.system]
        interval = 1h
        [sink.stdout]
    """)
    env = {"WATCHDOG_USEC": "400000"}
    proc = start_agent(config, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        env_pid_note = "WATCHDOG_PID is unset: the agent accepts the watchdog request"
        messages = [notify_socket.recv(4096).decode() for _ in range(3)]
        assert messages[0].startswith("READY=1\nSTATUS=collecting from 1 sources")
        assert messages[1:] == ["WATCHDOG=1", "WATCHDOG=1"], env_pid_note
        proc.send_signal(signal.SIGTERM)
        while (message := notify_socket.recv(4096).decode()) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1"
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        proc.wait()


KNOWN_STATE = {
    "pid": 999999999,
    "version": "0.1.0",
    "started": 1000.0,
    "updated": 1990.0,
    "stopped": True,
    "sources": {
        "smartmeter": {
            "plugin": "smartmeter",
            "interval": 60.0,
            "last_success": 1980.0,
            "last_error": None,
            "collect_seconds": 1.234,
            "collections": 16,
            "errors": 0,
            "device": {"session_age_s": 960, "airtime_this_hour_s": 4.2},
        },
        "switchbot": {
            "plugin": "switchbot",
            "interval": 60.0,
            "last_success": None,
            "last_error": "adapter hci0 not found",
            "collect_seconds": 0.0,
            "collections": 0,
            "errors": 3,
            "device": {
                "devices": [
                    {"address": "AA:BB:CC:DD:EE:01", "name": "kitchen", "status": "healthy"},
                    {"address": "AA:BB:CC:DD:EE:02", "name": "attic", "status": "gone"},
                ]
            },
        },
    },
    "sinks": {
        "influxdb": {
            "plugin": "influxdb",
            "spool_depth": 120,
            "quarantine_depth": 2,
            "last_delivery": 1700.0,
            "last_error": "connection refused",
            "written": 5000,
        },
    },
}

EXPECTED_STATUS = """\
agent not running; state written 10s ago, started 17m ago, kansoku 0.1.0

SOURCE      INTERVAL  LAST SUCCESS  COLLECT  ERRORS  LAST ERROR
smartmeter  60s       20s ago       1.23s    0       -
switchbot   60s       never         0.00s    3       adapter hci0 not found

SINK      SPOOL  QUARANTINE  LAST DELIVERY  WRITTEN  LAST ERROR
influxdb  120    2           5m ago         5000     connection refused

smartmeter:
  airtime_this_hour_s: 4.2
  session_age_s: 960

switchbot:
  ADDRESS            NAME     STATUS
  AA:BB:CC:DD:EE:01  kitchen  healthy
  AA:BB:CC:DD:EE:02  attic    gone
"""


def test_status_renders_a_known_state() -> None:
    assert status.render(json.loads(json.dumps(KNOWN_STATE)), now=2000.0) == EXPECTED_STATUS


def test_status_command_reads_the_last_state(write_config, agent_cli) -> None:
    config = write_config("""
        [source.system]
        [sink.stdout]
    """)
    assert agent_cli("-c", str(config), "status").returncode == 1  # nothing written yet
    assert agent_cli("-c", str(config), "once").returncode == 0
    result = agent_cli("-c", str(config), "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("agent not running; state written ")
    assert "\nsystem  " in result.stdout
    assert "\nstdout  0  " in result.stdout


# In-process agents with controllable test plugins for health and reload.
BROKEN = threading.Event()
SINK_DOWN = threading.Event()
DELIVERED: list[Metric] = []


class Counter:
    schema: dict = {}

    def __init__(self, options, context) -> None:
        from kansoku import FieldSpec, MeasurementSchema

        self.schema = {"count": MeasurementSchema({"n": FieldSpec(int)})}
        self.n = 0

    def collect(self) -> Iterable[Metric]:
        if BROKEN.is_set():
            raise SourceError("sensor unplugged")
        self.n += 1
        return [Metric("count", {"n": self.n})]

    def close(self) -> None:
        pass


class FlakySink:
    def __init__(self, options, context) -> None:
        self.label = options["label"]
        if self.label == "refused":
            raise ValueError("label 'refused' is refused by the plugin")

    def write(self, batch) -> None:
        if SINK_DOWN.is_set():
            raise RetryLater("connection refused")
        DELIVERED.extend(batch)

    def close(self) -> None:
        pass


class ServicePlugin:
    @hookimpl
    def kansoku_register_sources(self):
        return [SourceSpec("counter", Counter)]

    @hookimpl
    def kansoku_register_sinks(self):
        return [SinkSpec("flaky", FlakySink, options=[Option("label", str, "a")])]


@pytest.fixture
def running(write_config):
    BROKEN.clear()
    SINK_DOWN.clear()
    DELIVERED.clear()
    registry = Registry(load_entrypoints=False, extra_plugins=[("service", ServicePlugin())])
    stop = threading.Event()
    threads = []

    def start(text: str, reload_text: str | None = None) -> Agent:
        path = write_config(text)
        agent = Agent(load(path, registry), registry)

        def reload():
            return load(write_config(reload_text or text), registry)

        thread = threading.Thread(target=agent.run, args=(stop, reload))
        thread.start()
        threads.append(thread)
        return agent

    yield start, stop
    stop.set()
    BROKEN.clear()
    SINK_DOWN.clear()
    for thread in threads:
        thread.join(20)


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except urllib.error.URLError:
        return 0, {}  # not listening yet


def test_health_flips_when_a_source_stops_and_back(running) -> None:
    start, _ = running
    port = free_port()
    start(f"""
        [agent]
        health_listen = 127.0.0.1:{port}
        health_staleness = 2
        self_metrics = false
        [source.counter]
        interval = 0.3s
        [sink.flaky]
        flush_interval = 0.2s
    """)
    wait_for(lambda: health(port)[0] == 200)
    assert health(port)[1] == {"status": "pass", "problems": []}
    BROKEN.set()
    wait_for(lambda: health(port)[0] == 503)
    problems = health(port)[1]["problems"]
    assert len(problems) == 1
    assert problems[0].startswith("source counter: last success ")
    assert problems[0].endswith("(limit 0.6s): sensor unplugged")
    BROKEN.clear()
    wait_for(lambda: health(port)[0] == 200)


def test_health_reports_a_sink_that_cannot_deliver(running) -> None:
    start, _ = running
    port = free_port()
    SINK_DOWN.set()
    agent = start(f"""
        [agent]
        health_listen = 127.0.0.1:{port}
        self_metrics = false
        [source.counter]
        interval = 0.2s
        [sink.flaky]
        flush_interval = 0.1s
    """)
    agent.started -= 60  # as if it had been failing for a minute
    wait_for(lambda: "connection refused" in str(health(port)[1]))
    code, body = health(port)
    assert code == 503
    assert body["problems"][0].startswith("sink flaky: ")
    assert "points waiting, no delivery for 6" in body["problems"][0]


def test_sighup_with_a_changed_sink_keeps_every_spooled_point(running) -> None:
    start, stop = running
    config = """
        [agent]
        self_metrics = false
        [source.counter]
        interval = 0.05s
        [sink.flaky]
        label = {label}
        flush_interval = 0.1s
        retry_max_backoff = 0.2s
    """
    SINK_DOWN.set()
    agent = start(config.format(label="old"), reload_text=config.format(label="new"))
    wait_for(lambda: agent.sinks and agent.sinks[0].spool.depth() >= 20)
    counter = agent.sources[0]
    agent.reload_requested.set()
    wait_for(lambda: agent.sinks and agent.sinks[0].sink.label == "new")
    assert agent.sources[0] is counter  # unchanged source: same instance, same device session
    with pytest.raises(sourcelock.SourceBusy), sourcelock.claim(agent.state_dir, "counter"):
        pass  # and the agent still holds its lock after the reload
    SINK_DOWN.clear()
    wait_for(lambda: len(DELIVERED) >= counter.source.n - 2)
    stop.set()
    wait_for(lambda: agent.closed)
    numbers = [m.fields["n"] for m in DELIVERED]
    assert numbers == list(range(1, counter.source.n + 1))  # all of them, once, in order


def test_reload_refused_by_a_plugin_keeps_the_running_config(running, caplog) -> None:
    start, _ = running
    config = """
        [agent]
        self_metrics = false
        [source.counter]
        interval = 0.1s
        [sink.flaky]
        label = {label}
        flush_interval = 0.1s
    """
    agent = start(config.format(label="old"), reload_text=config.format(label="refused"))
    wait_for(lambda: len(DELIVERED) >= 2)
    sink = agent.sinks[0]
    with caplog.at_level(logging.ERROR, logger="kansoku.agent"):
        agent.reload_requested.set()
        wait_for(lambda: "reload refused" in caplog.text)
    assert "[sink.flaky] label 'refused' is refused by the plugin" in caplog.text
    assert agent.sinks == [sink]  # nothing was torn down
    seen = len(DELIVERED)
    wait_for(lambda: len(DELIVERED) > seen)  # and it still delivers
    held = sourcelock.lock_path(agent.state_dir, "counter")
    with pytest.raises(sourcelock.SourceBusy), sourcelock.claim(agent.state_dir, "counter"):
        pass
    assert held.exists()


def test_sighup_reaches_the_running_cli(write_config) -> None:
    config = write_config("""
        [agent]
        self_metrics = false
        [source.system]
        interval = 1h
        [sink.stdout]
    """)
    proc = start_agent(config, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (config.parent / "state" / "status.json").exists())
        text = config.read_text().replace("interval = 1h", "interval = 1h\n[source.system.b]")
        config.write_text(text)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "source system.b added" in err
    assert "configuration reloaded: 2 sources, 1 sinks" in err


def test_unit_file_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze not found: apt-get install systemd")
    unit = (ROOT / "etc" / "systemd" / "kansoku.service").read_text()
    agent = Path(sys.executable).with_name("agent")
    unit = unit.replace("/opt/kansoku/bin/agent", str(agent))
    path = tmp_path / "kansoku.service"
    path.write_text(unit)
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
