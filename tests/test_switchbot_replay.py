"""The whole switchbot source driven by replayed captures through the real ``agent`` CLI.

Captures are built here from public advertisement bytes (research notes §2, cited per device)
with timings chosen to produce each status word. Replay runs as fast as possible, so the
source's clock stands at the capture's last advert when ``agent once`` collects.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from kansoku import PluginContext
from kansoku_plugins.switchbot.adv import COMPANY_ID, OLD_COMPANY_ID, SERVICE_UUID
from kansoku_plugins.switchbot.config import OPTIONS, device_list

KITCHEN = "C4:F9:26:75:DF:22"  # Meter Plus, custom-components/ble_monitor#784
BALCONY = "C7:6B:04:06:15:5E"  # Indoor/Outdoor, custom-components/ble_monitor#1411
GARAGE = "B0:E9:FE:52:DD:84"  # Meter Pro, pySwitchbot test_meter_pro_active
BEDROOM = "D7:C1:7D:5D:EB:43"  # Meter, passive only, pySwitchbot test_wosensor_passive_only
HALL = "E8:89:3E:EC:8F:82"  # Meter, passive only, home-assistant/core#129973
OFFICE = "B0:E9:FE:DD:EE:FF"  # Meter Pro CO2, theengs/decoder test_ble.cpp
ATTIC = "F3:A5:5D:0E:57:21"  # Meter Plus, theengs/decoder#518 (RSSI made weak here)
OLDFW = "CE:07:22:35:69:F2"  # company 0x0059 + MAC, custom-components/ble_monitor#764
NEIGHBOUR = "11:22:33:44:55:66"  # unconfigured, passive only: model unknown
PHONE = "4C:11:22:33:44:55"  # Apple iBeacon: not SwitchBot

DEVICES = (
    f"{KITCHEN}=kitchen, {BALCONY}=balcony, {GARAGE}=garage, {BEDROOM}=bedroom:meter, "
    f"{HALL}=hall, {OFFICE}=office, {ATTIC}=attic, {OLDFW}=landing:meter"
)


def triplet(temperature: float, humidity: int, fahrenheit: bool = False) -> str:
    """The 3-byte temperature/humidity encoding (research notes §1.3)."""
    tenths = round(abs(temperature) * 10) % 10
    whole = int(abs(temperature)) | (0x80 if temperature >= 0 else 0)
    return bytes([tenths, whole, humidity | (0x80 if fahrenheit else 0)]).hex()


def line(t: float, address: str, rssi: int, mfr: dict[int, str], svc: str | None = None) -> str:
    record = {
        "time": 1767225600 + t,
        "address": address,
        "rssi": rssi,
        "local_name": None,
        "service_data": {SERVICE_UUID: svc} if svc is not None else {},
        "manufacturer_data": {str(k): v for k, v in mfr.items()},
    }
    return json.dumps(record)


def status_capture() -> list[str]:
    """60 s, one advert per device per second, each device shaped to one status."""
    lines = []
    for t in range(60):
        temp = 22.0 + (t // 5) / 10  # kitchen: a new value every 5 s
        kitchen = "c4f92675df22dc03" + triplet(temp, 41, fahrenheit=True)
        lines.append(
            line(t, KITCHEN, -58 - t % 3, {COMPANY_ID: kitchen}, "690064" + triplet(temp, 41, True))
        )
        if t <= 45:  # balcony falls silent for the last 14 s: flaky
            lines.append(
                line(t + 0.2, BALCONY, -74, {COMPANY_ID: "c76b0406155eff0203981f00"}, "770064")
            )
        if t <= 20:  # garage falls silent for 39 s: gone (gone_after = 30s)
            lines.append(
                line(t + 0.3, GARAGE, -80, {COMPANY_ID: "b0e9fe52dd84066408972c0005"}, "340064")
            )
        lines.append(line(t + 0.4, BEDROOM, -70, {COMPANY_ID: "d7c17d5deb43de03069835"}))  # quiet
        lines.append(line(t + 0.5, HALL, -66, {COMPANY_ID: "e8893eec8f82d803029142"}))
        co2 = "9c40" if t == 30 else f"{880 + t:04x}"  # one CO2 of 40000 ppm: dropped
        office = f"b0e9feddeeff0ce4{triplet(22.8, 40)}0004{co2}00"
        lines.append(line(t + 0.6, OFFICE, -62, {COMPANY_ID: office}, "350064"))
        attic = "f3a55d0e57215f01" + triplet(22.4 + (t // 10) / 10, 41)
        lines.append(line(t + 0.7, ATTIC, -95 + t % 2, {COMPANY_ID: attic}, "6900ba"))
        lines.append(line(t + 0.8, OLDFW, -77, {OLD_COMPANY_ID: "ce07223569f2"}))
        lines.append(line(t + 0.85, NEIGHBOUR, -85, {COMPANY_ID: "112233445566de03069835"}))
        lines.append(line(t + 0.9, PHONE, -50, {76: "0215" + "00" * 21}))
    lines.insert(100, line(30.95, OFFICE, -62, {COMPANY_ID: "b0e9fe"}, "350064"))  # truncated
    lines.insert(200, "{not json")
    return lines


def config_text(capture: Path, extra: str = "") -> str:
    return f"""
        [agent]
        self_metrics = false

        [source.switchbot]
        replay = {capture}
        window = 0.5s
        gone_after = 30s
        quiet_after = 30s
        devices = {DEVICES}
        {extra}

        [sink.stdout]
        format = json
    """


def points(stdout: str) -> dict[tuple[str, str], dict]:
    out = {}
    for text in stdout.splitlines():
        point = json.loads(text)
        out[(point["measurement"], point["tags"].get("address", ""))] = point
    return out


@pytest.fixture
def status_run(tmp_path, write_config, agent_cli):
    capture = tmp_path / "capture.jsonl"
    capture.write_text("\n".join(status_capture()) + "\n")
    result = agent_cli("-c", str(write_config(config_text(capture))), "once")
    assert result.returncode == 0, result.stderr
    return points(result.stdout), result.stderr


def test_readings_carry_typed_fields_and_tags(status_run):
    got, _ = status_run
    kitchen = got[("switchbot", KITCHEN)]
    assert kitchen["tags"] == {"address": KITCHEN, "name": "kitchen", "model": "meter-plus"}
    assert kitchen["fields"] == {
        "temperature_c": 23.1,
        "humidity_pct": 41,
        "battery_pct": 100,
        "rssi_dbm": -60,
    }
    assert isinstance(kitchen["fields"]["temperature_c"], float)
    office = got[("switchbot", OFFICE)]["fields"]
    assert office["co2_ppm"] == 880 + 59 and office["temperature_c"] == 22.8
    assert got[("switchbot", BALCONY)]["fields"]["humidity_pct"] == 31
    unnamed = got[("switchbot", BEDROOM)]
    assert unnamed["tags"]["model"] == "meter" and "battery_pct" not in unnamed["fields"]


def test_reception_statistics_per_device(status_run):
    got, _ = status_run
    kitchen = got[("switchbot_reception", KITCHEN)]["fields"]
    assert kitchen["adverts"] == 60 and kitchen["scan_responses"] == 60
    assert kitchen["reading_changes"] == 12
    assert kitchen["expected_interval_s"] == 1.0 and kitchen["longest_gap_s"] == 1.0
    assert (kitchen["rssi_median_dbm"], kitchen["rssi_min_dbm"]) == (-59, -60)
    assert kitchen["status"] == "healthy"
    assert kitchen["last_heard_s"] == 0.9  # the clock stands at the capture's last advert
    assert got[("switchbot_reception", BEDROOM)]["fields"]["scan_responses"] == 0


def test_status_words(status_run):
    got, _ = status_run
    status = {address: p["fields"]["status"] for (m, address), p in got.items() if m.endswith("n")}
    assert status == {
        KITCHEN: "healthy",
        BALCONY: "flaky",  # silent 14.7 s, learned interval 1 s
        GARAGE: "gone",  # silent 39.6 s > gone_after 30 s
        BEDROOM: "quiet",  # one value for 60 s > quiet_after 30 s
        HALL: "needs-active-scan",  # passive only and no model configured
        OFFICE: "healthy",
        ATTIC: "flaky",  # median RSSI -95 dBm
        OLDFW: "needs-active-scan",  # firmware before 2.7: values only in scan responses
    }
    balcony = got[("switchbot_reception", BALCONY)]["fields"]
    assert balcony["last_heard_s"] == pytest.approx(14.7) and balcony["longest_gap_s"] > 14


def test_nothing_is_made_up_or_dropped_silently(status_run):
    got, stderr = status_run
    assert ("switchbot", HALL) not in got and ("switchbot", OLDFW) not in got
    assert not [k for k in got if k[1] in (NEIGHBOUR, PHONE)]
    assert got[("switchbot_reception", OFFICE)]["fields"]["decode_errors"] == 2
    assert "CO2 40000 ppm is outside" in stderr and f"{OFFICE}: cannot decode" in stderr
    assert "capture.jsonl:201: not JSON" in stderr
    assert f"heard SwitchBot device {NEIGHBOUR} but not its model" in stderr
    scanner = got[("switchbot_scanner", "")]
    assert scanner["tags"] == {"adapter": "hci0"}
    assert scanner["fields"]["adverts"] == len(status_capture()) - 1
    assert scanner["fields"]["scan_mode"] == "replay" and scanner["fields"]["restarts"] == 0


def test_only_configured_and_configured_but_never_heard(tmp_path, write_config, agent_cli):
    capture = tmp_path / "capture.jsonl"
    late = "AA:AA:AA:AA:AA:AA"
    capture.write_text(
        line(0, KITCHEN, -60, {COMPANY_ID: "c4f92675df22dc030096a9"}, "6900640096a9")
        + "\n"
        + line(0.5, BALCONY, -60, {COMPANY_ID: "c76b0406155eff0203981f00"}, "770064")
        + "\n"
    )
    text = config_text(capture, "only_configured = true")
    text = text.replace(f"devices = {DEVICES}", f"devices = {KITCHEN}=k, {late}=x")
    result = agent_cli("-c", str(write_config(text)), "once")
    assert result.returncode == 0, result.stderr
    got = points(result.stdout)
    assert {k for k in got if k[0] != "switchbot_scanner"} == {
        ("switchbot", KITCHEN),
        ("switchbot_reception", KITCHEN),
    }


def options(**overrides):
    return {o.name: o.default for o in OPTIONS} | overrides


def test_a_reading_is_handed_over_once(tmp_path):
    from kansoku_plugins.switchbot.source import SwitchBotSource

    capture = tmp_path / "capture.jsonl"
    capture.write_text("\n".join(status_capture()) + "\n")
    context = PluginContext("switchbot", tmp_path, logging.getLogger("t"), tmp_path)
    configured = device_list(DEVICES)
    source = SwitchBotSource(options(replay=str(capture), devices=configured), context)
    source.start()
    try:
        deadline = time.monotonic() + 10
        while source._scanner.health.adverts < len(status_capture()) - 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first = list(source.collect())
        second = list(source.collect())
    finally:
        source.close()
    assert sum(m.measurement == "switchbot" for m in first) == 6
    assert not [m for m in second if m.measurement == "switchbot"]
    again = {m.tags["address"]: m.fields for m in second if m.measurement == "switchbot_reception"}
    assert again[KITCHEN]["adverts"] == 0 and again[KITCHEN]["status"] == "healthy"


def test_shipped_demo_capture_replays_from_the_package(write_config, agent_cli):
    result = agent_cli(
        "-c",
        str(
            write_config(
                """
                [agent]
                self_metrics = false
                [source.switchbot]
                replay = demo
                window = 0.5s
                [sink.stdout]
                format = json
                """
            )
        ),
        "once",
    )
    assert result.returncode == 0, result.stderr
    models = {p["tags"]["model"] for (m, _), p in points(result.stdout).items() if m == "switchbot"}
    assert models == {"meter-plus", "outdoor-meter", "meter-pro-co2", "hub2", "meter-pro"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("devices = kitchen", "devices: 'kitchen': 'kitchen' is not ADDRESS=name[:model]"),
        (f"devices = {KITCHEN}=k:meter-max", "unknown model 'meter-max'"),
        ("speed = -1", "the speed must be a positive number or max"),
        ("loop = true", "loop = true needs a finite speed"),
    ],
)
def test_config_mistakes_get_sentences(tmp_path, write_config, agent_cli, extra, message):
    text = config_text(tmp_path / "c.jsonl").replace(f"devices = {DEVICES}", extra)
    result = agent_cli("-c", str(write_config(text)), "once")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_missing_capture_file_is_a_source_error(tmp_path, write_config, agent_cli):
    result = agent_cli("-c", str(write_config(config_text(tmp_path / "nope.jsonl"))), "once")
    assert result.returncode == 1
    assert "source switchbot: replay file" in result.stderr and "No such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_bluetooth_here_is_a_sentence_not_a_crash(tmp_path, write_config, agent_cli):
    text = """
        [agent]
        self_metrics = false
        [source.switchbot]
        window = 1s
        [sink.stdout]
        format = json
    """
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"}
    result = agent_cli("-c", str(write_config(text)), "once", env=env)
    assert result.returncode == 1
    assert "source switchbot: Bluetooth: cannot reach the D-Bus system bus" in result.stderr
    assert "Traceback" not in result.stderr


DEMO_SECTION = """
[source.switchbot]
# SwitchBot meters replayed from a capture shipped with kansoku (no Bluetooth needed)
replay = demo
speed = 10
loop = true
interval = 10s
window = 3s
gone_after = 90s
quiet_after = 2m
devices = C4:F9:26:75:DF:22=kitchen, C7:6B:04:06:15:5E=balcony, B0:E9:FE:DD:EE:FF=office,
          D4:0B:1A:2C:3E:51=living, D7:C1:7D:5D:EB:43=bedroom:meter,
          B0:E9:FE:52:DD:84=garage, F3:A5:5D:0E:57:21=attic, CE:07:22:35:69:F2=hall:meter
"""


def test_the_demo_section(write_config, agent_cli):
    text = "[agent]\nself_metrics = false\n" + DEMO_SECTION + "\n[sink.stdout]\nformat = json\n"
    result = agent_cli("-c", str(write_config(text)), "once")
    assert result.returncode == 0, result.stderr
    got = points(result.stdout)
    names = {p["tags"]["name"] for (m, _), p in got.items() if m == "switchbot"}
    assert names == {"kitchen", "balcony", "office", "living", "bedroom", "garage", "attic"}
    status = {p["tags"]["name"]: p["fields"]["status"] for (m, _), p in got.items() if m[-1] == "n"}
    assert status["hall"] == "needs-active-scan" and status["attic"] == "flaky"
