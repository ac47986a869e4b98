"""Capture files (one advertisement per JSON line) and the bleak backend that replays them.

A line::

    {"time": 1767225600.25, "address": "AA:BB:CC:DD:EE:FF", "rssi": -67, "local_name": null,
     "service_data": {"0000fd3d-0000-1000-8000-00805f9b34fb": "6900e4069835"},
     "manufacturer_data": {"2409": "d7c17d5deb43de03069835"}}

``time`` is in seconds (``agent switchbot record`` writes Unix time; only differences matter),
service data is keyed by UUID and manufacturer data by the company id in decimal, both in hex.

Replay goes through bleak itself: :func:`replay_backend` builds a ``BaseBleakScanner``
subclass for ``BleakScanner(backend=...)``, bleak's documented seam for custom backends. It
turns each line into bleak's ``AdvertisementData``/``BLEDevice`` and calls bleak's
``call_detection_callbacks``, so a capture takes exactly the path a radio advert takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from kansoku_plugins.switchbot.config import DEMO_CAPTURE

MAX_LOGGED_BAD_LINES = 10
LOOP_GAP_S = 1.0  # virtual pause between two passes of a looped capture


class CaptureError(ValueError):
    """A capture line that is not a valid advertisement record."""


class Openable(Protocol):
    """A path or a package resource."""

    def open(self, mode: str = "r", encoding: str | None = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class Record:
    """One advertisement of a capture."""

    time: float
    address: str
    rssi: int
    local_name: str | None
    service_data: dict[str, bytes]
    manufacturer_data: dict[int, bytes]

    def to_json(self) -> str:
        """The capture line (without newline)."""
        return json.dumps(
            {
                "time": round(self.time, 3),
                "address": self.address,
                "rssi": self.rssi,
                "local_name": self.local_name,
                "service_data": {k: v.hex() for k, v in self.service_data.items()},
                "manufacturer_data": {str(k): v.hex() for k, v in self.manufacturer_data.items()},
            },
            separators=(",", ":"),
        )


def record_from_bleak(when: float, device: Any, advertisement: Any) -> Record:
    """The record of one bleak callback ``(BLEDevice, AdvertisementData)`` heard at ``when``."""
    return Record(
        when,
        device.address,
        int(advertisement.rssi),
        advertisement.local_name,
        {k: bytes(v) for k, v in advertisement.service_data.items()},
        {int(k): bytes(v) for k, v in advertisement.manufacturer_data.items()},
    )


def parse_line(line: str) -> Record:
    """One capture line -> :class:`Record`, or :class:`CaptureError` saying what is wrong."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise CaptureError(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CaptureError("not a JSON object")
    when = data.get("time")
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise CaptureError("time must be a number of seconds")
    address = data.get("address")
    if not isinstance(address, str) or not address:
        raise CaptureError("address must be a string")
    rssi = data.get("rssi")
    if isinstance(rssi, bool) or not isinstance(rssi, int):
        raise CaptureError("rssi must be an integer (dBm)")
    name = data.get("local_name")
    if name is not None and not isinstance(name, str):
        raise CaptureError("local_name must be a string or null")
    service = _hex_map(data.get("service_data", {}), "service_data", str)
    makers = _hex_map(data.get("manufacturer_data", {}), "manufacturer_data", _company)
    return Record(float(when), address, rssi, name, service, makers)


def _company(key: str) -> int:
    company = int(key, 10)
    if not 0 <= company <= 0xFFFF:
        raise ValueError(key)
    return company


def _hex_map(value: Any, what: str, key_type: Any) -> dict[Any, bytes]:
    if not isinstance(value, dict):
        raise CaptureError(f"{what} must be an object")
    out = {}
    for key, text in value.items():
        try:
            out[key_type(key)] = bytes.fromhex(text)
        except (TypeError, ValueError):
            raise CaptureError(f"{what}: {key!r}: {text!r} is not hex bytes") from None
    return out


def resolve(name: str) -> Openable:
    """``demo`` -> the capture shipped in this package; anything else -> a file path."""
    if name.strip() == DEMO_CAPTURE:
        return resources.files("kansoku_plugins.switchbot").joinpath("demo.jsonl")
    return Path(name).expanduser()


def read_capture(capture: Openable, log: logging.Logger) -> Iterator[tuple[int, Record]]:
    """``(line number, record)`` for each valid line; bad lines are logged, counted, skipped."""
    bad = 0
    with capture.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, parse_line(line)
            except CaptureError as exc:
                bad += 1
                if bad <= MAX_LOGGED_BAD_LINES:
                    log.warning("%s:%d: %s; line skipped", capture, number, exc)
    if bad:
        log.warning("%s: %d bad lines skipped in all", capture, bad)


class ReplayClock:
    """Seconds on the capture's time line (0 = its first advert) while it is replayed.

    As fast as possible (``speed = inf``) the clock stands at the advert being fed and stays at
    the last one when the capture ends; at a finite speed it runs ``speed`` times real time.
    """

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._now = 0.0
        self._anchor: float | None = None

    def __call__(self) -> float:
        if self._anchor is None or math.isinf(self.speed):
            return self._now
        return self._now + (time.monotonic() - self._anchor) * self.speed

    def begin(self) -> None:
        """Start running (finite speed) from where the clock stands."""
        self._now = self()
        self._anchor = time.monotonic()

    def set(self, when: float) -> None:
        """As fast as possible: the advert at ``when`` is being fed."""
        self._now = when


def replay_backend(capture: Openable, clock: ReplayClock, loop: bool, log: logging.Logger) -> type:
    """A bleak scanner backend that feeds ``capture`` (for ``BleakScanner(backend=...)``)."""
    from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

    class ReplayScanner(BaseBleakScanner):
        """Feeds capture lines to bleak's detection callbacks, paced by ``clock``."""

        describe = f"the capture {capture}"

        def __init__(self, detection_callback: Any, service_uuids: Any, *args: Any, **kw: Any):
            super().__init__(detection_callback, service_uuids)
            self._task: asyncio.Task[None] | None = None

        async def start(self) -> None:
            self.seen_devices = {}
            clock.begin()
            self._task = asyncio.create_task(self._feed())

        async def stop(self) -> None:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

        async def _feed(self) -> None:
            offset, fed = clock(), 0
            try:
                while True:
                    first = last = None
                    for number, record in read_capture(capture, log):
                        first = record.time if first is None else first
                        last = offset + record.time - first
                        await self._wait_until(last, fed)
                        self._deliver(number, record)
                        fed += 1
                    if not loop or last is None:
                        break
                    offset = last + LOOP_GAP_S
            except OSError as exc:
                log.error("cannot read the capture %s: %s", capture, exc)
                return
            log.info("replay of %s finished: %d advertisements", capture, fed)

        async def _wait_until(self, when: float, fed: int) -> None:
            if math.isinf(clock.speed):
                clock.set(when)
                if fed % 256 == 0:
                    await asyncio.sleep(0)  # let stop() and the rest of the loop run
                return
            delay = (when - clock()) / clock.speed
            if delay > 0:
                await asyncio.sleep(delay)

        def _deliver(self, number: int, record: Record) -> None:
            advertisement = AdvertisementData(
                local_name=record.local_name,
                manufacturer_data=record.manufacturer_data,
                service_data=record.service_data,
                service_uuids=list(record.service_data),
                tx_power=None,
                rssi=record.rssi,
                platform_data=("replay", number),
            )
            device = self.create_or_update_device(
                record.address,
                record.address,
                record.local_name,
                {"capture": str(capture), "line": number},
                advertisement,
            )
            self.call_detection_callbacks(device, advertisement)

    return ReplayScanner
