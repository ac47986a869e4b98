"""One PANA session with the meter, kept across polls, and the events that change it.

A :class:`Session` drives one open :class:`~.link.Link`: it resets the stick, learns its
dialect, gives it the credentials, joins the meter (the cached PAN first, an active scan with
increasing durations only when that fails), reads the energy scale (D3, E1, D7) once, and then
answers :meth:`Session.read_sample` with one Get carrying E7, E8, E0 and E3 — falling back to one
property per frame for a meter that refuses multi-property Gets.

Events are handled wherever they arrive: EVENT 29 closes the send gate until re-authentication
ends (25) or fails (24: the session is down and must be joined again); 26/27/28 end the session;
32/33 pause sending for the transmit-time limit; EVENT 21 with parameter 01 is a failed send.
Answers are matched by TID and sender, so late or foreign frames are ignored, never taken for
answers. Meter notifications (the instance list, EA/EB by INF or INFC) are handled and INFC is
answered. The session never sleeps on its own: callers retry with :mod:`.worker`.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path

from kansoku.errors import SourceError
from kansoku_plugins.smartmeter import echonet as el
from kansoku_plugins.smartmeter import skstack as sk
from kansoku_plugins.smartmeter.errors import (
    AuthRejected,
    CommandFailed,
    LinkLost,
    NoAnswer,
    ParseError,
    SessionDown,
    TransmitLimited,
)
from kansoku_plugins.smartmeter.link import Link

POLL_EPCS = (el.POWER, el.CURRENTS, el.ENERGY_IMPORT, el.ENERGY_EXPORT)
SCALE_EPCS = (el.COEFFICIENT, el.ENERGY_UNIT, el.DIGITS)
COMMAND_TIMEOUT = 5.0
AUTH_MESSAGE = (
    "the meter rejected the Route-B ID or password (PANA authentication failed, EVENT 24): "
    "check route_b_id (32 characters) and route_b_password (12 characters) against the letter "
    "from your power company; the agent retries only every {delay}"
)
NO_METER_MESSAGE = (
    "no smart meter answered the active scan ({attempts} attempts): check that the stick is "
    "within about 30 m of the meter and that route_b_id is yours (the meter answers only the "
    "last 8 characters of its own Route-B ID)"
)


@dataclass
class SessionSettings:
    """What a session needs to know; timeouts are in seconds."""

    route_b_id: str
    password: str
    module: str = "auto"
    scan_durations: tuple[int, ...] = (6, 7, 8)
    response_timeout: float = 10.0
    retries: int = 2
    join_timeout: float = 60.0
    reauth_timeout: float = 60.0
    zone: dt.tzinfo = dt.UTC
    auth_retry_text: str = "15 minutes"


@dataclass
class LinkCounters:
    """The link's self-metrics (measurement ``smartmeter_link``), cumulative since start."""

    frames_sent: int = 0
    bytes_sent: int = 0
    joins: int = 0
    scans: int = 0
    timeouts: int = 0
    send_failures: int = 0
    transmit_limit_events: int = 0
    reauths: int = 0
    session_losses: int = 0
    reopens: int = 0
    garbage_lines: int = 0
    ignored_frames: int = 0
    no_data_values: int = 0
    tx_time_ms: int | None = None

    def as_fields(self) -> dict[str, int]:
        """The counters that have a value."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class Pan:
    """The meter's network as an active scan finds it."""

    channel: int
    pan_id: int
    address: str
    lqi: int = 0


