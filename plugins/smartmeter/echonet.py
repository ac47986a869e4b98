"""ECHONET Lite frames for the low-voltage smart meter class 0x0288: build, parse and decode.

Frame layout (EDATA format 1): ``EHD1 EHD2 TID(2) SEOJ(3) DEOJ(3) ESV OPC {EPC PDC EDT}×OPC``.
The property decoders apply what other projects get wrong: E7 and E8 are *signed*, the
"no data" codes (0x7FFFFFFE, 0x7FFE — the T phase on single-phase 2-wire —, 0xFFFFFFFE) mean an
absent value, never 0 and never a huge number, and energy counts are scaled by D3 (optional,
1 when the meter lacks it) and the unit E1.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kansoku_plugins.smartmeter.errors import ParseError

EHD = b"\x10\x81"
PORT = 0x0E1A
CONTROLLER = bytes.fromhex("05FF01")
METER = bytes.fromhex("028801")
NODE_PROFILE = bytes.fromhex("0EF001")
METER_CLASS = bytes.fromhex("0288")

# ESV codes
SET_C = 0x61
GET = 0x62
SET_RES = 0x71
GET_RES = 0x72
INF = 0x73
INFC = 0x74
INFC_RES = 0x7A
SET_C_SNA = 0x51
GET_SNA = 0x52

# EPCs of class 0x0288 (and the node profile's instance list)
OPERATION_STATUS = 0x80
MAKER_CODE = 0x8A
GET_PROPERTY_MAP = 0x9F
COEFFICIENT = 0xD3
INSTANCE_LIST = 0xD5
INSTANCE_LIST_S = 0xD6
DIGITS = 0xD7
ENERGY_IMPORT = 0xE0
ENERGY_UNIT = 0xE1
ENERGY_EXPORT = 0xE3
POWER = 0xE7
CURRENTS = 0xE8
FIXED_IMPORT = 0xEA
FIXED_EXPORT = 0xEB

#: E1 code -> kWh per count (Appendix Release R, 0x0288 E1)
UNIT_KWH = {
    0x00: Fraction(1),
    0x01: Fraction(1, 10),
    0x02: Fraction(1, 100),
    0x03: Fraction(1, 1000),
    0x04: Fraction(1, 10000),
    0x0A: Fraction(10),
    0x0B: Fraction(100),
    0x0C: Fraction(1000),
    0x0D: Fraction(10000),
}
#: the largest count E0/E3/EA/EB may carry (99,999,999)
MAX_COUNT = 99_999_999
POWER_NO_DATA = {0x7FFFFFFE, 0x7FFFFFFF, -0x80000000}  # no data, overflow, underflow
CURRENT_NO_DATA = {0x7FFE, 0x7FFF, -0x8000}
COUNT_NO_DATA = {0xFFFFFFFE, 0xFFFFFFFF}


def _japan_time() -> dt.tzinfo:
    try:
        return ZoneInfo("Asia/Tokyo")
    except ZoneInfoNotFoundError:  # no tz database: Japan has no daylight saving time
        return dt.timezone(dt.timedelta(hours=9), "JST")


#: the time zone of the meters' clocks
JST = _japan_time()


@dataclass(frozen=True)
class Frame:
    """One ECHONET Lite message."""

    tid: int
    seoj: bytes
    deoj: bytes
    esv: int
    properties: tuple[tuple[int, bytes], ...] = ()

    def encode(self) -> bytes:
        """The frame as bytes for SKSENDTO."""
        out = bytearray(EHD)
        out += struct.pack(">H", self.tid) + self.seoj + self.deoj
        out += bytes((self.esv, len(self.properties)))
        for epc, edt in self.properties:
            out += bytes((epc, len(edt))) + edt
        return bytes(out)

    def values(self) -> dict[int, bytes]:
        """EPC -> EDT for the properties that carry data (PDC > 0)."""
        return {epc: edt for epc, edt in self.properties if edt}

    @property
    def is_failure(self) -> bool:
        """An "SNA" answer (0x5X): at least one property could not be served."""
        return 0x50 <= self.esv <= 0x5F


def get_request(tid: int, epcs: Iterable[int], deoj: bytes = METER) -> Frame:
    """A Get (ESV 0x62) for ``epcs`` from the controller object."""
    return Frame(tid & 0xFFFF, CONTROLLER, deoj, GET, tuple((epc, b"") for epc in epcs))


def parse_frame(data: bytes) -> Frame:
    """Decode one frame; anything that is not a well-formed format-1 frame raises ParseError."""
    if len(data) < 12:
        raise ParseError(f"ECHONET Lite frame too short ({len(data)} bytes)")
    if data[:2] != EHD:
        raise ParseError(f"not an ECHONET Lite format-1 frame (header {data[:2].hex().upper()})")
    tid = struct.unpack(">H", data[2:4])[0]
    count = data[11]
    pos = 12
    properties = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise ParseError("ECHONET Lite frame ends inside a property header")
        epc, pdc = data[pos], data[pos + 1]
        pos += 2
        if pos + pdc > len(data):
            raise ParseError(f"property 0x{epc:02X} says {pdc} bytes but the frame ends first")
        properties.append((epc, bytes(data[pos : pos + pdc])))
        pos += pdc
    if pos != len(data):
        raise ParseError(f"{len(data) - pos} bytes after the last property")
    return Frame(tid, bytes(data[4:7]), bytes(data[7:10]), data[10], tuple(properties))


def _exact(edt: bytes, size: int, epc: int) -> bytes:
    if len(edt) != size:
        raise ParseError(f"property 0x{epc:02X} has {len(edt)} bytes, expected {size}")
    return edt


def instantaneous_power(edt: bytes) -> int | None:
    """E7: signed watts (negative while exporting); None for the no-data/overflow codes."""
    value = struct.unpack(">i", _exact(edt, 4, POWER))[0]
    return None if value in POWER_NO_DATA else value


def instantaneous_currents(edt: bytes) -> tuple[float | None, float | None]:
    """E8: signed R and T phase currents in amperes; T is None on single-phase 2-wire."""
    raw = struct.unpack(">hh", _exact(edt, 4, CURRENTS))
    return tuple(None if v in CURRENT_NO_DATA else v / 10 for v in raw)  # type: ignore[return-value]


def cumulative_count(edt: bytes) -> int | None:
    """E0/E3: the raw energy count; None for "no data" and out-of-range values."""
    value = struct.unpack(">I", _exact(edt, 4, ENERGY_IMPORT))[0]
    return None if value in COUNT_NO_DATA or value > MAX_COUNT else value


def coefficient(edt: bytes) -> int:
    """D3: the multiplier from counts to real energy."""
    return struct.unpack(">I", _exact(edt, 4, COEFFICIENT))[0]


def energy_unit_kwh(edt: bytes) -> Fraction:
    """E1: kWh per count."""
    code = _exact(edt, 1, ENERGY_UNIT)[0]
    if code not in UNIT_KWH:
        raise ParseError(f"unknown energy unit code 0x{code:02X} in E1")
    return UNIT_KWH[code]


def digits(edt: bytes) -> int:
    """D7: number of significant digits of the energy counters."""
    return _exact(edt, 1, DIGITS)[0]


def fixed_time_energy(edt: bytes, zone: dt.tzinfo) -> tuple[int, int | None]:
    """EA/EB: (time in ns since the epoch from the meter's own clock, count or None)."""
    year, month, day, hour, minute, second, value = struct.unpack(
        ">HBBBBBI", _exact(edt, 11, FIXED_IMPORT)
    )
    try:
        stamp = dt.datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError:
        raise ParseError(
            f"EA/EB time {year}-{month}-{day} {hour}:{minute}:{second} is no date"
        ) from None
    count = None if value in COUNT_NO_DATA or value > MAX_COUNT else value
    return int(stamp.timestamp()) * 1_000_000_000, count


def instance_list(edt: bytes) -> list[bytes]:
    """D5/D6 of the node profile: the EOJs the node announces."""
    if not edt or len(edt) != 1 + 3 * edt[0]:
        raise ParseError("instance list length does not match its count")
    return [bytes(edt[1 + 3 * i : 4 + 3 * i]) for i in range(edt[0])]


def to_wh(count: int, factor: int, unit_kwh: Fraction) -> int:
    """count × D3 × unit(E1) in whole Wh (rounded to the nearest)."""
    return round(count * factor * unit_kwh * 1000)


def unit_code(unit_kwh: Fraction) -> int:
    """The E1 code for a kWh step (inverse of :data:`UNIT_KWH`)."""
    for code, value in UNIT_KWH.items():
        if value == unit_kwh:
            return code
    raise ValueError(f"{unit_kwh} kWh is not an E1 unit")


def property_map(epcs: Sequence[int]) -> bytes:
    """Encode a property map (0x9D-0x9F): a list below 16 entries, a 16-byte bitmap above."""
    unique = sorted(set(epcs))
    if len(unique) < 16:
        return bytes([len(unique), *unique])
    bitmap = bytearray(16)
    for epc in unique:
        bitmap[epc & 0x0F] |= 1 << ((epc >> 4) - 8)
    return bytes([len(unique)]) + bytes(bitmap)
