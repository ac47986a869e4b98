"""What the agent knows about each SwitchBot device: decoded readings plus reception statistics.

:meth:`Tracker.observe` is called for every bleak callback (live or replayed); it decodes the
advert, learns the model from scan responses, and keeps the newest reading of the current period.
:meth:`Tracker.hand_over` turns one period into metrics: the newest reading per device heard in
the period (nothing for a device not heard: an old reading is never sent again as new) and one
``switchbot_reception`` point per device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kansoku import Metric
from kansoku_plugins.switchbot import adv
from kansoku_plugins.switchbot.config import DeviceConfig
from kansoku_plugins.switchbot.stats import DeviceStats, Thresholds

RSSI_UNKNOWN = (-127, 127)  # HCI "not available"; bleak reports -127 when BlueZ gave none
MAX_DEVICES = 1024  # unconfigured devices beyond this are not tracked


@dataclass
class Device:
    """One device heard (or configured)."""

    address: str
    config: DeviceConfig | None = None
    model: adv.Model | None = None
    kind: str = adv.UNKNOWN_MODEL
    local_name: str | None = None
    rssi: int | None = None
    values: tuple[float | None, int | None, int | None] | None = None
    battery_pct: int | None = None
    service_data: bytes | None = None
    pending: dict[str, Any] = field(default_factory=dict)
    pending_ns: int = 0
    total_adverts: int = 0
    stats: DeviceStats = field(default_factory=DeviceStats)

    @property
    def decodable(self) -> bool:
        """Whether its adverts give readings (model known, firmware new enough)."""
        return self.kind == adv.READING

    def tags(self) -> dict[str, str]:
        """address, name (configured, else the address) and model."""
        return {
            "address": self.address,
            "name": self.config.name if self.config else self.address,
            "model": self.model.slug if self.model else "unknown",
        }


class Tracker:
    """All devices of one source; thread-safe (the scanner thread observes, collect hands over)."""

    def __init__(
        self,
        configured: Mapping[str, DeviceConfig],
        limits: Thresholds,
        log: logging.Logger,
        only_configured: bool = False,
    ) -> None:
        self.limits = limits
        self.log = log
        self.only_configured = only_configured
        self.started: float | None = None
        self.devices: dict[str, Device] = {
            a: Device(a, c, c.model, adv.READING if c.model else adv.UNKNOWN_MODEL)
            for a, c in configured.items()
        }
        self._ignored: set[str] = set()  # other SwitchBot products
        self._said: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def hear(self, device: Any, advertisement: Any, now: float) -> None:
        """One advertisement as bleak's detection callback hands it over (BLEDevice, data)."""
        self.observe(
            device.address,
            advertisement.rssi,
            advertisement.local_name,
            advertisement.manufacturer_data,
            advertisement.service_data,
            now,
            time.time_ns(),
        )

    def observe(
        self,
        address: str,
        rssi: int | None,
        local_name: str | None,
        manufacturer_data: Mapping[int, bytes],
        service_data: Mapping[str, bytes],
        now: float,
        wall_ns: int,
    ) -> None:
        """One advertisement as bleak reported it, heard at ``now`` (source clock)."""
        address = address.upper()
        if address in self._ignored:
            return
        with self._lock:
            device = self.devices.get(address)
            try:
                decoded = adv.decode(
                    manufacturer_data, service_data, address, device.model if device else None
                )
            except adv.DecodeError as exc:
                device = device or self._add(address)
                if device is not None:
                    device.stats.heard(now, _rssi(rssi), False)
                    device.total_adverts += 1
                    device.stats.decode_errors += 1
                    payload = _hex(manufacturer_data, service_data)
                    self._say_once(address, "decode", f"{address}: cannot decode {payload}: {exc}")
                return
            if decoded.kind == adv.FOREIGN:
                return
            if decoded.kind == adv.OTHER_PRODUCT:
                if device is None or device.config is None:
                    if len(self._ignored) >= 4 * MAX_DEVICES:
                        self._ignored.clear()
                    self._ignored.add(address)
                    self.devices.pop(address, None)
                else:
                    self._say_once(address, "other", f"{address} is not a thermo-hygrometer")
                return
            device = device or self._add(address)
            if device is not None:
                self._apply(device, decoded, _rssi(rssi), local_name, now, wall_ns)

    def _add(self, address: str) -> Device | None:
        if len(self.devices) >= MAX_DEVICES:
            self._say_once("*", "full", f"more than {MAX_DEVICES} SwitchBot devices; ignoring more")
            return None
        device = self.devices[address] = Device(address)
        return device

    def _apply(
        self,
        device: Device,
        decoded: adv.Decoded,
        rssi: int | None,
        local_name: str | None,
        now: float,
        wall_ns: int,
    ) -> None:
        stats = device.stats
        stats.heard(now, rssi, decoded.service_data is not None)
        device.total_adverts += 1
        device.rssi = rssi
        device.local_name = local_name or device.local_name
        device.kind = decoded.kind
        if decoded.model is not None and decoded.model is not device.model:
            self._learn_model(device, decoded.model)
        for reason in decoded.dropped:
            stats.decode_errors += 1
            self._say_once(device.address, reason.split()[0], f"{device.address}: {reason}")
        if decoded.kind != adv.READING:
            return
        fields = device.pending
        values = (decoded.temperature_c, decoded.humidity_pct, decoded.co2_ppm)
        if decoded.temperature_c is not None:
            fields["temperature_c"] = decoded.temperature_c
            fields["humidity_pct"] = decoded.humidity_pct
            if decoded.co2_ppm is not None:
                fields["co2_ppm"] = decoded.co2_ppm
            if values != device.values:
                stats.reading_changes += 1
                stats.last_change = now
                device.values = values
        if decoded.battery_pct is not None and decoded.service_data != device.service_data:
            fields["battery_pct"] = device.battery_pct = decoded.battery_pct
            stats.battery_seen = now
        device.service_data = decoded.service_data or device.service_data
        if fields:
            if rssi is not None:
                fields["rssi_dbm"] = rssi
            device.pending_ns = wall_ns

    def _learn_model(self, device: Device, model: adv.Model) -> None:
        configured = device.config.model if device.config else None
        if configured is not None and configured is not model:
            self._say_once(
                device.address,
                "model",
                f"{device.address} is configured as {configured.slug} but says it is a "
                f"{model.title} ({model.slug}); using {model.slug}",
            )
        device.model = model

    def _say_once(self, address: str, what: str, message: str) -> None:
        if (address, what) in self._said:
            self.log.debug("%s", message)
            return
        self._said.add((address, what))
        self.log.warning("%s", message)

    def restart(self) -> None:
        """The scanner restarted: learn the devices' intervals again."""
        with self._lock:
            for device in self.devices.values():
                device.stats.relearn()

    def reported(self, device: Device) -> bool:
        """Whether a device gets metrics: configured, or a known model unless only_configured."""
        if device.config is not None:
            return True
        return not self.only_configured and device.model is not None

    def hand_over(self, now: float, wall_ns: int) -> list[Metric]:
        """Metrics for the period ending at ``now``: newest readings and reception statistics."""
        if self.started is None:
            self.started = now
        out: list[Metric] = []
        with self._lock:
            for address, device in list(self.devices.items()):
                heard = device.stats.last_heard
                if device.config is None and heard is not None:
                    if now - heard > 2 * self.limits.gone_after:
                        del self.devices[address]  # reported gone already; forget it
                        continue
                if not self.reported(device):
                    self._mention_unknown(device)
                    continue
                tags = device.tags()
                if device.pending:
                    out.append(Metric("switchbot", device.pending, tags, device.pending_ns))
                    device.pending = {}
                if heard is None and now - self.started <= self.limits.gone_after:
                    continue  # configured but not heard yet: nothing to say
                fields = device.stats.period(now, self.limits, device.decodable)
                out.append(Metric("switchbot_reception", fields, tags, wall_ns))
        return out

    def _mention_unknown(self, device: Device) -> None:
        if device.kind == adv.UNKNOWN_MODEL and device.stats.last_heard is not None:
            self._say_once(
                device.address,
                "unknown",
                f"heard SwitchBot device {device.address} but not its model (passive scans carry "
                "none): list it in devices = ADDRESS=name:model, or set scan_mode = active",
            )

    def rows(self, now: float) -> list[dict[str, Any]]:
        """One row per device for ``agent switchbot scan`` (does not end the period)."""
        rows = []
        with self._lock:
            for device in self.devices.values():
                stats = device.stats
                if stats.last_heard is None:
                    continue
                minutes = max(now - (stats.first_heard or now), 1.0) / 60
                temperature, humidity, co2 = device.values or (None, None, None)
                status = stats.current_status(now, self.limits, device.decodable)
                rows.append(
                    {
                        "address": device.address,
                        "name": device.config.name if device.config else device.local_name,
                        "model": _model_text(device),
                        "temperature_c": temperature,
                        "humidity_pct": humidity,
                        "battery_pct": device.battery_pct,
                        "co2_ppm": co2,
                        "rssi_dbm": device.rssi,
                        "adverts_per_min": device.total_adverts / minutes,
                        "status": status,
                    }
                )
        return sorted(rows, key=lambda r: r["address"])


def _model_text(device: Device) -> str:
    if device.model is not None:
        return device.model.slug
    if device.kind == adv.OLD_FIRMWARE:
        return "old-firmware?"
    return "unknown"


def _rssi(rssi: int | None) -> int | None:
    return None if rssi is None or rssi in RSSI_UNKNOWN else int(rssi)


def _hex(manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes]) -> str:
    parts = [f"mfr[{k:#06x}]={bytes(v).hex()}" for k, v in manufacturer_data.items()]
    parts += [f"svc[{k[4:8]}]={bytes(v).hex()}" for k, v in service_data.items()]
    return " ".join(parts) or "an empty advert"
