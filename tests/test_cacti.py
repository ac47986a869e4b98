"""``agent cacti``: the Cacti data-input-method contract, series selection, ``--collect``.

The cache is filled by the real pipeline: ``agent once`` with the ``system`` source, or the
fixture source of tests/test_lastvalues.py run in-process through the agent.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import start_agent
from tests.test_lastvalues import fixture_config, run_pipeline

CACTI_LINE = re.compile(
    r"[A-Za-z0-9_]{1,19}:(-?\d+(\.\d+)?|U)( [A-Za-z0-9_]{1,19}:(-?\d+(\.\d+)?|U))*"
)
HEAVY = (
    "pluggy",
    "bleak",
    "serial",
    "influxdb",
    "apscheduler",
    "redis",
    "pymemcache",
    "requests",
    "sqlite3",
)


def cacti_ok(agent_cli, config: Path, *args: str) -> dict[str, str]:
    """Run ``agent cacti``, check the contract, return name -> value."""
    result = agent_cli("-c", str(config), "cacti", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert not result.stdout.endswith("\n")
    assert CACTI_LINE.fullmatch(result.stdout), result.stdout
    assert result.stdout.count(" ") + 1 == result.stdout.count(":")  # Cacti's validity rule
    return dict(word.split(":") for word in result.stdout.split(" "))


def test_system_source_end_to_end(agent_cli, write_config) -> None:
    config = write_config("""
        [source.system]
        [sink.cacti]
        flush_interval = 1s
    """)
    once = agent_cli("-c", str(config), "once")
    assert once.returncode == 0, once.stderr
    values = cacti_ok(agent_cli, config, "system")
    assert list(values) == [
        "load1",
        "load5",
        "load15",
        "uptime_s",
        "mem_total_bytes",
        "mem_available_bytes",
    ]
    assert re.fullmatch(r"\d+", values["uptime_s"])  # an int field prints as an integer
    assert re.fullmatch(r"\d+\.\d+", values["load1"])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert 0 <= uptime - int(values["uptime_s"]) < 60


def test_field_filter_by_field_or_output_name(agent_cli, write_config) -> None:
    config = fixture_config(write_config)
    run_pipeline(config, [{"fields": {"octets": 5, "temp": 1.5, "connection_structures": 3}}])
    values = cacti_ok(
        agent_cli, config, "fixture", "-f", "temp,connection_s_0a215b", "-f", "octets"
    )
    assert values == {"temp": "1.5", "connection_s_0a215b": "3", "octets": "5"}
    assert list(values) == ["temp", "connection_s_0a215b", "octets"]


def test_all_numeric_fields_missing_ones_unknown_text_left_out(agent_cli, write_config) -> None:
    config = fixture_config(write_config)
    run_pipeline(config, [{"fields": {"octets": 5, "up": True, "state": "ok"}}])
    values = cacti_ok(agent_cli, config, "fixture")
    assert values == {"octets": "5", "temp": "U", "level": "U", "up": "1", "spare": "U"}
    refused = agent_cli("-c", str(config), "cacti", "fixture", "-f", "state")
    assert refused.returncode == 1
    assert "state is a text field" in refused.stderr


def test_stale_values_print_u(agent_cli, write_config) -> None:
    config = fixture_config(write_config)
    # interval 60s, flush_interval 1s: older than 121 s is stale
    run_pipeline(config, [{"fields": {"octets": 5, "temp": 2.5}, "age": 300}])
    assert cacti_ok(agent_cli, config, "fixture", "-f", "octets,temp") == {
        "octets": "U",
        "temp": "U",
    }
    values = cacti_ok(agent_cli, config, "fixture", "-f", "octets,temp", "--max-age", "10m")
    assert values == {"octets": "5", "temp": "2.5"}


def test_several_series_need_a_tag(agent_cli, write_config) -> None:
    config = fixture_config(write_config)
    run_pipeline(
        config,
        [
            {"tags": {"server": "a:11211"}, "fields": {"octets": 1, "level": 10}},
            {"tags": {"server": "b:11211"}, "fields": {"octets": 2, "level": 20}},
        ],
    )
    ambiguous = agent_cli("-c", str(config), "cacti", "fixture")
    assert ambiguous.returncode == 1
    assert ambiguous.stdout == ""
    assert "server=a:11211 | server=b:11211" in ambiguous.stderr
    values = cacti_ok(agent_cli, config, "fixture", "--tag", "server=b:11211", "-f", "octets,level")
    assert values == {"octets": "2", "level": "20"}
    nothing = agent_cli("-c", str(config), "cacti", "fixture", "--tag", "server=c")
    assert nothing.returncode == 1
    assert "no series of source fixture has server=c" in nothing.stderr


def test_missing_cache_says_what_to_check(agent_cli, write_config) -> None:
    config = fixture_config(write_config)
    run_pipeline(config, [{"fields": {"octets": 1}}])
    result = agent_cli("-c", str(config), "cacti", "smartmeter")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no last values for source 'smartmeter'" in result.stderr
    assert "sources there: fixture" in result.stderr
    assert "Traceback" not in result.stderr


def test_state_dir_without_reading_the_config(agent_cli, write_config, tmp_path) -> None:
    config = fixture_config(write_config)
    run_pipeline(config, [{"fields": {"level": 4}}])
    state = str(tmp_path / "state")  # the poller's user may not read the agent's config
    result = agent_cli("-c", "/nonexistent.ini", "cacti", "fixture", "--state-dir", state)
    assert result.returncode == 0, result.stderr
    assert "level:4" in result.stdout.split(" ")
    result = agent_cli("-c", "/nonexistent.ini", "cacti", "fixture")
    assert result.returncode == 1
    assert "no such configuration file; or give the state directory with --state-dir" in (
        result.stderr
    )


def test_list_shows_names_types_and_rrd_types(agent_cli, write_config) -> None:
    config = fixture_config(write_config)
    run_pipeline(config, [{"fields": {"octets": 1, "connection_structures": 2}}])
    result = agent_cli("-c", str(config), "cacti", "fixture", "--list")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["octets"] == ["octets", "octets", "fx", "int", "counter", "bytes", "COUNTER"]
    assert rows["temp"][-1] == "GAUGE"
    assert rows["state"][-1] == "-"
    assert rows["connection_structures"][0] == "connection_s_0a215b"


def test_collect_directly_without_an_agent(agent_cli, write_config, tmp_path) -> None:
    config = write_config("""
        [source.system]
        [sink.cacti]
    """)
    values = cacti_ok(agent_cli, config, "system", "--collect", "-f", "uptime_s,load1")
    assert re.fullmatch(r"\d+", values["uptime_s"])
    assert not (tmp_path / "state" / "lastvalues").exists()  # nothing written to the cache
    missing = agent_cli("-c", str(config), "cacti", "smartmeter", "--collect")
    assert missing.returncode == 1
    assert "no enabled section [source.smartmeter] (sources: system)" in missing.stderr


def test_collect_is_refused_while_an_agent_runs_the_source(agent_cli, write_config) -> None:
    config = write_config("""
        [agent]
        self_metrics = false
        [source.system]
        interval = 1h
        [sink.cacti]
        flush_interval = 1s
    """)
    agent = start_agent(config, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        cache = config.parent / "state" / "lastvalues" / "system.json"
        deadline = time.monotonic() + 20
        while not cache.exists() and time.monotonic() < deadline and agent.poll() is None:
            time.sleep(0.05)
        assert cache.exists(), "the agent did not write its cache"
        refused = agent_cli("-c", str(config), "cacti", "system", "--collect")
        assert refused.returncode == 1
        assert refused.stdout == ""
        assert f"a running agent (pid {agent.pid}) collects source 'system'" in refused.stderr
        assert "without --collect" in refused.stderr
        # the same question without --collect is answered from the running agent's cache
        assert "uptime_s" in cacti_ok(agent_cli, config, "system")
    finally:
        agent.terminate()
        agent.wait(20)
    assert agent.returncode == 0
    # once the agent is gone the lock is free again
    assert "uptime_s" in cacti_ok(agent_cli, config, "system", "--collect")


@pytest.mark.parametrize(
    "args",
    [
        ("cacti", "system", "--state-dir", "STATE"),
        ("get", "system.uptime_s", "--state-dir", "STATE"),
        ("discover", "system", "--state-dir", "STATE"),
    ],
)
def test_poller_commands_import_nothing_heavy(tmp_path, args: tuple[str, ...]) -> None:
    argv = [a.replace("STATE", str(tmp_path)) for a in args]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kansoku.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "KANSOKU_NO_ENTRYPOINTS": "1"},
    )
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "kansoku.cachecli" in imported  # the measurement itself works
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == []
