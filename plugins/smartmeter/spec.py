"""The smartmeter source's options and schema (light: the plugin manager imports this)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kansoku import FieldSpec, MeasurementSchema, Option
from kansoku import options as opt
from kansoku_plugins.smartmeter.echonet import JST
from kansoku_plugins.smartmeter.emulator_settings import EmulatorSettings, parse_settings

EMULATOR_DEVICE = "emulator"


def scan_durations(text: str) -> tuple[int, ...]:
    """``6, 7, 8``: SKSCAN durations (0-14) tried in turn."""
    values = opt.text_list(text)
    if not values or not all(v.isdigit() and 0 <= int(v) <= 14 for v in values):
        raise ValueError(f"{text!r} is not a list of scan durations from 0 to 14 (e.g. 6, 7, 8)")
    return tuple(int(v) for v in values)


def timezone(text: str) -> ZoneInfo:
    """An IANA time zone name such as Asia/Tokyo."""
    try:
        return ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{text!r} is not a time zone name (e.g. Asia/Tokyo)") from None


OPTIONS = (
    Option(
        "device",
        str,
        help="serial device of the Wi-SUN stick (/dev/ttyUSB0, a /dev/serial/by-id/ name), "
        "or 'emulator' for the built-in emulator",
    ),
    Option("baudrate", opt.integer, 115200, "serial speed of the stick"),
    Option("route_b_id", opt.secret, opt.secret(""), "Route-B ID, 32 characters (secret)"),
    Option("route_b_password", opt.secret, opt.secret(""), "Route-B password (secret)"),
    Option("module", opt.choice("auto", "bp35a1", "bp35c2"), "auto", "stick command dialect"),
    Option("scan_durations", scan_durations, (6, 7, 8), "active scan durations, tried in turn"),
    Option("response_timeout", opt.duration, 10.0, "wait for the meter's answer to one Get"),
    Option("retries", opt.integer, 2, "Gets sent again before the session is renewed"),
    Option("join_timeout", opt.duration, 60.0, "wait for PANA authentication (EVENT 25/24)"),
    Option("join_wait", opt.duration, 45.0, "how long a collection waits for a join in progress"),
    Option("reauth_timeout", opt.duration, 60.0, "wait for re-authentication after EVENT 29"),
    Option("retry_delay", opt.duration, 10.0, "first pause before joining or reopening again"),
    Option("retry_max_delay", opt.duration, 300.0, "longest pause between attempts"),
    Option("auth_retry_delay", opt.duration, 900.0, "pause after the meter refused the password"),
    Option("meter_timezone", timezone, JST, "the meter clock's time zone"),
    Option(
        "emulator",
        parse_settings,
        EmulatorSettings(),
        "with device = emulator: emulator settings as key=value, ... (agent emulate --help)",
    ),
)

_COUNTER = {"kind": "counter"}
SCHEMA = {
    "smartmeter": MeasurementSchema(
        {
            "power_w": FieldSpec(int, "W", description="instantaneous power (E7); < 0: export"),
            "current_r_a": FieldSpec(float, "A", description="R-phase current (E8)"),
            "current_t_a": FieldSpec(float, "A", description="T-phase current (E8; 3-wire only)"),
            "energy_import_wh": FieldSpec(
                int, "Wh", "counter", "imported energy: E0 × D3 × E1 unit"
            ),
            "energy_export_wh": FieldSpec(
                int, "Wh", "counter", "exported energy: E3 × D3 × E1 unit"
            ),
            "fixed_energy_import_wh": FieldSpec(
                int, "Wh", "counter", "imported energy at the last :00/:30 (EA, meter's time)"
            ),
            "fixed_energy_export_wh": FieldSpec(
                int, "Wh", "counter", "exported energy at the last :00/:30 (EB, meter's time)"
            ),
        }
    ),
    "smartmeter_link": MeasurementSchema(
        {
            "frames_sent": FieldSpec(int, "frames", **_COUNTER, description="ECHONET frames sent"),
            "bytes_sent": FieldSpec(int, "bytes", **_COUNTER, description="ECHONET bytes sent"),
            "joins": FieldSpec(int, **_COUNTER, description="PANA joins attempted"),
            "scans": FieldSpec(int, **_COUNTER, description="active scans"),
            "timeouts": FieldSpec(int, **_COUNTER, description="requests without answer"),
            "send_failures": FieldSpec(int, **_COUNTER, description="sends that failed (EVENT 21)"),
            "transmit_limit_events": FieldSpec(
                int, **_COUNTER, description="transmit-time limit reached (EVENT 32)"
            ),
            "transmit_limited": FieldSpec(bool, description="transmit-time limit active now"),
            "reauths": FieldSpec(int, **_COUNTER, description="session expiries (EVENT 29)"),
            "session_losses": FieldSpec(int, **_COUNTER, description="sessions that ended"),
            "reopens": FieldSpec(int, **_COUNTER, description="serial port reopened"),
            "garbage_lines": FieldSpec(int, **_COUNTER, description="unparsable stick output"),
            "ignored_frames": FieldSpec(
                int, **_COUNTER, description="late, foreign or unexpected datagrams"
            ),
            "no_data_values": FieldSpec(
                int, **_COUNTER, description="values the meter marked as no data"
            ),
            "tx_time_ms": FieldSpec(
                int, "ms", "counter", "radio transmit time the stick reports (register SFD)"
            ),
        }
    ),
}
