"""One long-lived bleak scanner per adapter, in a thread of its own, rebuilt when it goes deaf.

bleak needs an asyncio loop; the scanner gets its own loop in its own thread, so the agent's
threads never wait for Bluetooth. It starts passive (BlueZ advertisement monitor with match
patterns for SwitchBot company ids) when ``scan_mode`` is ``auto`` or ``passive``; ``auto`` falls
back to active scanning when BlueZ cannot scan passively. Active scans ask BlueZ explicitly for
duplicate data (``DuplicateData``), so unchanged adverts are reported too.

Recovery (research notes §3.6, after habluetooth): a failed start (``InProgress``, ``NotReady``,
adapter missing or powered off, bluetoothd or D-Bus not running) is retried with capped
exponential backoff; a silence watchdog rebuilds the scanner when no advert at all arrived for
``watchdog`` seconds (bleak does not notice a bluetoothd restart: scanning just stops). Every
rebuild is counted and logged once; a repeated start failure is logged once until it changes.
``bleak`` is imported only here and in the replay backend (:mod:`.capture`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from kansoku.errors import SourceError

#: BlueZ or_patterns (start position, AD type 0xFF manufacturer data, company id little-endian)
PASSIVE_PATTERNS = [(0, 0xFF, b"\x69\x09"), (0, 0xFF, b"\x59\x00")]
ADAPTER_INIT_WAIT = 1.5  # habluetooth ADAPTER_INIT_TIME: "UnknownObject" while it initialises
MAX_WATCHDOG_FACTOR = 16  # a silent place doubles the watchdog up to this factor, not more


class Listener(Protocol):
    """What a scanner feeds: bleak's detection callback plus a restart notice."""

    def detected(self, device: Any, advertisement: Any) -> None:
        """bleak's detection callback: ``(BLEDevice, AdvertisementData)``."""

    def scanner_restarted(self) -> None:
        """The scanner was rebuilt; timing learned so far spans a pause."""


@dataclass(frozen=True)
class ScannerSettings:
    """How to scan; ``backend`` replaces bleak's platform backend (replay, tests)."""

    adapter: str = "hci0"
    mode: str = "auto"
    duplicate_data: bool = True
    watchdog: float = 90.0
    first_backoff: float = 1.0
    max_backoff: float = 300.0
    start_timeout: float = 30.0
    backend: type | None = None

    @property
    def check_every(self) -> float:
        """How often the watchdog looks (habluetooth: every 30 s for a 90 s budget)."""
        return max(0.05, self.watchdog / 3)


@dataclass
class Health:
    """What the scanner reports about itself (measurement ``switchbot_scanner``)."""

    state: str = "starting"
    scan_mode: str = ""
    restarts: int = 0
    start_failures: int = 0
    adverts: int = 0
    last_advert: float | None = None
    started: float = field(default_factory=time.monotonic)
    last_error: str | None = None
    listener_errors: int = 0


