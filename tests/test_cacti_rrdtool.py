"""Real rrdtool takes what ``agent cacti`` prints, as Cacti's poller would hand it over.

An RRD is created with the output names as data-source names (COUNTER for int counters, GAUGE
for gauges, as ``agent cacti --list`` suggests), updated from two polls with
``rrdtool update --template NAMES TIME:VALUES``, and ``rrdtool fetch`` must return the values
(for a COUNTER: the rate between the polls). rrdtool refuses a COUNTER value with a decimal
point, so the updates passing proves that ints stay ints.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.daemons import require_binary
from tests.test_cacti import cacti_ok
from tests.test_lastvalues import fixture_config, run_pipeline

STEP = 300


def rrd(*args: str) -> subprocess.CompletedProcess[str]:
    """Run rrdtool with ``args``."""
    return subprocess.run(
        [require_binary("rrdtool", "rrdtool"), *args], capture_output=True, text=True, timeout=30
    )


def create(path: Path, start: int, sources: dict[str, str]) -> None:
    """An RRD with one data source per name (type as given) and one AVERAGE archive."""
    ds = [f"DS:{name}:{kind}:{2 * STEP}:U:U" for name, kind in sources.items()]
    archive = "RRA:AVERAGE:0.5:1:10"
    result = rrd("create", str(path), "--start", str(start - 1), "--step", str(STEP), *ds, archive)
    assert result.returncode == 0, result.stderr


def update(path: Path, when: int, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``rrdtool update --template a:b WHEN:va:vb`` (what Cacti's poller does per data source)."""
    row = ":".join([str(when), *values.values()])
    return rrd("update", str(path), "--template", ":".join(values), row)


def fetch_row(path: Path, when: int) -> dict[str, float]:
    """The consolidated values of the step ending at ``when``."""
    result = rrd("fetch", str(path), "AVERAGE", "--start", str(when - STEP), "--end", str(when))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = lines[0].split()
    for line in lines[2:]:
        stamp, _, values = line.partition(":")
        if int(stamp) == when:
            return dict(zip(names, (float(v) for v in values.split()), strict=True))
    raise AssertionError(f"no row for {when} in:\n{result.stdout}")


def aligned_past() -> int:
    """A step boundary some steps ago, so both updates lie in the past."""
    return int(time.time()) // STEP * STEP - 4 * STEP


def test_rrd_from_the_system_source(agent_cli, write_config, tmp_path) -> None:
    config = write_config("""
        [source.system]
        [sink.cacti]
        flush_interval = 1s
    """)
    polls = []
    for _ in range(2):
        once = agent_cli("-c", str(config), "once")
        assert once.returncode == 0, once.stderr
        polls.append(cacti_ok(agent_cli, config, "system"))
    listing = agent_cli("-c", str(config), "cacti", "system", "--list")
    kinds = {line.split()[0]: line.split()[-1] for line in listing.stdout.splitlines()[1:]}
    assert kinds["uptime_s"] == "COUNTER"
    assert kinds["load1"] == "GAUGE"
    path = tmp_path / "system.rrd"
    start = aligned_past()
    create(path, start, kinds)
    for i, poll in enumerate(polls):
        result = update(path, start + i * STEP, poll)
        assert result.returncode == 0, result.stderr
    row = fetch_row(path, start + STEP)
    assert row["load1"] == pytest.approx(float(polls[1]["load1"]))
    assert row["mem_total_bytes"] == int(polls[1]["mem_total_bytes"])
    rate = (int(polls[1]["uptime_s"]) - int(polls[0]["uptime_s"])) / STEP
    assert row["uptime_s"] == pytest.approx(rate)


def test_counter_keeps_every_digit_and_refuses_a_float(agent_cli, write_config, tmp_path) -> None:
    config = fixture_config(write_config)
    base = 2**62  # beyond float precision: a detour through float would change the rate
    polls = []
    for octets, temp in ((base, 21.5), (base + 30_000, 22.25)):
        run_pipeline(config, [{"fields": {"octets": octets, "temp": temp}}])
        polls.append(cacti_ok(agent_cli, config, "fixture", "-f", "octets,temp"))
    assert polls[1] == {"octets": str(base + 30_000), "temp": "22.25"}
    path = tmp_path / "fixture.rrd"
    start = aligned_past()
    create(path, start, {"octets": "COUNTER", "temp": "GAUGE"})
    for i, poll in enumerate(polls):
        result = update(path, start + i * STEP, poll)
        assert result.returncode == 0, result.stderr
    assert fetch_row(path, start + STEP) == {"octets": 100.0, "temp": 22.25}
    # The same counter spelled as a float is refused: the updates above prove ints stay ints.
    floated = {"octets": f"{float(base + 60_000)}", "temp": "22.5"}
    refused = update(path, start + 2 * STEP, floated)
    assert refused.returncode != 0
    assert "not a simple unsigned integer" in refused.stderr


def test_stale_values_are_stored_as_unknown(agent_cli, write_config, tmp_path) -> None:
    config = fixture_config(write_config)
    run_pipeline(config, [{"fields": {"octets": 10, "temp": 20.0}, "age": 600}])
    poll = cacti_ok(agent_cli, config, "fixture", "-f", "octets,temp")
    assert poll == {"octets": "U", "temp": "U"}
    path = tmp_path / "stale.rrd"
    start = aligned_past()
    create(path, start, {"octets": "COUNTER", "temp": "GAUGE"})
    assert update(path, start, {"octets": "10", "temp": "20.0"}).returncode == 0
    result = update(path, start + STEP, poll)
    assert result.returncode == 0, result.stderr
    row = fetch_row(path, start + STEP)
    assert all(v != v for v in row.values())  # NaN: rrdtool's UNKNOWN
