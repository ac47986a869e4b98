"""The memcached source against real memcached servers: typed stats, counters, failures."""

from __future__ import annotations

import json
import logging
import re

import pytest
from pymemcache.client.base import Client

from kansoku.errors import SourceError
from kansoku.validation import TypePins, Validator
from kansoku_plugins.memcached.fields import FIELDS, SCHEMA, server_list, typed_stats
from tests.daemons import free_port

pytest_plugins = ["tests.servers_cache"]
pytestmark = pytest.mark.server
RENAME = {"time": "server_time"}


def _section(*servers: str) -> str:
    return f"[source.memcached]\nservers = {', '.join(servers)}\nserver_timeout = 1s\n"


def _collect(agent):
    runner = agent.sources[0]
    return runner.validator.apply(runner.source.collect()), runner.validator


def test_counters_match_known_sets_and_gets(memcached_server, in_process_agent):
    client = Client(memcached_server)
    for i in range(10):
        client.set(f"key{i}", b"x" * (i + 1))
    for i in range(7):
        assert client.get(f"key{i}") is not None
    for i in range(3):
        assert client.get(f"absent{i}") is None
    assert client.delete("key9", noreply=False)
    assert not client.delete("absent", noreply=False)
    client.close()

    [point], validator = _collect(in_process_agent(_section(memcached_server)))

    fields = point.fields
    assert point.measurement == "memcached"
    assert point.tags == {"server": memcached_server}
    assert (fields["cmd_set"], fields["cmd_get"]) == (10, 10)
    assert (fields["get_hits"], fields["get_misses"]) == (7, 3)
    assert (fields["delete_hits"], fields["delete_misses"]) == (1, 1)
    assert (fields["curr_items"], fields["total_items"]) == (9, 10)
    assert fields["get_hit_ratio"] == pytest.approx(0.7)
    assert fields["up"] == 1
    assert not validator.rejected


def test_every_stats_field_is_typed(memcached_server, in_process_agent, tmp_path):
    agent = in_process_agent(_section(memcached_server))
    [point], _ = _collect(agent)
    raw = Client(memcached_server).stats()

    fields = point.fields
    answered = {RENAME.get(k.decode(), k.decode()) for k in raw}
    assert answered <= set(fields), "every field of the stats answer is delivered"
    assert "time" not in fields and isinstance(fields["server_time"], int)
    assert type(fields["rusage_user"]) is float and type(fields["rusage_system"]) is float
    assert re.fullmatch(r"1\.\d+\.\d+", fields["version"])
    assert type(fields["libevent"]) is str
    pins = TypePins(agent.state_dir / "types.json")
    for name, value in fields.items():
        declared = FIELDS.get(name)
        expected = declared.type if declared else pins.get("memcached", "memcached", name)
        assert type(value) is expected, f"{name} = {value!r}"


def test_hit_ratio_is_absent_before_any_get(memcached_server, in_process_agent):
    Client(memcached_server).set("only", b"set")

    [point], _ = _collect(in_process_agent(_section(memcached_server)))

    assert point.fields["cmd_get"] == 0
    assert "get_hit_ratio" not in point.fields


def test_fields_of_a_newer_memcached_are_typed_once_and_pinned(memcached_server, tmp_path):
    raw = Client(memcached_server).stats()
    newer = {**raw, b"shiny_counter": b"12", b"shiny_ratio": b"0.25", b"shiny_mode": b"fast"}
    pins_file = tmp_path / "types.json"

    first = Validator("memcached", SCHEMA, TypePins(pins_file)).apply(
        [_metric(typed_stats(newer))]
    )[0]
    assert (first.fields["shiny_counter"], first.fields["shiny_ratio"]) == (12, 0.25)
    assert first.fields["shiny_mode"] == "fast"

    later = {**raw, b"shiny_counter": b"7.5", b"shiny_ratio": b"1"}
    restarted = Validator("memcached", SCHEMA, TypePins(pins_file))  # a new agent process
    second = restarted.apply([_metric(typed_stats(later))])[0]
    assert second.fields["shiny_ratio"] == 1.0 and type(second.fields["shiny_ratio"]) is float
    assert "shiny_counter" not in second.fields
    assert restarted.rejected == {("memcached", "shiny_counter"): 1}