class Scanner:
    """A bleak scanner on one adapter that keeps itself running until :meth:`stop`."""

    def __init__(self, settings: ScannerSettings, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        self.health = Health()
        self._listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._ready = threading.Event()

    def add(self, listener: Listener) -> None:
        """Feed ``listener`` from now on."""
        self._listeners = [*self._listeners, listener]

    def remove(self, listener: Listener) -> bool:
        """Stop feeding ``listener``; ``True`` when nobody listens any more."""
        self._listeners = [x for x in self._listeners if x is not listener]
        return not self._listeners

    @property
    def where(self) -> str:
        """The adapter, or the backend that stands in for it (a replay)."""
        backend = self.settings.backend
        if backend is None:
            return self.settings.adapter
        return str(getattr(backend, "describe", backend.__name__))

    @property
    def running(self) -> bool:
        """Whether bleak is scanning right now."""
        return self.health.state == "scanning"

    def start(self) -> None:
        """Start the scanner thread (returns at once; starting bleak happens there)."""
        name = f"switchbot-scanner-{self.settings.adapter}"
        self._thread = threading.Thread(target=self._thread_main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop scanning and end the thread (waits at most ``timeout``)."""
        self._stopping = True
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop has already ended
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # a bug here must not take the agent down
            self.health.state = "failed"
            self.health.last_error = f"the Bluetooth scanner stopped: {type(exc).__name__}: {exc}"
            self.log.exception("the Bluetooth scanner on %s stopped", self.settings.adapter)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        if self._stopping:
            return
        settings = self.settings
        mode = "active" if settings.mode == "active" else "passive"
        backoff = settings.first_backoff
        watchdog = settings.watchdog
        failures_in_row = 0
        while not self._stop.is_set():
            self.health.state = "starting"
            try:
                scanner = await self._start_bleak(mode)
            except Exception as exc:
                if not _expected(exc):
                    raise
                if settings.mode == "auto" and mode == "passive" and _passive_unsupported(exc):
                    self.log.info(
                        "passive scanning is not available on %s (%s); scanning actively",
                        settings.adapter,
                        exc,
                    )
                    mode = "active"
                    continue
                failures_in_row += 1
                self._start_failed(exc)
                wait = ADAPTER_INIT_WAIT if _initialising(exc) else backoff
                backoff = min(backoff * 2, settings.max_backoff)
                await self._sleep(wait)
                continue
            self._started(mode, failures_in_row)
            failures_in_row = 0
            adverts_before = self.health.adverts
            await self._watch(watchdog)
            silence = self._silence()
            await self._stop_bleak(scanner)
            if self._stop.is_set():
                break
            heard = self.health.adverts > adverts_before
            if heard:
                backoff = settings.first_backoff
            watchdog = (
                settings.watchdog
                if heard
                else min(watchdog * 2, settings.watchdog * MAX_WATCHDOG_FACTOR)
            )
            self.health.restarts += 1
            self.log.warning(
                "no advertisements on %s for %gs; rebuilding the scanner (restart %d)",
                settings.adapter,
                round(silence, 1),
                self.health.restarts,
            )
            for listener in self._listeners:
                listener.scanner_restarted()
        self.health.state = "stopped"

    async def _start_bleak(self, mode: str) -> Any:
        from bleak import BleakScanner

        bluez: dict[str, Any] = {"adapter": self.settings.adapter}
        if mode == "passive":
            bluez["or_patterns"] = PASSIVE_PATTERNS
        else:
            bluez["filters"] = {"DuplicateData": self.settings.duplicate_data}
        scanner = BleakScanner(
            self._detected, scanning_mode=mode, bluez=bluez, backend=self.settings.backend
        )
        try:
            await asyncio.wait_for(scanner.start(), self.settings.start_timeout)
        except TimeoutError:
            await self._stop_bleak(scanner)  # it may have got half way
            raise
        return scanner

    async def _stop_bleak(self, scanner: Any) -> None:
        try:
            await asyncio.wait_for(scanner.stop(), self.settings.start_timeout)
        except Exception as exc:  # the scanner is discarded either way ("No discovery started")
            self.log.debug("stopping the old scanner on %s: %r", self.settings.adapter, exc)

    def _detected(self, device: Any, advertisement: Any) -> None:
        self.health.adverts += 1
        self.health.last_advert = time.monotonic()
        for listener in self._listeners:
            try:
                listener.detected(device, advertisement)
            except Exception:
                self.health.listener_errors += 1
                self.log.log(
                    logging.ERROR if self.health.listener_errors == 1 else logging.DEBUG,
                    "handling an advertisement from %s failed",
                    device.address,
                    exc_info=True,
                )

    def _started(self, mode: str, failures: int) -> None:
        self.health.state = "scanning"
        self.health.scan_mode = mode
        self.health.started = time.monotonic()
        self.health.last_error = None
        if failures:
            self.log.info(
                "scanning on %s again (%s) after %d failed attempts",
                self.settings.adapter,
                mode,
                failures,
            )
        elif not self.health.restarts:
            how = f" ({mode})" if self.settings.backend is None else ""
            self.log.info("scanning on %s%s", self.where, how)

    def _start_failed(self, exc: BaseException) -> None:
        message = explain(exc, self.settings.adapter)
        self.health.start_failures += 1
        self.health.state = "retrying"
        first = message != self.health.last_error
        self.health.last_error = message
        self.log.log(logging.WARNING if first else logging.DEBUG, "%s; retrying", message)

    async def _watch(self, watchdog: float) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            if watchdog and self._silence() > watchdog:
                return
            await self._sleep(self.settings.check_every if watchdog else 3600.0)

    def _silence(self) -> float:
        last = max(self.health.last_advert or 0.0, self.health.started)
        return time.monotonic() - last

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass


def _expected(exc: BaseException) -> bool:
    from bleak.exc import BleakError

    return isinstance(exc, BleakError | OSError | TimeoutError)


def _dbus_error(exc: BaseException) -> str:
    return str(getattr(exc, "dbus_error", "") or "")


def _passive_unsupported(exc: BaseException) -> bool:
    return "passive scanning" in str(exc)


def _initialising(exc: BaseException) -> bool:
    return _dbus_error(exc) == "org.freedesktop.DBus.Error.UnknownObject"


def explain(exc: BaseException, adapter: str) -> str:
    """A sentence for the user: what failed and what to check."""
    name = _dbus_error(exc)
    text = str(exc)
    if isinstance(exc, TimeoutError):
        return f"Bluetooth: starting the scan on {adapter} did not finish in time"
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return (
            "Bluetooth: cannot reach the D-Bus system bus (is dbus running, and does this "
            f"machine have a Bluetooth adapter?) [{type(exc).__name__}: {exc}]"
        )
    if isinstance(exc, PermissionError) or name.endswith(("AccessDenied", "AuthFailed")):
        return (
            "Bluetooth: permission denied on the D-Bus system bus; run the agent as root or as "
            f"a user allowed to use BlueZ (group bluetooth): {text}"
        )
    if name.endswith(("ServiceUnknown", "Spawn.ChildExited", "NameHasNoOwner", "NoReply")):
        return f"Bluetooth: bluetoothd is not running (systemctl start bluetooth): {text}"
    if name.endswith(("UnknownObject", "UnknownMethod")):
        return (
            f"Bluetooth: bluetoothd does not know adapter {adapter} (yet): it is starting, or "
            f"the adapter went away: {text}"
        )
    if name.startswith("org.bluez.Error."):
        return f"Bluetooth: BlueZ refused to scan on {adapter}: {text}"
    if "not found" in text and "adapter" in text:
        return (
            f"Bluetooth: adapter {adapter} not found; check `bluetoothctl list` and the adapter "
            "key (hciN names can change after a reboot)"
        )
    if _passive_unsupported(exc):
        return f"Bluetooth: {text}; set scan_mode = active or auto, or enable Experimental in BlueZ"
    if type(exc).__name__ == "BleakBluetoothNotAvailableError":
        reason = exc.args[0] if exc.args else text
        return f"Bluetooth is not available: {reason} (is the adapter powered on? rfkill?)"
    return f"Bluetooth: {type(exc).__name__}: {text}"


_SHARED: dict[tuple[str, type | None], Scanner] = {}
_SHARED_LOCK = threading.Lock()


def attach(settings: ScannerSettings, listener: Listener, log: logging.Logger) -> Scanner:
    """The running scanner of ``settings.adapter`` (started if needed), now feeding ``listener``.

    Sources on one adapter share one scanner; a second scanner with other settings on the same
    adapter is refused. A replay has a backend class of its own, so it is never shared.
    """
    key = (settings.adapter, settings.backend)
    with _SHARED_LOCK:
        scanner = _SHARED.get(key)
        if scanner is not None and scanner.settings != settings:
            raise SourceError(
                f"adapter {settings.adapter} is already scanning with other settings "
                "(scan_mode, duplicate_data, watchdog); give both sections the same ones"
            )
        if scanner is None:
            scanner = _SHARED[key] = Scanner(settings, log)
            scanner.add(listener)
            scanner.start()
        else:
            scanner.add(listener)
        return scanner


def detach(scanner: Scanner, listener: Listener) -> None:
    """Stop feeding ``listener``; the last one out stops the scanner."""
    with _SHARED_LOCK:
        if not scanner.remove(listener):
            return
        for key, value in list(_SHARED.items()):
            if value is scanner:
                del _SHARED[key]
    scanner.stop()
