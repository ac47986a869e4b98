"""Real zabbix_agentd serves kansoku values through the shipped UserParameter lines.

zabbix_agentd (Debian ``zabbix-agent``, 6.0) runs in the foreground on a free port with a temp
config that includes etc/zabbix/kansoku.conf (the command and state directory substituted).
The test asks it like the Zabbix server does: the ZBXD header protocol, from Python (Debian's
zabbix-agent has no zabbix_get).
"""

from __future__ import annotations

import json
import random
import re
import shlex
import socket
import struct
import sys
from pathlib import Path

import pytest

from tests.daemons import require_binary
from tests.test_lastvalues import fixture_config, run_pipeline

SHIPPED_CONF = Path(__file__).resolve().parent.parent / "etc" / "zabbix" / "kansoku.conf"
NOT_SUPPORTED = b"ZBX_NOTSUPPORTED"


def zabbix_query(port: int, key: str) -> bytes:
    """One passive check: send the key with the ZBXD header, return the reply's data."""
    data = key.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"ZBXD\x01" + struct.pack("<II", len(data), 0) + data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply[:5] == b"ZBXD\x01", reply
    (length,) = struct.unpack("<I", reply[5:9])
    body = reply[13:]
    assert len(body) == length
    return body


def zabbix_port() -> int:
    """A free port in zabbix_agentd's ListenPort range (1024-32767, below Linux's ephemeral
    ports, so tests.daemons.free_port does not fit)."""
    for port in random.sample(range(20000, 32768), 50):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32767")


def user_parameters(state_dir: Path) -> str:
    """The shipped UserParameter lines, calling this interpreter's CLI and this state dir."""
    command = f"{shlex.quote(sys.executable)} -m kansoku.cli "
    lines = []
    for line in SHIPPED_CONF.read_text().splitlines():
        if line.startswith("UserParameter="):
            line = line.replace(",agent ", f",{command}", 1)
            lines.append(line.replace("/var/lib/kansoku", str(state_dir)))
    assert len(lines) == 3
    return "\n".join(lines)


@pytest.fixture
def zabbix(daemons, tmp_path):
    """Start zabbix_agentd with the kansoku UserParameters; returns its port."""
    binary = require_binary("zabbix_agentd", "zabbix-agent")
    port = zabbix_port()
    workdir = tmp_path / "zabbix"
    workdir.mkdir()
    conf = workdir / "zabbix_agentd.conf"
    conf.write_text(
        f"LogType=console\nPidFile={workdir / 'agentd.pid'}\nServer=127.0.0.1\n"
        f"ListenIP=127.0.0.1\nListenPort={port}\nStartAgents=2\nHostname=kansoku-test\n"
        f"AllowRoot=1\nTimeout=10\n{user_parameters(tmp_path / 'state')}\n"
    )

    def ready() -> bool:
        try:
            return zabbix_query(port, "agent.ping") == b"1"
        except OSError:
            return False

    daemons([binary, "-f", "-c", str(conf)], workdir, ready)
    return port


def test_value_from_the_system_source(zabbix, agent_cli, write_config) -> None:
    config = write_config("""
        [source.system]
        [sink.cacti]
        flush_interval = 1s
    """)
    once = agent_cli("-c", str(config), "once")
    assert once.returncode == 0, once.stderr
    uptime = zabbix_query(zabbix, "kansoku.get[system.uptime_s]")
    assert re.fullmatch(rb"\d+", uptime), uptime
    assert 0 <= float(Path("/proc/uptime").read_text().split()[0]) - int(uptime) < 60
    load = zabbix_query(zabbix, "kansoku.get[system.load1]")
    assert re.fullmatch(rb"\d+\.\d+", load), load


def test_stale_value_is_not_supported(zabbix, agent_cli, write_config, tmp_path) -> None:
    config = fixture_config(write_config)
    run_pipeline(config, [{"fields": {"level": 42}, "age": 600}])  # interval 60s: stale
    assert zabbix_query(zabbix, "kansoku.get[fixture.level]") == NOT_SUPPORTED
    # a Zabbix server treats exactly this reply as "not supported"; the reason is for humans:
    direct = agent_cli("get", "fixture.level", "--state-dir", str(tmp_path / "state"))
    assert direct.returncode == 1
    assert direct.stdout == "ZBX_NOTSUPPORTED\n"
    assert "fixture.level is stale: the last value is 600s old, max age 121s" in direct.stderr
    state = str(tmp_path / "state")
    fresh = agent_cli("get", "fixture.level", "--state-dir", state, "--max-age", "1h")
    assert (fresh.returncode, fresh.stdout, fresh.stderr) == (0, "42\n", "")


