"""The influxdb sink, unchanged, against a real VictoriaMetrics (its InfluxDB /write API)."""

from __future__ import annotations

import time

import pytest

from kansoku.metric import Metric

pytest_plugins = ["tests.servers_tsdb"]
pytestmark = pytest.mark.server


def test_the_same_sink_config_delivers_to_victoriametrics(victoria, build_agent, feed) -> None:
    # The section an InfluxDB user already has; VictoriaMetrics needs no database created
    # (it turns ?db= into a label) and answers /write like InfluxDB 1.x.
    agent = build_agent(f"""
[agent]
tags = host=pi
[source.feed]
interval = 1h
[sink.influxdb]
url = {victoria.url}
database = kansoku
create_database = true
precision = ms
gzip = true
flush_interval = 100ms
""")
    ms = 10**6
    now = time.time_ns() // ms * ms - 10**9
    feed.extend(
        [
            Metric("sensor", {"temperature": b"23.5", "humidity": "85", "door": "on"}, {}, now),
            Metric(
                "sensor", {"temperature": "25", "humidity": b"80", "door": "off"}, {}, now + 10**6
            ),
        ]
    )
    assert agent.sources[0].run_once()
    worker = agent.sinks[0]
    assert worker.drain(time.monotonic() + 10)
    assert worker.stats.written == 2

    series = {
        s["metric"]["__name__"]: s for s in victoria.export('{__name__=~"sensor_.*", db="kansoku"}')
    }
    assert sorted(series) == ["sensor_door", "sensor_humidity", "sensor_temperature"]
    assert series["sensor_temperature"]["metric"] == {
        "__name__": "sensor_temperature",
        "db": "kansoku",
        "host": "pi",
    }
    assert series["sensor_temperature"]["values"] == [23.5, 25]
    assert series["sensor_temperature"]["timestamps"] == [now // ms, now // ms + 1]
    assert series["sensor_humidity"]["values"] == [85, 80]
    assert series["sensor_door"]["values"] == [1, 0]  # booleans become 1 and 0
    [mean] = victoria.query('avg_over_time(sensor_temperature{db="kansoku"}[1h])')
    assert float(mean["value"][1]) == pytest.approx(24.25)
