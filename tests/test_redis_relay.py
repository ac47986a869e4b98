"""The redis-relay source against a real redis-server: keys, hashes, patterns, errors, TLS."""

from __future__ import annotations

import json
import logging

import pytest

from kansoku.errors import ConfigError, SourceError
from kansoku_plugins.redis_relay.mapping import KeyPattern, field_types
from tests.daemons import free_port

pytest_plugins = ["tests.servers_cache"]
pytestmark = pytest.mark.server
PASSWORD = "s3cret-Pa55word"


def _section(url: str, body: str, name: str = "kitchen") -> str:
    return f"[source.redis-relay.{name}]\nurl = {url}\n{body}\n"


def _collect(agent):
    runner = agent.sources[0]
    return runner.validator.apply(runner.source.collect()), runner.validator


ROOM = """
type = hash
key = sensor:kitchen
measurement = room
fields = temperature:float, humidity:int, door:bool, battery:int
"""


def test_hash_values_get_their_declared_types(redis_server, in_process_agent, caplog):
    redis_server.client().hset(
        "sensor:kitchen",
        mapping={"temperature": "23.5", "humidity": "85", "door": "true", "battery": "abc"},
    )
    agent = in_process_agent(_section(redis_server.url, ROOM))

    with caplog.at_level(logging.WARNING):
        [point], validator = _collect(agent)

    assert point.measurement == "room"
    assert point.fields == {"temperature": 23.5, "humidity": 85, "door": True}
    assert [type(point.fields[k]) for k in ("temperature", "humidity", "door")] == [
        float,
        int,
        bool,
    ]
    assert validator.rejected == {("room", "battery"): 1}
    assert any("room.battery = b'abc'" in r.getMessage() for r in caplog.records)
    rejected = [m for m in agent.self_metrics() if m.measurement == "agent_rejected"]
    assert [(m.tags["source"], m.tags["field"], m.fields["count"]) for m in rejected] == [
        ("redis-relay.kitchen", "battery", 1)
    ]


def test_undeclared_numbers_are_floats_and_text_is_refused(redis_server, in_process_agent):
    redis_server.client().hset("meter", mapping={"power": "420", "note": "hello", "ok": "1"})
    agent = in_process_agent(
        _section(redis_server.url, "type = hash\nkey = meter\nmeasurement = m\nfields = ok:bool")
    )

    [point], validator = _collect(agent)

    assert point.fields == {"power": 420.0, "ok": True}
    assert type(point.fields["power"]) is float
    assert validator.rejected == {("m", "note"): 1}


def test_other_fields_ignore_and_tag_fields(redis_server, in_process_agent):
    redis_server.client().hset("meter", mapping={"power": "420", "note": "hi", "room": "hall"})
    body = "type = hash\nkey = meter\nmeasurement = m\nfields = power:int\n"
    body += "tag_fields = room\nother_fields = ignore"

    [point], validator = _collect(in_process_agent(_section(redis_server.url, body)))

    assert (point.fields, point.tags) == ({"power": 420}, {"room": "hall"})
    assert not validator.rejected


def test_cli_delivers_numbers_as_numbers(redis_server, write_config, agent_cli):
    redis_server.client().hset(
        "sensor:kitchen",
        mapping={"temperature": "23.5", "humidity": "85", "door": "true", "battery": "abc"},
    )
    config = write_config(_section(redis_server.url, ROOM) + "[sink.stdout]\n")

    done = agent_cli("-c", str(config), "once")

    assert done.returncode == 0, done.stderr
    [line] = [json.loads(x) for x in done.stdout.splitlines()]
    assert line["fields"] == {"temperature": 23.5, "humidity": 85, "door": True}
    assert type(line["fields"]["humidity"]) is int
    assert line["tags"] == {"instance": "kitchen"}
    assert "rejected room.battery = b'abc'" in done.stderr


def test_string_key_and_a_missing_key_reported_once(redis_server, in_process_agent, caplog):
    body = "type = string\nkey = outdoor:temp\nmeasurement = weather\nfields = temperature:float"
    agent = in_process_agent(_section(redis_server.url, body))

    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert _collect(agent)[0] == []
        redis_server.client().set("outdoor:temp", "-3.25")
        [point], _ = _collect(agent)

    assert point.fields == {"temperature": -3.25}
    missing = [r for r in caplog.records if "'outdoor:temp' does not exist" in r.getMessage()]
    assert len(missing) == 1 and missing[0].levelno == logging.WARNING
    assert any("'outdoor:temp' is back" in r.getMessage() for r in caplog.records)


