"""The switchbot source's options, device list and schema (light: imported at registration)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from kansoku import FieldSpec, MeasurementSchema, Option
from kansoku.options import boolean, choice, duration, integer
from kansoku_plugins.switchbot.adv import MODELS_BY_SLUG, Model

_ADDRESS = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}")
DEMO_CAPTURE = "demo"


@dataclass(frozen=True)
class DeviceConfig:
    """One entry of ``devices``: a name for the tags and, optionally, the model."""

    address: str
    name: str
    model: Model | None = None


def device_list(text: str) -> dict[str, DeviceConfig]:
    """``AA:BB:CC:DD:EE:FF=kitchen:meter-plus, 11:22:33:44:55:66=attic`` -> devices by address."""
    devices: dict[str, DeviceConfig] = {}
    for item in re.split(r"[,\n]", text):
        item = item.strip()
        if not item:
            continue
        address, sep, rest = item.partition("=")
        address = address.strip().upper()
        if not sep or not _ADDRESS.fullmatch(address):
            raise ValueError(f"{item!r} is not ADDRESS=name[:model] (AA:BB:CC:DD:EE:FF=name)")
        name, _, slug = rest.partition(":")
        name, slug = name.strip(), slug.strip().lower()
        if not name:
            raise ValueError(f"{item!r} has no name after '='")
        if slug and slug not in MODELS_BY_SLUG:
            known = ", ".join(MODELS_BY_SLUG)
            raise ValueError(f"{item!r}: unknown model {slug!r} (known: {known})")
        if address in devices:
            raise ValueError(f"{address} is listed twice")
        devices[address] = DeviceConfig(address, name, MODELS_BY_SLUG.get(slug))
    return devices


def replay_speed(text: str) -> float:
    """``max`` (as fast as possible) or a factor such as ``1`` (real time) or ``10``."""
    word = text.strip().lower()
    if word in ("max", "fast", "0"):
        return math.inf
    try:
        speed = float(word)
    except ValueError:
        raise ValueError(f"{text!r} is not max or a number such as 1 or 10") from None
    if not speed > 0 or math.isinf(speed):
        raise ValueError(f"{text!r}: the speed must be a positive number or max")
    return speed


OPTIONS = (
    Option("adapter", str, "hci0", "Bluetooth adapter (hciN, see `bluetoothctl list`)"),
    Option(
        "scan_mode",
        choice("auto", "passive", "active"),
        "auto",
        "passive (BlueZ >= 5.56 with experimental features), active, or auto: passive if possible",
    ),
    Option(
        "duplicate_data",
        boolean,
        True,
        "active scans: ask BlueZ for every advertisement, not only changed ones",
    ),
    Option("devices", device_list, {}, "ADDRESS=name[:model], ... (models: see the docs)"),
    Option("only_configured", boolean, False, "report only the devices listed in `devices`"),
    Option("gone_after", duration, 900.0, "a device not heard for this long is `gone`"),
    Option("quiet_after", duration, 1800.0, "a reading unchanged for this long is `quiet`"),
    Option("flaky_rssi", integer, -88, "a median RSSI below this (dBm) is `flaky`"),
    Option("watchdog", duration, 90.0, "rebuild the scanner after this long without any advert"),
    Option("max_backoff", duration, 300.0, "longest pause between scanner restarts"),
    Option("replay", str, None, f"read a capture instead of the radio ({DEMO_CAPTURE}: shipped)"),
    Option("speed", replay_speed, math.inf, "replay speed: max (default) or a factor (1 = real)"),
    Option("loop", boolean, False, "replay the capture again when it ends"),
)

_COUNTER = {"kind": "counter"}
SCHEMA = {
    "switchbot": MeasurementSchema(
        {
            "temperature_c": FieldSpec(float, "°C", description="temperature"),
            "humidity_pct": FieldSpec(int, "%", description="relative humidity"),
            "battery_pct": FieldSpec(int, "%", description="battery (scan responses only)"),
            "co2_ppm": FieldSpec(int, "ppm", description="CO2 (Meter Pro CO2)"),
            "rssi_dbm": FieldSpec(int, "dBm", description="signal strength of the advert"),
        }
    ),
    "switchbot_reception": MeasurementSchema(
        {
            "adverts": FieldSpec(int, "adverts", description="callbacks since the last collection"),
            "scan_responses": FieldSpec(
                int, "adverts", description="adverts carrying service data (scan responses)"
            ),
            "reading_changes": FieldSpec(
                int, "changes", description="adverts whose temperature/humidity/CO2 changed"
            ),
            "decode_errors": FieldSpec(
                int, "adverts", description="SwitchBot payloads not decoded or values dropped"
            ),
            "longest_gap_s": FieldSpec(float, "s", description="longest silence in the period"),
            "last_heard_s": FieldSpec(float, "s", description="seconds since last heard"),
            "rssi_median_dbm": FieldSpec(int, "dBm", description="median RSSI in the period"),
            "rssi_min_dbm": FieldSpec(int, "dBm", description="weakest RSSI in the period"),
            "battery_age_s": FieldSpec(float, "s", description="age of the battery value"),
            "expected_interval_s": FieldSpec(
                float, "s", description="learned interval between adverts"
            ),
            "status": FieldSpec(
                str, description="healthy, quiet, flaky, gone or needs-active-scan"
            ),
        }
    ),
    "switchbot_scanner": MeasurementSchema(
        {
            "state": FieldSpec(str, description="scanning, starting or retrying"),
            "scan_mode": FieldSpec(str, description="passive, active or replay"),
            "restarts": FieldSpec(int, "restarts", **_COUNTER, description="scanner rebuilds"),
            "start_failures": FieldSpec(
                int, "attempts", **_COUNTER, description="failed attempts to start scanning"
            ),
            "adverts": FieldSpec(int, "adverts", **_COUNTER, description="callbacks, any device"),
            "silence_s": FieldSpec(float, "s", description="seconds since any advert"),
        }
    ),
}
