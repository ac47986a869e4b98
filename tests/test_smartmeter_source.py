"""The real smartmeter source, through pyserial, against the emulator on a pty."""

from __future__ import annotations

import json
import logging
import time

import pytest
import serial

from kansoku.errors import ConfigError, SourceError
from kansoku_plugins.smartmeter import echonet as el
from tests import test_smartmeter_fixtures as fixtures
from tests.test_smartmeter_fixtures import (
    PASSWORD,
    ROUTE_B_ID,
    collect_eventually,
    fields,
    wait_for,
)

METER_VALUES = {
    "power_w": -524,
    "current_r_a": -5.2,
    "current_t_a": None,
    "import_count": 12345,
    "export_count": 678,
    "coefficient": 10,
    "unit_kwh": el.UNIT_KWH[0x02],
}

emulator = fixtures.emulator
smartmeter = fixtures.smartmeter


@pytest.mark.parametrize("dialect", ["bp35a1", "bp35c2"])
@pytest.mark.parametrize("data", ["hex", "binary"])
def test_exact_values_for_both_dialects_and_data_formats(
    emulator, smartmeter, dialect: str, data: str
) -> None:
    emu = emulator(dialect=dialect, data=data, **METER_VALUES)
    source = smartmeter(emu.path)
    metrics = list(source.collect())
    assert fields(metrics) == {
        "power_w": -524,
        "current_r_a": -5.2,  # T phase absent: single-phase 2-wire sends 0x7FFE
        "energy_import_wh": 1_234_500,  # 12345 × D3 10 × 0.01 kWh
        "energy_export_wh": 67_800,
    }
    link = fields(metrics, "smartmeter_link")
    assert link["joins"] == 1 and link["scans"] == 1 and link["frames_sent"] == 2
    assert link["garbage_lines"] == 0 and link["ignored_frames"] == 0
    assert link["tx_time_ms"] > 0 and link["transmit_limited"] is False
    # steady state: one Get per poll, no new join
    second = list(source.collect())
    assert fields(second, "smartmeter_link")["frames_sent"] == 3
    assert emu.stats.commands["SKJOIN"] == 1


def test_three_phase_currents_and_default_unit(emulator, smartmeter) -> None:
    emu = emulator(power_w=632, current_r_a=3.0, current_t_a=5.0, import_count=65139)
    got = fields(list(smartmeter(emu.path).collect()))
    assert got == {
        "power_w": 632,
        "current_r_a": 3.0,
        "current_t_a": 5.0,
        "energy_import_wh": 6_513_900,
        "energy_export_wh": 0,
    }


def test_missing_d3_means_coefficient_one(emulator, smartmeter) -> None:
    emu = emulator(coefficient=None, import_count=1234, unit_kwh=el.UNIT_KWH[0x01])
    got = fields(list(smartmeter(emu.path).collect()))
    assert got["energy_import_wh"] == 123_400


def test_binary_payload_with_crlf_inside(emulator, smartmeter) -> None:
    emu = emulator(data="binary", power_w=0x0D0A, import_count=0x0D0A0D0A % 10**8)
    got = fields(list(smartmeter(emu.path).collect()))
    assert got["power_w"] == 3338


def test_no_data_codes_leave_fields_out_and_are_counted(emulator, smartmeter) -> None:
    emu = emulator(power_w=None, import_count=None)
    metrics = list(smartmeter(emu.path).collect())
    got = fields(metrics)
    assert "power_w" not in got and "energy_import_wh" not in got
    assert got["current_r_a"] == 6.0
    assert fields(metrics, "smartmeter_link")["no_data_values"] == 2


def test_multi_get_refused_falls_back_to_one_property_per_frame(emulator, smartmeter) -> None:
    emu = emulator(refuse_multi_get=True, **METER_VALUES)
    source = smartmeter(emu.path)
    assert fields(list(source.collect()))["power_w"] == -524
    before = emu.stats.echonet_frames
    metrics = list(source.collect())
    assert fields(metrics)["energy_import_wh"] == 1_234_500
    assert emu.stats.echonet_frames - before == 4  # E7, E8, E0, E3: no more refused multi-gets


