"""The last-values cache and its spelling: merge, staleness, atomic files, DS names, values.

Also home of :func:`run_pipeline`, which the Cacti and Zabbix tests use to fill the cache
through the real agent (a fixture source -> validation -> spool -> the cacti sink).
"""

from __future__ import annotations

import grp
import json
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from kansoku import FieldSpec, MeasurementSchema, Metric, Option, SourceSpec, hookimpl
from kansoku import config as config_module
from kansoku.cacheformat import DS_NAME, ds_name, ds_names, lld_macro, number, rrd_type
from kansoku.lastvalues import CacheError, FieldInfo, SourceCache, read, write_atomic
from kansoku.plugins import Registry
from kansoku.runtime import Agent

FIXTURE_SCHEMA = {
    "fx": MeasurementSchema(
        {
            "octets": FieldSpec(int, "bytes", "counter", "a byte counter"),
            "temp": FieldSpec(float, "°C", description="a temperature"),
            "level": FieldSpec(int, "%", description="an int gauge"),
            "up": FieldSpec(bool, description="a flag"),
            "state": FieldSpec(str, description="a word"),
            "spare": FieldSpec(float, description="declared but never sent"),
        },
        extra_fields="infer",
    ),
    "fx_total": MeasurementSchema({"level": FieldSpec(int, "%", description="a second series")}),
}
SECONDS = 1_000_000_000


class FixtureSource:
    """Emits the points listed in a JSON file (``points`` option), times included."""

    schema = FIXTURE_SCHEMA

    def __init__(self, options: Mapping[str, Any], context: Any) -> None:
        self.path = Path(options["points"])

    def collect(self) -> Iterable[Metric]:
        now = time.time_ns()
        for item in json.loads(self.path.read_text()):
            when = now - int(item.get("age", 0) * SECONDS)
            yield Metric(item.get("measurement", "fx"), item["fields"], item.get("tags", {}), when)

    def close(self) -> None:
        """Nothing to release."""


class FixturePlugin:
    """Registers the ``fixture`` source directly (no entry point needed)."""

    @hookimpl
    def kansoku_register_sources(self) -> Iterable[SourceSpec]:
        return [
            SourceSpec(
                "fixture",
                FixtureSource,
                options=[Option("points")],
                default_interval=60.0,
                schema=FIXTURE_SCHEMA,
            )
        ]


def run_pipeline(config: Path, points: list[dict[str, Any]]) -> None:
    """Run ``agent once`` in-process with the fixture source emitting ``points``."""
    points_file = config.parent / "points.json"
    points_file.write_text(json.dumps(points))
    registry = Registry(load_entrypoints=False, extra_plugins=[("fixture", FixturePlugin())])
    cfg = config_module.load(config, registry)
    assert Agent(cfg, registry).once() == []


def fixture_config(write_config, extra: str = "", source: str = "fixture") -> Path:
    """A config with the fixture source (points.json beside it) and the cacti sink."""
    path = write_config(f"""
        [source.{source}]
        interval = 60s
        points = POINTS
        [sink.cacti]
        flush_interval = 1s
        {extra}
    """)
    path.write_text(path.read_text().replace("POINTS", str(path.parent / "points.json")))
    return path


def test_sink_caches_points_with_types_interval_and_schema(write_config, tmp_path) -> None:
    config = fixture_config(write_config)
    run_pipeline(
        config,
        [{"fields": {"octets": "86704", "temp": 23, "level": 7.0, "up": "yes", "state": "ok"}}],
    )
    cache = read(tmp_path / "state", "fixture")
    assert cache.interval == 60.0
    assert cache.delay == 1.0
    assert cache.max_age() == 121.0
    (point,) = cache.points.values()
    values = {name: value for name, (value, _) in point.values.items()}
    # coerced by the core before the sink: types survive the JSON file
    assert values == {"octets": 86704, "temp": 23.0, "level": 7, "up": True, "state": "ok"}
    assert [type(values[n]) for n in ("octets", "temp", "level", "up")] == [int, float, int, bool]
    assert cache.schema["fx"]["octets"] == FieldInfo("int", "counter", "bytes")
    assert cache.field_names()[:6] == ["octets", "temp", "level", "up", "state", "spare"]


def test_newer_values_win_and_older_replays_do_not(tmp_path) -> None:
    cache = SourceCache("s")
    cache.update(Metric("m", {"a": 1, "b": 1}, {"k": "x"}, 200))
    cache.update(Metric("m", {"a": 0}, {"k": "x"}, 100))  # a late replay from the spool
    cache.update(Metric("m", {"b": 2}, {"k": "x"}, 300))
    cache.update(Metric("m", {"a": 5}, {"k": "y"}, 300))
    assert len(cache.points) == 2
    x = cache.select("m", {"k": "x"})[0]
    assert x.values == {"a": (1, 200), "b": (2, 300)}
    assert cache.forget(before_ns=250) == 0  # x's newest value is at 300
    assert cache.forget(before_ns=301) == 2


