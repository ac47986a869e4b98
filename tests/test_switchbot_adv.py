"""The SwitchBot decoder against public advertisement bytes, synthetic edge cases and fuzzing.

Public vectors come from the research notes (switchbot-ble.md §2); each test names where the
bytes were published. ``mfr`` is bleak's ``manufacturer_data[2409]`` (company id stripped),
``svc`` the 0xFD3D service data. Vectors marked SYNTHETIC are derived by hand from a public one.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kansoku_plugins.switchbot import adv
from kansoku_plugins.switchbot.capture import CaptureError, parse_line

ADDRESS = "AA:BB:CC:DD:EE:FF"
MODEL = adv.MODELS_BY_SLUG


def decode(mfr: str | None = None, svc: str | None = None, model: str | None = None, **kw):
    makers = {adv.COMPANY_ID: bytes.fromhex(mfr)} if mfr else {}
    service = {adv.SERVICE_UUID: bytes.fromhex(svc)} if svc is not None else {}
    return adv.decode(makers, service, kw.get("address", ADDRESS), MODEL.get(model or ""))


# (source, mfr, svc, configured model, expected model, temperature, humidity, battery, F flag)
PUBLIC = [
    (
        "sblibs/pySwitchbot tests/test_adv_parser.py::test_wosensor_passive_and_active",
        "d7c17d5deb43de03069835",
        "5400e4069835",
        None,
        "meter",
        24.6,
        53,
        100,
        False,
    ),
    (
        "sblibs/pySwitchbot tests/test_adv_parser.py::test_wosensor_passive_only",
        "d7c17d5deb43de03069835",
        None,
        "meter",
        "meter",
        24.6,
        53,
        None,
        False,
    ),
    (
        "sblibs/pySwitchbot tests/test_adv_parser.py::test_woiosensor_passive_and_active",
        "aabbccddeeffe00f06983500",
        "7700e4",
        None,
        "outdoor-meter",
        24.6,
        53,
        100,
        False,
    ),
    (
        "sblibs/pySwitchbot tests/test_adv_parser.py::test_meter_pro_active",
        "b0e9fe52dd84066408972c0005",
        "340064",
        None,
        "meter-pro",
        23.8,
        44,
        100,
        False,
    ),
    (
        "sblibs/pySwitchbot tests/test_adv_parser.py::test_meter_pro_passive",
        "b0e9fe52dd84066408972c0005",
        None,
        "meter-pro",
        "meter-pro",
        23.8,
        44,
        None,
        False,
    ),
    (
        "sblibs/pySwitchbot tests/test_adv_parser.py::test_wohub2_passive_and_active",
        "aabbccddeeff00ff66541af182079a3200",
        "7600",
        None,
        "hub2",
        26.7,
        50,
        None,
        False,
    ),
    (
        "theengs/decoder tests/BLE/test_ble.cpp test_uuid 'Switchbot_Meter_Plus'",
        None,
        "6900ba18993b",
        None,
        "meter-plus",
        25.8,
        59,
        58,
        False,
    ),
    (
        "theengs/decoder tests/BLE/test_ble.cpp test_mfgdata 'SwitchBot Meter ManData' #1",
        "aabbccddeeff4a0109962f",
        None,
        "meter-plus",
        "meter-plus",
        22.9,
        47,
        None,
        False,
    ),
    (
        "theengs/decoder tests/BLE/test_ble.cpp test_mfgdata 'SwitchBot Meter ManData' #2",
        "aabbccddeeff4801009732",
        None,
        "meter-plus",
        "meter-plus",
        23.0,
        50,
        None,
        False,
    ),
    (
        "theengs/decoder tests/BLE/test_ble.cpp test_mfgdata 'SwitchBot Meter ManData' #3",
        "aabbccddeeff3e0908965b",
        None,
        "meter-plus",
        "meter-plus",
        22.8,
        91,
        None,
        False,
    ),
    (
        "theengs/decoder tests/BLE/test_ble.cpp test_name_uuid_mfgsvcdata 'SwitchBot Outdoor'",
        "aabbccddeeff8b0305993200",
        "770064",
        None,
        "outdoor-meter",
        25.5,
        50,
        100,
        False,
    ),
    (
        "theengs/decoder tests/BLE/test_ble.cpp test_meter_th_plus (Fahrenheit display)",
        None,
        "6900640098a6",
        None,
        "meter-plus",
        24.0,
        38,
        100,
        True,
    ),
    (
        "custom-components/ble_monitor#784 (Tasmota raw advert, Fahrenheit display)",
        "c4f92675df22dc030096a9",
        "6900640096a9",
        None,
        "meter-plus",
        22.0,
        41,
        100,
        True,
    ),
    (
        "home-assistant/core#89241 (rawAdvData b'i\\x00K\\x01\\x97\\x1f')",
        None,
        "69004b01971f",
        None,
        "meter-plus",
        23.1,
        31,
        75,
        False,
    ),
    (
        "theengs/decoder#518 (passive, name WoSensorTHP)",
        "f3a55d0e57215f01049629",
        None,
        "meter-plus",
        "meter-plus",
        22.4,
        41,
        None,
        False,
    ),
    (
        "home-assistant/core#129973 (Shelly gateway, passive; model configured)",
        "e8893eec8f82d803029142",
        None,
        "meter",
        "meter",
        17.2,
        66,
        None,
        False,
    ),
    (
        "custom-components/ble_monitor#1411 (Outdoor fw v0.8, Android raw)",
        "c76b0406155eff0203981f00",
        "770064",
        None,
        "outdoor-meter",
        24.3,
        31,
        100,
        False,
    ),
    (
        "sblibs/pySwitchbot tests/test_adv_parser.py::test_meter_pro_c_passive",
        "b0e9fe543215b7e4079ba4003702d500",
        None,
        "meter-pro-co2",
        "meter-pro-co2",
        27.7,
        36,
        None,
        True,
    ),
]


@pytest.mark.parametrize(
    ("source", "mfr", "svc", "configured", "model", "temp", "hum", "batt", "fahrenheit"),
    PUBLIC,
    ids=[row[0] for row in PUBLIC],
)
def test_public_vectors(source, mfr, svc, configured, model, temp, hum, batt, fahrenheit):
    decoded = decode(mfr, svc, configured)
    assert decoded.kind == adv.READING
    assert decoded.model is MODEL[model]
    assert (decoded.temperature_c, decoded.humidity_pct) == (temp, hum)
    assert decoded.battery_pct == batt
    assert decoded.fahrenheit_display is fahrenheit
    assert decoded.dropped == ()


def test_meter_pro_co2_theengs_vector():
    # theengs/decoder tests/BLE/test_ble.cpp (commit 008ae54b) "SwitchBot Meter Pro (CO2)"
    decoded = decode("b0e9feddeeff0ce40896280004037d00", "350064")
    assert decoded.model is MODEL["meter-pro-co2"]
    assert (decoded.temperature_c, decoded.humidity_pct, decoded.co2_ppm) == (22.8, 40, 893)
    assert decoded.battery_pct == 100


def test_co2_outside_the_sensor_range_is_dropped_with_a_reason():
    # sblibs/pySwitchbot tests/test_adv_parser.py::test_meter_pro_c_co2_out_of_range_dropped
    decoded = decode("b0e9fe543215b7e4079ba400379c4000", "350064")
    assert decoded.co2_ppm is None
    assert decoded.dropped == ("CO2 40000 ppm is outside the sensor's 1-9999 ppm",)
    assert (decoded.temperature_c, decoded.humidity_pct) == (27.7, 36)


def test_co2_at_the_upper_bound_is_kept():
    # sblibs/pySwitchbot tests/test_adv_parser.py::test_meter_pro_c_co2_boundary_accepted
    assert decode("b0e9fe543215b7e4079ba40037270f00", "350064").co2_ppm == 9999


def test_all_zero_payload_is_no_reading():
    # sblibs/pySwitchbot tests/test_adv_parser.py::test_wosensor_active_zero_data
    decoded = decode(None, "540000000000")
    assert decoded.kind == adv.READING
    assert (decoded.temperature_c, decoded.humidity_pct, decoded.battery_pct) == (None,) * 3


def test_passive_advert_without_a_model_is_not_guessed():
    # home-assistant/core#129973: passive only, HA found "No unconfigured devices"
    assert decode("e8893eec8f82d803029142").kind == adv.UNKNOWN_MODEL


def test_service_data_names_the_model_over_the_configured_one():
    # sblibs/pySwitchbot test_wosensor_passive_and_active bytes, configured wrongly as hub2
    assert decode("d7c17d5deb43de03069835", "5400e4069835", "hub2").model is MODEL["meter"]


def test_old_firmware_meter_is_recognised_not_decoded():
    # custom-components/ble_monitor#764: raw 09ff5900ce07223569f2 = company 0x0059 + the MAC
    old = {adv.OLD_COMPANY_ID: bytes.fromhex("ce07223569f2")}
    assert adv.decode(old, {}, "CE:07:22:35:69:F2").kind == adv.OLD_FIRMWARE
    assert adv.decode(old, {}, "11:22:33:44:55:66").kind == adv.FOREIGN  # some other Nordic device


def test_older_service_uuid_and_preference_for_fd3d():
    # home-assistant/core#140405: one gen-1 Meter with both UUIDs and differing values
    both = {
        adv.SERVICE_UUID: bytes.fromhex("54006486869b"),
        adv.OLD_SERVICE_UUID: bytes.fromhex("54006484869b"),
    }
    assert adv.decode({}, both, ADDRESS).temperature_c == 6.6
    only_old = {adv.OLD_SERVICE_UUID: both[adv.OLD_SERVICE_UUID]}
    decoded = adv.decode({}, only_old, ADDRESS)
    assert (decoded.model, decoded.temperature_c, decoded.humidity_pct) == (MODEL["meter"], 6.4, 27)


def test_manufacturer_data_wins_over_stale_service_data():
    # research notes §1.5 row 24 shape: BlueZ merges an older scan response beside a fresh advert.
    # SYNTHETIC: pySwitchbot test_wosensor_passive_and_active mfr with the svc triplet at 20.1 C
    decoded = decode("d7c17d5deb43de03069835", "5400e4011435")
    assert (decoded.temperature_c, decoded.humidity_pct) == (24.6, 53)


@pytest.mark.parametrize(
    ("svc", "model"),
    [
        ("7400e4069835", "meter"),  # SYNTHETIC: 't' (pairing) from pySwitchbot's 'T' vector
        ("4900640096a9", "meter-plus"),  # SYNTHETIC: 'I' from ble_monitor#784's 'i'
        ("5700e4", "outdoor-meter"),  # SYNTHETIC: 'W' from pySwitchbot's 'w'
        ("140064", "meter-pro"),  # SYNTHETIC: b'\x14' from pySwitchbot's '4'
        ("150064", "meter-pro-co2"),  # SYNTHETIC: b'\x15' from pySwitchbot's '5'
        ("5600", "hub2"),  # SYNTHETIC: 'V' from pySwitchbot's 'v'
    ],
)
def test_pairing_mode_model_characters(svc, model):
    decoded = decode(None, svc)
    assert decoded.model is MODEL[model]
    assert decoded.pairing


def test_encrypted_bit_is_masked():
    # SYNTHETIC: ble_monitor#784 svc with bit 7 of byte 0 set
    assert decode(None, "e900640096a9").model is MODEL["meter-plus"]


@pytest.mark.parametrize(
    ("svc", "battery"),
    [
        ("69000a18993b", 10),  # SYNTHETIC: theengs 'Switchbot_Meter_Plus' with battery 0x0a
        ("69008518993b", 5),  # SYNTHETIC: same, battery 5 with the reserved bit 7 set
        ("77000f", 15),  # SYNTHETIC: Outdoor svc of pySwitchbot with battery 15
        ("340001", 1),  # SYNTHETIC: Meter Pro svc of pySwitchbot with battery 1
    ],
)
def test_low_battery(svc, battery):
    assert decode(None, svc).battery_pct == battery


def test_sub_zero_temperature():
    # SYNTHETIC: Outdoor mfr of ble_monitor#1411 with the triplet 05 03 32 (sign bit clear)
    decoded = decode("c76b0406155eff0205033200", "770064")
    assert (decoded.temperature_c, decoded.humidity_pct) == (-3.5, 50)


def test_other_switchbot_products_and_foreign_adverts_are_ignored():
    # pySwitchbot test_hub3_active service data (model byte 0x00, identified by its suffix)
    assert decode(None, "0000640010b940").kind == adv.OTHER_PRODUCT
    assert decode(None, "48d064").kind == adv.OTHER_PRODUCT  # SYNTHETIC: 'H' = Bot
    apple = {76: bytes.fromhex("0215" + "00" * 21)}
    assert adv.decode(apple, {}, ADDRESS).kind == adv.FOREIGN


@pytest.mark.parametrize(
    ("mfr", "svc", "model", "message"),
    [
        (None, "69007f0a8180", None, "decimal digit 10"),  # node-switchbot wosensorth.test.ts
        (None, "69006400f5", None, "5 bytes end before"),  # SYNTHETIC: truncated
        ("d7c17d5deb", None, "meter-plus", "5 bytes end before"),  # SYNTHETIC: truncated
        (None, "6900640096e5", None, "humidity 101 %"),  # SYNTHETIC: impossible humidity
        ("b0e9fe543215b7e4079ba40037", "350064", None, "has no CO2"),  # SYNTHETIC: truncated
        (None, "", None, "empty"),
        (None, "69", None, "has no battery"),
    ],
)
def test_malformed_payloads_raise_the_decode_error(mfr, svc, model, message):
    with pytest.raises(adv.DecodeError, match=message):
        decode(mfr, svc, model)


CODES = [ord(m.code) ^ flip for m in adv.MODELS for flip in (0, adv.PAIRING_BIT, 0x80)]
payloads = st.one_of(
    st.binary(max_size=24),
    st.builds(
        lambda code, rest: bytes([code]) + rest, st.sampled_from(CODES), st.binary(max_size=20)
    ),
)
service_maps = st.dictionaries(
    st.sampled_from([*adv.SERVICE_UUIDS, "0000fe95-0000-1000-8000-00805f9b34fb"]),
    payloads,
    max_size=2,
)
maker_maps = st.dictionaries(
    st.sampled_from([adv.COMPANY_ID, adv.OLD_COMPANY_ID, 76]) | st.integers(0, 0xFFFF),
    payloads,
    max_size=3,
)


@given(
    maker_maps,
    service_maps,
    st.sampled_from([ADDRESS, "aa:bb:cc:dd:ee:ff", "not-a-mac", ""]),
    st.sampled_from([None, *adv.MODELS]),
)
def test_arbitrary_bytes_raise_nothing_but_the_decode_error(makers, service, address, model):
    try:
        decoded = adv.decode(makers, service, address, model)
    except adv.DecodeError:
        return
    assert decoded.kind in (
        adv.READING,
        adv.UNKNOWN_MODEL,
        adv.OLD_FIRMWARE,
        adv.OTHER_PRODUCT,
        adv.FOREIGN,
    )
    if decoded.humidity_pct is not None:
        assert 0 <= decoded.humidity_pct <= 100
    if decoded.battery_pct is not None:
        assert 0 <= decoded.battery_pct <= 100


@given(st.text(max_size=200))
def test_arbitrary_capture_lines_raise_nothing_but_the_capture_error(line):
    try:
        parse_line(line)
    except CaptureError:
        pass
