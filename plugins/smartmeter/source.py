"""The ``smartmeter`` source: a B-route smart meter read through a Wi-SUN stick.

Each collection returns one ``smartmeter`` point (power, currents, energy), the EA/EB values the
meter notified since the last collection (stamped with the meter's own half-hour time), and one
``smartmeter_link`` point with the link's counters. The session lives in a
:class:`~.worker.SessionWorker` thread started by the first collection and kept across polls.
With ``device = emulator`` the source also runs the built-in emulator and reads it through a
pty, exactly as it would read a stick.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from kansoku import Metric, PluginContext
from kansoku.errors import ConfigError
from kansoku_plugins.smartmeter import echonet as el
from kansoku_plugins.smartmeter.errors import ParseError
from kansoku_plugins.smartmeter.session import (
    LinkCounters,
    PanCache,
    Reading,
    Scale,
    Session,
    SessionSettings,
)
from kansoku_plugins.smartmeter.skstack import Redactor
from kansoku_plugins.smartmeter.spec import EMULATOR_DEVICE, SCHEMA
from kansoku_plugins.smartmeter.worker import RetryPolicy, SessionWorker, describe_delay

# Credentials the emulator accepts when the config gives none (public example values).
DEMO_ROUTE_B_ID = "00112233445566778899AABBCCDDEEFF"
DEMO_PASSWORD = "0123456789AB"


class SmartmeterSource:
    """Polls the meter through one long-lived PANA session."""

    schema = SCHEMA

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.options = options
        self.context = context
        self.log = context.log
        self.device: str = options["device"]
        route_b_id = options["route_b_id"].reveal()
        password = options["route_b_password"].reveal()
        if self.device == EMULATOR_DEVICE:
            route_b_id = route_b_id or DEMO_ROUTE_B_ID
            password = password or DEMO_PASSWORD
        section = f"[source.{context.name}]"
        if len(route_b_id) != 32 or not route_b_id.isalnum():
            raise ConfigError(
                f"{section} route_b_id must be the 32 letters and digits of your Route-B ID "
                "(from the power company's letter or web page)"
            )
        if not 1 <= len(password) <= 32 or not password.isprintable() or " " in password:
            raise ConfigError(
                f"{section} route_b_password must be 1 to 32 characters without spaces (usually 12)"
            )
        self.redact = Redactor([route_b_id, password])
        self.settings = SessionSettings(
            route_b_id=route_b_id,
            password=password,
            module=options["module"],
            scan_durations=tuple(options["scan_durations"]),
            response_timeout=options["response_timeout"],
            retries=max(0, options["retries"]),
            join_timeout=options["join_timeout"],
            reauth_timeout=options["reauth_timeout"],
            zone=options["meter_timezone"],
            auth_retry_text=describe_delay(options["auth_retry_delay"]),
        )
        self.policy = RetryPolicy(
            options["retry_delay"], options["retry_max_delay"], options["auth_retry_delay"]
        )
        self.join_wait: float = options["join_wait"]
        self.poll_budget = (
            (self.settings.retries + 1) * (self.settings.response_timeout + 5.0) * 4
            + self.settings.reauth_timeout
            + 10.0
        )
        self._worker: SessionWorker | None = None
        self._emulator: Any = None
        self._start_lock = threading.Lock()

    def _started(self) -> SessionWorker:
        with self._start_lock:
            if self._worker is None:
                device = self.device
                if device == EMULATOR_DEVICE:
                    from kansoku_plugins.smartmeter.emulator import Emulator

                    self._emulator = Emulator(self.options["emulator"], log=self.log)
                    device = self._emulator.start()
                from kansoku_plugins.smartmeter.link import Link

                link = Link(device, self.options["baudrate"], self.redact, self.log)
                cache = PanCache(self.context.state_dir / "meter.json", self.log)
                self._worker = SessionWorker(link, self.settings, cache, self.policy, self.log)
                self._worker.start()
            return self._worker

    def collect(self) -> Iterable[Metric]:
        """The latest sample, any notified EA/EB values, and the link counters."""
        worker = self._started()
        worker.wait_ready(self.join_wait)
        reading = worker.call(Session.read_sample, self.poll_budget)
        counters = worker.counters
        metrics = []
        fields = sample_fields(reading, counters, self.log)
        if fields:
            metrics.append(Metric("smartmeter", fields, time_ns=reading.time_ns))
        metrics += fixed_energy_metrics(worker, reading.scale)
        link_fields: dict[str, Any] = dict(counters.as_fields())
        link_fields["transmit_limited"] = reading.transmit_limited
        metrics.append(Metric("smartmeter_link", link_fields, time_ns=reading.time_ns))
        return metrics

    def close(self) -> None:
        """End the session, close the port, stop the emulator."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self._emulator is not None:
            self._emulator.stop()
            self._emulator = None


def sample_fields(reading: Reading, counters: LinkCounters, log: Any) -> dict[str, Any]:
    """Decode one poll into fields; no-data codes leave the field out (and are counted)."""
    values, scale = reading.values, reading.scale
    fields: dict[str, Any] = {}
    try:
        if el.POWER in values:
            power = el.instantaneous_power(values[el.POWER])
            _put(fields, "power_w", power, counters)
        if el.CURRENTS in values:
            r_phase, t_phase = el.instantaneous_currents(values[el.CURRENTS])
            _put(fields, "current_r_a", r_phase, counters)
            if t_phase is not None:  # absent on single-phase 2-wire: that is normal
                fields["current_t_a"] = t_phase
        for epc, name in (
            (el.ENERGY_IMPORT, "energy_import_wh"),
            (el.ENERGY_EXPORT, "energy_export_wh"),
        ):
            if epc in values:
                count = el.cumulative_count(values[epc])
                _put(fields, name, _wh(count, scale), counters)
    except ParseError as exc:
        counters.no_data_values += 1
        log.warning("the meter sent a malformed value: %s", exc)
    return fields


def fixed_energy_metrics(worker: SessionWorker, scale: Scale) -> list[Metric]:
    """Points for the EA/EB values the meter notified, at the meter's own timestamps."""
    points: dict[int, dict[str, Any]] = {}
    while worker.fixed:
        reading = worker.fixed.popleft()
        name = (
            "fixed_energy_import_wh" if reading.epc == el.FIXED_IMPORT else "fixed_energy_export_wh"
        )
        _put(
            points.setdefault(reading.time_ns, {}), name, _wh(reading.count, scale), worker.counters
        )
    return [
        Metric("smartmeter", fields, time_ns=t) for t, fields in sorted(points.items()) if fields
    ]


def _wh(count: int | None, scale: Scale) -> int | None:
    if count is None or scale.unit_kwh is None:
        return None
    return el.to_wh(count, scale.coefficient, scale.unit_kwh)


def _put(fields: dict[str, Any], name: str, value: Any, counters: LinkCounters) -> None:
    if value is None:
        counters.no_data_values += 1
    else:
        fields[name] = value
