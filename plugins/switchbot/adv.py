"""Decoder for SwitchBot thermo-hygrometer advertisements.

Two containers carry the data (OpenWonderLabs/SwitchBotAPI-BLE, ``README.md`` and
``devicetypes/meter.md``):

* manufacturer data of company 0x0969, in every advertisement (passive scans see it); bleak
  hands it over with the two company-id bytes already stripped;
* service data of UUID 0xFD3D (older firmware: 0x0D00), in the scan response (active scans only):
  byte 0 = model character (bit 7 "encrypted"; bit 5 flipped in pairing mode), byte 2 = battery.

Temperature and humidity use one 3-byte encoding on every model; only its offset moves:
tenths of a degree in the low nibble of byte A, sign (1 = positive) and whole degrees in byte B,
a Fahrenheit *display* flag and the humidity in byte C. The value is always Celsius.

When both containers are present the manufacturer data wins for temperature and humidity,
as in PySwitchbot: BlueZ merges properties, so service data may be older than the advert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

COMPANY_ID = 0x0969
OLD_COMPANY_ID = 0x0059
SERVICE_UUID = "0000fd3d-0000-1000-8000-00805f9b34fb"
OLD_SERVICE_UUID = "00000d00-0000-1000-8000-00805f9b34fb"
SERVICE_UUIDS = (SERVICE_UUID, OLD_SERVICE_UUID)
CO2_RANGE_PPM = (1, 9999)  # the sensor's specified range; PySwitchbot drops values above 9999
PAIRING_BIT = 0x20  # the model char in pairing ("Add") mode differs from the normal one here

#: what :attr:`Decoded.kind` says about an advertisement
READING = "reading"  # a thermo-hygrometer whose values could be read
UNKNOWN_MODEL = "unknown-model"  # SwitchBot manufacturer data, but no model known for it
OLD_FIRMWARE = "old-firmware"  # company 0x0059 with the MAC only: values only in scan responses
OTHER_PRODUCT = "other-product"  # a SwitchBot product that is not a thermo-hygrometer
FOREIGN = "foreign"  # not SwitchBot at all


class DecodeError(ValueError):
    """A SwitchBot payload that cannot be decoded (truncated, malformed, impossible value)."""


@dataclass(frozen=True, slots=True)
class Model:
    """A supported thermo-hygrometer and where its values sit."""

    code: str  #: model character in normal mode (service data byte 0)
    slug: str  #: name used in the config and the ``model`` tag
    title: str
    th_offset: int  #: temperature/humidity triplet in the manufacturer data (company id stripped)
    has_battery: bool  #: battery in service data byte 2 (mains-powered hubs have none)
    service_th: bool = False  #: 6-byte service data carries the triplet at bytes 3-5 too
    co2_offset: int | None = None  #: big-endian uint16 CO2 in the manufacturer data


MODELS = (
    Model("T", "meter", "Meter", 8, True, service_th=True),
    Model("i", "meter-plus", "Meter Plus", 8, True, service_th=True),
    Model("w", "outdoor-meter", "Indoor/Outdoor Meter", 8, True),
    Model("4", "meter-pro", "Meter Pro", 8, True),
    Model("5", "meter-pro-co2", "Meter Pro CO2", 8, True, co2_offset=13),
    Model("v", "hub2", "Hub 2", 13, False),
)
MODELS_BY_SLUG = {m.slug: m for m in MODELS}
_BY_CODE = {ord(m.code): m for m in MODELS} | {ord(m.code) ^ PAIRING_BIT: m for m in MODELS}


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one advertisement says. Values are ``None`` when this advert does not carry them."""

    kind: str
    model: Model | None = None
    temperature_c: float | None = None
    humidity_pct: int | None = None
    battery_pct: int | None = None
    co2_ppm: int | None = None
    fahrenheit_display: bool = False
    pairing: bool = False
    service_data: bytes | None = None  #: the SwitchBot service data (scan response), if any
    dropped: tuple[str, ...] = ()  #: values left out as implausible, with the reason


def model_of(service_data: bytes) -> tuple[Model | None, bool]:
    """The model named by service-data byte 0 and whether it is in pairing mode.

    ``(None, False)`` for SwitchBot products that are not thermo-hygrometers.
    """
    if not service_data:
        raise DecodeError("empty SwitchBot service data")
    code = service_data[0] & 0x7F
    model = _BY_CODE.get(code)
    return model, model is not None and code != ord(model.code)


