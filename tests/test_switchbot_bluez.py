"""bleak's real BlueZ backend, talking D-Bus to an emulated bluetoothd.

This machine has no Bluetooth, so bluetoothd cannot run (research components.md §6). The
``bluez5`` template of python-dbusmock plays ``org.bluez`` on a private dbus-daemon instead:
bleak's BlueZ backend connects to it as to the system bus, calls ``SetDiscoveryFilter``,
``StartDiscovery``, ``RegisterMonitor`` and ``StopDiscovery`` on it, and gets adverts as
``PropertiesChanged`` signals of ``org.bluez.Device1`` objects, as bluetoothd sends them.
Like a freshly started bluetoothd, the emulation only reports adverts while someone has asked
the adapter to discover (or, passively, has registered a monitor).

The template's ``AddDevice`` declares ``ManufacturerData`` with a wrong D-Bus type and its
``UpdateProperties`` cannot send dictionaries (python-dbusmock 0.28), so devices are added with
``AddObject`` and adverts sent with ``EmitSignal``; both are the mock's generic API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from kansoku import PluginContext
from kansoku_plugins.switchbot import adv
from kansoku_plugins.switchbot.adv import COMPANY_ID, SERVICE_UUID
from kansoku_plugins.switchbot.capture import parse_line
from kansoku_plugins.switchbot.config import device_list
from kansoku_plugins.switchbot.source import SwitchBotSource
from tests.daemons import missing, require_binary
from tests.test_switchbot_replay import options, points, triplet

KITCHEN = "C4:F9:26:75:DF:22"  # Meter Plus, custom-components/ble_monitor#784
OUTDOOR = "C7:6B:04:06:15:5E"  # Indoor/Outdoor, custom-components/ble_monitor#1411
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""
MOCK = "org.freedesktop.DBus.Mock"
ADAPTER1 = "org.bluez.Adapter1"
DEVICE1 = "org.bluez.Device1"


def dbusmock_python() -> str:
    """A Python that can import dbusmock (the venv's, else Debian's python3-dbusmock)."""
    for candidate in (sys.executable, shutil.which("python3", path="/usr/bin:/bin")):
        probe = [candidate, "-c", "import dbusmock"] if candidate else None
        if probe and subprocess.run(probe, capture_output=True).returncode == 0:
            return candidate
    missing("python-dbusmock not found: apt-get install python3-dbusmock")
    raise AssertionError("unreachable")


class Bluetoothd:
    """Drives the emulated bluetoothd: adapters, devices, adverts, and its restart."""

    def __init__(self, daemons, workdir: Path) -> None:
        self.daemons = daemons
        self.workdir = workdir
        socket = workdir / "bus.sock"
        self.address = f"unix:path={socket}"
        dbus_daemon = require_binary("dbus-daemon", "dbus-daemon")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "bus.conf").write_text(BUS_CONFIG.format(socket=socket))
        daemons(
            [dbus_daemon, f"--config-file={workdir / 'bus.conf'}", "--nofork", "--nopidfile"],
            workdir / "dbus",
            ready=socket.exists,
        )
        self.python = dbusmock_python()
        self.mock = None
        self.start()

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to take this bus for the system bus."""
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def start(self) -> None:
        """Start bluetoothd (the mock) with no adapter."""
        self.mock = self.daemons(
            [self.python, "-m", "dbusmock", "--system", "--template", "bluez5"],
            self.workdir / "bluetoothd",
            ready=lambda: self.call_bus("NameHasOwner", "s", ["org.bluez"]) == [True],
            env={"PATH": "/usr/bin:/bin", "DBUS_SYSTEM_BUS_ADDRESS": self.address},
        )

    def restart(self) -> None:
        """What ``systemctl restart bluetooth`` does: a new bluetoothd that forgot everything."""
        self.mock.stop()
        self.start()

    def call(self, path: str, interface: str, member: str, signature: str = "", body=()):
        return asyncio.run(self._call("org.bluez", path, interface, member, signature, body))

    def call_bus(self, member: str, signature: str, body):
        return asyncio.run(
            self._call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                member,
                signature,
                body,
            )
        )

    async def _call(self, destination, path, interface, member, signature, body):
        bus = MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM)
        await asyncio.wait_for(bus.connect(), 5)
        try:
            reply = await asyncio.wait_for(
                self._send(bus, destination, path, interface, member, signature, body), 5
            )
        finally:
            bus.disconnect()
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{member}: {reply.error_name}: {reply.body}")
        return reply.body

    @staticmethod
    async def _send(bus, destination, path, interface, member, signature, body):
        return await bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )

    def add_adapter(self, name: str = "hci0", passive: bool = False) -> None:
        """An adapter; ``passive`` adds BlueZ >= 5.56's advertisement monitor manager."""
        self.call("/", "org.bluez.Mock", "AddAdapter", "ss", [name, "kansoku-test"])
        if passive:
            for method in ("RegisterMonitor", "UnregisterMonitor"):
                self.call(
                    f"/org/bluez/{name}",
                    MOCK,
                    "AddMethod",
                    "sssss",
                    ["org.bluez.AdvertisementMonitorManager1", method, "o", "", ""],
                )

    def add_device(self, address: str, adapter: str = "hci0") -> None:
        path = self.device_path(address, adapter)
        props = {
            "Address": Variant("s", address),
            "AddressType": Variant("s", "public"),
            "Adapter": Variant("o", f"/org/bluez/{adapter}"),
            "Alias": Variant("s", address.replace(":", "-")),
            "Name": Variant("s", "WoSensorTHP"),  # the Meter Plus's name in its scan response
            "Paired": Variant("b", False),
            "Connected": Variant("b", False),
            "UUIDs": Variant("as", []),
            "RSSI": Variant("n", -127),
            "ManufacturerData": Variant("a{qv}", {}),
            "ServiceData": Variant("a{sv}", {}),
        }
        self.call("/", MOCK, "AddObject", "ssa{sv}a(ssss)", [path, DEVICE1, props, []])
        added = [Variant("o", path), Variant("a{sa{sv}}", {DEVICE1: props})]
        interfaces = "org.freedesktop.DBus.ObjectManager"
        self.call(
            "/", MOCK, "EmitSignal", "sssav", [interfaces, "InterfacesAdded", "oa{sa{sv}}", added]
        )

    @staticmethod
    def device_path(address: str, adapter: str = "hci0") -> str:
        return f"/org/bluez/{adapter}/dev_{address.replace(':', '_')}"

    def discovering(self, adapter: str = "hci0") -> bool:
        path = f"/org/bluez/{adapter}"
        try:
            value = self.call(
                path, "org.freedesktop.DBus.Properties", "Get", "ss", [ADAPTER1, "Discovering"]
            )
        except RuntimeError:  # no such adapter (yet)
            return False
        return bool(value[0].value)

    def advertise(self, address: str, rssi: int, mfr: bytes | None, svc: bytes | None) -> None:
        """One advert, as bluetoothd reports it: changed Device1 properties."""
        changed = {
            "RSSI": Variant("n", rssi),
            "ManufacturerData": Variant("a{qv}", {COMPANY_ID: Variant("ay", mfr)} if mfr else {}),
            "ServiceData": Variant("a{sv}", {SERVICE_UUID: Variant("ay", svc)} if svc else {}),
        }
        body = [Variant("s", DEVICE1), Variant("a{sv}", changed), Variant("as", [])]
        self.call(
            self.device_path(address),
            MOCK,
            "EmitSignal",
            "sssav",
            ["org.freedesktop.DBus.Properties", "PropertiesChanged", "sa{sv}as", body],
        )

    def calls(self, path: str) -> list[str]:
        """The methods called on an object of the emulation, in order."""
        return [row[1] for row in self.call(path, MOCK, "GetCalls")[0]]

    def filter_set(self, adapter: str = "hci0") -> dict:
        for row in self.call(f"/org/bluez/{adapter}", MOCK, "GetCalls")[0]:
            if row[1] == "SetDiscoveryFilter" and row[2][0].value:
                return {k: v.value for k, v in row[2][0].value.items()}
        return {}


