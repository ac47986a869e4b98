"""The emulated low-voltage smart meter (ECHONET Lite object 0x028801) behind the emulated stick.

It answers Get requests from its property values (signed E7/E8, the no-data codes, optional D3,
E1 unit), refuses multi-property Gets with Get_SNA when told to, and builds the notifications a
real meter sends: the instance list after a join and the half-hourly EA/EB (INF or INFC).
"""

from __future__ import annotations

import datetime as dt
import math
import struct
import threading
import time

from kansoku_plugins.smartmeter import echonet as el
from kansoku_plugins.smartmeter.emulator_settings import EmulatorSettings

MAKER = bytes.fromhex("000016")
NO_DATA_POWER = 0x7FFFFFFE
NO_DATA_CURRENT = 0x7FFE
NO_DATA_COUNT = 0xFFFFFFFE


class MeterModel:
    """Property values and answers; attributes may be changed while the emulator runs."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.lock = threading.Lock()
        self.power_w = settings.power_w
        self.current_r_a = settings.current_r_a
        self.current_t_a = settings.current_t_a
        self.import_count = settings.import_count
        self.export_count = settings.export_count
        self.coefficient = settings.coefficient
        self.unit_kwh = settings.unit_kwh
        self.digits = settings.digits
        self.refuse_multi_get = settings.refuse_multi_get
        self.silent = settings.silent
        self.animate = settings.animate
        self.infc_responses = 0
        self._base_power = settings.power_w or 0
        self._energy_wh = [0.0, 0.0]  # not yet counted import/export energy
        self._last_tick = time.monotonic()
        self._notify_tid = 0

    def property(self, epc: int) -> bytes | None:
        """The EDT of one property, or None when the meter does not have it."""
        if epc == el.OPERATION_STATUS:
            return b"\x30"
        if epc == el.MAKER_CODE:
            return MAKER
        if epc == el.GET_PROPERTY_MAP:
            return el.property_map(self.readable())
        if epc == el.COEFFICIENT:
            return None if self.coefficient is None else struct.pack(">I", self.coefficient)
        if epc == el.DIGITS:
            return bytes([self.digits])
        if epc == el.ENERGY_UNIT:
            return bytes([el.unit_code(self.unit_kwh)])
        if epc == el.ENERGY_IMPORT:
            return _count(self.import_count)
        if epc == el.ENERGY_EXPORT:
            return _count(self.export_count)
        if epc == el.POWER:
            value = NO_DATA_POWER if self.power_w is None else self.power_w
            return struct.pack(">I", value & 0xFFFFFFFF)
        if epc == el.CURRENTS:
            return _current(self.current_r_a) + _current(self.current_t_a)
        if epc in (el.FIXED_IMPORT, el.FIXED_EXPORT):
            return self.fixed_time(epc)
        return None

    def readable(self) -> list[int]:
        """The Get property map."""
        epcs = [el.OPERATION_STATUS, el.MAKER_CODE, el.GET_PROPERTY_MAP, el.DIGITS]
        epcs += [el.ENERGY_IMPORT, el.ENERGY_UNIT, el.ENERGY_EXPORT, el.POWER, el.CURRENTS]
        epcs += [el.FIXED_IMPORT, el.FIXED_EXPORT]
        return epcs + ([el.COEFFICIENT] if self.coefficient is not None else [])

    def answer(self, request: el.Frame) -> el.Frame | None:
        """The meter's answer to a frame from the controller (None: no answer)."""
        with self.lock:
            self._tick()
            if request.esv == el.INFC_RES:
                self.infc_responses += 1
                return None
            if self.silent or request.deoj[:2] != el.METER_CLASS or request.esv != el.GET:
                return None
            values = [(epc, self.property(epc)) for epc in (p for p, _ in request.properties)]
            refused = self.refuse_multi_get and len(values) > 1
            failed = refused or any(edt is None for _, edt in values)
            props = tuple((epc, b"" if refused or edt is None else edt) for epc, edt in values)
        esv = el.GET_SNA if failed else el.GET_RES
        return el.Frame(request.tid, el.METER, request.seoj, esv, props)

    def fixed_time(self, epc: int) -> bytes:
        """EA/EB: the count at the last half-hour boundary (meter's clock is JST)."""
        now = dt.datetime.now(el.JST).replace(second=0, microsecond=0)
        stamp = now.replace(minute=0 if now.minute < 30 else 30)
        count = self.import_count if epc == el.FIXED_IMPORT else self.export_count
        head = struct.pack(
            ">HBBBBB", stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, 0
        )
        return head + _count(count)

    def notification(self, confirm: bool) -> el.Frame:
        """The half-hourly EA+EB notification (INF, or INFC that wants an INFC_Res)."""
        with self.lock:
            self._tick()
            self._notify_tid = (self._notify_tid + 1) & 0xFFFF
            props = tuple((epc, self.fixed_time(epc)) for epc in (el.FIXED_IMPORT, el.FIXED_EXPORT))
        esv = el.INFC if confirm else el.INF
        return el.Frame(self._notify_tid, el.METER, el.CONTROLLER, esv, props)

    def instance_list(self) -> el.Frame:
        """The node profile's INF of its instances, multicast after a join."""
        return el.Frame(
            0, el.NODE_PROFILE, el.NODE_PROFILE, el.INF, ((el.INSTANCE_LIST, b"\x01" + el.METER),)
        )

    def _tick(self) -> None:
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        if not self.animate:
            return
        swing = 0.4 * math.sin(time.time() / 300 * math.pi) + 0.1 * math.sin(time.time() / 7)
        self.power_w = round(self._base_power * (1 + swing))
        if self.current_r_a is not None:
            phases = 1 if self.current_t_a is None else 2
            self.current_r_a = round(self.power_w / 100 / phases, 1)
            if self.current_t_a is not None:
                self.current_t_a = self.current_r_a
        side = 0 if self.power_w >= 0 else 1
        self._energy_wh[side] += abs(self.power_w) * elapsed / 3600
        step_wh = float((self.coefficient or 1) * self.unit_kwh * 1000)
        counts = int(self._energy_wh[side] // step_wh)
        if counts:
            self._energy_wh[side] -= counts * step_wh
            if side == 0 and self.import_count is not None:
                self.import_count = (self.import_count + counts) % 10**self.digits
            elif side == 1 and self.export_count is not None:
                self.export_count = (self.export_count + counts) % 10**self.digits


def _count(value: int | None) -> bytes:
    return struct.pack(">I", NO_DATA_COUNT if value is None else value)


def _current(amperes: float | None) -> bytes:
    raw = NO_DATA_CURRENT if amperes is None else round(amperes * 10)
    return struct.pack(">H", raw & 0xFFFF)
