"""The agent command line: --version, once --demo, run and its clean stop on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest

from kansoku import __version__
from tests.conftest import start_agent


def test_version(agent_cli) -> None:
    result = agent_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"kansoku {__version__}"


def test_once_demo_prints_json_lines(agent_cli) -> None:
    result = agent_cli("once", "--demo")
    assert result.returncode == 0, result.stderr
    points = [json.loads(line) for line in result.stdout.splitlines()]
    assert points, "the demo printed nothing"
    for point in points:
        assert set(point) == {"measurement", "tags", "fields", "time"}
        assert isinstance(point["time"], int)
        assert point["tags"]["host"] == "demo"
    system = next(p for p in points if p["measurement"] == "system")
    assert isinstance(system["fields"]["uptime_s"], int)
    assert isinstance(system["fields"]["load1"], float)


def test_stdout_line_protocol(agent_cli, write_config) -> None:
    config = write_config("""
        [agent]
        tags = host=a b
        [source.system]
        [sink.stdout]
        format = line
    """)
    result = agent_cli("-c", str(config), "once")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("system,host=a\\ b ")
    line = line.replace("a\\ b", "ab")
    fields = dict(item.split("=") for item in line.split(" ")[1].split(","))
    assert re.fullmatch(r"\d+i", fields["uptime_s"])  # ints carry the i suffix
    assert re.fullmatch(r"\d+\.\d+(e-?\d+)?", fields["load1"])  # floats keep a decimal point
    assert line.rsplit(" ", 1)[1].isdigit()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_cleanly_and_flushes(write_config, signum: int) -> None:
    config = write_config("""
        [agent]
        shutdown_timeout = 5s
        self_metrics_interval = 1h
        [source.system]
        interval = 1h
        [sink.stdout]
        flush_interval = 1h
    """)
    proc = start_agent(config, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    spool = config.parent / "state" / "spool" / "stdout.sqlite"
    while not spool.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the first collection is spooled; flush_interval keeps it there
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    measurements = [json.loads(line)["measurement"] for line in out.splitlines()]
    # The final flush delivered the spooled collection and the last self-metrics.
    assert "system" in measurements
    assert "agent" in measurements
    assert f"received {signal.Signals(signum).name}" in err
    assert "Traceback" not in err


def test_config_option_before_or_after_the_command(agent_cli, write_config) -> None:
    config = write_config("""
        [agent]
        self_metrics = false
        [source.system]
        [sink.stdout]
    """)
    for args in (("-c", str(config), "once"), ("once", "-c", str(config), "--log-level", "error")):
        result = agent_cli(*args)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["measurement"] == "system"
    assert agent_cli("once", "-c", str(config.parent / "none.ini")).returncode == 2


def test_unknown_command_is_a_usage_error(agent_cli) -> None:
    result = agent_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