@pytest.fixture
def bluetoothd(daemons, tmp_path) -> Bluetoothd:
    return Bluetoothd(daemons, tmp_path / "bt")


def kitchen_advert(n: int, passive: bool) -> tuple[bytes, bytes | None]:
    temperature = 22.0 + n / 10  # a new value every advert, as BlueZ reports changes
    mfr = bytes.fromhex("c4f92675df22dc03" + triplet(temperature, 41, True))
    return mfr, None if passive else bytes.fromhex("690064" + triplet(temperature, 41, True))


@contextmanager
def feeding(bt: Bluetoothd, passive: bool = False, every: float = 0.05) -> Iterator[list[int]]:
    """Advertise the kitchen meter while the adapter discovers (or always, when passive)."""
    sent: list[int] = []
    stop = threading.Event()

    def feed() -> None:
        n = 0
        while not stop.is_set():
            if passive or bt.discovering():
                mfr, svc = kitchen_advert(n, passive)
                try:
                    bt.advertise(KITCHEN, -60 - n % 4, mfr, svc)
                    sent.append(n)
                except RuntimeError:  # bluetoothd is restarting
                    pass
                n += 1
            stop.wait(every)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(5)


def config(write_config, mode: str, window: str = "1.5s") -> Path:
    return write_config(
        f"""
        [agent]
        self_metrics = false
        [source.switchbot]
        scan_mode = {mode}
        window = {window}
        devices = {KITCHEN}=kitchen:meter-plus
        [sink.stdout]
        format = json
        """
    )


