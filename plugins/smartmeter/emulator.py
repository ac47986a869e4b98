"""An emulated Wi-SUN stick with a smart meter behind it, on a pseudo-terminal.

The emulator opens a pty in raw mode and keeps its slave side open, so any serial program
(the agent, a cron script, minicom) opens the slave path — or the ``link`` symlink to it — as if
it were /dev/ttyUSB0. It speaks SKSTACK-IP in either personality (BP35A1: 9-token ERXUDP, no
SIDE; BP35C2: SIDE everywhere, optional RSSI column), with echo-back (SFE), hex or binary
ERXUDP data (WOPT), the product-configuration commands on CR only, an active scan that answers
only the right Pairing ID, a PANA join that fails with EVENT 24 on a wrong password, session
expiry (EVENT 29 then 25 or 24), the transmit-time limit (EVENT 32/33), and the meter model of
:mod:`.meter`. It also counts what the stick sends on air (:class:`Airtime`), which
``benchmarks/smartmeter_airtime.py`` uses.

Tests and the demo steer it through methods (:meth:`Emulator.expire_session`,
:meth:`Emulator.unplug`, …) that run inside its own thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import struct
import threading
import time
import tty
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kansoku_plugins.smartmeter import echonet as el
from kansoku_plugins.smartmeter import skstack as sk
from kansoku_plugins.smartmeter.emulator_settings import EmulatorSettings
from kansoku_plugins.smartmeter.errors import ParseError
from kansoku_plugins.smartmeter.meter import MeterModel

STICK_MAC = {"bp35a1": "001D129012345678", "bp35c2": "001D129100040578"}
METER_MAC = "001C6400601421A3"
FIRMWARE = {"bp35a1": "1.2.10", "bp35c2": "1.5.2"}
MULTICAST = "FF02:0000:0000:0000:0000:0000:0000:0001"
PANA_PORT = 0x02CC
# Airtime model [inferred, see docs/plugins/smartmeter.md]: every radio frame carries about 40
# bytes of PHY/MAC/security/6LoWPAN/UDP around its payload; an active scan sends one beacon
# request (with the Pairing-ID IE) per channel; a PANA join makes the stick send 4 messages.
FRAME_OVERHEAD = 40
BEACON_REQUEST = 12
PAC_PANA_SIZES = (16, 92, 84, 40)
PAA_PANA_SIZES = (0x28, 0x68, 0x54, 0x58)
TERMINATE_SIZE = 32
BITRATE = 100_000
VALID_CHANNELS = 0x0FFFFFFF  # channels 33-60 (mask bit 0 = channel 33)
PRODUCT_COMMANDS = ("WOPT", "ROPT", "WUART", "RUART")
GARBAGE = (b"\x00\x7f#%garbage\xff\xfe\r\n", b"ERXUDP FE80:broken line\r\n", b"EVENT zz\r\n")


@dataclass
class Airtime:
    """What the stick sent on air: radio frames and their bytes (payload + overhead)."""

    frames: int = 0
    bytes: int = 0

    def add(self, payload: int, frames: int = 1) -> None:
        """Count ``frames`` radio frames of ``payload`` bytes each."""
        self.frames += frames
        self.bytes += frames * (payload + FRAME_OVERHEAD)

    @property
    def tx_ms(self) -> int:
        """Transmit time at 100 kbit/s, as register SFD reports it."""
        return self.bytes * 8 * 1000 // BITRATE


@dataclass
class EmulatorStats:
    """Counters tests and the benchmark read."""

    commands: Counter[str] = field(default_factory=Counter)
    airtime: Airtime = field(default_factory=Airtime)
    echonet_frames: int = 0
    echonet_bytes: int = 0
    unplugs: int = 0


class _Fail(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Stick:
    """The volatile state of the module; SKRESET and unplugging start it afresh."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.echo = settings.echo
        self.rssi = settings.rssi
        self.channel = 0x21
        self.pan_id = 0xFFFF
        self.password = ""
        self.route_b_id = ""
        self.joined = False
        self.reauthing = False
        self.tx_limited = False


