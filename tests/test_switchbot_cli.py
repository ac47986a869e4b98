"""``agent switchbot scan`` and ``agent switchbot record`` through the real CLI, from captures."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

SHIPPED = resources.files("kansoku_plugins.switchbot").joinpath("demo.jsonl")


def test_scan_shows_a_table_of_the_demo_devices(agent_cli):
    result = agent_cli("switchbot", "scan", "--seconds", "0.5", "--replay", "demo")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["B0:E9:FE:DD:EE:FF"][2] == "meter-pro-co2"
    assert rows["B0:E9:FE:DD:EE:FF"][6].isdigit()  # CO2 ppm
    old = rows["CE:07:22:35:69:F2"]
    assert old[2:7] == ["old-firmware?", "-", "-", "-", "-"] and old[-1] == "needs-active-scan"
    assert rows["D7:C1:7D:5D:EB:43"][-1] == "needs-active-scan"  # passive only, model unknown
    assert rows["B0:E9:FE:52:DD:84"][-1] == "flaky"  # silent 140 s: > 3 s learned, < 15 min
    assert rows["F3:A5:5D:0E:57:21"][-1] == "flaky"  # median RSSI about -92 dBm


def test_scan_with_devices_names_them_and_knows_their_model(agent_cli):
    result = agent_cli(
        "switchbot",
        "scan",
        "--seconds",
        "0.3",
        "--replay",
        "demo",
        "--devices",
        "D7:C1:7D:5D:EB:43=bedroom:meter",
    )
    row = next(x.split() for x in result.stdout.splitlines() if x.startswith("D7:C1"))
    assert row[1:5] == ["bedroom", "meter", "24.6", "53"]


def test_record_writes_what_the_callback_saw(agent_cli):
    result = agent_cli("switchbot", "record", "--seconds", "0.5", "--replay", "demo")
    assert result.returncode == 0, result.stderr
    recorded = [json.loads(line) for line in result.stdout.splitlines()]
    shipped = [json.loads(line) for line in SHIPPED.read_text().splitlines()]
    assert len(recorded) == len(shipped) == int(result.stderr.split()[-2])
    for got, want in zip(recorded, shipped, strict=True):
        assert {k: v for k, v in got.items() if k != "time"} == {
            k: v for k, v in want.items() if k != "time"
        }


def test_commands_without_bluetooth_say_why(agent_cli, tmp_path):
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"}
    result = agent_cli("switchbot", "scan", "--seconds", "0.5", env=env)
    assert result.returncode == 1
    assert "agent switchbot: Bluetooth: cannot reach the D-Bus system bus" in result.stderr
    missing = agent_cli("switchbot", "record", "--replay", str(tmp_path / "x.jsonl"))
    assert missing.returncode == 1 and "replay file" in missing.stderr
    assert "Traceback" not in result.stderr + missing.stderr


def test_registration_imports_no_bleak():
    code = (
        "import sys; from kansoku.plugins import Registry; r = Registry(); "
        "assert 'switchbot' in r.sources and ('switchbot', 'scan') in r.commands; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bleak', 'dbus_fast')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