def test_agent_once_hears_bluez_and_falls_back_to_active(bluetoothd, write_config, agent_cli):
    bluetoothd.add_adapter()
    bluetoothd.add_device(KITCHEN)
    with feeding(bluetoothd) as sent:
        result = agent_cli("-c", str(config(write_config, "auto")), "once", env=bluetoothd.env)
    assert result.returncode == 0, result.stderr
    assert "passive scanning is not available on hci0" in result.stderr
    got = points(result.stdout)
    reading = got[("switchbot", KITCHEN)]["fields"]
    assert reading["battery_pct"] == 100 and reading["humidity_pct"] == 41
    assert 22.0 < reading["temperature_c"] <= 22.0 + len(sent) / 10
    reception = got[("switchbot_reception", KITCHEN)]["fields"]
    assert 5 <= reception["adverts"] <= len(sent)
    assert reception["scan_responses"] == reception["adverts"]
    assert got[("switchbot_scanner", "")]["fields"]["scan_mode"] == "active"
    assert bluetoothd.filter_set() == {"Transport": "le", "DuplicateData": True}
    calls = bluetoothd.calls("/org/bluez/hci0")
    assert calls[:3] == ["SetDiscoveryFilter", "StartDiscovery", "StopDiscovery"]


def test_passive_scan_registers_a_monitor(bluetoothd, write_config, agent_cli):
    bluetoothd.add_adapter(passive=True)
    bluetoothd.add_device(KITCHEN)
    with feeding(bluetoothd, passive=True):
        result = agent_cli("-c", str(config(write_config, "passive")), "once", env=bluetoothd.env)
    assert result.returncode == 0, result.stderr
    assert bluetoothd.calls("/org/bluez/hci0") == ["RegisterMonitor", "UnregisterMonitor"]
    got = points(result.stdout)
    assert "battery_pct" not in got[("switchbot", KITCHEN)]["fields"]  # passive: no scan response
    assert got[("switchbot_reception", KITCHEN)]["fields"]["scan_responses"] == 0
    assert got[("switchbot_scanner", "")]["fields"]["scan_mode"] == "passive"