def test_string_key_without_fields_is_a_float_called_value(redis_server, in_process_agent):
    redis_server.client().set("level", "7")
    agent = in_process_agent(
        _section(redis_server.url, "type = string\nkey = level\nmeasurement = t")
    )

    [point], _ = _collect(agent)

    assert point.fields == {"value": 7.0} and type(point.fields["value"]) is float


def test_pattern_makes_one_series_per_key(redis_server, in_process_agent, caplog):
    client = redis_server.client()
    for room, temp in (("kitchen", "21.5"), ("bath", "24"), ("attic", "15.25")):
        client.hset(f"sensor:{room}:env", mapping={"temperature": temp, "battery": "90"})
    client.set("sensor:broken:env", "not a hash")
    client.hset("other:hall:env", "temperature", "1")
    body = "type = hash\nkey = sensor:{room}:env\nmeasurement = room\n"
    body += "fields = temperature:float, battery:int"
    agent = in_process_agent(_section(redis_server.url, body))

    with caplog.at_level(logging.WARNING):
        points, validator = _collect(agent)
        _collect(agent)

    by_room = {p.tags["room"]: p.fields for p in points}
    assert by_room == {
        "kitchen": {"temperature": 21.5, "battery": 90},
        "bath": {"temperature": 24.0, "battery": 90},
        "attic": {"temperature": 15.25, "battery": 90},
    }
    skipped = [r for r in caplog.records if "'sensor:broken:env'" in r.getMessage()]
    assert len(skipped) == 1 and "not a hash" in skipped[0].getMessage()


def test_pattern_of_string_keys_without_placeholder_tags_the_key(redis_server, in_process_agent):
    client = redis_server.client()
    client.set("temp.a", "1.5")
    client.set("temp.b", "2")
    body = "type = string\nkey = temp.*\nmeasurement = t\nfields = celsius:float"

    points, _ = _collect(in_process_agent(_section(redis_server.url, body)))

    assert sorted((p.tags["key"], p.fields["celsius"]) for p in points) == [
        ("temp.a", 1.5),
        ("temp.b", 2.0),
    ]


def test_wrong_type_at_the_key_is_a_clear_error(redis_server, in_process_agent):
    redis_server.client().rpush("sensor:kitchen", "23.5")
    agent = in_process_agent(_section(redis_server.url, ROOM))

    with pytest.raises(SourceError, match="'sensor:kitchen' holds a list, but this section reads"):
        agent.sources[0].source.collect()


def test_cli_wrong_type_fails_that_source_only(redis_server, write_config, agent_cli):
    client = redis_server.client()
    client.rpush("sensor:kitchen", "23.5")
    client.set("level", "4")
    level = "type = string\nkey = level\nmeasurement = tank\nfields = litres:int"
    config = write_config(
        _section(redis_server.url, ROOM)
        + _section(redis_server.url, level, name="tank")
        + "[sink.stdout]\n"
    )

    done = agent_cli("-c", str(config), "once")

    assert done.returncode == 1
    assert "source redis-relay.kitchen: redis key 'sensor:kitchen' holds a list" in done.stderr
    assert "Traceback" not in done.stderr
    [line] = [json.loads(x) for x in done.stdout.splitlines()]
    assert (line["measurement"], line["fields"]) == ("tank", {"litres": 4})


def test_redis_down_is_a_clear_error(in_process_agent):
    port = free_port()
    agent = in_process_agent(_section(f"redis://127.0.0.1:{port}/0", ROOM))

    with pytest.raises(SourceError, match=f"cannot reach redis at 127.0.0.1:{port}/0"):
        agent.sources[0].source.collect()


def test_cli_redis_down_no_traceback(write_config, agent_cli):
    config = write_config(_section(f"redis://127.0.0.1:{free_port()}/0", ROOM) + "[sink.stdout]\n")

    done = agent_cli("-c", str(config), "once")

    assert done.returncode == 1
    assert "cannot reach redis at" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("password_line", ["", "password = wrong-one"])
def test_auth_failure_is_a_clear_error(redis_servers, in_process_agent, password_line):
    server = redis_servers(password=PASSWORD)
    agent = in_process_agent(_section(server.url, ROOM + password_line))

    with pytest.raises(SourceError, match="refused the login") as caught:
        agent.sources[0].source.collect()

    assert "wrong-one" not in str(caught.value)