def test_cache_file_round_trip_and_errors(tmp_path) -> None:
    (tmp_path / "lastvalues").mkdir()
    path = tmp_path / "lastvalues" / "s.json"
    cache = SourceCache("s", 30.0, 2.0, {"m": {"n": FieldInfo("int", "counter", "B")}})
    cache.update(Metric("m", {"n": 2**62 + 1, "f": 1e16, "t": "a b"}, {"k": "v"}, 5))
    write_atomic(path, cache.to_json())
    back = read(tmp_path, "s")
    assert back == cache
    assert back.points[("m", (("k", "v"),))].values["n"] == (2**62 + 1, 5)
    path.write_text("{not json")
    with pytest.raises(CacheError, match="unreadable last-values cache"):
        read(tmp_path, "s")
    with pytest.raises(CacheError, match=r"no last values for source 'other'.*sources there: s"):
        read(tmp_path, "other")


def test_writes_are_atomic_for_a_concurrent_reader(tmp_path) -> None:
    (tmp_path / "lastvalues").mkdir()
    path = tmp_path / "lastvalues" / "s.json"
    cache = SourceCache("s")
    for i in range(2000):  # a file of some 100 kB: a torn read would not parse
        cache.update(Metric("m", {"v": i}, {"i": str(i)}, i))
    write_atomic(path, cache.to_json())
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            write_atomic(path, cache.to_json())

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(200):
            assert len(read(tmp_path, "s").points) == 2000
    finally:
        stop.set()
        thread.join()
    assert os.listdir(path.parent) == ["s.json"]  # no temporary file left behind


def _other_group() -> grp.struct_group:
    if os.geteuid() != 0:
        return grp.getgrgid(os.getgid())
    return next(g for g in grp.getgrall() if g.gr_gid != 0)


def test_cache_readable_by_the_named_group(write_config, tmp_path) -> None:
    group = _other_group()
    config = fixture_config(write_config, f"group = {group.gr_name}")
    run_pipeline(config, [{"fields": {"level": 1}}])
    folder = tmp_path / "state" / "lastvalues"
    for path, mode in ((folder, 0o750), (folder / "fixture.json", 0o640)):
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == mode, path
        assert info.st_gid == group.gr_gid, path


def test_unknown_group_is_a_config_error(write_config, agent_cli) -> None:
    config = write_config("""
        [source.system]
        [sink.cacti]
        group = no-such-group-here
    """)
    result = agent_cli("-c", str(config), "check")
    assert result.returncode == 2
    assert "[sink.cacti] group: 'no-such-group-here': no group named" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ names and values


def test_ds_names_are_stable_golden_values() -> None:
    # These exact names end up in users' RRD files and Cacti templates: never change them.
    assert ds_name("power_w") == "power_w"
    assert ds_name("energy_import_wh") == "energy_import_wh"
    assert ds_name("current-r") == "current_r"
    assert ds_name("connection_structures") == "connection_s_0a215b"
    assert ds_name("slab_reassign_busy_items") == "slab_reassig_78d861"
    assert ds_name("slab_reassign_busy_deletes") == "slab_reassig_15f574"
    assert ds_name("温度") == "__"


@pytest.mark.parametrize(
    "fields",
    [
        ["a-b", "a_b", "a.b"],
        [f"very_long_field_name_{i}" for i in range(50)],
        ["x" * 19, "x" * 20, "x" * 21, "y" * 40],
    ],
)
def test_ds_names_are_valid_unique_and_order_independent(fields: list[str]) -> None:
    names = ds_names(fields)
    assert all(DS_NAME.fullmatch(n) for n in names.values())
    assert len(set(names.values())) == len(fields)
    assert ds_names(list(reversed(fields))) == names
    extended = ds_names([*fields, "unrelated"])
    assert {f: extended[f] for f in fields} == names


def test_valid_name_keeps_itself_when_a_sanitized_one_collides() -> None:
    names = ds_names(["a-b", "a_b"])
    assert names["a_b"] == "a_b"
    assert names["a-b"] != "a_b" and DS_NAME.fullmatch(names["a-b"])


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (87002, "87002"),
        (2**63 - 1, "9223372036854775807"),
        (-5, "-5"),
        (True, "1"),
        (False, "0"),
        (23.5, "23.5"),
        (87002.0, "87002.0"),  # a float field stays a float: GAUGE/DCOUNTER take it
        (1e-05, "0.00001"),
        (1e16, "10000000000000000"),
        (-2.5e-7, "-0.00000025"),
    ],
)
def test_numbers_are_plain(value: Any, text: str) -> None:
    assert number(value) == text


def test_text_is_not_a_number() -> None:
    with pytest.raises(ValueError, match="text"):
        number("ok")


def test_rrd_types_follow_the_schema() -> None:
    assert rrd_type(FieldInfo("int", "counter")) == "COUNTER"
    assert rrd_type(FieldInfo("float", "counter")) == "DCOUNTER"
    assert rrd_type(FieldInfo("int")) == "GAUGE"
    assert rrd_type(FieldInfo("float")) == "GAUGE"
    assert rrd_type(FieldInfo("str")) == "-"


def test_lld_macros_are_upper_case() -> None:
    assert lld_macro("address") == "{#ADDRESS}"
    assert lld_macro("tag.server") == "{#TAG.SERVER}"
    assert lld_macro("room-name") == "{#ROOM_NAME}"


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", "a.b.c", ".hidden"])
def test_only_source_names_reach_the_file_system(tmp_path, name: str) -> None:
    with pytest.raises(CacheError, match="is not a source name"):
        read(tmp_path, name)
