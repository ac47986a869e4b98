"""SKSTACK-IP and ECHONET Lite parsing against public vectors, and fuzzing of the parsers."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kansoku_plugins.smartmeter import echonet as el
from kansoku_plugins.smartmeter import skstack as sk
from kansoku_plugins.smartmeter.errors import ParseError

JST = ZoneInfo("Asia/Tokyo")
METER = "FE80:0000:0000:0000:021C:6400:6014:21A3"
STICK = "FE80:0000:0000:0000:021D:1290:0005:747B"


def frame(hex_text: str) -> el.Frame:
    return el.parse_frame(bytes.fromhex(hex_text))


# ------------------------------------------------------------------- ECHONET Lite


def test_get_request_matches_the_published_frame() -> None:
    request = el.get_request(0, [el.POWER, el.CURRENTS])
    assert request.encode().hex().upper() == "1081000005FF010288016202E700E800"


def test_negative_power_is_signed() -> None:
    answer = frame("1081000102880105FF017201E704FFFFFDF4")
    assert answer.esv == el.GET_RES and answer.tid == 1
    assert el.instantaneous_power(answer.values()[el.POWER]) == -524


def test_multi_property_answer() -> None:
    answer = frame("1081000102880105FF017203E70400000034E00400002EF1E304000059B6")
    values = answer.values()
    assert el.instantaneous_power(values[el.POWER]) == 52
    assert el.cumulative_count(values[el.ENERGY_IMPORT]) == 12017
    assert el.cumulative_count(values[el.ENERGY_EXPORT]) == 22966


def test_currents_are_signed_tenths_and_single_phase_t_is_absent() -> None:
    assert el.instantaneous_currents(bytes.fromhex("00140064")) == (2.0, 10.0)
    assert el.instantaneous_currents(bytes.fromhex("FFCC7FFE")) == (-5.2, None)


@pytest.mark.parametrize(
    ("edt", "expected"),
    [("7FFFFFFE", None), ("7FFFFFFF", None), ("80000000", None), ("FFFFFCB8", -840)],
)
def test_power_no_data_codes_are_absent_not_huge(edt: str, expected: int | None) -> None:
    assert el.instantaneous_power(bytes.fromhex(edt)) == expected


@pytest.mark.parametrize(
    ("edt", "expected"), [("FFFFFFFE", None), ("05F5E100", None), ("0000FE73", 65139)]
)
def test_energy_counts_no_data_and_range(edt: str, expected: int | None) -> None:
    assert el.cumulative_count(bytes.fromhex(edt)) == expected


def test_energy_scale_d3_times_e1() -> None:
    assert el.energy_unit_kwh(bytes.fromhex("02")) == Fraction(1, 100)
    assert el.to_wh(12345, 10, el.energy_unit_kwh(b"\x02")) == 1_234_500
    assert el.to_wh(65139, 1, Fraction(1, 10)) == 6_513_900
    with pytest.raises(ParseError):
        el.energy_unit_kwh(b"\x05")


def test_fixed_time_energy_uses_the_meters_clock() -> None:
    answer = frame("1081000102880105FF017302EA0B07E70C13001E000000458EEB0B07E70C13001E0000000015")
    values = answer.values()
    stamp, count = el.fixed_time_energy(values[el.FIXED_IMPORT], JST)
    expected = dt.datetime(2023, 12, 19, 0, 30, tzinfo=JST)
    assert stamp == int(expected.timestamp()) * 10**9
    assert count == 17806
    assert el.fixed_time_energy(values[el.FIXED_EXPORT], JST)[1] == 21


def test_instance_list() -> None:
    notification = frame("108100000EF0010EF0017301D50401028801")
    edt = notification.values()[el.INSTANCE_LIST]
    assert el.instance_list(edt) == [el.METER]


def test_get_sna_keeps_the_property_without_data() -> None:
    answer = frame("1081000102880105FF0152018300")
    assert answer.is_failure and answer.values() == {} and answer.properties == ((0x83, b""),)


def test_property_map_uses_a_bitmap_from_16_entries() -> None:
    small = el.property_map([0x80, 0xE7])
    assert small == bytes([2, 0x80, 0xE7])
    epcs = [0x80, 0x81, 0x82, 0x88, 0x8A, 0x8D, 0x97, 0x98, 0x9D, 0x9E, 0x9F, 0xD3, 0xD7]
    epcs += [0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE7, 0xE8, 0xEA, 0xEB, 0xEC, 0xED]
    # the map a real Toshiba meter sent (25 properties)
    assert el.property_map(epcs).hex().upper() == "1941414160404000624300414040430202"


@pytest.mark.parametrize(
    "data", ["", "1081", "1082000102880105FF017201E704000002", "1081000102880105FF017201E70400"]
)
def test_malformed_frames_raise_parse_error(data: str) -> None:
    with pytest.raises(ParseError):
        el.parse_frame(bytes.fromhex(data))


# ------------------------------------------------------------------- SKSTACK-IP


def test_bp35a1_erxudp_has_nine_tokens() -> None:
    line = (
        f"ERXUDP {METER} {STICK} 0E1A 0E1A 001C6400601421A3 1 0012 "
        "1081000102880105FF017201D30400000001"
    )
    rx = sk.parse_line(line)
    assert isinstance(rx, sk.RxUdp)
    assert (rx.sender, rx.rport, rx.secured, rx.side, rx.rssi) == (METER, 0x0E1A, 1, None, None)
    assert el.coefficient(el.parse_frame(rx.data).values()[el.COEFFICIENT]) == 1


def test_bp35c2_erxudp_has_a_side_and_optional_rssi() -> None:
    base = f"ERXUDP {METER} {STICK} 0E1A 0E1A 0011223344556677"
    rx = sk.parse_line(f"{base} 1 0 0012 1081525302880105FF017201E704000000E4")
    assert isinstance(rx, sk.RxUdp) and (rx.side, rx.secured, rx.rssi) == (0, 1, None)
    assert el.parse_frame(rx.data).tid == 0x5253
    rx = sk.parse_line(f"{base} B4 1 0 0012 1081525302880105FF017201E704000000E4")
    assert isinstance(rx, sk.RxUdp) and (rx.rssi, rx.secured, rx.side) == (0xB4, 1, 0)


def test_events_of_both_dialects() -> None:
    assert sk.parse_line(f"EVENT 21 {METER} 00") == sk.Event(0x21, METER, None, 0)
    assert sk.parse_line(f"EVENT 21 {METER} 0 02") == sk.Event(0x21, METER, 0, 2)
    assert sk.parse_line(f"EVENT 25 {METER}") == sk.Event(0x25, METER)
    assert sk.parse_line(f"EVENT 25 {METER} 0") == sk.Event(0x25, METER, 0, None)
    assert sk.parse_line("EVENT C0") == sk.Event(0xC0, "")


def test_other_lines() -> None:
    assert sk.parse_line("OK") == sk.Ok()
    assert sk.parse_line("OK 01") == sk.Ok("01")
    assert sk.parse_line("FAIL ER05") == sk.Fail("ER05")
    assert sk.parse_line("EVER 1.2.10") == sk.Reply("EVER", ("1.2.10",))
    assert sk.parse_line("  Pan ID:8888") == sk.PanField("Pan ID", "8888")
    assert sk.parse_line(METER) == sk.Address(METER)
    assert sk.parse_line("SKSETPWD C 0123456789AB") == sk.Echo("SKSETPWD C 0123456789AB")


def test_dialect_detection_and_commands() -> None:
    a1 = sk.parse_line(
        "EINFO FE80:0000:0000:0000:021D:1290:1234:5678 001D129012345678 21 8888 FFFE"
    )
    c2 = sk.parse_line("EINFO FE80:0000:0000:0000:021D:1291:0004:FFFF 001D12910004FFFF 39 9E08 0")
    assert isinstance(a1, sk.Reply) and isinstance(c2, sk.Reply)
    assert sk.detect_dialect(a1) is sk.BP35A1 and sk.detect_dialect(c2) is sk.BP35C2
    assert sk.BP35A1.scan(6) == "SKSCAN 2 FFFFFFFF 6"
    assert sk.BP35C2.scan(6) == "SKSCAN 2 FFFFFFFF 6 0"
    assert sk.BP35A1.sendto(METER, 14) == f"SKSENDTO 1 {METER} 0E1A 1 000E "
    assert sk.BP35C2.sendto(METER, 14) == f"SKSENDTO 1 {METER} 0E1A 1 0 000E "
    assert sk.mac_to_link_local("001C6400601421A3") == METER


def test_stream_parser_reads_binary_data_containing_crlf() -> None:
    payload = bytes.fromhex("1081000102880105FF017201E70400000D0A")
    head = f"ERXUDP {METER} {STICK} 0E1A 0E1A 001C6400601421A3 1 0 0012 ".encode()
    stream = b"OK\r\n" + head + payload + b"\r\nEVENT 21 " + METER.encode() + b" 0 00\r\n"
    parser = sk.StreamParser()
    items = [item for byte in stream for item in parser.feed(bytes([byte]))]
    assert items[0] == sk.Ok()
    assert isinstance(items[1], sk.RxUdp) and items[1].data == payload
    assert not items[1].hex_data
    assert el.instantaneous_power(el.parse_frame(items[1].data).values()[el.POWER]) == 3338
    assert items[2] == sk.Event(0x21, METER, 0, 0)


def test_stream_parser_splits_text_glued_before_erxudp() -> None:
    line = (
        f"ERXUDP {METER} {STICK} 0E1A 0E1A 001C6400601421A3 1 000F 1081000102880105FF017201E10101"
    )
    items = sk.StreamParser().feed(b"\x00\xffjunk" + line.encode() + b"\r\nOK\r")
    assert isinstance(items[0], sk.Garbage)
    assert isinstance(items[1], sk.RxUdp) and items[1].hex_data
    assert items[2] == sk.Ok()


def test_redactor_masks_credentials_everywhere() -> None:
    redact = sk.Redactor(["00112233445566778899AABBCCDDEEFF", "0123456789AB"])
    assert redact("SKSETPWD C 0123456789AB") == "SKSETPWD C ***"
    assert redact("SKSETRBID 00112233445566778899AABBCCDDEEFF") == "SKSETRBID ***"
    assert redact("  PairID:CCDDEEFF") == "  PairID:***"
    assert "0123456789AB" not in redact("garbage 0123456789AB here")
    assert sk.Redactor()("SKSETPWD C anything") == "SKSETPWD C ***"


# ------------------------------------------------------------------- fuzzing

LINE_WORDS = st.sampled_from(
    ["EVENT", "ERXUDP", "OK", "FAIL", "EPANDESC", "21", "0", "00", METER, "0E1A", "0012", "ZZ"]
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_frame_parser_raises_only_parse_error(data: bytes) -> None:
    try:
        parsed = el.parse_frame(data)
    except ParseError:
        return
    assert parsed.encode() == data


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=60))
def test_frame_parser_on_frames_with_a_valid_header(tail: bytes) -> None:
    try:
        el.parse_frame(el.EHD + tail)
    except ParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=16))
def test_property_decoders_raise_only_parse_error(edt: bytes) -> None:
    for decode in (
        el.instantaneous_power,
        el.instantaneous_currents,
        el.cumulative_count,
        el.coefficient,
        el.energy_unit_kwh,
        el.digits,
        el.instance_list,
        lambda e: el.fixed_time_energy(e, JST),
    ):
        try:
            decode(edt)
        except ParseError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=120), st.lists(LINE_WORDS, max_size=12).map(" ".join)))
def test_line_and_event_parsers_raise_only_parse_error(line: str) -> None:
    for parse in (sk.parse_line, lambda text: sk.parse_event(text.split())):
        try:
            parse(line)
        except ParseError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_stream_parser_never_raises(chunks: list[bytes]) -> None:
    parser = sk.StreamParser()
    for chunk in chunks:
        parser.feed(chunk)


STREAM_PIECES = st.sampled_from(
    [
        b"OK\r\n",
        b"FAIL ER04\r\n",
        f"EVENT 21 {METER} 0 00\r\n".encode(),
        f"ERXUDP {METER} {STICK} 0E1A 0E1A 001C6400601421A3 1 0 0002 \r\n\r\n".encode(),
        f"ERXUDP {METER} {STICK} 0E1A 0E1A 001C6400601421A3 1 0002 0D0A\r\n".encode(),
        b"\x00\xfe garbage\r\n",
        b"  Channel:21\r\n",
        b"\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(STREAM_PIECES, max_size=8), st.integers(1, 7))
def test_stream_parser_does_not_depend_on_how_bytes_arrive(pieces: list[bytes], step: int) -> None:
    stream = b"".join(pieces)
    whole = sk.StreamParser().feed(stream)
    parser = sk.StreamParser()
    chunked = [
        item for i in range(0, len(stream), step) for item in parser.feed(stream[i : i + step])
    ]
    assert chunked == whole
    assert sum(isinstance(i, sk.RxUdp) for i in whole) == sum(b"ERXUDP" in p for p in pieces)
