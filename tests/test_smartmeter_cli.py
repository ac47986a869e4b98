"""The smartmeter source through the real CLI: `agent once` and `agent emulate smartmeter`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from kansoku_plugins.smartmeter import echonet as el
from tests import test_smartmeter_fixtures as fixtures
from tests.test_smartmeter_fixtures import PASSWORD, ROUTE_B_ID, fields, wait_for

SECRETS_ENV = {"KANSOKU_TEST_RBID": ROUTE_B_ID, "KANSOKU_TEST_PASSWORD": PASSWORD}
#: the section proposed for agent/demo.ini (kept identical to the report)
DEMO_SECTION = """
[source.smartmeter]
device = emulator
emulator = animate=yes, power_w=450, scan_time_scale=0, response_delay=0.3s, session_lifetime=10m
interval = 10s
"""

emulator = fixtures.emulator
smartmeter = fixtures.smartmeter


def points(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_agent_once_reads_an_emulated_stick(write_config, agent_cli, emulator) -> None:
    emu = emulator(
        dialect="bp35c2",
        data="binary",
        power_w=-524,
        current_r_a=-5.2,
        current_t_a=None,
        import_count=12345,
        export_count=678,
        coefficient=10,
        unit_kwh=el.UNIT_KWH[0x02],
    )
    config = write_config(
        f"""
        [agent]
        self_metrics = false

        [source.smartmeter]
        device = {emu.path}
        route_b_id = ${{KANSOKU_TEST_RBID}}
        route_b_password = ${{KANSOKU_TEST_PASSWORD}}
        response_timeout = 2s

        [sink.stdout]
        format = json
        """
    )
    result = agent_cli("--log-level", "debug", "-c", str(config), "once", env=SECRETS_ENV)
    assert result.returncode == 0, result.stderr
    out = points(result.stdout)
    meter = next(p for p in out if p["measurement"] == "smartmeter")
    assert meter["fields"] == {
        "power_w": -524,
        "current_r_a": -5.2,
        "energy_import_wh": 1234500,
        "energy_export_wh": 67800,
    }
    assert isinstance(meter["fields"]["power_w"], int)
    assert isinstance(meter["fields"]["current_r_a"], float)
    link = next(p for p in out if p["measurement"] == "smartmeter_link")
    assert link["fields"]["frames_sent"] == 2 and link["fields"]["joins"] == 1
    assert "SKSETPWD C ***" in result.stderr  # the debug trace of the serial exchange ran
    for secret in (PASSWORD, ROUTE_B_ID, ROUTE_B_ID[-8:]):
        assert secret not in result.stderr and secret not in result.stdout
    assert emu.stats.commands["SKTERM"] == 1  # the agent ended its session on exit


def test_agent_once_with_a_wrong_password_fails_clearly(write_config, agent_cli, emulator) -> None:
    emu = emulator(password="TheRightOne12")
    config = write_config(
        f"""
        [source.smartmeter]
        device = {emu.path}
        route_b_id = ${{KANSOKU_TEST_RBID}}
        route_b_password = ${{KANSOKU_TEST_PASSWORD}}

        [sink.stdout]
        format = json
        """
    )
    result = agent_cli("--log-level", "debug", "-c", str(config), "once", env=SECRETS_ENV)
    assert result.returncode == 1
    assert "rejected the Route-B ID or password" in result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr and "TheRightOne12" not in result.stderr


def test_built_in_emulator_device_with_an_instance_name(write_config, agent_cli) -> None:
    config = write_config(
        """
        [agent]
        self_metrics = false

        [source.smartmeter.house]
        device = emulator
        emulator = dialect=bp35a1, data=hex, power_w=-524, current_t_a=none, scan_time_scale=0

        [sink.stdout]
        format = line
        """
    )
    result = agent_cli("-c", str(config), "once")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("smartmeter,"))
    assert "instance=house" in line and "power_w=-524i" in line and "current_t_a" not in line


def test_the_proposed_demo_section(write_config, agent_cli) -> None:
    config = write_config(DEMO_SECTION + "\n[sink.stdout]\nformat = json\n")
    result = agent_cli("-c", str(config), "once")
    assert result.returncode == 0, result.stderr
    meter = next(p for p in points(result.stdout) if p["measurement"] == "smartmeter")
    assert set(meter["fields"]) == {
        "power_w",
        "current_r_a",
        "current_t_a",
        "energy_import_wh",
        "energy_export_wh",
    }


def test_agent_emulate_smartmeter_serves_a_link(tmp_path, smartmeter) -> None:
    link = tmp_path / "ttyEMU"
    command = [sys.executable, "-m", "kansoku.cli", "emulate", "smartmeter", "--link", str(link)]
    command += ["--dialect", "bp35a1", "--power-w", "-524", "--scan-time-scale", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(link.is_symlink, timeout=20)
        got = fields(list(smartmeter(str(link)).collect()))
        assert got["power_w"] == -524
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "emulating a BP35A1 Wi-SUN stick" in stdout and str(link) in stdout
    assert not link.exists()


def test_agent_emulate_rejects_bad_settings(agent_cli) -> None:
    result = agent_cli("emulate", "smartmeter", "--unit-kwh", "0.5")
    assert result.returncode == 2
    assert "is not an E1 unit" in result.stderr
    helped = agent_cli("emulate", "smartmeter", "--help")
    assert "--refuse-multi-get" in helped.stdout and "--link PATH" in helped.stdout


def test_plugin_import_stays_light() -> None:
    code = (
        "import sys, kansoku_plugins.smartmeter; "
        "print(sorted(m for m in ('serial', 'kansoku_plugins.smartmeter.emulator', "
        "'kansoku_plugins.smartmeter.session') if m in sys.modules))"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert result.stdout.strip() == "[]", result.stderr
    assert time.monotonic() - started < 10