def test_session_expiry_between_polls_loses_no_sample(emulator, smartmeter) -> None:
    emu = emulator(reauth_seconds=0.3, **METER_VALUES)
    source = smartmeter(emu.path)
    source.collect()
    emu.expire_session()
    metrics = list(source.collect())  # waits for EVENT 25, then polls
    assert fields(metrics)["power_w"] == -524
    link = fields(metrics, "smartmeter_link")
    assert (link["reauths"], link["joins"], link["session_losses"]) == (1, 1, 0)


def test_session_expiry_during_a_request_is_retried_after_reauthentication(
    emulator, smartmeter
) -> None:
    emu = emulator(**METER_VALUES)
    source = smartmeter(emu.path)
    source.collect()
    emu.expire_on_next_request()
    metrics = list(source.collect())
    assert fields(metrics)["energy_export_wh"] == 67_800
    assert fields(metrics, "smartmeter_link")["reauths"] == 1


def test_failed_reauthentication_joins_again_from_the_cache(emulator, smartmeter) -> None:
    emu = emulator(**METER_VALUES)
    source = smartmeter(emu.path)
    source.collect()
    emu.expire_session(reauth_ok=False)
    wait_for(lambda: emu.stats.commands["SKJOIN"] == 2)
    metrics = collect_eventually(source)
    assert fields(metrics)["power_w"] == -524
    link = fields(metrics, "smartmeter_link")
    assert link["joins"] == 2 and link["scans"] == 1 and link["session_losses"] == 1


def test_wrong_password_gives_one_clear_error_and_slow_retries(
    emulator, smartmeter, caplog
) -> None:
    emu = emulator(password=PASSWORD, route_b_id=ROUTE_B_ID)
    source = smartmeter(emu.path, route_b_password="WRONGPASS123", auth_retry_delay="600ms")
    caplog.set_level(logging.INFO)
    with pytest.raises(SourceError, match="rejected the Route-B ID or password") as first:
        source.collect()
    assert "route_b_password" in str(first.value) and "every 0.6s" in str(first.value)
    joins = emu.stats.commands["SKJOIN"]
    for _ in range(20):  # collections meanwhile get the same error at once; nothing is sent
        with pytest.raises(SourceError) as again:
            source.collect()
        assert str(again.value) == str(first.value)  # so the agent logs it only once
    assert emu.stats.commands["SKJOIN"] == joins == 1
    time.sleep(0.9)
    assert emu.stats.commands["SKJOIN"] == 2  # one retry after the delay, no spinning
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_unknown_route_b_id_finds_no_meter(emulator, smartmeter) -> None:
    emu = emulator(route_b_id="FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF")
    with pytest.raises(SourceError, match="no smart meter answered the active scan"):
        smartmeter(emu.path, scan_durations="4, 5").collect()
    assert emu.stats.commands["SKSCAN"] == 2
    assert emu.stats.commands["SKJOIN"] == 0


def test_scan_durations_increase_until_the_meter_is_heard(emulator, smartmeter) -> None:
    emu = emulator(min_scan_duration=8)
    metrics = list(smartmeter(emu.path).collect())
    assert fields(metrics, "smartmeter_link")["scans"] == 3


def test_cached_pan_avoids_scanning_and_a_failing_cache_rescans(
    emulator, smartmeter, tmp_path
) -> None:
    emu = emulator()
    first = smartmeter(emu.path)
    first.collect()
    first.close()
    cache = tmp_path / "state" / "sources" / "smartmeter" / "meter.json"
    assert json.loads(cache.read_text()) == {
        "channel": 0x21,
        "pan_id": 0x8888,
        "address": "001C6400601421A3",
    }
    second = smartmeter(emu.path)
    second.collect()
    second.close()
    assert emu.stats.commands["SKSCAN"] == 1  # the restart joined from the cache
    cache.write_text(json.dumps({"channel": 0x30, "pan_id": 0x1234, "address": "001C6400601421A3"}))
    fields(list(smartmeter(emu.path).collect()))
    assert emu.stats.commands["SKSCAN"] == 2
    assert json.loads(cache.read_text())["channel"] == 0x21


