"""The influxdb sink against a real influxd 1.x: types, outages, kill -9, refusals, auth."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kansoku.errors import ConfigError, RetryLater
from kansoku.metric import Metric
from kansoku.spool import Spool
from kansoku.types import PluginContext
from kansoku_plugins.influxdb import OPTIONS, make_sink
from kansoku_plugins.influxdb.sink import PointsRefused
from tests.conftest import start_agent
from tests.daemons import free_port

pytest_plugins = ["tests.servers_cache", "tests.servers_tsdb"]
pytestmark = pytest.mark.server

FAST = """
flush_interval = 100ms
retry_max_backoff = 300ms
timeout = 2s
"""


def sink_section(url: str, extra: str = "", name: str = "influxdb") -> str:
    return f"[sink.{name}]\nurl = {url}\ndatabase = kansoku\ncreate_database = true\n{FAST}{extra}"


def make(url: str, **options: Any):
    """The sink as the factory builds it from a config section."""
    values = {o.name: o.default for o in OPTIONS}
    values.update({"url": url, "database": "kansoku", "timeout": 2.0, **options})
    context = PluginContext("influxdb", Path("."), logging.getLogger("test.influxdb"), Path("."))
    return make_sink(values, context)


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {timeout}s: {condition.__doc__ or condition}")
        time.sleep(0.05)


def collect_and_deliver(agent) -> bool:
    ok = all([runner.run_once() for runner in agent.sources])
    return all([w.drain(time.monotonic() + 10, ignore_backoff=True) for w in agent.sinks]) and ok


# ---------------------------------------------------------------------- the original bug


def test_redis_strings_end_as_float_fields_and_mean_works(
    influxd, redis_server, write_config, agent_cli
) -> None:
    server = influxd()
    # The bug that started the project: the text redis holds, written as it is (here with
    # influxdb-python's write_points, like the old script), makes a string field.
    from influxdb import InfluxDBClient

    old = InfluxDBClient("127.0.0.1", server.port, database="old", timeout=5)
    old.create_database("old")
    old.write_points([{"measurement": "room", "fields": {"temperature": "23.5"}}])
    [broken] = server.query('SELECT mean("temperature") FROM "room"', "old")
    assert broken["error"] == "unsupported mean iterator type: *query.stringInterruptIterator"

    redis = redis_server.client()
    redis.hset("sensor:kitchen", mapping={"temperature": "23.5", "humidity": "85", "door": "on"})
    redis.hset("sensor:hall", mapping={"temperature": "25", "humidity": "80", "door": "off"})
    relay = (
        f"[source.redis-relay.rooms]\nurl = {redis_server.url}\ntype = hash\n"
        "key = sensor:{room}\nmeasurement = room\n"
        "fields = temperature:float, humidity:int, door:bool\n"
    )
    config = write_config(relay + sink_section(server.url))
    done = agent_cli("-c", str(config), "once")
    assert done.returncode == 0, done.stderr

    assert server.field_types("room", "kansoku") == {
        "temperature": "float",  # "25" became 25.0, not 25i
        "humidity": "integer",
        "door": "boolean",
    }
    [mean] = server.rows('SELECT mean("temperature") FROM "room"', "kansoku")
    assert mean["mean"] == pytest.approx(24.25)
    [count] = server.rows("SELECT count(humidity) FROM room", "kansoku")
    assert count["count"] == 2


def test_types_are_kept_exactly(influxd) -> None:
    server = influxd()
    sink = make(server.url, create_database=True)
    t = time.time_ns()
    sink.write(
        [
            Metric("kinds", {"f": 25.0, "i": 25, "b": True, "s": 'say "hi"\\'}, {"k": "a b"}, t),
            Metric("kinds", {"f": 1e20, "i": -(2**63), "b": False, "s": ""}, {"k": "a b"}, t + 1),
        ]
    )
    assert server.field_types("kinds", "kansoku") == {
        "b": "boolean",
        "f": "float",
        "i": "integer",
        "s": "string",
    }
    rows = server.rows("SELECT * FROM kinds", "kansoku")
    assert [(r["f"], r["i"], r["b"], r["s"], r["k"]) for r in rows] == [
        (25.0, 25, True, 'say "hi"\\', "a b"),
        (1e20, -(2**63), False, "", "a b"),
    ]


def test_precision_gzip_and_retention_policy(influxd) -> None:
    server = influxd()
    server.query("CREATE DATABASE kansoku")
    server.query('CREATE RETENTION POLICY "week" ON "kansoku" DURATION 7d REPLICATION 1')
    sink = make(server.url, precision="s", gzip=True, retention_policy="week")
    second = time.time_ns() // 10**9 - 60
    t = second * 10**9 + 123_456_789
    for batch in ([Metric("p", {"v": 1.5}, {}, t)], None):
        if batch is None:  # the same through the spool's prepared (nanosecond) lines
            prepared = sink.prepare(Metric("p", {"v": 2.5}, {}, t + 10**9))
            batch = _Prepared([Metric("p", {"v": 2.5}, {}, t + 10**9)], [prepared])
        sink.write(batch)
    rows = server.rows('SELECT v FROM "kansoku"."week"."p"', "kansoku")
    assert [(r["time"], r["v"]) for r in rows] == [
        (second * 10**9, 1.5),
        ((second + 1) * 10**9, 2.5),
    ]
    assert server.rows('SELECT v FROM "kansoku"."autogen"."p"', "kansoku") == []


class _Prepared(list):
    """A batch carrying prepared lines, as the spool hands it over."""

    def __init__(self, metrics: list[Metric], prepared: list[bytes | None]) -> None:
        super().__init__(metrics)
        self.prepared = prepared


# ---------------------------------------------------------------------- outages


def test_points_wait_out_an_outage_and_arrive_once_in_order(
    influxd, build_agent, feed, caplog
) -> None:
    server = influxd()
    agent = build_agent(f"[source.feed]\ninterval = 1h\n{sink_section(server.url)}")
    agent.start()
    runner, worker = agent.sources[0], agent.sinks[0]
    start = time.time_ns() - 10**9

    def collect(seqs: range) -> None:
        for seq in seqs:
            feed.append(Metric("counter", {"seq": str(seq)}, time_ns=start + seq * 1000))
            assert runner.run_once()

    def spool_empty() -> bool:
        """the spool is empty"""
        return worker.spool.depth() == 0

    collect(range(5))
    wait_until(spool_empty)
    server.stop()
    with caplog.at_level(logging.INFO, logger="kansoku.delivery"):
        collect(range(5, 25))
        wait_until(lambda: worker.stats.failed_writes >= 3)
        assert worker.spool.depth() == 20
        server.start()
        collect(range(25, 30))
        wait_until(spool_empty)
    rows = server.rows("SELECT seq FROM counter", "kansoku")
    assert [r["seq"] for r in rows] == list(range(30))
    # The restarted server received exactly the 25 points it missed: nothing was sent twice.
    assert server.http_stats()["pointsWrittenOK"] == 25
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors  # the first failure; retries log at debug level
    assert f"cannot reach {server.url}" in errors[0]
    assert "points kept in the spool" in errors[0]
    assert any("delivers again" in r.getMessage() for r in caplog.records)


def test_agent_killed_with_sigkill_loses_nothing(influxd, write_config, tmp_path) -> None:
    server = influxd(start=False)  # down while the first agent collects
    agent_section = "[agent]\nself_metrics = false\n[source.system]\ninterval = 200ms\n"
    config = write_config(agent_section + sink_section(server.url))
    spool_file = tmp_path / "state" / "spool" / "influxdb.sqlite"

    def run_agent() -> subprocess.Popen[str]:
        log = open(tmp_path / "agent.log", "a")  # noqa: SIM115  (kept by the child)
        return start_agent(config, stdout=subprocess.DEVNULL, stderr=log)

    def spooled() -> list[Metric]:
        if not spool_file.exists():
            return []
        spool = Spool(spool_file, max_bytes=2**40, max_age=1e9, create=False)
        try:
            return list(spool.peek(100_000))
        finally:
            spool.close()

    first = run_agent()
    try:
        wait_until(lambda: len(spooled()) >= 5)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    waiting = {m.time_ns for m in spooled()}
    assert len(waiting) >= 5

    server.start()
    second = run_agent()
    try:

        def all_arrived() -> bool:
            """every point spooled before the kill is in influxd"""
            if "kansoku" not in server.databases():
                return False
            stored = server.rows("SELECT load1 FROM system", "kansoku")
            return waiting <= {r["time"] for r in stored}

        wait_until(all_arrived)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, (tmp_path / "agent.log").read_text()
    assert spooled() == []  # the final flush delivered the last collections too
    stored = server.rows("SELECT count(load1) FROM system", "kansoku")[0]["count"]
    assert stored >= len(waiting)


def test_once_with_the_server_down_fails_and_keeps_the_points(write_config, agent_cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = write_config("[agent]\nself_metrics = false\n[source.system]\n" + sink_section(url))
    done = agent_cli("-c", str(config), "once")
    assert done.returncode == 1
    assert (
        f"agent once: sink influxdb: cannot reach {url}: [Errno 111] Connection refused; "
        "1 points kept in the spool"
    ) in done.stderr
    assert "Traceback" not in done.stderr
    status = agent_cli("-c", str(config), "spool", "status")
    assert "influxdb: 1 points waiting" in status.stdout


def test_unreachable_hung_and_misconfigured_servers_mean_retry_later(influxd) -> None:
    server = influxd()
    point = [Metric("m", {"v": 1.5}, {}, time.time_ns())]
    cases = [
        (f"http://127.0.0.1:{free_port()}", {}, "[Errno 111] Connection refused"),
        (server.url, {}, 'database not found: "kansoku"; create it (CREATE DATABASE "kansoku")'),
        (server.url + "/prefix", {"create_database": True}, "/prefix/write answered 404"),
        (
            server.url,
            {"create_database": True, "retention_policy": "nope"},
            "server error: retention policy not found: nope (check retention_policy = nope)",
        ),
    ]
    for url, options, expected in cases:
        with pytest.raises(RetryLater, match=re.escape(expected)):
            make(url, **options).write(point)
    server.pause()
    try:
        with pytest.raises(RetryLater, match=r"no answer from .* within 0.5s \(timeout\)"):
            make(server.url, timeout=0.5).write(point)
    finally:
        server.resume()
    make(server.url, create_database=True).write(point)
    assert server.rows("SELECT v FROM m", "kansoku")[0]["v"] == 1.5


# ---------------------------------------------------------------------- refusals


def test_type_conflicts_are_quarantined_with_the_server_message(
    influxd, build_agent, feed, agent_cli, tmp_path
) -> None:
    server = influxd()
    server.query("CREATE DATABASE kansoku")
    now = time.time_ns()
    # Someone else wrote sensor.temperature as an integer first (into the same shard).
    assert server.write(f"sensor temperature=20i {now - 10**9}", "kansoku").status_code == 204
    agent = build_agent(f"[source.feed]\ninterval = 1h\n{sink_section(server.url)}")
    worker = agent.sinks[0]
    feed.extend(
        [
            Metric("counter", {"seq": 1}, time_ns=now),
            Metric("sensor", {"temperature": "23.5", "humidity": "50"}, time_ns=now + 1),
            Metric("counter", {"seq": 2}, time_ns=now + 2),
            Metric("sensor", {"temperature": "24.5"}, time_ns=now + 3),
            Metric("sensor", {"humidity": "51"}, time_ns=now + 4),
        ]
    )
    assert collect_and_deliver(agent)
    assert worker.stats.quarantined == 2
    assert worker.spool.depth() == 0
    assert [r["seq"] for r in server.rows("SELECT seq FROM counter", "kansoku")] == [1, 2]
    assert [r["humidity"] for r in server.rows("SELECT humidity FROM sensor", "kansoku")] == [51]
    [first, second] = worker.spool.quarantined()
    expected = (
        'partial write: field type conflict: input field "temperature" on measurement '
        '"sensor" is type float, already exists as type integer dropped=2'
    )
    assert first.reason == second.reason == expected
    assert [q.metric.fields["temperature"] for q in (first, second)] == [23.5, 24.5]

    # Later points are not held up.
    feed.append(Metric("counter", {"seq": 3}, time_ns=now + 5))
    assert collect_and_deliver(agent)
    assert [r["seq"] for r in server.rows("SELECT seq FROM counter", "kansoku")] == [1, 2, 3]
    agent.close()

    # The user looks, fixes the cause, and sends the quarantined points again.
    config = ["-c", str(tmp_path / "agent.ini")]
    shown = agent_cli(*config, "spool", "show-quarantine")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count(expected) == 2
    server.query('DROP MEASUREMENT "sensor"', "kansoku")
    assert (
        "influxdb: 2 points queued again" in agent_cli(*config, "spool", "retry-quarantine").stdout
    )
    agent = build_agent(f"[source.feed]\ninterval = 1h\n{sink_section(server.url)}")
    assert collect_and_deliver(agent)
    temperatures = server.rows("SELECT temperature FROM sensor", "kansoku")
    assert [r["temperature"] for r in temperatures] == [23.5, 24.5]
    assert server.field_types("sensor", "kansoku")["temperature"] == "float"
    assert "0 points waiting, 0 in quarantine" in agent_cli(*config, "spool", "status").stdout


def test_mixed_refusals_are_sorted_out_point_by_point(influxd) -> None:
    server = influxd()
    server.query("CREATE DATABASE kansoku")
    t = time.time_ns()
    assert server.write(f"a v=1.5 {t - 1}\nb v=1i {t - 1}", "kansoku").status_code == 204
    sink = make(server.url)
    batch = [
        Metric("good", {"n": 0}, {}, t),
        Metric("a", {"v": 7}, {}, t + 1),  # integer into float
        Metric("b", {"v": 2.5}, {}, t + 2),  # float into integer
        Metric("good", {"n": 1}, {}, t + 3),
        Metric("a", {"time": 1.5}, {}, t + 4),  # a field InfluxDB does not allow
        Metric("good", {"n": 2, "_field": 1}, {}, t + 5),  # InfluxDB would drop it silently
        Metric("good\\", {"n": 3}, {}, t + 6),  # line protocol cannot carry it
        Metric("good", {"n": 4}, {}, t + 7),
    ]
    with pytest.raises(PointsRefused) as refused:
        sink.write(batch)
    assert refused.value.indexes == [1, 2, 4, 5, 6]
    reasons = refused.value.reasons
    assert 'input field "v" on measurement "a" is type integer' in reasons[1]
    assert 'input field "v" on measurement "b" is type float' in reasons[2]
    assert 'invalid field name: input field "time" on measurement "a"' in reasons[4]
    assert reasons[5].startswith("not sent: '_field' is reserved")
    assert reasons[6].startswith("not sent: measurement 'good\\\\' ends with a backslash")
    assert [r["n"] for r in server.rows("SELECT n FROM good", "kansoku")] == [0, 1, 4]


def test_credentials_errors_keep_points_and_never_show_the_password(
    influxd, build_agent, feed, caplog, monkeypatch
) -> None:
    server = influxd(auth=True)
    password = "Pa55-w0rd-n0t-f0r-l0gs"
    server.query(f"CREATE USER admin WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
    server.auth = ("admin", password)
    server.query("CREATE DATABASE kansoku")
    server.query(f"CREATE USER reader WITH PASSWORD '{password}'")
    server.query('GRANT READ ON "kansoku" TO "reader"')
    monkeypatch.setenv("KANSOKU_TEST_INFLUX_PASSWORD", password)
    monkeypatch.setenv("KANSOKU_TEST_WRONG_PASSWORD", "wrong-" + password)

    def agent_as(user: str, variable: str):
        section = sink_section(server.url, f"username = {user}\npassword = ${{{variable}}}\n")
        return build_agent(f"[source.feed]\ninterval = 1h\n{section}")

    with caplog.at_level(logging.DEBUG):
        for seq, (user, variable, expected) in enumerate(
            [
                ("admin", "KANSOKU_TEST_WRONG_PASSWORD", "refused the credentials of user 'admin'"),
                ("reader", "KANSOKU_TEST_INFLUX_PASSWORD", "user 'reader' may not write"),
            ]
        ):
            agent = agent_as(user, variable)
            feed.append(Metric("counter", {"seq": seq}))
            assert not collect_and_deliver(agent)
            worker = agent.sinks[0]
            assert expected in (worker.stats.last_error or "")
            assert worker.spool.depth() == seq + 1  # kept, also across the restart
            agent.close(flush=False)
        agent = agent_as("admin", "KANSOKU_TEST_INFLUX_PASSWORD")
        assert collect_and_deliver(agent)  # the points kept through both failures arrive
        assert agent.sinks[0].stats.written == 2
    assert [r["seq"] for r in server.rows("SELECT seq FROM counter", "kansoku")] == [0, 1]
    assert caplog.records
    assert not [r for r in caplog.records if password in r.getMessage()]


def test_config_mistakes_are_sentences(write_config, agent_cli) -> None:
    cases = {
        "url = ftp://x\ndatabase = d": "is not an http:// or https:// URL",
        "url = http://u:p@x:8086\ndatabase = d": "put the user name and password in username",
        "url = http://x:8086\nhost = y\ndatabase = d": "sets url and host: use one or the other",
        "host = x\npassword = secret\ndatabase = d": "sets a password but no username",
        "host = x": "database is required",
        "host = x\ndatabase = d\nverify = /no/such/ca.pem": "neither true/false nor an existing",
        "host = x\ndatabase = d\nprecision = ps": "'ps' is not one of ns, us, ms, s, m, h",
    }
    for body, expected in cases.items():
        config = write_config(f"[source.system]\n[sink.influxdb]\n{body}\n")
        done = agent_cli("-c", str(config), "once")
        assert done.returncode == 2, (body, done.stderr)
        assert expected in done.stderr, (body, done.stderr)
        assert "Traceback" not in done.stderr
        assert "secret" not in done.stderr


def test_the_plugin_module_imports_no_client(agent_cli) -> None:
    code = (
        "import sys, kansoku_plugins.influxdb\n"
        "print(sorted(m for m in ('influxdb', 'requests') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_configuration_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sets url and port"):
        make("http://127.0.0.1:1", port=8086)


# ---------------------------------------------------------------------- Grafana dashboard

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana" / "kansoku-home.json"


def test_the_grafana_dashboard_queries_what_the_sink_writes(influxd) -> None:
    from kansoku_plugins.smartmeter.spec import SCHEMA as SMARTMETER
    from kansoku_plugins.switchbot.config import SCHEMA as SWITCHBOT

    server = influxd()
    sink = make(server.url, create_database=True)
    now = time.time_ns()
    minute = 60 * 10**9
    points = []
    for i in range(120):  # two hours, one point a minute
        t = now - (120 - i) * minute
        meter = {"power_w": 400 + i, "current_r_a": 4.0 + i / 100, "current_t_a": 0.5}
        meter |= {"energy_import_wh": 10_000 + 7 * i, "energy_export_wh": 500 + i // 10}
        points.append(Metric("smartmeter", meter, {"host": "pi"}, t))
        for name in ("kitchen", "bedroom"):
            room = {"temperature_c": 21.5, "humidity_pct": 50, "battery_pct": 90}
            room |= {"co2_ppm": 600 + i, "rssi_dbm": -70}
            tags = {"host": "pi", "name": name, "address": f"aa:{name}", "model": "meter-pro-co2"}
            points.append(Metric("switchbot", room, tags, t))
    sink.write(points)
    declared = {**SMARTMETER["smartmeter"].fields, **SWITCHBOT["switchbot"].fields}

    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["query"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert len(queries) >= 10
    for query in queries:
        for field in re.findall(r'\("(\w+)"\)', query):
            assert field in declared, (field, query)
        text = query.replace("$timeFilter", "time > now() - 3h").replace("$__interval", "5m")
        text = text.replace("$host", ".*").replace("$device", ".*")
        [result] = server.query(text, "kansoku")
        assert "error" not in result, (query, result)
        values = [v for s in result.get("series", []) for row in s["values"] for v in row[1:]]
        assert [v for v in values if v is not None], query