def test_missing_adapter_is_a_sentence(bluetoothd, write_config, agent_cli):
    result = agent_cli("-c", str(config(write_config, "active", "1s")), "once", env=bluetoothd.env)
    assert result.returncode == 1
    assert "Bluetooth: adapter hci0 not found; check `bluetoothctl list`" in result.stderr
    assert "Traceback" not in result.stderr


def test_bluetoothd_restart_rebuilds_the_scanner(bluetoothd, monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bluetoothd.address)
    bluetoothd.add_adapter()
    bluetoothd.add_device(KITCHEN)
    log = logging.getLogger("test.switchbot.bluez")
    context = PluginContext("switchbot", tmp_path, log, tmp_path)
    devices = device_list(f"{KITCHEN}=kitchen")
    source = SwitchBotSource(
        options(scan_mode="active", devices=devices, watchdog=0.6, max_backoff=0.4), context
    )
    source.start()
    try:
        with feeding(bluetoothd):
            wait_for(lambda: source._scanner.health.adverts >= 5)
            bluetoothd.restart()  # the new bluetoothd has no adapter yet and discovers nothing
            health = source._scanner.health
            wait_for(lambda: health.restarts == 1 and health.start_failures >= 1, timeout=10)
            bluetoothd.add_adapter()
            bluetoothd.add_device(KITCHEN)
            before = health.adverts
            wait_for(lambda: health.adverts >= before + 5, timeout=10)
        metrics = list(source.collect())
    finally:
        source.close()
    scanner = next(m for m in metrics if m.measurement == "switchbot_scanner").fields
    assert scanner["restarts"] >= 1 and scanner["state"] == "scanning"
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said[0].startswith("no advertisements on hci0 for 0.")
    assert said[0].endswith("rebuilding the scanner (restart 1)")
    assert said[1].startswith("Bluetooth: ") and len(said) == 2  # the failed start, once
    assert scanner["start_failures"] >= 1
    assert any(m.measurement == "switchbot" for m in metrics)


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_record_then_replay_and_scan(bluetoothd, tmp_path, write_config, agent_cli):
    bluetoothd.add_adapter()
    bluetoothd.add_device(KITCHEN)
    with feeding(bluetoothd) as sent:
        recorded = agent_cli("switchbot", "record", "--seconds", "1.5", env=bluetoothd.env)
        table = agent_cli("switchbot", "scan", "--seconds", "1.5", env=bluetoothd.env)
    assert recorded.returncode == 0, recorded.stderr
    lines = [json.loads(x) for x in recorded.stdout.splitlines()]
    assert 5 <= len(lines) <= len(sent)
    first = lines[0]
    assert set(first) == {
        "time",
        "address",
        "rssi",
        "local_name",
        "service_data",
        "manufacturer_data",
    }
    assert first["address"] == KITCHEN and first["local_name"] == "WoSensorTHP"
    assert first["service_data"][SERVICE_UUID].startswith("690064")
    assert first["manufacturer_data"]["2409"].startswith("c4f92675df22")
    capture = tmp_path / "recorded.jsonl"
    capture.write_text(recorded.stdout)
    replayed = agent_cli(
        "-c",
        str(
            write_config(
                f"""
                [agent]
                self_metrics = false
                [source.switchbot]
                replay = {capture}
                window = 0.3s
                [sink.stdout]
                format = json
                """
            )
        ),
        "once",
    )
    reading = points(replayed.stdout)[("switchbot", KITCHEN)]["fields"]
    last = parse_line(recorded.stdout.splitlines()[-1])
    expected = adv.decode(last.manufacturer_data, last.service_data, KITCHEN)
    assert reading["temperature_c"] == expected.temperature_c
    assert reading["rssi_dbm"] == last.rssi
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == [
        "ADDRESS",
        "NAME",
        "MODEL",
        "TEMP_C",
        "HUM_%",
        "BATT_%",
        "CO2_PPM",
        "RSSI",
        "ADV/MIN",
        "STATUS",
    ]
    assert row.split()[0] == KITCHEN and row.split()[2] == "meter-plus"
    assert row.split()[-1] in ("healthy", "quiet")