def test_garbage_lines_are_counted_and_skipped(emulator, smartmeter) -> None:
    emu = emulator(garbage_every=1, **METER_VALUES)
    source = smartmeter(emu.path)
    source.collect()
    emu.inject(b"\x00\x01\x02 noise \xff\r\nEVENT 99 nonsense\r\n")
    metrics = list(source.collect())
    assert fields(metrics)["power_w"] == -524
    assert fields(metrics, "smartmeter_link")["garbage_lines"] >= 3


def test_answers_with_a_wrong_tid_are_ignored(emulator, smartmeter) -> None:
    emu = emulator(wrong_tid=True, **METER_VALUES)
    metrics = list(smartmeter(emu.path).collect())
    assert fields(metrics)["power_w"] == -524
    assert fields(metrics, "smartmeter_link")["ignored_frames"] >= 2


def test_foreign_erxudp_is_never_taken_for_an_answer(emulator, smartmeter) -> None:
    emu = emulator(**METER_VALUES)
    source = smartmeter(emu.path)
    source.collect()
    emu.decoy_sender = "FE80:0000:0000:0000:021C:6400:0000:0BAD"  # same TID, other sender
    emu.send_frame(el.Frame(7, el.METER, el.CONTROLLER, el.GET_RES, ((el.POWER, b"\0\0\0\1"),)))
    emu.send_frame(b"not echonet", port=0x1234)
    metrics = list(source.collect())
    assert fields(metrics)["power_w"] == -524
    assert fields(metrics, "smartmeter_link")["ignored_frames"] >= 3


def test_half_hourly_notifications_become_points_with_the_meters_time(emulator, smartmeter) -> None:
    emu = emulator(**METER_VALUES)
    source = smartmeter(emu.path)
    source.collect()
    emu.notify(confirm=True)
    wait_for(lambda: emu.meter.infc_responses == 1)  # INFC answered at once, between polls
    metrics = list(source.collect())
    fixed = [m for m in metrics if "fixed_energy_import_wh" in m.fields]
    assert len(fixed) == 1
    assert fixed[0].fields == {
        "fixed_energy_import_wh": 1_234_500,
        "fixed_energy_export_wh": 67_800,
    }
    assert fixed[0].time_ns % (1800 * 10**9) == 0
    assert 0 <= time.time_ns() - fixed[0].time_ns < 1810 * 10**9
    emu.notify(confirm=False)
    emu.notify(confirm=False)  # the same half hour again: not a second point
    time.sleep(0.1)
    assert not [m for m in source.collect() if "fixed_energy_import_wh" in m.fields]


def test_transmit_limit_pauses_polling(emulator, smartmeter) -> None:
    emu = emulator()
    source = smartmeter(emu.path)
    source.collect()
    emu.set_transmit_limit(True)
    time.sleep(0.1)
    frames = emu.stats.echonet_frames
    with pytest.raises(SourceError, match="transmit-time limit"):
        source.collect()
    assert emu.stats.echonet_frames == frames
    emu.set_transmit_limit(False)
    time.sleep(0.1)
    link = fields(list(source.collect()), "smartmeter_link")
    assert link["transmit_limit_events"] == 1 and link["transmit_limited"] is False