def decode_triplet(data: bytes, offset: int) -> tuple[float, int, bool] | None:
    """Temperature (°C), humidity (%) and the Fahrenheit display flag at ``offset``.

    ``None`` when all three values are zero: the device has not measured yet
    (PySwitchbot ``test_wosensor_active_zero_data``).
    """
    if len(data) < offset + 3:
        raise DecodeError(f"{len(data)} bytes end before the temperature at byte {offset}")
    a, b, c = data[offset], data[offset + 1], data[offset + 2]
    tenths = a & 0x0F
    if tenths > 9:
        raise DecodeError(f"temperature decimal digit {tenths} is not 0-9 (byte {a:#04x})")
    humidity = c & 0x7F
    if humidity > 100:
        raise DecodeError(f"humidity {humidity} % is not possible (byte {c:#04x})")
    degrees = (b & 0x7F) + tenths / 10
    if not b & 0x80:  # the sign bit is set for temperatures >= 0
        degrees = -degrees
    if degrees == 0 and humidity == 0:
        return None
    return round(degrees, 1), humidity, bool(c & 0x80)


def mac_bytes(address: str) -> bytes | None:
    """``"AA:BB:CC:DD:EE:FF"`` -> 6 bytes; ``None`` for anything else (e.g. macOS UUIDs)."""
    try:
        raw = bytes.fromhex(address.replace(":", "").replace("-", ""))
    except ValueError:
        return None
    return raw if len(raw) == 6 else None


def switchbot_service_data(service_data: Mapping[str, bytes]) -> bytes | None:
    """The SwitchBot service data (0xFD3D preferred over the older 0x0D00), if present."""
    for uuid in SERVICE_UUIDS:
        if uuid in service_data:
            return bytes(service_data[uuid])
    return None


def is_switchbot(manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes]) -> bool:
    """Whether an advert carries a SwitchBot container (new or old company id, service data)."""
    return (
        COMPANY_ID in manufacturer_data
        or OLD_COMPANY_ID in manufacturer_data
        or any(uuid in service_data for uuid in SERVICE_UUIDS)
    )


def decode(
    manufacturer_data: Mapping[int, bytes],
    service_data: Mapping[str, bytes],
    address: str,
    model: Model | None = None,
) -> Decoded:
    """Decode one advertisement as bleak reports it.

    ``model`` is the configured or learned model, used when the advert carries no service
    data (passive scans). Raises :class:`DecodeError` for SwitchBot payloads that cannot be
    decoded; never anything else.
    """
    svc = switchbot_service_data(service_data)
    mfr = manufacturer_data.get(COMPANY_ID)
    if svc is None and mfr is None:
        old = manufacturer_data.get(OLD_COMPANY_ID)
        if old is not None and bytes(old) == mac_bytes(address):
            return Decoded(OLD_FIRMWARE, model)
        return Decoded(FOREIGN)
    pairing = False
    if svc is not None:
        model, pairing = model_of(svc)
        if model is None:
            return Decoded(OTHER_PRODUCT, service_data=svc)
    if model is None:
        return Decoded(UNKNOWN_MODEL)
    dropped: list[str] = []
    battery = None
    if svc is not None and model.has_battery:
        if len(svc) < 3:
            raise DecodeError(f"{model.title} service data of {len(svc)} bytes has no battery")
        battery = svc[2] & 0x7F
        if battery == 0 and not any(svc[1:]):
            battery = None  # an all-zero payload: nothing measured yet
        elif battery > 100:
            dropped.append(f"battery {battery} % is above 100 %")
            battery = None
    triplet = None
    if mfr is not None:
        triplet = decode_triplet(bytes(mfr), model.th_offset)
    elif svc is not None and model.service_th:
        triplet = decode_triplet(svc, 3)
    co2 = None
    if mfr is not None and model.co2_offset is not None:
        end = model.co2_offset + 2
        if len(mfr) < end:
            raise DecodeError(f"{model.title} manufacturer data of {len(mfr)} bytes has no CO2")
        co2 = int.from_bytes(mfr[model.co2_offset : end], "big")
        low, high = CO2_RANGE_PPM
        if not low <= co2 <= high:
            dropped.append(f"CO2 {co2} ppm is outside the sensor's {low}-{high} ppm")
            co2 = None
    temperature, humidity, fahrenheit = triplet if triplet else (None, None, False)
    return Decoded(
        READING,
        model,
        temperature,
        humidity,
        battery,
        co2,
        fahrenheit,
        pairing,
        svc,
        tuple(dropped),
    )
