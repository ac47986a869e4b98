"""The emulator speaks SKSTACK-IP as the reference manual and real logs show (raw pyserial)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from kansoku_plugins.smartmeter import echonet as el
from kansoku_plugins.smartmeter import skstack as sk
from kansoku_plugins.smartmeter.emulator import Emulator
from kansoku_plugins.smartmeter.emulator_settings import EmulatorSettings
from tests import test_smartmeter_fixtures as fixtures
from tests.test_smartmeter_fixtures import ROUTE_B_ID

METER_IP = "FE80:0000:0000:0000:021C:6400:6014:21A3"

emulator = fixtures.emulator


class Stick:
    """A raw serial conversation with the emulated stick."""

    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, 115200, timeout=0.05)

    def talk(self, data: bytes, until: bytes, timeout: float = 2.0) -> bytes:
        self.port.write(data)
        received = b""
        end = time.monotonic() + timeout
        while until not in received:
            assert time.monotonic() < end, f"no {until!r} in {received!r}"
            received += self.port.read(4096)
        return received

    def items_until(self, last, timeout: float = 2.0) -> list[sk.Item]:
        parser, items = sk.StreamParser(), []
        end = time.monotonic() + timeout
        while not any(last(item) for item in items):
            assert time.monotonic() < end, f"not found in {items}"
            items += parser.feed(self.port.read(4096))
        return items[: next(n for n, item in enumerate(items) if last(item)) + 1]


@pytest.fixture
def stick(emulator) -> Iterator:
    opened: list[Stick] = []

    def open_stick(**settings) -> tuple[Emulator, Stick]:
        emu = emulator(**settings)
        opened.append(Stick(emu.path))
        return emu, opened[-1]

    yield open_stick
    for s in opened:
        s.port.close()


def test_echo_and_version(stick) -> None:
    _, s = stick(dialect="bp35c2")
    assert s.talk(b"SKVER\r\n", b"OK\r\n") == b"SKVER\r\nEVER 1.5.2\r\nOK\r\n"
    assert s.talk(b"SKSREG SFE 0\r\n", b"OK\r\n") == b"SKSREG SFE 0\r\nOK\r\n"
    assert s.talk(b"SKVER\r\n", b"OK\r\n") == b"EVER 1.5.2\r\nOK\r\n"


def test_skinfo_tells_the_dialects_apart(stick) -> None:
    _, a1 = stick(dialect="bp35a1", echo=False, link_name="a1")
    _, c2 = stick(dialect="bp35c2", echo=False, link_name="c2")
    assert a1.talk(b"SKINFO\r\n", b"OK\r\n").split(b"\r\n")[0].endswith(b" 21 FFFF FFFE")
    assert c2.talk(b"SKINFO\r\n", b"OK\r\n").split(b"\r\n")[0].endswith(b" 21 FFFF 0")


def test_product_configuration_commands_use_cr_only(stick) -> None:
    _, s = stick(echo=False, data="binary")
    assert s.talk(b"ROPT\r", b"\r") == b"OK 00\r"
    assert s.talk(b"WOPT 01\r", b"\r") == b"OK\r"
    assert s.talk(b"ROPT\r", b"\r") == b"OK 01\r"


def test_ropt_unsupported_like_a_tessera_stick(stick) -> None:
    _, s = stick(echo=False, ropt=False)
    assert s.talk(b"ROPT\r", b"\r") == b"FAIL ER04\r"


def test_errors(stick) -> None:
    _, s = stick(dialect="bp35c2", echo=False)
    assert s.talk(b"SKNONSENSE\r\n", b"\r\n") == b"FAIL ER04\r\n"
    assert s.talk(b"SKSCAN 2 FFFFFFFF 6\r\n", b"\r\n") == b"FAIL ER05\r\n"  # BP35C2 wants SIDE
    assert s.talk(b"SKSREG S02 99\r\n", b"\r\n") == b"FAIL ER06\r\n"
    assert s.talk(b"SKTERM\r\n", b"\r\n") == b"FAIL ER10\r\n"
    header = f"SKSENDTO 1 {METER_IP} 0E1A 1 0004 ".encode()  # BP35A1 syntax on a BP35C2
    assert s.talk(header + b"\r\n\r\n", b"\r\n") == b"FAIL ER05\r\n"
    assert s.talk(b"SKVER\r\n", b"OK\r\n") == b"EVER 1.5.2\r\nOK\r\n"  # data was consumed


def test_skll64_answers_without_ok(stick) -> None:
    _, s = stick(echo=False)
    assert s.talk(b"SKLL64 001C6400601421A3\r\n", b"\r\n") == f"{METER_IP}\r\n".encode()
    time.sleep(0.05)
    assert s.port.read(100) == b""


def test_a_classic_join_and_get_by_hand(stick) -> None:
    emu, s = stick(dialect="bp35a1", data="hex", echo=False, power_w=-840)
    s.talk(f"SKSETPWD C 0123456789AB\r\nSKSETRBID {ROUTE_B_ID}\r\n".encode(), b"OK\r\nOK\r\n")
    scan = s.talk(b"SKSCAN 2 FFFFFFFF 6\r\n", b"EVENT 22")
    assert b"EPANDESC\r\n  Channel:21\r\n  Channel Page:09\r\n  Pan ID:8888\r\n" in scan
    assert f"  PairID:{ROUTE_B_ID[-8:]}\r\n".encode() in scan and b"Side" not in scan
    s.talk(b"SKSREG S2 21\r\nSKSREG S3 8888\r\n", b"OK\r\nOK\r\n")
    join = s.talk(f"SKJOIN {METER_IP}\r\n".encode(), b"EVENT 25")
    assert f"EVENT 21 {METER_IP} 02\r\nEVENT 02 {METER_IP}\r\n".encode() in join
    assert b" 02CC 02CC 001C6400601421A3 0 0028 " in join  # PANA, not secured, hex data
    request = el.get_request(0x1234, [el.POWER]).encode()
    s.port.write(sk.BP35A1.sendto(METER_IP, len(request)).encode() + request)
    items = s.items_until(lambda i: isinstance(i, sk.RxUdp) and i.data[2:4] == b"\x12\x34")
    assert items[:2] == [sk.Event(0x21, METER_IP, None, 0), sk.Ok()]
    rx = items[-1]
    assert isinstance(rx, sk.RxUdp) and rx.side is None and rx.hex_data
    assert el.instantaneous_power(el.parse_frame(rx.data).values()[el.POWER]) == -840
    assert emu.stats.echonet_frames == 1


def test_wrong_password_ends_the_join_with_event_24(stick) -> None:
    _, s = stick(dialect="bp35c2", echo=False, password="RIGHTPASSWORD")
    s.talk(f"SKSETPWD 5 WRONG\r\nSKSETRBID {ROUTE_B_ID}\r\n".encode(), b"OK\r\nOK\r\n")
    s.talk(b"SKSREG S2 21\r\nSKSREG S3 8888\r\n", b"OK\r\nOK\r\n")
    join = s.talk(f"SKJOIN {METER_IP}\r\n".encode(), b"EVENT 24")
    assert f"EVENT 24 {METER_IP} 0\r\n".encode() in join and b"EVENT 25" not in join


def test_link_is_a_symlink_to_the_pty_and_follows_replugging(tmp_path: Path) -> None:
    link = tmp_path / "ttyWISUN"
    emu = Emulator(EmulatorSettings(), link=link)
    emu.start()
    try:
        first = link.resolve()
        assert link.is_symlink() and str(first).startswith("/dev/pts/")
        emu.unplug()
        assert not link.exists()
        emu.replug()
        assert link.is_symlink() and Stick(str(link)).talk(b"SKVER\r\n", b"OK\r\n")
    finally:
        emu.stop()
    assert not link.exists()


def test_refuses_to_replace_a_real_file(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    with pytest.raises(FileExistsError):
        Emulator(EmulatorSettings(), link=target).start()
    assert target.read_text() == "keep me"


def test_settings_from_the_config_option() -> None:
    from kansoku_plugins.smartmeter.emulator_settings import parse_settings

    settings = parse_settings("dialect=bp35a1, power_w=-524, current_t_a=none, unit_kwh=0.01")
    assert (settings.dialect, settings.power_w, settings.current_t_a) == ("bp35a1", -524, None)
    assert settings.unit_kwh == el.UNIT_KWH[0x02]
    with pytest.raises(ValueError, match="unknown emulator setting 'colour'"):
        parse_settings("colour=blue")
    with pytest.raises(ValueError, match="unit_kwh"):
        parse_settings("unit_kwh=0.5")