class PanCache:
    """The last PAN joined, kept in the state directory so a restart needs no scan."""

    def __init__(self, path: Path, log: logging.Logger) -> None:
        self.path = path
        self.log = log

    def load(self) -> Pan | None:
        """The cached PAN, or None."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Pan(int(data["channel"]), int(data["pan_id"]), str(data["address"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.log.warning("ignoring the unreadable meter cache %s (%s)", self.path, exc)
            return None

    def save(self, pan: Pan) -> None:
        """Remember ``pan`` (atomically)."""
        data = {"channel": pan.channel, "pan_id": pan.pan_id, "address": pan.address}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, self.path)

    def forget(self) -> None:
        """Drop the cached PAN (its join failed)."""
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Scale:
    """How counts become Wh: count × coefficient (D3) × unit (E1, kWh)."""

    coefficient: int = 1
    unit_kwh: Fraction | None = None


@dataclass(frozen=True)
class Reading:
    """One poll: the raw EDTs by EPC, when they were read, and the scale to apply."""

    time_ns: int
    values: dict[int, bytes]
    scale: Scale
    transmit_limited: bool = False


@dataclass(frozen=True)
class FixedReading:
    """An EA/EB value the meter notified, stamped with the meter's own clock."""

    epc: int
    time_ns: int
    count: int | None


