"""SKSTACK-IP, the text protocol of Wi-SUN sticks: commands of both dialects, and a parser.

Two dialects exist. The BP35A1 family (BP35A1, RL7023 Stick-D/IPS, WSR35A1-00) writes
``ERXUDP`` with 9 tokens and events without a side. The dual-stack BP35C0/BP35C2 family
(RS-WSUHA-P, RL7023 Stick-D/DSS) adds a SIDE argument to SKSCAN and SKSENDTO and a SIDE column
to EVENT, ERXUDP and EPANDESC, plus an optional RSSI column (register SA2).

:class:`StreamParser` turns the byte stream of either dialect into items. ERXUDP data may be
hex text (WOPT 01) or raw bytes (WOPT 00) that can contain CR LF; the parser reads DATALEN bytes
and tells the two apart by what follows them, so it needs no ROPT. It never raises: what it
cannot parse becomes a :class:`Garbage` item. :func:`parse_line` raises only
:class:`~kansoku_plugins.smartmeter.errors.ParseError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kansoku_plugins.smartmeter.errors import ParseError

IPV6 = re.compile(r"[0-9A-F]{4}(?::[0-9A-F]{4}){7}")
_HEX = re.compile(r"[0-9A-F]+")
_COMMAND_WORDS = ("SK", "WOPT", "ROPT", "WUART", "RUART")
MAX_LINE = 4096

# event numbers (BP35A1 command reference §5.11)
EV_UDP_SENT = 0x21
EV_SCAN_DONE = 0x22
EV_JOIN_FAILED = 0x24
EV_JOINED = 0x25
EV_PEER_TERMINATES = 0x26
EV_TERMINATED = 0x27
EV_TERMINATE_TIMEOUT = 0x28
EV_SESSION_EXPIRED = 0x29
EV_TX_LIMIT_ON = 0x32
EV_TX_LIMIT_OFF = 0x33


@dataclass(frozen=True)
class Ok:
    """``OK`` (optionally with a value, as ROPT answers ``OK 01``)."""

    value: str = ""


@dataclass(frozen=True)
class Fail:
    """``FAIL ERxx``: ER04 unknown command, ER05 argument count, ER06 bad argument, ER10 failed."""

    code: str


@dataclass(frozen=True)
class Reply:
    """An answer line such as ``EVER 1.2.10``, ``EINFO …``, ``ESREG 21`` or ``EPANDESC``."""

    keyword: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Address:
    """A bare IPv6 address: the answer to SKLL64 (which has no OK)."""

    ip: str


@dataclass(frozen=True)
class PanField:
    """One ``  Key:Value`` line of an EPANDESC block."""

    key: str
    value: str


@dataclass(frozen=True)
class Event:
    """``EVENT NUM SENDER [SIDE] [PARAM]``."""

    num: int
    sender: str
    side: int | None = None
    param: int | None = None


@dataclass(frozen=True)
class RxUdp:
    """An ERXUDP: a UDP datagram the stick received."""

    sender: str
    dest: str
    rport: int
    lport: int
    sender_lla: str
    secured: int
    side: int | None
    rssi: int | None
    data: bytes
    hex_data: bool = True


@dataclass(frozen=True)
class Echo:
    """The stick repeating a command (echo-back register SFE = 1)."""

    text: str


@dataclass(frozen=True)
class Garbage:
    """Bytes that are no SKSTACK-IP output."""

    raw: bytes
    reason: str = ""


Item = Ok | Fail | Reply | Address | PanField | Event | RxUdp | Echo | Garbage


@dataclass(frozen=True)
class Dialect:
    """How one stick family writes its commands."""

    name: str
    has_side: bool

    def scan(self, duration: int, channel_mask: int = 0xFFFFFFFF, mode: int = 2) -> str:
        """Active scan with the Pairing-ID IE (mode 2) on the channels of the mask."""
        side = " 0" if self.has_side else ""
        return f"SKSCAN {mode} {channel_mask:08X} {duration:X}{side}"

    def sendto(self, ip: str, length: int, port: int = 0x0E1A, secured: int = 1) -> str:
        """The SKSENDTO header (handle 1 = port 3610); the raw data follows it directly."""
        side = " 0" if self.has_side else ""
        return f"SKSENDTO 1 {ip} {port:04X} {secured}{side} {length:04X} "


BP35A1 = Dialect("bp35a1", has_side=False)
BP35C2 = Dialect("bp35c2", has_side=True)
DIALECTS = {d.name: d for d in (BP35A1, BP35C2)}


def detect_dialect(einfo: Reply) -> Dialect:
    """SKINFO's last field is the ADDR16 ``FFFE`` on a BP35A1 and a side (0/1) on a BP35C2."""
    if len(einfo.fields) < 5:
        raise ParseError(f"EINFO has {len(einfo.fields)} fields, expected at least 5")
    return BP35A1 if einfo.fields[4] == "FFFE" else BP35C2