def _metric(fields):
    from kansoku import Metric

    return Metric("memcached", fields, {"server": "x"})


def test_down_server_is_an_error_for_that_server_only(memcached_servers, in_process_agent, caplog):
    tcp = memcached_servers()
    unix = memcached_servers(unix=True)
    down = f"127.0.0.1:{free_port()}"
    agent = in_process_agent(_section(tcp, unix, down))

    with caplog.at_level(logging.INFO):
        points, _ = _collect(agent)
        _collect(agent)

    by_server = {p.tags["server"]: p.fields for p in points}
    assert by_server[down] == {"up": 0}
    assert by_server[tcp]["up"] == 1 and by_server[unix]["up"] == 1
    assert isinstance(by_server[unix]["curr_connections"], int)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "a down server is logged once, not at every collection"
    assert down in errors[0] and "connection refused" in errors[0]

    port = int(down.rpartition(":")[2])
    assert memcached_servers(port=port) == down
    with caplog.at_level(logging.INFO):
        points, _ = _collect(agent)
    assert {p.tags["server"]: p.fields["up"] for p in points}[down] == 1
    assert any(f"{down} answers again" in r.getMessage() for r in caplog.records)


def test_no_server_answering_is_a_source_error(in_process_agent):
    down = f"127.0.0.1:{free_port()}"
    missing_socket = "unix:/nonexistent/memcached.sock"
    agent = in_process_agent(_section(down, missing_socket))

    with pytest.raises(SourceError) as caught:
        agent.sources[0].source.collect()

    message = str(caught.value)
    assert f"{down}: connection refused" in message
    assert f"{missing_socket}: no such socket file" in message


def test_cli_once_prints_typed_json(memcached_server, write_config, agent_cli):
    Client(memcached_server).set("a", b"1")
    config = write_config(_section(memcached_server) + "[sink.stdout]\n")

    done = agent_cli("-c", str(config), "once")

    assert done.returncode == 0, done.stderr
    [line] = [json.loads(x) for x in done.stdout.splitlines()]
    fields = line["fields"]
    assert line["measurement"] == "memcached" and line["tags"]["server"] == memcached_server
    assert type(fields["cmd_set"]) is int and fields["cmd_set"] == 1
    assert type(fields["rusage_user"]) is float and type(fields["version"]) is str


def test_cli_once_with_memcached_down_fails_with_a_sentence(write_config, agent_cli):
    down = f"127.0.0.1:{free_port()}"
    config = write_config(_section(down) + "[sink.stdout]\n")

    done = agent_cli("-c", str(config), "once")

    assert done.returncode == 1
    assert f"no memcached server answered ({down}: connection refused" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("127.0.0.1:99999", "port must be a number from 1 to 65535"),
        ("::1", "not HOST:PORT"),
        ("unix:relative.sock", "must be absolute"),
        ("a:1, a:1", "listed twice"),
        (" , ", "no server given"),
    ],
)
def test_server_list_errors(text, error):
    with pytest.raises(ValueError, match=error):
        server_list(text)


def test_server_list_forms():
    text = "127.0.0.1:11211, [::1]:11212, cache.lan\n unix:/run/memcached/memcached.sock"
    assert server_list(text) == [
        "127.0.0.1:11211",
        "[::1]:11212",
        "cache.lan",
        "unix:/run/memcached/memcached.sock",
    ]


def test_bad_server_is_a_config_error_naming_the_key(write_config, agent_cli):
    config = write_config("[source.memcached]\nservers = 127.0.0.1:99999\n")

    done = agent_cli("-c", str(config), "check")

    assert done.returncode == 2
    assert "[source.memcached] servers" in done.stderr and "1 to 65535" in done.stderr
