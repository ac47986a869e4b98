"""The running agent: coercion on the way, pinned types, hung sources, once, self-metrics."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from kansoku import FieldSpec, MeasurementSchema, Metric, SinkSpec, SourceSpec, hookimpl
from kansoku.config import load
from kansoku.errors import SourceError
from kansoku.plugins import Registry
from kansoku.runtime import Agent

SENSOR = {
    "sensor": MeasurementSchema(
        {
            "temperature": FieldSpec(float, "°C"),
            "humidity": FieldSpec(int, "%"),
            "door": FieldSpec(bool),
        }
    ),
    "stats": MeasurementSchema(extra_fields="infer"),
}
RECEIVED: list[Metric] = []
HANG = threading.Event()


class StringSource:
    """Hands over what a redis relay would: every value as bytes."""

    schema = SENSOR

    def __init__(self, options, context) -> None:
        self.values = options["values"]

    def collect(self) -> Iterable[Metric]:
        fields = dict(item.split("=") for item in self.values.split(","))
        return [Metric("sensor", {k: v.encode() for k, v in fields.items()})]

    def close(self) -> None:
        pass


class StatsSource(StringSource):
    def collect(self) -> Iterable[Metric]:
        return [Metric("stats", json.loads(self.values))]


class HangingSource(StringSource):
    def collect(self) -> Iterable[Metric]:
        HANG.wait(30)
        return []


class FailingSource(StringSource):
    def collect(self) -> Iterable[Metric]:
        raise SourceError("the device is unplugged: check the cable")


class ListeningSource(StringSource):
    """Hears 'events' from a background thread, like a BLE scanner."""

    def __init__(self, options, context) -> None:
        super().__init__(options, context)
        self.heard: list[Metric] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        count = 0
        while not self.stop.wait(0.05):
            count += 1
            with self.lock:
                self.heard.append(Metric("sensor", {"humidity": str(count)}))

    def collect(self) -> Iterable[Metric]:
        with self.lock:
            heard, self.heard = self.heard, []
        return heard[-1:]  # the latest reading of the interval

    def close(self) -> None:
        self.stop.set()


class ListSink:
    def __init__(self, options, context) -> None:
        pass

    def write(self, batch) -> None:
        RECEIVED.extend(batch)

    def close(self) -> None:
        pass


class TestPlugin:
    @hookimpl
    def kansoku_register_sources(self):
        from kansoku import Option

        values = [Option("values", str, "")]
        return [
            SourceSpec("strings", StringSource, options=values, schema=SENSOR),
            SourceSpec("stats", StatsSource, options=values),
            SourceSpec("hanging", HangingSource, options=values),
            SourceSpec("failing", FailingSource, options=values),
            SourceSpec("listening", ListeningSource, options=values, mode="listen"),
        ]

    @hookimpl
    def kansoku_register_sinks(self):
        return [SinkSpec("list", ListSink)]


@pytest.fixture
def build(write_config, tmp_path: Path):
    RECEIVED.clear()
    HANG.clear()
    agents: list[Agent] = []

    def make(text: str) -> Agent:
        registry = Registry(load_entrypoints=False, extra_plugins=[("test", TestPlugin())])
        agent = Agent(load(write_config(text), registry), registry)
        agents.append(agent)
        return agent

    yield make
    HANG.set()
    for agent in agents:
        if not agent.closed:
            agent.close(flush=False)


def collect(agent: Agent) -> bool:
    """One collection of every source and a drain of every sink, leaving the agent open."""
    ok = all([runner.run_once() for runner in agent.sources])
    return all([w.drain(time.monotonic() + 5) for w in agent.sinks]) and ok


def test_strings_become_declared_types_and_bad_values_are_counted(build, caplog) -> None:
    agent = build("""
        [source.strings]
        values = temperature=23.5,humidity=85,door=true
        [source.strings.bad]
        values = temperature=abc,humidity=85.5,door=maybe,colour=red
        [sink.list]
    """)
    with caplog.at_level(logging.WARNING, logger="kansoku.validation"):
        assert collect(agent)
    good = [m for m in RECEIVED if m.tags.get("instance") != "bad"]
    assert [m.fields for m in good] == [{"temperature": 23.5, "humidity": 85, "door": True}]
    assert [type(v) for v in good[0].fields.values()] == [float, int, bool]
    assert [m for m in RECEIVED if m.tags.get("instance") == "bad"] == []
    bad = next(r for r in agent.sources if r.name == "strings.bad")
    assert dict(bad.validator.rejected) == {
        ("sensor", "temperature"): 1,
        ("sensor", "humidity"): 1,
        ("sensor", "door"): 1,
        ("sensor", "colour"): 1,
    }
    assert "source strings.bad rejected sensor.temperature = b'abc'" in caplog.text
    assert "sensor.colour = b'red': not in the source's schema" in caplog.text
    rejected = [m for m in agent.self_metrics() if m.measurement == "agent_rejected"]
    assert {(m.tags["field"], m.fields["count"]) for m in rejected} == {
        ("temperature", 1),
        ("humidity", 1),
        ("door", 1),
        ("colour", 1),
    }


def test_rejections_are_logged_once_per_field(build, caplog) -> None:
    agent = build("""
        [source.strings]
        values = temperature=abc
        [sink.list]
    """)
    runner = agent.sources[0]
    with caplog.at_level(logging.WARNING, logger="kansoku.validation"):
        for _ in range(3):
            runner.run_once()
    assert caplog.text.count("rejected sensor.temperature") == 1
    assert runner.validator.rejected[("sensor", "temperature")] == 3


def test_discovered_field_types_survive_a_restart(build) -> None:
    config = """
        [source.stats]
        values = {values}
        [sink.list]
    """
    first = build(config.format(values='{"uptime": 5, "version": "1.6.18"}'))
    assert first.once() == []
    assert first.closed
    # After a restart the same fields arrive as text: they keep the types pinned first.
    second = build(config.format(values='{"uptime": "6", "version": 1.7}'))
    assert second.once() == []
    assert [m.fields for m in RECEIVED] == [
        {"uptime": 5, "version": "1.6.18"},
        {"uptime": 6, "version": "1.7"},
    ]
    pins = json.loads((second.state_dir / "types.json").read_text())
    assert pins == {"stats": {"stats": {"uptime": "int", "version": "str"}}}


def test_a_hung_source_does_not_delay_another(build) -> None:
    agent = build("""
        [source.hanging]
        interval = 1s
        timeout = 1s
        [source.strings]
        interval = 0.2s
        values = temperature=20
        [sink.list]
        flush_interval = 0.1s
    """)
    agent.config.agent.self_metrics = False
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while len(RECEIVED) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    hanging, strings = agent.sources
    collected_while_hung = len(RECEIVED)
    hung_collections = hanging.stats.collections
    hung_reported = hanging.stats.timeouts + hanging.stats.skipped
    stop.set()
    HANG.set()
    thread.join(15)
    assert not thread.is_alive()
    assert collected_while_hung >= 10  # 0.2 s collections went on while the other hung
    assert hung_collections == 0
    assert hung_reported >= 1
    assert strings.stats.timeouts == 0


def test_once_reports_each_failure(build) -> None:
    agent = build("""
        [source.failing]
        [source.strings]
        values = temperature=21
        [sink.list]
    """)
    failures = agent.once()
    assert failures == ["source failing: the device is unplugged: check the cable"]
    assert [m.fields for m in RECEIVED] == [{"temperature": 21.0}]


def test_tags_global_then_section_then_instance(build) -> None:
    agent = build("""
        [agent]
        tags = host=pi, room=none
        [source.strings.kitchen]
        values = temperature=21
        tags = room=kitchen
        [sink.list]
    """)
    assert agent.once() == []
    assert RECEIVED[0].tags == {"host": "pi", "room": "kitchen", "instance": "kitchen"}
    assert RECEIVED[0].source == "strings.kitchen"


def test_self_metrics_use_the_pipeline(build) -> None:
    agent = build("""
        [source.strings]
        values = temperature=21,humidity=x
        [sink.list]
    """)
    collect(agent)
    RECEIVED.clear()
    agent.report_self()
    agent.sinks[0].drain(time.monotonic() + 5)
    by_name = {m.tags["name"]: m for m in RECEIVED if m.measurement == "agent"}
    assert by_name["strings"].fields["collections"] == 1
    assert by_name["strings"].fields["rejected_values"] == 1
    assert by_name["list"].fields["written"] == 1
    assert by_name["list"].fields["spool_depth"] == 0
    assert all(m.source == "agent" for m in RECEIVED)


def test_once_listens_for_the_window_then_hands_over(build) -> None:
    agent = build("""
        [source.listening]
        window = 0.5s
        [sink.list]
    """)
    started = time.monotonic()
    assert agent.once() == []
    assert time.monotonic() - started >= 0.5
    assert len(RECEIVED) == 1
    assert RECEIVED[0].fields["humidity"] >= 5  # about ten events heard in the window
    assert type(RECEIVED[0].fields["humidity"]) is int