def mac_to_link_local(mac: str) -> str:
    """The IPv6 link-local address of a 64-bit MAC (what SKLL64 computes)."""
    if len(mac) != 16 or not _HEX.fullmatch(mac):
        raise ParseError(f"{mac!r} is not a 64-bit MAC address in hex")
    first = int(mac[:2], 16) ^ 0x02
    iid = f"{first:02X}{mac[2:]}"
    return "FE80:0000:0000:0000:" + ":".join(iid[i : i + 4] for i in range(0, 16, 4))


def _hex(token: str, width: int | None, what: str) -> int:
    if not token or not _HEX.fullmatch(token) or (width is not None and len(token) != width):
        raise ParseError(f"{what} {token!r} is not a hex number of the right width")
    return int(token, 16)


def _ip(token: str, what: str) -> str:
    if not IPV6.fullmatch(token):
        raise ParseError(f"{what} {token!r} is not an IPv6 address")
    return token


def parse_event(tokens: Sequence[str]) -> Event:
    """``EVENT NUM SENDER [SIDE] [PARAM]`` of either dialect (tokens include ``EVENT``)."""
    if len(tokens) < 2 or len(tokens) > 5:
        raise ParseError(f"EVENT line with {len(tokens)} tokens")
    num = _hex(tokens[1], 2, "event number")
    if len(tokens) == 2:
        return Event(num, "")
    sender = _ip(tokens[2], "event sender")
    side = param = None
    for token in tokens[3:]:  # a 1-digit side (BP35C2) and/or a 2-digit parameter
        if len(token) == 1 and side is None and param is None:
            side = _hex(token, 1, "event side")
        elif len(token) == 2 and param is None:
            param = _hex(token, 2, "event parameter")
        else:
            raise ParseError(f"unexpected event token {token!r}")
    return Event(num, sender, side, param)


def rx_from_tokens(header: Sequence[str], data: bytes, hex_data: bool) -> RxUdp:
    """Build an ERXUDP from its header tokens (after the keyword, up to DATALEN)."""
    if len(header) < 7 or len(header) > 9:
        raise ParseError(f"ERXUDP header with {len(header)} tokens")
    sender = _ip(header[0], "ERXUDP sender")
    dest = _ip(header[1], "ERXUDP destination")
    rport = _hex(header[2], 4, "remote port")
    lport = _hex(header[3], 4, "local port")
    lla = header[4]
    _hex(lla, 16, "sender MAC")
    small = header[5:-1]
    rssi = side = None
    if len(small) == 3:  # BP35C2 with SA2=1
        rssi = _hex(small[0], 2, "RSSI")
        secured, side = _hex(small[1], 1, "SECURED"), _hex(small[2], 1, "side")
    elif len(small) == 2 and len(small[0]) == 2:  # Skyley HAN-extension firmware
        rssi, secured = _hex(small[0], 2, "RSSI"), _hex(small[1], 1, "SECURED")
    elif len(small) == 2:  # BP35C2
        secured, side = _hex(small[0], 1, "SECURED"), _hex(small[1], 1, "side")
    else:  # BP35A1
        secured = _hex(small[0], 1, "SECURED")
    length = _hex(header[-1], 4, "DATALEN")
    if len(data) != length:
        raise ParseError(f"ERXUDP DATALEN says {length} bytes but the data has {len(data)}")
    return RxUdp(sender, dest, rport, lport, lla, secured, side, rssi, data, hex_data)


def parse_line(text: str) -> Item:
    """Classify one complete line (without its line end)."""
    stripped = text.strip()
    if not stripped:
        raise ParseError("empty line")
    tokens = stripped.split()
    word = tokens[0]
    if word == "OK":
        return Ok(" ".join(tokens[1:]))
    if word == "FAIL":
        if len(tokens) != 2 or not re.fullmatch(r"ER\d\d", tokens[1]):
            raise ParseError(f"malformed FAIL line {stripped!r}")
        return Fail(tokens[1])
    if word == "EVENT":
        return parse_event(tokens)
    if word == "ERXUDP":
        if len(tokens) < 9:
            raise ParseError("ERXUDP line too short")
        payload = tokens[-1]
        if len(payload) % 2 or not _HEX.fullmatch(payload):
            raise ParseError("ERXUDP data is not hex text")
        return rx_from_tokens(tokens[1:-1], bytes.fromhex(payload), True)
    if IPV6.fullmatch(stripped):
        return Address(stripped)
    if text.startswith(" ") and ":" in stripped:
        key, _, value = stripped.partition(":")
        return PanField(key.strip(), value.strip())
    if word.startswith(_COMMAND_WORDS):
        return Echo(stripped)
    if re.fullmatch(r"E[A-Z]+", word):
        return Reply(word, tuple(tokens[1:]))
    raise ParseError(f"unknown line {stripped[:40]!r}")


