"""The scanner's start/stop/rebuild logic against bleak's own objects.

bleak's ``BleakScanner(backend=...)`` takes a ``BaseBleakScanner`` subclass instead of the
platform backend (its documented seam). The scripted backend below stands in for BlueZ only:
``BleakScanner``, ``AdvertisementData``, ``BLEDevice``, ``create_or_update_device`` and
``call_detection_callbacks`` are bleak's real code, and the errors are bleak's exception types
with the messages BlueZ and bleak produce (research notes §3.3, §3.6; components.md §6).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakError,
)

from kansoku.errors import SourceError
from kansoku_plugins.switchbot.adv import COMPANY_ID, SERVICE_UUID
from kansoku_plugins.switchbot.scanner import (
    PASSIVE_PATTERNS,
    Scanner,
    ScannerSettings,
    attach,
    detach,
    explain,
)

ADDRESS = "C4:F9:26:75:DF:22"  # custom-components/ble_monitor#784 Meter Plus
MFR = bytes.fromhex("c4f92675df22dc030096a9")
SVC = bytes.fromhex("6900640096a9")
PASSIVE_MISSING = BleakError(  # bleak's message when RegisterMonitor is unknown to BlueZ
    "passive scanning on Linux requires BlueZ >= 5.56 with --experimental enabled and "
    "Linux kernel >= 5.10"
)
IN_PROGRESS = BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"])
log = logging.getLogger("test.switchbot.scanner")


def scripted(*plan: tuple[BaseException | None, int]) -> type[BaseBleakScanner]:
    """A backend class whose n-th instance fails to start with plan[n][0] or emits plan[n][1]."""

    class Scripted(BaseBleakScanner):
        steps = list(plan)
        built: list[Scripted] = []
        started_at: list[float] = []

        def __init__(self, callback, service_uuids, scanning_mode, *, bluez, **kw):
            super().__init__(callback, service_uuids)
            self.mode, self.bluez = scanning_mode, bluez
            self.outcome, self.adverts = self.steps.pop(0) if self.steps else (None, 0)
            self.stopped = False
            self.built.append(self)

        async def start(self) -> None:
            self.started_at.append(time.monotonic())
            if self.outcome is not None:
                raise self.outcome
            self.task = asyncio.create_task(self.emit())

        async def emit(self) -> None:
            await asyncio.sleep(0.05)
            for n in range(self.adverts):
                adv = AdvertisementData(
                    None, {COMPANY_ID: MFR}, {SERVICE_UUID: SVC}, [SERVICE_UUID], None, -60 - n, ()
                )
                device = self.create_or_update_device(ADDRESS, ADDRESS, None, {}, adv)
                self.call_detection_callbacks(device, adv)
                await asyncio.sleep(0.01)

        async def stop(self) -> None:
            self.stopped = True
            self.task.cancel()
            raise BleakError("No discovery started")  # what bleak says after bluetoothd left

    return Scripted


class Recorder:
    """A listener that keeps what it was given."""

    def __init__(self) -> None:
        self.adverts: list[tuple[str, int, dict]] = []
        self.restarts = 0

    def detected(self, device, advertisement) -> None:
        self.adverts.append((device.address, advertisement.rssi, advertisement.manufacturer_data))

    def scanner_restarted(self) -> None:
        self.restarts += 1


def run(backend, seconds: float, **settings) -> tuple[Scanner, Recorder, str]:
    settings = {"watchdog": 0, "first_backoff": 0.05, **settings}
    scanner = Scanner(ScannerSettings(backend=backend, **settings), log)
    recorder = Recorder()
    scanner.add(recorder)
    scanner.start()
    time.sleep(seconds)
    state = scanner.health.state
    scanner.stop()
    assert not scanner._thread.is_alive() and scanner.health.state in ("stopped", "failed")
    return scanner, recorder, state


def messages(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_auto_tries_passive_with_patterns_then_scans_actively(caplog):
    caplog.set_level(logging.INFO)
    backend = scripted((PASSIVE_MISSING, 0), (None, 3))
    scanner, recorder, state = run(backend, 0.3, adapter="hci1", mode="auto")
    passive, active = backend.built[:2]
    assert passive.mode == "passive"
    assert passive.bluez == {"adapter": "hci1", "or_patterns": PASSIVE_PATTERNS}
    assert active.mode == "active"
    assert active.bluez == {"adapter": "hci1", "filters": {"DuplicateData": True}}
    assert [a[0] for a in recorder.adverts] == [ADDRESS] * 3
    assert recorder.adverts[0][2] == {COMPANY_ID: MFR}
    assert scanner.health.start_failures == 0 and scanner.health.scan_mode == "active"
    assert any("passive scanning is not available on hci1" in m for m in messages(caplog, 20))


def test_explicit_passive_keeps_trying_passive():
    backend = scripted((PASSIVE_MISSING, 0), (PASSIVE_MISSING, 0), (None, 1))
    scanner, recorder, state = run(backend, 0.5, mode="passive")
    assert [b.mode for b in backend.built[:3]] == ["passive"] * 3
    assert scanner.health.start_failures == 2 and len(recorder.adverts) == 1


def test_duplicate_data_is_requested_explicitly_either_way():
    backend = scripted((None, 0))
    run(backend, 0.1, mode="active", duplicate_data=False)
    assert backend.built[0].bluez["filters"] == {"DuplicateData": False}


def test_failed_starts_back_off_and_each_message_is_logged_once(caplog):
    caplog.set_level(logging.DEBUG)
    missing_bus = FileNotFoundError(2, "No such file or directory")
    backend = scripted((IN_PROGRESS, 0), (IN_PROGRESS, 0), (IN_PROGRESS, 0), (missing_bus, 0))
    scanner, recorder, state = run(backend, 1.2, mode="active")
    assert scanner.health.start_failures == 4 and state == "scanning"
    gaps = [b - a for a, b in zip(backend.started_at, backend.started_at[1:], strict=False)]
    assert [round(g, 2) >= w for g, w in zip(gaps, (0.05, 0.1, 0.2, 0.4), strict=False)] == [
        True
    ] * 4
    warnings = messages(caplog, logging.WARNING)
    assert warnings == [
        "Bluetooth: BlueZ refused to scan on hci0: [org.bluez.Error.InProgress] Operation already "
        "in progress; retrying",
        "Bluetooth: cannot reach the D-Bus system bus (is dbus running, and does this machine "
        "have a Bluetooth adapter?) [FileNotFoundError: [Errno 2] No such file or directory]; "
        "retrying",
    ]
    assert "scanning on hci0 again (active) after 4 failed attempts" in messages(caplog, 20)


def test_watchdog_rebuilds_a_silent_scanner_and_counts_each_restart(caplog):
    caplog.set_level(logging.INFO)
    backend = scripted((None, 3), (None, 3))
    scanner, recorder, state = run(backend, 0.9, mode="active", watchdog=0.25)
    assert len(recorder.adverts) == 6
    assert scanner.health.restarts >= 1 and recorder.restarts == scanner.health.restarts
    assert all(b.stopped for b in backend.built[:-1])  # "No discovery started" was tolerated
    rebuilt = [m for m in messages(caplog, logging.WARNING) if "rebuilding the scanner" in m]
    assert len(rebuilt) == scanner.health.restarts
    assert rebuilt[0].startswith("no advertisements on hci0 for 0.")
    assert rebuilt[0].endswith("rebuilding the scanner (restart 1)")


def test_watchdog_doubles_while_nothing_is_heard():
    # 0.2 + 0.4 + 0.8 s = three rebuilds in 1.4-1.9 s; the fourth would need 1.6 s more
    scanner, _, state = run(scripted(), 2.4, mode="active", watchdog=0.2)
    assert scanner.health.restarts == 3


def test_a_failing_listener_neither_stops_the_scanner_nor_others(caplog):
    class Broken(Recorder):
        def detected(self, device, advertisement) -> None:
            raise ValueError("bug in a listener")

    scanner = Scanner(ScannerSettings(backend=scripted((None, 3)), watchdog=0), log)
    broken, good = Broken(), Recorder()
    scanner.add(broken)
    scanner.add(good)
    scanner.start()
    time.sleep(0.4)
    scanner.stop()
    assert len(good.adverts) == 3 and scanner.health.listener_errors == 3
    assert len(messages(caplog, logging.ERROR)) == 1


def test_an_unexpected_error_ends_the_thread_with_a_message(caplog):
    scanner, _, state = run(scripted((RuntimeError("bug in a backend"), 0)), 0.1, mode="active")
    assert state == scanner.health.state == "failed"
    assert scanner.health.last_error.endswith("RuntimeError: bug in a backend")


def test_sources_share_one_scanner_per_adapter():
    backend = scripted((None, 2))
    settings = ScannerSettings(adapter="hci7", backend=backend, watchdog=0)
    first, second = Recorder(), Recorder()
    scanner = attach(settings, first, log)
    try:
        assert attach(settings, second, log) is scanner
        with pytest.raises(SourceError, match="adapter hci7 is already scanning with other"):
            attach(ScannerSettings(adapter="hci7", backend=backend, mode="active"), Recorder(), log)
        time.sleep(0.4)
    finally:
        detach(scanner, first)
        assert scanner._thread.is_alive()
        detach(scanner, second)
    assert not scanner._thread.is_alive()
    assert len(backend.built) == 1 and len(first.adverts) == len(second.adverts) == 2


@pytest.mark.parametrize(
    ("exc", "sentence"),
    [
        (IN_PROGRESS, "BlueZ refused to scan on hci0: [org.bluez.Error.InProgress]"),
        (
            BleakDBusError(
                "org.freedesktop.DBus.Error.ServiceUnknown",
                ["The name org.bluez was not provided by any .service files"],
            ),
            "bluetoothd is not running (systemctl start bluetooth)",
        ),
        (
            BleakDBusError(
                "org.freedesktop.DBus.Error.Spawn.ChildExited",
                ["Launch helper exited with unknown return code 1"],
            ),
            "bluetoothd is not running",
        ),
        (ConnectionRefusedError(111, "Connection refused"), "cannot reach the D-Bus system bus"),
        (BleakError("adapter 'hci0' not found"), "adapter hci0 not found; check `bluetoothctl"),
        (
            BleakBluetoothNotAvailableError(
                "No powered Bluetooth adapters found. Turn on Bluetooth and try again.",
                BleakBluetoothNotAvailableReason.POWERED_OFF,
            ),
            "Bluetooth is not available: No powered Bluetooth adapters found",
        ),
        (
            BleakDBusError("org.freedesktop.DBus.Error.AccessDenied", ["Rejected send message"]),
            "permission denied on the D-Bus system bus",
        ),
        (
            BleakDBusError(
                "org.freedesktop.DBus.Error.UnknownObject",
                [
                    'Method "SetDiscoveryFilter" with signature "a{sv}" on interface '
                    '"org.bluez.Adapter1" doesn\'t exist'
                ],
            ),
            "bluetoothd does not know adapter hci0 (yet)",
        ),
        (TimeoutError(), "did not finish in time"),
        (PASSIVE_MISSING, "set scan_mode = active or auto"),
    ],
)
def test_errors_become_sentences(exc, sentence):
    assert sentence in explain(exc, "hci0")


def test_real_bluez_backend_without_a_system_bus(monkeypatch, tmp_path):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    scanner = Scanner(ScannerSettings(mode="auto", first_backoff=0.05), log)
    scanner.start()
    time.sleep(0.4)
    state = scanner.health.state
    scanner.stop()
    assert state == "retrying" and scanner.health.start_failures >= 2
    assert "cannot reach the D-Bus system bus" in scanner.health.last_error
