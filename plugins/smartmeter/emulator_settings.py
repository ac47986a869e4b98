"""Settings of the B-route emulator, shared by ``agent emulate smartmeter`` and the source option
``emulator = key=value, …`` (used with ``device = emulator``).

Each setting has one name, used as the config key and (with dashes) as the command-line flag.
Only the standard library is imported here: the CLI builds its parser from this table.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from kansoku import options as opt

_UNITS_KWH = ("1", "0.1", "0.01", "0.001", "0.0001", "10", "100", "1000", "10000")


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    return parse_optional


def _unit(text: str) -> Fraction:
    if text.strip() not in _UNITS_KWH:
        raise ValueError(f"{text!r} is not an E1 unit (kWh: {', '.join(_UNITS_KWH)})")
    return Fraction(text.strip())


def _hex_or_int(text: str) -> int:
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a number (e.g. 33 or 0x21)") from None


@dataclass
class EmulatorSettings:
    """How the emulated stick and meter behave (defaults: a healthy BP35C2 and meter)."""

    dialect: str = "bp35c2"
    data: str = "binary"
    echo: bool = True
    rssi: bool = False
    ropt: bool = True
    route_b_id: str = ""
    password: str = ""
    channel: int = 0x21
    pan_id: int = 0x8888
    power_w: int | None = 600
    current_r_a: float | None = 6.0
    current_t_a: float | None = 3.2
    import_count: int | None = 123456
    export_count: int | None = 0
    coefficient: int | None = 1
    unit_kwh: Fraction = Fraction(1, 10)
    digits: int = 6
    refuse_multi_get: bool = False
    animate: bool = False
    session_lifetime: float = 0.0
    reauth_seconds: float = 1.0
    reauth_fails: bool = False
    notify_every: float = 1800.0
    notify_confirm: bool = False
    garbage_every: int = 0
    wrong_tid: bool = False
    silent: bool = False
    scan_time_scale: float = 0.05
    min_scan_duration: int = 0
    join_seconds: float = 0.2
    response_delay: float = 0.05

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> EmulatorSettings:
        """Build from text values (config keys); unknown keys or bad values raise ValueError."""
        settings = cls()
        for key, text in values.items():
            setting = SETTINGS.get(key)
            if setting is None:
                known = ", ".join(sorted(SETTINGS))
                raise ValueError(f"unknown emulator setting {key!r} (known: {known})")
            try:
                setattr(settings, key, setting.parse(text))
            except ValueError as exc:
                raise ValueError(f"emulator setting {key}: {exc}") from None
        return settings

    def replace(self, **changes: Any) -> EmulatorSettings:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Setting:
    """One emulator setting: its parser and help text."""

    parse: Callable[[str], Any]
    help: str


SETTINGS: dict[str, Setting] = {
    "dialect": Setting(opt.choice("bp35a1", "bp35c2"), "stick family: bp35a1 or bp35c2"),
    "data": Setting(opt.choice("hex", "binary"), "ERXUDP data format at start (WOPT)"),
    "echo": Setting(opt.boolean, "echo commands back (register SFE)"),
    "rssi": Setting(opt.boolean, "bp35c2: RSSI column in ERXUDP (register SA2)"),
    "ropt": Setting(opt.boolean, "answer ROPT (no: FAIL ER04, like a Tessera RL7023)"),
    "route_b_id": Setting(str, "the meter's Route-B ID (empty: accept any)"),
    "password": Setting(str, "the meter's Route-B password (empty: accept any)"),
    "channel": Setting(_hex_or_int, "radio channel of the meter (33-60)"),
    "pan_id": Setting(_hex_or_int, "PAN ID of the meter"),
    "power_w": Setting(_optional(opt.integer), "E7 instantaneous power in W (none: no data)"),
    "current_r_a": Setting(_optional(opt.number), "E8 R-phase current in A"),
    "current_t_a": Setting(_optional(opt.number), "E8 T-phase current in A (none: 1-phase)"),
    "import_count": Setting(_optional(opt.integer), "E0 count, imported energy"),
    "export_count": Setting(_optional(opt.integer), "E3 count, exported energy"),
    "coefficient": Setting(_optional(opt.integer), "D3 coefficient (none: no D3)"),
    "unit_kwh": Setting(_unit, "E1 unit of the counts in kWh"),
    "digits": Setting(opt.integer, "D7 significant digits of the counts"),
    "refuse_multi_get": Setting(opt.boolean, "answer Gets of several properties with Get_SNA"),
    "animate": Setting(opt.boolean, "let power vary and energy grow over time"),
    "session_lifetime": Setting(opt.duration, "PANA lifetime; then EVENT 29 (0: never)"),
    "reauth_seconds": Setting(opt.duration, "how long a re-authentication takes"),
    "reauth_fails": Setting(opt.boolean, "re-authentication ends with EVENT 24"),
    "notify_every": Setting(opt.duration, "EA/EB notification period (0: never)"),
    "notify_confirm": Setting(opt.boolean, "notify with INFC (needs INFC_Res) not INF"),
    "garbage_every": Setting(opt.integer, "a garbage line before every Nth answer (0: never)"),
    "wrong_tid": Setting(opt.boolean, "send a wrong-TID answer before each real one"),
    "silent": Setting(opt.boolean, "the meter never answers ECHONET Lite requests"),
    "scan_time_scale": Setting(opt.number, "scan time factor (1: as long as a real scan)"),
    "min_scan_duration": Setting(opt.integer, "the meter is heard only from this DURATION up"),
    "join_seconds": Setting(opt.duration, "how long a PANA join takes"),
    "response_delay": Setting(opt.duration, "meter answer delay (real meters: 1-4 s)"),
}


def parse_settings(text: str) -> EmulatorSettings:
    """The source option ``emulator = key=value, …``."""
    return EmulatorSettings.from_mapping(opt.tag_map(text))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag VALUE`` per setting (the same words as in the config)."""
    defaults = EmulatorSettings()
    for name, setting in SETTINGS.items():
        default = getattr(defaults, name)
        shown = "none" if default is None else default
        if isinstance(default, Fraction):
            shown = str(float(default))
        elif isinstance(default, bool):
            shown = "yes" if default else "no"
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            metavar="VALUE",
            type=_argument_type(setting.parse),
            default=default,
            help=f"{setting.help} (default: {shown})",
        )


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def from_arguments(args: argparse.Namespace) -> EmulatorSettings:
    """Settings from parsed command-line arguments."""
    return EmulatorSettings(**{name: getattr(args, name) for name in SETTINGS})