class StreamParser:
    """Incremental parser for the stick's output: feed bytes, get complete items."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Item]:
        """Add received bytes; return every item they complete, in order."""
        self._buf += data
        items: list[Item] = []
        while (item := self._next()) is not None:
            items.append(item)
        return items

    def _next(self) -> Item | None:
        buf = self._buf
        skip = 0
        while skip < len(buf) and buf[skip] in b"\r\n":
            skip += 1
        del buf[:skip]
        if not buf:
            return None
        end = _line_end(buf, 0)
        start = buf.find(b"ERXUDP ")
        if start != -1 and (end == -1 or start < end):
            if start:
                return self._cut(start, "text before ERXUDP")
            return self._erxudp()
        if end == -1:
            return self._cut(len(buf), "line too long") if len(buf) > MAX_LINE else None
        raw = bytes(buf[:end])
        del buf[: end + 1]
        return _classify(raw)

    def _cut(self, length: int, reason: str) -> Item:
        raw = bytes(self._buf[:length])
        del self._buf[:length]
        item = _classify(raw)
        return item if isinstance(item, Echo) else Garbage(raw, reason)

    def _erxudp(self) -> Item | None:
        buf = self._buf
        pos = len(b"ERXUDP ")
        tokens: list[str] = []
        while True:
            space = buf.find(b" ", pos)
            end = _line_end(buf, pos)
            if end != -1 and (space == -1 or end < space):
                return self._cut(end, "ERXUDP line ends inside its header")
            if space == -1:
                return self._cut(len(buf), "ERXUDP header too long") if len(buf) > 256 else None
            tokens.append(bytes(buf[pos:space]).decode("ascii", "replace"))
            pos = space + 1
            if len(tokens) >= 7 and len(tokens[-1]) == 4:
                break
            if len(tokens) >= 9:
                return self._cut(pos, "ERXUDP header without DATALEN")
        if not _HEX.fullmatch(tokens[-1]):
            return self._cut(pos, "ERXUDP DATALEN is not hex")
        length = int(tokens[-1], 16)
        available = len(buf) - pos
        if available < length + 1:
            return None
        if buf[pos + length] in b"\r\n":  # raw bytes, then the line end
            data, hex_data, used = bytes(buf[pos : pos + length]), False, length + 1
        else:
            text = bytes(buf[pos : pos + min(available, 2 * length)])
            if not _HEX.fullmatch(text.decode("ascii", "replace")):
                end = _line_end(buf, pos)
                return self._cut(len(buf) if end == -1 else end, "ERXUDP data is not hex")
            if available < 2 * length + 1:
                return None
            if buf[pos + 2 * length] not in b"\r\n":
                end = _line_end(buf, pos)
                return self._cut(len(buf) if end == -1 else end, "ERXUDP data longer than DATALEN")
            data, hex_data, used = bytes.fromhex(text.decode("ascii")), True, 2 * length + 1
        del buf[: pos + used]
        try:
            return rx_from_tokens(tokens, data, hex_data)
        except ParseError as exc:
            return Garbage(("ERXUDP " + " ".join(tokens)).encode(), str(exc))


def _classify(raw: bytes) -> Item:
    try:
        return parse_line(raw.decode("ascii"))
    except (UnicodeDecodeError, ParseError) as exc:
        return Garbage(raw, str(exc))


def _line_end(buf: bytearray, start: int) -> int:
    ends = [i for i in (buf.find(b"\r", start), buf.find(b"\n", start)) if i != -1]
    return min(ends) if ends else -1


class Redactor:
    """Masks secrets in text meant for a log: the SKSETPWD/SKSETRBID arguments, the Pairing ID,
    and any appearance of the secret values themselves."""

    _COMMANDS = re.compile(r"(SKSETPWD\s+\S+\s+|SKSETRBID\s+)\S+")
    _PAIR_ID = re.compile(r"(PairID:)\s*\S+")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {s for s in secrets if s}
        values |= {s[-8:] for s in values if len(s) > 8}  # the Pairing ID is the ID's last 8
        self._values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        text = self._COMMANDS.sub(r"\1***", text)
        text = self._PAIR_ID.sub(r"\1***", text)
        for value in self._values:
            text = text.replace(value, "***")
        return text


def describe(item: Item) -> str:
    """A one-line rendering of an item for traces (redact it before logging)."""
    if isinstance(item, RxUdp):
        kind = "hex" if item.hex_data else "binary"
        return (
            f"ERXUDP {item.sender} {item.rport:04X}->{item.lport:04X} side={item.side} "
            f"secured={item.secured} {len(item.data)} bytes ({kind}) {item.data[:64].hex().upper()}"
        )
    if isinstance(item, Garbage):
        return f"garbage ({item.reason}): {item.raw[:120]!r}"
    if isinstance(item, PanField):
        return f"  {item.key}:{item.value}"
    if isinstance(item, Echo):
        return f"echo {item.text}"
    if isinstance(item, Event):
        side = "" if item.side is None else f" {item.side}"
        extra = side + ("" if item.param is None else f" {item.param:02X}")
        return f"EVENT {item.num:02X} {item.sender}{extra}"
    if isinstance(item, Reply):
        return " ".join((item.keyword, *item.fields))
    if isinstance(item, Ok):
        return f"OK {item.value}".rstrip()
    if isinstance(item, Fail):
        return f"FAIL {item.code}"
    return item.ip