class Session:
    """The stick on one open link and the PANA session with the meter."""

    def __init__(
        self,
        link: Link,
        settings: SessionSettings,
        cache: PanCache,
        counters: LinkCounters,
        fixed: collections.deque[FixedReading],
        log: logging.Logger,
        stop: threading.Event | None = None,
    ) -> None:
        self.link = link
        self.settings = settings
        self.cache = cache
        self.counters = counters
        self.fixed = fixed
        self.log = log
        self.stop = stop or threading.Event()
        self.dialect: sk.Dialect | None = None
        self.phase = "opening the stick"
        self.joined = False
        self.reauthing = False
        self.tx_limited = False
        self.down_reason = "not joined yet"
        self.meter_ip: str | None = None
        self.meter_eoj = el.METER
        self.scale = Scale()
        self.multi_get = True
        self.unsupported: set[int] = set()
        self._tid = random.randrange(1, 0x10000)
        self._responses: list[sk.Item] = []
        self._answers: dict[int, el.Frame] = {}
        self._waiting: set[int] = set()
        self._outbox: list[el.Frame] = []
        self._joining = False
        self._join_result: int | None = None
        self._scan_done = False
        self._send_failed = False
        self._terminating = False
        self._reauth_since = 0.0
        self._expiries = 0
        self._seen_fixed: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)
        self._read_tx_time = True

    # ------------------------------------------------------------------ I/O

    def pump(self, timeout: float) -> None:
        """Handle what the stick says for up to ``timeout`` seconds; send queued answers."""
        self._pump(timeout)
        self._flush_outbox()

    def _pump(self, timeout: float) -> None:
        for item in self.link.receive(timeout):
            self._dispatch(item)

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not done():
            if self.stop.is_set():
                raise SourceError("the smartmeter source is stopping")
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._pump(left)
        return True

    def command(
        self,
        text: str,
        *,
        data: bytes = b"",
        final: Callable[[sk.Item], bool] = lambda i: isinstance(i, sk.Ok | sk.Fail),
    ) -> list[sk.Item]:
        """Send one command and return its answer lines up to the final one (OK).

        FAIL raises :class:`CommandFailed`; no answer in time means the stick is wedged:
        :class:`LinkLost` makes the worker reopen the port and reset the stick.
        """
        name = text.split()[0]
        self._responses.clear()
        self.link.send(text, data)
        if not self._wait(lambda: any(final(i) for i in self._responses), COMMAND_TIMEOUT):
            raise LinkLost(
                f"the stick on {self.link.device} did not answer {name} within "
                f"{COMMAND_TIMEOUT:g}s: is "
                "it a Wi-SUN stick with SKSTACK-IP firmware (BP35A1, BP35C2, RL7023, RS-WSUHA) "
                "and is baudrate right?"
            )
        index = next(n for n, item in enumerate(self._responses) if final(item))
        answer, self._responses = self._responses[: index + 1], self._responses[index + 1 :]
        last = answer[-1]
        if isinstance(last, sk.Fail):
            raise CommandFailed(name, last.code)
        return answer

    def _reply(self, text: str, keyword: str) -> sk.Reply:
        for item in self.command(text):
            if isinstance(item, sk.Reply) and item.keyword == keyword:
                return item
        raise NoAnswer(f"the stick answered {text.split()[0]} without an {keyword} line")

    # ------------------------------------------------------------- dispatch

    def _dispatch(self, item: sk.Item) -> None:
        if isinstance(item, sk.Event):
            self._on_event(item)
        elif isinstance(item, sk.RxUdp):
            self._on_udp(item)
        elif isinstance(item, sk.Garbage):
            self.counters.garbage_lines += 1
            self.log.debug("ignored garbage from the stick (%s)", item.reason)
        elif not isinstance(item, sk.Echo):
            self._responses.append(item)

    def _on_event(self, event: sk.Event) -> None:
        if event.side == 1:  # the HAN side of a dual-stack stick is not ours
            return
        number = event.num
        if number == sk.EV_UDP_SENT and event.param == 0x01:
            self.counters.send_failures += 1
            self._send_failed = True
        elif number == sk.EV_SCAN_DONE:
            self._scan_done = True
        elif number in (sk.EV_JOIN_FAILED, sk.EV_JOINED) and self._joining:
            self._join_result = number
        elif number == sk.EV_JOINED:
            if self.reauthing:
                self.log.info("re-authenticated with the meter (EVENT 25)")
            self.reauthing = False
        elif number == sk.EV_JOIN_FAILED:
            self._lose("the meter refused the re-authentication (EVENT 24)")
        elif number == sk.EV_PEER_TERMINATES:
            self._lose("the meter ended the session (EVENT 26)")
        elif number in (sk.EV_TERMINATED, sk.EV_TERMINATE_TIMEOUT):
            if not self._terminating:
                self._lose(f"the session ended (EVENT {number:02X})")
            self.joined = False
        elif number == sk.EV_SESSION_EXPIRED:
            if self.joined and not self.reauthing:
                self.counters.reauths += 1
                self.log.info("the PANA session expired (EVENT 29); pausing until re-authenticated")
            self.reauthing = True
            self._reauth_since = time.monotonic()
            self._expiries += 1
        elif number == sk.EV_TX_LIMIT_ON:
            self.counters.transmit_limit_events += 1
            self.tx_limited = True
            self.log.warning(
                "the stick reached its transmit-time limit (EVENT 32, ARIB STD-T108: 360 s of "
                "sending per hour); polling pauses until EVENT 33"
            )
        elif number == sk.EV_TX_LIMIT_OFF:
            self.tx_limited = False
            self.log.info("the transmit-time limit was lifted (EVENT 33)")

    def _lose(self, reason: str) -> None:
        if self.joined:
            self.counters.session_losses += 1
            self.log.warning("%s; joining again", reason)
        self.joined = False
        self.reauthing = False
        self.down_reason = reason

    def _end(self, reason: str) -> None:
        """Terminate a session that no longer works and count it as lost."""
        was_joined = self.joined
        self.terminate()
        if was_joined:
            self.counters.session_losses += 1
            self.log.warning("%s; the session was ended and is set up again", reason)
        self.down_reason = reason

    def _on_udp(self, rx: sk.RxUdp) -> None:
        if rx.side == 1 or rx.rport == 0x02CC:  # HAN side, or PANA during a join
            return
        if rx.lport != el.PORT or rx.rport != el.PORT:
            self._ignore(rx, "not ECHONET Lite")
            return
        if self.meter_ip is not None and rx.sender != self.meter_ip:
            self._ignore(rx, f"from {rx.sender}, not the meter")
            return
        try:
            frame = el.parse_frame(rx.data)
        except ParseError as exc:
            self._ignore(rx, str(exc))
            return
        if frame.esv in (el.GET_RES, el.GET_SNA):
            if frame.tid in self._waiting and frame.seoj == self.meter_eoj:
                self._answers[frame.tid] = frame
            else:
                self._ignore(rx, f"an answer with TID {frame.tid:04X} nobody waits for")
        elif frame.esv in (el.INF, el.INFC):
            self._on_notification(frame)
        else:
            self._ignore(rx, f"ESV 0x{frame.esv:02X}")

    def _ignore(self, rx: sk.RxUdp, why: str) -> None:
        self.counters.ignored_frames += 1
        self.log.debug("ignored a datagram (%s)", why)

    def _on_notification(self, frame: el.Frame) -> None:
        for epc, edt in frame.values().items():
            try:
                if epc == el.INSTANCE_LIST and frame.seoj == el.NODE_PROFILE:
                    meters = [e for e in el.instance_list(edt) if e[:2] == el.METER_CLASS]
                    if meters:
                        self.meter_eoj = meters[0]
                        self.log.debug("the meter announced object %s", meters[0].hex().upper())
                elif epc in (el.FIXED_IMPORT, el.FIXED_EXPORT) and frame.seoj[:2] == el.METER_CLASS:
                    time_ns, count = el.fixed_time_energy(edt, self.settings.zone)
                    if (epc, time_ns) not in self._seen_fixed:
                        self._seen_fixed.append((epc, time_ns))
                        self.fixed.append(FixedReading(epc, time_ns, count))
            except ParseError as exc:
                self.log.debug("ignored notified property 0x%02X: %s", epc, exc)
        if frame.esv == el.INFC:
            answer = tuple((epc, b"") for epc, _ in frame.properties)
            self._outbox.append(el.Frame(frame.tid, el.CONTROLLER, frame.seoj, el.INFC_RES, answer))

    # ------------------------------------------------------------- joining

    def start_module(self) -> None:
        """Reset the stick, learn its firmware and dialect, give it the credentials."""
        self.phase = "resetting the stick"
        self.command("SKRESET")
        version = self._reply("SKVER", "EVER")
        info = self._reply("SKINFO", "EINFO")
        detected = sk.detect_dialect(info)
        module = self.settings.module
        self.dialect = detected if module == "auto" else sk.DIALECTS[module]
        if self.dialect != detected:
            self.log.warning(
                "module = %s, but the stick looks like a %s", module, detected.name.upper()
            )
        self.log.info(
            "Wi-SUN stick on %s: firmware %s, %s command dialect",
            self.link.device,
            " ".join(version.fields),
            self.dialect.name.upper(),
        )
        password = self.settings.password
        try:
            self.command(f"SKSETPWD {len(password):X} {password}")
            self.command(f"SKSETRBID {self.settings.route_b_id}")
        except CommandFailed as exc:
            raise SourceError(
                f"the stick refused the Route-B credentials ({exc.code} to {exc.command}): "
                "route_b_id must be 32 characters and route_b_password 1 to 32 characters"
            ) from None

    def establish(self) -> None:
        """Join the meter (cached PAN first, then scanning) and read the energy scale."""
        pan = self.cache.load()
        if pan is not None:
            try:
                self._join(pan)
            except (AuthRejected, NoAnswer) as exc:
                self.log.info("joining the cached meter address failed (%s); scanning again", exc)
                self.cache.forget()
                pan = None
        if pan is None:
            pan = self._scan()
            self._join(pan)
            self.cache.save(pan)
        try:
            self._read_scale()
        except (NoAnswer, SessionDown) as exc:
            self.terminate()
            raise NoAnswer(
                "the meter joined but does not answer ECHONET Lite requests "
                f"({exc}); the session was ended and will be set up again"
            ) from None
        self._flush_outbox()

    def _scan(self) -> Pan:
        assert self.dialect is not None
        for duration in self.settings.scan_durations:
            self.phase = f"scanning for the meter (duration {duration})"
            self.counters.scans += 1
            self._scan_done = False
            try:
                self.command(self.dialect.scan(duration))
            except CommandFailed as exc:
                if exc.code != "ER05":
                    raise
                if self.settings.module != "auto":
                    raise SourceError(
                        f"the stick refused SKSCAN in the {self.dialect.name.upper()} syntax "
                        f"(FAIL ER05): set module = auto"
                    ) from None
                self.dialect = sk.BP35A1 if self.dialect.has_side else sk.BP35C2
                self.log.info("SKSCAN wants the %s syntax; switching", self.dialect.name.upper())
                self.command(self.dialect.scan(duration))
            budget = 0.0096 * (2**duration + 1) * 28 + 10
            if not self._wait(lambda: self._scan_done, budget):
                raise NoAnswer(f"the stick did not finish its active scan within {budget:.0f}s")
            pans = _pans(self._responses)
            self._responses.clear()
            if pans:
                return max(pans, key=lambda p: p.lqi)
        raise NoAnswer(NO_METER_MESSAGE.format(attempts=len(self.settings.scan_durations)))

    def _join(self, pan: Pan) -> None:
        self.phase = "joining the meter (PANA authentication)"
        answer = self.command(
            f"SKLL64 {pan.address}", final=lambda i: isinstance(i, sk.Address | sk.Fail)
        )
        ip = next(i.ip for i in answer if isinstance(i, sk.Address))
        self.command(f"SKSREG S2 {pan.channel:X}")
        self.command(f"SKSREG S3 {pan.pan_id:X}")
        self._joining, self._join_result = True, None
        try:
            self.command(f"SKJOIN {ip}")
            finished = self._wait(lambda: self._join_result is not None, self.settings.join_timeout)
        finally:
            self._joining = False
        self.counters.joins += 1
        if not finished:
            raise NoAnswer(
                f"the meter did not finish the PANA authentication within "
                f"{self.settings.join_timeout:g}s (neither EVENT 25 nor 24)"
            )
        if self._join_result == sk.EV_JOIN_FAILED:
            raise AuthRejected(AUTH_MESSAGE.format(delay=self.settings.auth_retry_text))
        self.meter_ip = ip
        self.joined, self.reauthing = True, False
        self.multi_get, self.unsupported = True, set()
        self.log.info(
            "joined the meter %s on channel %d, PAN ID %04X", pan.address, pan.channel, pan.pan_id
        )

    def _read_scale(self) -> None:
        self.phase = "reading the meter's energy unit"
        values = self._get_values(SCALE_EPCS)
        coefficient = 1
        if el.COEFFICIENT in values:
            coefficient = el.coefficient(values[el.COEFFICIENT]) or 1
        unit = el.energy_unit_kwh(values[el.ENERGY_UNIT]) if el.ENERGY_UNIT in values else None
        if unit is None:
            self.log.warning("the meter did not tell its energy unit (E1); energy is not reported")
        digits = el.digits(values[el.DIGITS]) if el.DIGITS in values else None
        self.scale = Scale(coefficient, unit)
        self.log.info(
            "meter energy scale: coefficient %d%s, unit %s kWh, %s digits",
            coefficient,
            "" if el.COEFFICIENT in values else " (no D3: 1)",
            "?" if unit is None else f"{float(unit):g}",
            digits or "?",
        )

    def terminate(self) -> None:
        """End the session politely (SKTERM, then EVENT 27 or 28)."""
        if not self.joined:
            return
        self._terminating = True
        try:
            self.command("SKTERM")
            self._wait(lambda: not self.joined, COMMAND_TIMEOUT)
        except (CommandFailed, NoAnswer):
            pass
        finally:
            self._terminating = False
            self.joined = False

    # ------------------------------------------------------------- polling

    def read_sample(self) -> Reading:
        """One Get of E7, E8, E0 and E3 (the latest values), plus the TX time register."""
        self._flush_outbox()
        try:
            values = self._get_values(POLL_EPCS)
        except NoAnswer as exc:
            self._end("the meter stopped answering")
            raise NoAnswer(f"{exc}; the session was ended and is being set up again") from None
        self._update_tx_time()
        self._flush_outbox()
        return Reading(time.time_ns(), values, self.scale, self.tx_limited)

    def _get_values(self, epcs: Iterable[int]) -> dict[int, bytes]:
        wanted = [epc for epc in epcs if epc not in self.unsupported]
        values: dict[int, bytes] = {}
        if self.multi_get and len(wanted) > 1:
            answer = self._request(wanted)
            values = {e: v for e, v in answer.values().items() if e in wanted}
            if not answer.is_failure:
                return values
            missing = [epc for epc in wanted if epc not in values]
            self.log.debug("Get_SNA for a %d-property Get; asking one at a time", len(wanted))
        else:
            missing = wanted
        for epc in missing:
            single = self._request([epc]).values()
            if epc in single:
                values[epc] = single[epc]
            else:
                self.unsupported.add(epc)
                self.log.info("the meter does not have property 0x%02X", epc)
        if self.multi_get and len(wanted) > 1 and len(missing) > 1:
            if all(epc in values for epc in missing):
                self.multi_get = False
                self.log.info("the meter refuses multi-property Gets: one property per frame")
        return values

    def _request(self, epcs: list[int]) -> el.Frame:
        attempts = 0
        while attempts <= self.settings.retries:
            self._await_gate()
            self._tid = self._tid % 0xFFFF + 1
            tid = self._tid
            frame = el.get_request(tid, epcs, self.meter_eoj)
            self._waiting.add(tid)
            expiries = self._expiries
            try:
                sent = self._send(frame)
                answer = self._await_answer(tid, expiries) if sent else None
            finally:
                self._waiting.discard(tid)
            if answer is not None:
                return answer
            if not self.joined:
                raise SessionDown(self.down_reason)
            if self._expiries != expiries:
                continue  # the answer was lost to a session expiry: ask again after it
            attempts += 1
            if sent:
                self.counters.timeouts += 1
        raise NoAnswer(
            f"the meter did not answer {self.settings.retries + 1} requests in a row "
            f"(waited {self.settings.response_timeout:g}s each)"
        )

    def _await_gate(self) -> None:
        if not self.joined:
            raise SessionDown(self.down_reason)
        if self.reauthing:
            left = self.settings.reauth_timeout - (time.monotonic() - self._reauth_since)
            finished = self._wait(lambda: not self.reauthing or not self.joined, max(0.0, left))
            if not self.joined:
                raise SessionDown(self.down_reason)
            if not finished:
                self._end("the re-authentication did not finish")
                raise SessionDown(
                    f"the re-authentication after EVENT 29 did not finish within "
                    f"{self.settings.reauth_timeout:g}s; joining again"
                )
        if self.tx_limited:
            raise TransmitLimited(
                "the stick's transmit-time limit is active (EVENT 32; ARIB STD-T108 allows "
                "360 s of sending per hour); polling resumes after EVENT 33"
            )

    def _send(self, frame: el.Frame) -> bool:
        assert self.dialect is not None and self.meter_ip is not None
        data = frame.encode()
        self._send_failed = False
        try:
            self.command(self.dialect.sendto(self.meter_ip, len(data)), data=data)
        except CommandFailed as exc:
            self.counters.send_failures += 1
            self.log.debug("SKSENDTO failed: %s", exc)
            return False
        self.counters.frames_sent += 1
        self.counters.bytes_sent += len(data)
        return not self._send_failed

    def _await_answer(self, tid: int, expiries: int) -> el.Frame | None:
        self._wait(
            lambda: tid in self._answers or not self.joined or self._expiries != expiries,
            self.settings.response_timeout,
        )
        return self._answers.pop(tid, None)

    def _flush_outbox(self) -> None:
        while self._outbox and self.joined and not self.reauthing and not self.tx_limited:
            self._send(self._outbox.pop(0))

    def _update_tx_time(self) -> None:
        if not self._read_tx_time:
            return
        try:
            register = self._reply("SKSREG SFD", "ESREG")
            self.counters.tx_time_ms = int(register.fields[0], 16)
        except (CommandFailed, NoAnswer, IndexError, ValueError):
            self._read_tx_time = False


def _pans(items: Iterable[sk.Item]) -> list[Pan]:
    found: list[dict[str, str]] = []
    for item in items:
        if isinstance(item, sk.Reply) and item.keyword == "EPANDESC":
            found.append({})
        elif isinstance(item, sk.PanField) and found:
            found[-1][item.key] = item.value
    pans = []
    for description in found:
        if description.get("Side", "0") != "0":
            continue
        try:
            pans.append(
                Pan(
                    int(description["Channel"], 16),
                    int(description["Pan ID"], 16),
                    description["Addr"],
                    int(description.get("LQI", "0"), 16),
                )
            )
        except (KeyError, ValueError):
            continue
    return pans