def test_a_silent_meter_gets_its_session_renewed(emulator, smartmeter) -> None:
    emu = emulator(**METER_VALUES)
    source = smartmeter(emu.path)
    source.collect()
    emu.meter.silent = True
    with pytest.raises(SourceError, match="did not answer 2 requests"):
        source.collect()
    assert emu.stats.commands["SKTERM"] == 1
    emu.meter.silent = False
    metrics = collect_eventually(source)
    assert fields(metrics)["power_w"] == -524
    link = fields(metrics, "smartmeter_link")
    assert link["timeouts"] == 2 and link["joins"] == 2 and link["session_losses"] == 1


def test_meter_ending_the_session_is_rejoined(emulator, smartmeter) -> None:
    emu = emulator()
    source = smartmeter(emu.path)
    source.collect()
    emu.end_session()
    wait_for(lambda: emu.stats.commands["SKJOIN"] == 2)
    link = fields(collect_eventually(source), "smartmeter_link")
    assert link["session_losses"] == 1 and link["joins"] == 2


def test_unplugged_stick_is_reopened_when_it_comes_back(emulator, smartmeter) -> None:
    emu = emulator(**METER_VALUES)
    source = smartmeter(emu.path)
    source.collect()
    emu.unplug()
    with pytest.raises(SourceError, match="ttyWISUN"):
        source.collect()
    time.sleep(0.3)
    with pytest.raises(SourceError, match="does not exist: is the Wi-SUN stick plugged in"):
        source.collect()
    emu.replug()
    metrics = collect_eventually(source)
    assert fields(metrics)["power_w"] == -524
    link = fields(metrics, "smartmeter_link")
    assert link["reopens"] >= 1 and link["joins"] == 2 and link["scans"] == 1


def test_a_second_reader_of_the_stick_gets_a_clear_error(emulator, smartmeter) -> None:
    emu = emulator()
    smartmeter(emu.path).collect()
    with pytest.raises(serial.SerialException):  # a cron script with exclusive access
        serial.Serial(emu.path, 115200, exclusive=True)
    second = smartmeter(emu.path, state="other")
    with pytest.raises(SourceError, match=r"in use by another program \(a running agent\?\)"):
        second.collect()


@pytest.mark.parametrize(
    "stick", [{"echo": False}, {"rssi": True}, {"ropt": False, "dialect": "bp35a1"}]
)
def test_stick_variants(emulator, smartmeter, stick: dict) -> None:
    emu = emulator(**stick, **METER_VALUES)
    assert fields(list(smartmeter(emu.path).collect()))["power_w"] == -524


def test_secrets_never_reach_the_log(emulator, smartmeter, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    emu = emulator(echo=True, password=PASSWORD)
    smartmeter(emu.path).collect()
    smartmeter(emu.path, state="other", route_b_password="WRONGPASS123", auth_retry_delay="1h")
    with pytest.raises(SourceError):
        smartmeter(emu.path, state="third", route_b_password="WRONGPASS123").collect()
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "SKSETPWD C ***" in text and "SKSETRBID ***" in text  # the trace was on
    for secret in (PASSWORD, ROUTE_B_ID, ROUTE_B_ID[-8:], "WRONGPASS123"):
        assert secret not in text


def test_bad_credentials_are_config_errors(smartmeter) -> None:
    with pytest.raises(ConfigError, match="route_b_id must be the 32"):
        smartmeter("/dev/ttyUSB0", route_b_id="short")
    with pytest.raises(ConfigError, match="route_b_password"):
        smartmeter("/dev/ttyUSB0", route_b_password="")


def test_missing_device_says_what_to_check(smartmeter, tmp_path) -> None:
    with pytest.raises(SourceError, match="does not exist: is the Wi-SUN stick plugged in"):
        smartmeter(str(tmp_path / "ttyUSB9")).collect()


def test_built_in_emulator_device(smartmeter) -> None:
    source = smartmeter(
        "emulator",
        route_b_id="",
        route_b_password="",
        emulator="dialect=bp35a1, data=hex, power_w=-524, current_t_a=none, scan_time_scale=0",
    )
    got = fields(list(source.collect()))
    assert got["power_w"] == -524 and "current_t_a" not in got