class Emulator:
    """A BP35A1- or BP35C2-like stick and a meter, served on a pty until :meth:`stop`."""

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        link: str | os.PathLike[str] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self.meter = MeterModel(self.settings)
        self.stats = EmulatorStats()
        self.link = Path(link) if link else None
        self.log = log or logging.getLogger(__name__)
        #: when set, each answer is preceded by a copy from this address with other values
        self.decoy_sender: str | None = None
        self._dialect = sk.DIALECTS[self.settings.dialect]
        self._mac = STICK_MAC[self.settings.dialect]
        self.stick_ip = sk.mac_to_link_local(self._mac)
        self.meter_ip = sk.mac_to_link_local(METER_MAC)
        self._hex = self.settings.data == "hex"  # WOPT is kept in flash: SKRESET keeps it
        self._stick = _Stick(self.settings)
        self._generation = 0
        self._answers = 0
        self._expire_on_request = False
        self._redact = sk.Redactor()
        self._buf = bytearray()
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._commands: dict[str, Callable[[list[str]], None]] = {
            "SKVER": self._skver,
            "SKAPPVER": self._skappver,
            "SKINFO": self._skinfo,
            "SKRESET": self._skreset,
            "SKSREG": self._sksreg,
            "SKSETPWD": self._sksetpwd,
            "SKSETRBID": self._sksetrbid,
            "SKSCAN": self._skscan,
            "SKLL64": self._skll64,
            "SKJOIN": self._skjoin,
            "SKREJOIN": self._skrejoin,
            "SKTERM": self._skterm,
            "ROPT": self._ropt,
            "WOPT": self._wopt,
            "RUART": self._ruart,
            "WUART": self._wuart,
        }

    # ----------------------------------------------------------------- lifecycle

    @property
    def path(self) -> str:
        """What a serial program opens: the link if there is one, else the pty's slave."""
        return str(self.link) if self.link else self._slave_name

    @property
    def joined(self) -> bool:
        """Whether a PANA session is up."""
        return self._stick.joined

    def start(self) -> str:
        """Open the pty and serve it in a background thread; returns :attr:`path`."""
        if self._thread is not None:
            return self.path
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._open_pty()
        if self.settings.notify_every > 0:
            self._schedule(self._until_boundary(), self._notify_tick)
        self._thread = threading.Thread(target=self._loop, name="smartmeter-emulator", daemon=True)
        self._thread.start()
        self.log.debug("emulating a %s stick on %s", self.settings.dialect, self.path)
        return self.path

    def stop(self) -> None:
        """Stop serving and close the pty."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self._slave_name = os.ttyname(slave)
        self._buf.clear()
        if self.link is not None:
            if self.link.exists() and not self.link.is_symlink():
                self._close_pty()
                raise FileExistsError(f"{self.link} exists and is not a symlink; not replacing it")
            temporary = self.link.with_name(self.link.name + ".new")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(self._slave_name)
            os.replace(temporary, self.link)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    # ------------------------------------------------------------- controls

    def unplug(self) -> None:
        """Pull the stick: the pty closes (the reader gets an I/O error) and the link goes."""

        def pull() -> None:
            self.stats.unplugs += 1
            self._close_pty()
            self._reset_stick()

        self._call(pull)

    def replug(self) -> None:
        """Plug the stick back in: a new pty behind the same link, a module fresh from reset."""
        self._call(self._open_pty)

    def expire_session(self, reauth_ok: bool = True) -> None:
        """End the PANA lifetime now: EVENT 29, then EVENT 25 (or 24) after reauth_seconds."""
        self._call(lambda: self._expire(reauth_ok))

    def expire_on_next_request(self) -> None:
        """Expire the session when the next ECHONET Lite request arrives (its answer is lost)."""
        self._call(lambda: setattr(self, "_expire_on_request", True))

    def end_session(self) -> None:
        """The meter ends the session (EVENT 26)."""

        def end() -> None:
            if self._stick.joined:
                self._stick.joined = False
                self._event(0x26, self.meter_ip)

        self._call(end)

    def set_transmit_limit(self, active: bool) -> None:
        """The ARIB transmit-time limit starts (EVENT 32) or ends (EVENT 33)."""

        def limit() -> None:
            self._stick.tx_limited = active
            self._event(0x32 if active else 0x33, self.stick_ip)

        self._call(limit)

    def inject(self, raw: bytes) -> None:
        """Write raw bytes to the reader, e.g. garbage."""
        self._call(lambda: self._write(raw))

    def send_frame(
        self, frame: el.Frame | bytes, sender: str | None = None, port: int = el.PORT
    ) -> None:
        """Send an ECHONET Lite frame to the stick as an ERXUDP from ``sender`` (the meter)."""
        data = frame.encode() if isinstance(frame, el.Frame) else frame
        origin = sender or self.meter_ip
        self._call(lambda: self._erxudp(origin, self.stick_ip, port, port, METER_MAC, 1, data))

    def notify(self, confirm: bool | None = None) -> None:
        """Send the EA/EB notification now (INFC when ``confirm``)."""
        wanted = self.settings.notify_confirm if confirm is None else confirm
        self._call(lambda: self._send_meter_frame(self.meter.notification(wanted)))

    # ------------------------------------------------------------- the loop

    def _call(self, function: Callable[[], Any]) -> None:
        if self._thread is None or threading.current_thread() is self._thread:
            function()
            return
        done = threading.Event()
        failure: list[BaseException] = []

        def job() -> None:
            try:
                function()
            except BaseException as exc:
                failure.append(exc)
            finally:
                done.set()

        self._schedule(0.0, job)
        done.wait(5)
        if failure:
            raise failure[0]

    def _schedule(self, delay: float, function: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), function))
        self._wake()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            timeout = self._run_timers()
            fds = [self._wake_r] + ([self._master] if self._master is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except (OSError, ValueError):
                continue
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if self._master is not None and self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except OSError:
                    data = b""
                if data:
                    self._buf += data
                    self._handle_input()

    def _run_timers(self) -> float:
        while True:
            with self._lock:
                if not self._timers:
                    return 0.5
                due = self._timers[0][0]
                if due > time.monotonic():
                    return min(0.5, due - time.monotonic())
                _, _, function = heapq.heappop(self._timers)
            try:
                function()
            except Exception:
                self.log.exception("emulator: a scheduled action failed")

    def _write(self, data: bytes) -> None:
        if self._master is None:
            return
        try:
            while data:
                data = data[os.write(self._master, data) :]
        except OSError as exc:
            self.log.debug("emulator: write failed: %s", exc)

    def _line(self, text: str, end: str = "\r\n") -> None:
        self._write((text + end).encode("ascii"))

    # ------------------------------------------------------------- input

    def _handle_input(self) -> None:
        buf = self._buf
        while True:
            skip = 0
            while skip < len(buf) and buf[skip] in b"\r\n":
                skip += 1
            del buf[:skip]
            if not buf:
                return
            if buf.startswith(b"SKSENDTO "):
                if not self._take_sendto():
                    return
                continue
            end = _line_end(buf, 0)
            if end == -1:
                if len(buf) > 4096:
                    buf.clear()
                return
            line = bytes(buf[:end]).decode("ascii", "replace")
            del buf[: end + 1]
            self._command(line)

    def _take_sendto(self) -> bool:
        buf = self._buf
        pos = len(b"SKSENDTO ")
        tokens: list[str] = []
        while len(tokens) < 5 or len(tokens[-1]) != 4:
            space = buf.find(b" ", pos)
            end = _line_end(buf, pos)
            if (end != -1 and (space == -1 or end < space)) or len(tokens) >= 6:
                cut = end if end != -1 else len(buf)
                line = bytes(buf[:cut]).decode("ascii", "replace")
                del buf[: cut + 1]
                self._echo(line)
                self._line("FAIL ER05")
                return True
            if space == -1:
                return False
            tokens.append(bytes(buf[pos:space]).decode("ascii", "replace"))
            pos = space + 1
        try:
            length = int(tokens[-1], 16)
        except ValueError:
            length = 0
        if len(buf) < pos + length:
            return False
        header = bytes(buf[:pos]).decode("ascii", "replace")
        data = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        self.stats.commands["SKSENDTO"] += 1
        self.log.debug("emulator < %s<%d bytes>", header, length)
        self._echo(header.rstrip())
        try:
            self._sendto(tokens, data)
        except _Fail as failure:
            self._line(f"FAIL {failure.code}")
        return True

    def _echo(self, line: str) -> None:
        if self._stick.echo:
            self._line(line)

    def _command(self, line: str) -> None:
        words = line.split()
        if not words:
            return
        name = words[0].upper()
        self.stats.commands[name] += 1
        self.log.debug("emulator < %s", self._redact(line))
        self._echo(line)
        end = "\r" if name in PRODUCT_COMMANDS else "\r\n"
        handler = self._commands.get(name)
        try:
            if handler is None:
                raise _Fail("ER04")
            handler(words[1:])
        except _Fail as failure:
            self._line(f"FAIL {failure.code}", end)

    # ------------------------------------------------------------- commands

    def _ok(self, value: str = "", end: str = "\r\n") -> None:
        self._line(f"OK {value}".rstrip(), end)

    def _skver(self, args: list[str]) -> None:
        _count(args, 0)
        self._line(f"EVER {FIRMWARE[self.settings.dialect]}")
        self._ok()

    def _skappver(self, args: list[str]) -> None:
        _count(args, 0)
        self._line("EAPPVER rev26e")
        self._ok()

    def _skinfo(self, args: list[str]) -> None:
        _count(args, 0)
        st = self._stick
        last = "0" if self._dialect.has_side else "FFFE"
        self._line(f"EINFO {self.stick_ip} {self._mac} {st.channel:02X} {st.pan_id:04X} {last}")
        self._ok()

    def _skreset(self, args: list[str]) -> None:
        _count(args, 0)
        self._reset_stick()
        self._ok()

    def _reset_stick(self) -> None:
        self._stick = _Stick(self.settings)
        self._generation += 1

    def _sksreg(self, args: list[str]) -> None:
        if len(args) not in (1, 2):
            raise _Fail("ER05")
        register = _register(args[0])
        st = self._stick
        if len(args) == 1:
            values = {
                0x02: f"{st.channel:02X}",
                0x03: f"{st.pan_id:04X}",
                0x07: "00000000",
                0x0A: st.route_b_id[-8:] or "00000000",
                0x16: "00000384",
                0x17: "1",
                0xFB: "1" if st.tx_limited else "0",
                0xFD: f"{self.stats.airtime.tx_ms:016X}",
                0xFE: "1" if st.echo else "0",
            }
            if self._dialect.has_side:
                values[0xA2] = "1" if st.rssi else "0"
            if register not in values:
                raise _Fail("ER06")
            self._line(f"ESREG {values[register]}")
            self._ok()
            return
        value = _hex(args[1])
        if register == 0x02 and 0x21 <= value <= 0x3C:
            st.channel = value
        elif register == 0x03 and value <= 0xFFFF:
            st.pan_id = value
        elif register == 0xFE and value in (0, 1):
            st.echo = bool(value)
        elif register == 0xA2 and self._dialect.has_side and value in (0, 1):
            st.rssi = bool(value)
        elif register == 0xFD and value == 0:
            self.stats.airtime = Airtime()
        elif register not in (0x16, 0x17):
            raise _Fail("ER06")
        self._ok()

    def _sksetpwd(self, args: list[str]) -> None:
        _count(args, 2)
        length = _hex(args[0])
        if not 1 <= length <= 32:
            raise _Fail("ER06")
        self._stick.password = args[1][:length]
        self._ok()

    def _sksetrbid(self, args: list[str]) -> None:
        _count(args, 1)
        if len(args[0]) != 32:
            raise _Fail("ER06")
        self._stick.route_b_id = args[0]
        self._ok()

    def _skscan(self, args: list[str]) -> None:
        _count(args, 4 if self._dialect.has_side else 3)
        mode, mask, duration = _hex(args[0]), _hex(args[1]), _hex(args[2])
        if mode not in (0, 2, 3) or not 0 <= duration <= 14 or mask > 0xFFFFFFFF:
            raise _Fail("ER06")
        self._ok()
        channels = bin(mask & VALID_CHANNELS).count("1")
        if mode != 0:
            self.stats.airtime.add(BEACON_REQUEST, channels)
        delay = 0.0096 * (2**duration + 1) * channels * self.settings.scan_time_scale
        self._later(delay, self._generation, lambda: self._scan_result(mode, mask, duration))

    def _scan_result(self, mode: int, mask: int, duration: int) -> None:
        st = self._stick
        meter_pairing = self.settings.route_b_id[-8:] if self.settings.route_b_id else None
        paired = bool(st.route_b_id) and st.route_b_id[-8:] == (meter_pairing or st.route_b_id[-8:])
        heard = bool(mask >> (self.settings.channel - 0x21) & 1)
        heard &= duration >= self.settings.min_scan_duration and (mode == 3 or paired)
        if mode == 0:
            self._event(0x1F, self.stick_ip)
            self._line("EEDSCAN")
            self._line(
                " ".join(f"{ch:02X} 10" for ch in range(0x21, 0x3D) if mask >> (ch - 0x21) & 1)
            )
        elif heard:
            self._event(0x20, self.meter_ip)
            self._line("EPANDESC")
            self._line(f"  Channel:{self.settings.channel:02X}")
            self._line("  Channel Page:09")
            self._line(f"  Pan ID:{self.settings.pan_id:04X}")
            self._line(f"  Addr:{METER_MAC}")
            self._line("  LQI:E1")
            if self._dialect.has_side:
                self._line("  Side:0")
            if mode == 2:
                self._line(f"  PairID:{st.route_b_id[-8:]}")
        self._event(0x22, self.stick_ip)

    def _skll64(self, args: list[str]) -> None:
        _count(args, 1)
        try:
            self._line(sk.mac_to_link_local(args[0].upper()))
        except ParseError:
            raise _Fail("ER06") from None

    def _skjoin(self, args: list[str]) -> None:
        _count(args, 1)
        if not sk.IPV6.fullmatch(args[0]):
            raise _Fail("ER06")
        st = self._stick
        if st.joined:
            raise _Fail("ER10")
        self._ok()
        self._generation += 1
        generation = self._generation
        step = self.settings.join_seconds / (len(PAA_PANA_SIZES) + 2)
        reachable = (
            args[0] == self.meter_ip
            and st.channel == self.settings.channel
            and st.pan_id == self.settings.pan_id
        )
        if not reachable:  # nobody answers the PANA messages: the stick gives up
            self.stats.airtime.add(PAC_PANA_SIZES[0], 3)
            self._later(self.settings.join_seconds, generation, lambda: self._event(0x24, args[0]))
            return
        accepted = (not self.settings.password or st.password == self.settings.password) and (
            not self.settings.route_b_id or st.route_b_id == self.settings.route_b_id
        )
        for size in PAC_PANA_SIZES:
            self.stats.airtime.add(size)
        self._later(step, generation, self._neighbour_found)
        for number, size in enumerate(PAA_PANA_SIZES, start=2):
            self._later(step * number, generation, lambda size=size: self._pana_message(size))
        self._later(self.settings.join_seconds, generation, lambda: self._join_done(accepted))

    def _later(self, delay: float, generation: int, function: Callable[[], None]) -> None:
        def run() -> None:
            if generation == self._generation:
                function()

        self._schedule(delay, run)

    def _neighbour_found(self) -> None:
        self._event(0x21, self.meter_ip, 0x02)
        self._event(0x02, self.meter_ip)

    def _pana_message(self, size: int) -> None:
        header = struct.pack(">HHHHII", 0, size, 0x8000, 2, 0x136F0BFE, 0x2FDA83DC)
        self._erxudp(self.meter_ip, self.stick_ip, PANA_PORT, PANA_PORT, METER_MAC, 0,
                     header + bytes(size - len(header)))  # fmt: skip
        self._event(0x21, self.meter_ip, 0x00)

    def _join_done(self, accepted: bool) -> None:
        if not accepted:
            self._event(0x24, self.meter_ip)
            return
        self._stick.joined = True
        self._event(0x25, self.meter_ip)
        generation = self._generation
        self._later(0.01, generation, self._announce_instances)
        self._arm_lifetime()

    def _announce_instances(self) -> None:
        frame = self.meter.instance_list().encode()
        self._erxudp(self.meter_ip, MULTICAST, el.PORT, el.PORT, METER_MAC, 1, frame)

    def _arm_lifetime(self) -> None:
        if self.settings.session_lifetime > 0:
            self._later(
                self.settings.session_lifetime,
                self._generation,
                lambda: self._expire(not self.settings.reauth_fails),
            )

    def _expire(self, reauth_ok: bool) -> None:
        st = self._stick
        if not st.joined or st.reauthing:
            return
        st.reauthing = True
        self._generation += 1
        self._event(0x29, self.meter_ip)
        self.stats.airtime.add(PAC_PANA_SIZES[-1], 2)

        def finish() -> None:
            st.reauthing = False
            if reauth_ok:
                self._event(0x25, self.meter_ip)
                self._arm_lifetime()
            else:
                st.joined = False
                self._event(0x24, self.meter_ip)

        self._later(self.settings.reauth_seconds, self._generation, finish)

    def _skrejoin(self, args: list[str]) -> None:
        _count(args, 0)
        if not self._stick.joined:
            raise _Fail("ER10")
        self._ok()
        self._expire(not self.settings.reauth_fails)

    def _skterm(self, args: list[str]) -> None:
        _count(args, 0)
        st = self._stick
        if not st.joined:
            raise _Fail("ER10")
        self._ok()
        self.stats.airtime.add(TERMINATE_SIZE)
        st.joined = st.reauthing = False
        self._generation += 1
        self._later(0.01, self._generation, lambda: self._event(0x27, self.meter_ip))

    def _ropt(self, args: list[str]) -> None:
        _count(args, 0)
        if not self.settings.ropt:
            raise _Fail("ER04")
        self._ok("01" if self._hex else "00", "\r")

    def _wopt(self, args: list[str]) -> None:
        _count(args, 1)
        if args[0] not in ("00", "01"):
            raise _Fail("ER06")
        self._hex = args[0] == "01"
        self._ok(end="\r")

    def _ruart(self, args: list[str]) -> None:
        _count(args, 0)
        self._ok("00", "\r")

    def _wuart(self, args: list[str]) -> None:
        _count(args, 1)
        self._ok(end="\r")

    def _sendto(self, tokens: list[str], data: bytes) -> None:
        if (len(tokens) == 6) != self._dialect.has_side:
            raise _Fail("ER05")
        ip, port, secured = tokens[1], _hex(tokens[2]), _hex(tokens[3])
        if not sk.IPV6.fullmatch(ip) or secured > 2:
            raise _Fail("ER06")
        st = self._stick
        if st.tx_limited or st.reauthing or (not st.joined and secured == 1):
            self._event(0x21, ip, 0x01)
            self._ok()
            return
        self.stats.airtime.add(len(data))
        self._event(0x21, ip, 0x00)
        self._ok()
        if port != el.PORT or ip != self.meter_ip:
            return
        try:
            request = el.parse_frame(data)
        except ParseError:
            return
        self.stats.echonet_frames += 1
        self.stats.echonet_bytes += len(data)
        if self._expire_on_request:
            self._expire_on_request = False
            self._expire(True)
            return
        answer = self.meter.answer(request)
        if answer is not None:
            self._later(
                self.settings.response_delay, self._generation, lambda: self._answer(answer)
            )

    def _answer(self, answer: el.Frame) -> None:
        self._answers += 1
        every = self.settings.garbage_every
        if every and self._answers % every == 0:
            self._write(GARBAGE[(self._answers // every) % len(GARBAGE)])
        if self.settings.wrong_tid:
            self._send_meter_frame(_decoy(answer, tid=(answer.tid - 1) & 0xFFFF))
        if self.decoy_sender:
            decoy = _decoy(answer, tid=answer.tid).encode()
            self._erxudp(self.decoy_sender, self.stick_ip, el.PORT, el.PORT, METER_MAC, 1, decoy)
        self._send_meter_frame(answer)

    def _send_meter_frame(self, frame: el.Frame) -> None:
        if self._stick.joined:
            self._erxudp(
                self.meter_ip, self.stick_ip, el.PORT, el.PORT, METER_MAC, 1, frame.encode()
            )

    def _notify_tick(self) -> None:
        if self._stick.joined and not self._stick.reauthing:
            self._send_meter_frame(self.meter.notification(self.settings.notify_confirm))
        self._schedule(self._until_boundary(), self._notify_tick)

    def _until_boundary(self) -> float:
        every = self.settings.notify_every
        return every - (time.time() % every) if every >= 60 else every

    # ------------------------------------------------------------- output

    def _event(self, number: int, sender: str, param: int | None = None) -> None:
        text = f"EVENT {number:02X} {sender}"
        if self._dialect.has_side:
            text += " 0"
        if param is not None:
            text += f" {param:02X}"
        self._line(text)

    def _erxudp(
        self, sender: str, dest: str, rport: int, lport: int, mac: str, secured: int, data: bytes
    ) -> None:
        tokens = [sender, dest, f"{rport:04X}", f"{lport:04X}", mac]
        if self._dialect.has_side:
            tokens += (["B4"] if self._stick.rssi else []) + [str(secured), "0"]
        else:
            tokens.append(str(secured))
        tokens.append(f"{len(data):04X}")
        payload = data.hex().upper().encode("ascii") if self._hex else data
        self._write(("ERXUDP " + " ".join(tokens) + " ").encode("ascii") + payload + b"\r\n")


def _decoy(answer: el.Frame, tid: int) -> el.Frame:
    """A copy of ``answer`` whose values are all wrong (to catch readers that take it)."""
    props = tuple((epc, bytes(b ^ 0x55 for b in edt)) for epc, edt in answer.properties)
    return el.Frame(tid, answer.seoj, answer.deoj, answer.esv, props)


def _count(args: list[str], expected: int) -> None:
    if len(args) != expected:
        raise _Fail("ER05")


def _hex(token: str) -> int:
    try:
        return int(token, 16)
    except ValueError:
        raise _Fail("ER06") from None


def _register(name: str) -> int:
    if len(name) < 2 or name[0].upper() != "S":
        raise _Fail("ER06")
    return _hex(name[1:])


def _line_end(buf: bytearray, start: int) -> int:
    ends = [i for i in (buf.find(b"\r", start), buf.find(b"\n", start)) if i != -1]
    return min(ends) if ends else -1