def test_cli_password_from_environment_never_logged(redis_servers, write_config, agent_cli):
    server = redis_servers(password=PASSWORD)
    server.client().hset("sensor:kitchen", "temperature", "19")
    body = ROOM + "password = ${KITCHEN_REDIS_PASSWORD}"
    config = write_config(_section(server.url, body) + "[sink.stdout]\n")

    good = agent_cli(
        "-c", str(config), "--log-level", "debug", "once", env={"KITCHEN_REDIS_PASSWORD": PASSWORD}
    )
    bad = agent_cli(
        "-c",
        str(config),
        "--log-level",
        "debug",
        "once",
        env={"KITCHEN_REDIS_PASSWORD": PASSWORD + "x"},
    )

    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["fields"] == {"temperature": 19.0}
    assert bad.returncode == 1 and "refused the login" in bad.stderr
    for done in (good, bad):
        assert PASSWORD not in done.stderr + done.stdout


def test_password_in_url_never_shown_in_config_errors(write_config, agent_cli):
    config = write_config(_section(f"http://:{PASSWORD}@127.0.0.1:6379/0", ROOM))

    done = agent_cli("-c", str(config), "once")

    assert done.returncode == 2 and "url: not a redis URL" in done.stderr
    assert PASSWORD not in done.stderr


def test_tls(redis_servers, in_process_agent):
    server = redis_servers(tls=True)
    server.client().hset("sensor:kitchen", "temperature", "20.5")
    ca = server.tls_dir / "cert.pem"
    verified = in_process_agent(_section(server.url, f"{ROOM}tls_ca = {ca}"), "verified.ini")
    unverified = in_process_agent(_section(server.url, ROOM), "unverified.ini")

    [point], _ = _collect(verified)

    assert point.fields == {"temperature": 20.5}
    with pytest.raises(SourceError, match="certificate verify failed"):
        unverified.sources[0].source.collect()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("type = stream\nkey = s:{room}\nmeasurement = m", "type = stream reads one stream"),
        ("type = string\nkey = k\nmeasurement = m\nfields = a:int, b:int", "holds one value"),
        ("type = hash\nkey = k\nmeasurement = m\nfields = a:int\ntag_fields = a", "both in"),
        ("type = hash\nkey = k:{a}\nmeasurement = m\ntag_fields = a", "key placeholder"),
        ("type = hash\nkey = k\nmeasurement = m\ntls_ca = /ca.pem", "need a rediss:// url"),
    ],
)
def test_contradicting_options_are_config_errors(in_process_agent, body, error):
    with pytest.raises(ConfigError, match=error) as caught:
        in_process_agent(_section("redis://127.0.0.1:1/0", body))
    assert "[source.redis-relay.kitchen]" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("temperature:double", "TYPE one of float, int, bool, str"),
        ("temperature", "write NAME:TYPE"),
        ("a:int, a:float", "declared twice"),
        ("time:int", "InfluxDB reserves it"),
    ],
)
def test_field_type_errors(text, error):
    with pytest.raises(ValueError, match=error):
        field_types(text)


def test_field_types():
    assert field_types("temperature:float, battery:INT,door:bool\n label:str") == {
        "temperature": float,
        "battery": int,
        "door": bool,
        "label": str,
    }


@pytest.mark.parametrize(
    ("text", "glob", "key", "tags"),
    [
        ("sensor:kitchen", None, "sensor:kitchen", {}),
        ("sensor:{room}", "sensor:?*", "sensor:bath", {"room": "bath"}),
        ("s:{room}:{kind}", "s:?*:?*", "s:a:b:c", {"room": "a", "kind": "b:c"}),
        ("t[1].*", r"t\[1\].*", "t[1].x", {"key": "t[1].x"}),
    ],
)
def test_key_patterns(text, glob, key, tags):
    pattern = KeyPattern.parse(text)
    assert pattern.glob == glob
    assert pattern.tags_of(key) == tags


@pytest.mark.parametrize(
    ("text", "error"), [("s:{room", "unmatched"), ("s:{}", "not a tag name"), ("{a}{a}", "twice")]
)
def test_key_pattern_errors(text, error):
    with pytest.raises(ValueError, match=error):
        KeyPattern.parse(text)


def test_config_check_names_the_key(write_config, agent_cli):
    config = write_config(
        "[source.redis-relay.x]\ntype = hash\nkey = k\nmeasurement = m\nfields = t:double\n"
    )

    done = agent_cli("-c", str(config), "check")

    assert done.returncode == 2
    assert "[source.redis-relay.x] fields: 't:double'" in done.stderr