def test_unknown_is_not_supported(zabbix, write_config, tmp_path, agent_cli) -> None:
    config = fixture_config(write_config)
    run_pipeline(config, [{"fields": {"level": 1}}])
    assert zabbix_query(zabbix, "kansoku.get[fixture.nosuchfield]") == NOT_SUPPORTED
    assert zabbix_query(zabbix, "kansoku.get[nosuchsource.level]") == NOT_SUPPORTED
    assert zabbix_query(zabbix, "kansoku.get[fixture.spare]") == NOT_SUPPORTED  # never sent
    direct = agent_cli("get", "fixture.nosuchfield", "--state-dir", str(tmp_path / "state"))
    assert "source fixture has no field 'nosuchfield' (fields: octets, temp" in direct.stderr


def test_series_by_tag_and_discovery(zabbix, write_config) -> None:
    config = fixture_config(write_config)
    run_pipeline(
        config,
        [
            {"tags": {"server": "10.0.0.1:11211"}, "fields": {"octets": 1, "temp": 1.5}},
            {"tags": {"server": "10.0.0.2:11211"}, "fields": {"octets": 2, "temp": 2.5}},
            {"measurement": "fx_total", "fields": {"level": 3}},
        ],
    )
    assert zabbix_query(zabbix, "kansoku.get[fixture.temp,server=10.0.0.2:11211]") == b"2.5"
    assert zabbix_query(zabbix, "kansoku.get[fixture.octets,server=10.0.0.1:11211]") == b"1"
    assert zabbix_query(zabbix, "kansoku.get[fixture.temp]") == NOT_SUPPORTED  # which one?
    assert zabbix_query(zabbix, "kansoku.get[fixture.level]") == b"3"  # only one series has it
    everything = json.loads(zabbix_query(zabbix, "kansoku.discover[fixture]"))
    assert len(everything) == 3
    servers = json.loads(zabbix_query(zabbix, "kansoku.discover[fixture,server]"))
    assert servers == [
        {"{#SOURCE}": "fixture", "{#TAG.SERVER}": "10.0.0.1:11211", "{#SERVER}": "10.0.0.1:11211"},
        {"{#SOURCE}": "fixture", "{#TAG.SERVER}": "10.0.0.2:11211", "{#SERVER}": "10.0.0.2:11211"},
    ]
    fields = json.loads(zabbix_query(zabbix, "kansoku.discover.fields[fixture,server]"))
    octets = [e for e in fields if e["{#FIELD}"] == "octets"]
    assert len(fields) == 4 and len(octets) == 2
    assert octets[0]["{#KIND}"] == "counter" and octets[0]["{#TYPE}"] == "int"
    assert octets[0]["{#UNIT}"] == "bytes" and octets[0]["{#MEASUREMENT}"] == "fx"


def test_discovery_covers_instances_and_upper_cases_macros(zabbix, write_config) -> None:
    config = fixture_config(write_config, source="fixture.web")
    run_pipeline(
        config, [{"tags": {"address": "AA:BB", "room-name": "kitchen"}, "fields": {"level": 5}}]
    )
    (entry,) = json.loads(zabbix_query(zabbix, "kansoku.discover[fixture]"))
    assert entry == {
        "{#SOURCE}": "fixture.web",
        "{#TAG.ADDRESS}": "AA:BB",
        "{#ADDRESS}": "AA:BB",
        "{#TAG.INSTANCE}": "web",
        "{#INSTANCE}": "web",
        "{#TAG.ROOM_NAME}": "kitchen",
        "{#ROOM_NAME}": "kitchen",
    }
    assert zabbix_query(zabbix, "kansoku.get[fixture.web.level,address=AA:BB]") == b"5"


def test_discovery_of_an_unknown_source_is_not_supported(zabbix, tmp_path) -> None:
    assert zabbix_query(zabbix, "kansoku.discover[nothing]") == NOT_SUPPORTED


def test_shipped_template_uses_only_shipped_keys() -> None:
    template = SHIPPED_CONF.parent.parent.parent / "docs" / "integrations" / "zabbix_kansoku.yaml"
    text = template.read_text()
    assert "version: '6.0'" in text
    served = set(re.findall(r"^UserParameter=([\w.]+)\[\*\]", SHIPPED_CONF.read_text(), re.M))
    keys = re.findall(r"^\s+key: '?([\w.]+)\[", text, re.M)
    assert keys and set(keys) <= served
    uuids = re.findall(r"uuid: (\S+)", text)
    assert all(re.fullmatch(r"[0-9a-f]{32}", u) for u in uuids)
    assert len(uuids) == len(set(uuids))
