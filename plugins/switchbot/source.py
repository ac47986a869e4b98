"""The ``switchbot`` source: listens to SwitchBot thermo-hygrometers and hands over each interval.

``start()`` attaches the source to its adapter's scanner (or to a replayed capture);
every bleak callback goes to the :class:`~.tracker.Tracker`. ``collect()`` hands over the newest
reading per device heard since the last collection, one ``switchbot_reception`` point per device
and one ``switchbot_scanner`` point about the scanner itself.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kansoku import Metric, PluginContext
from kansoku.errors import ConfigError, SourceError
from kansoku_plugins.switchbot.capture import ReplayClock, replay_backend, resolve
from kansoku_plugins.switchbot.config import SCHEMA
from kansoku_plugins.switchbot.scanner import Scanner, ScannerSettings, attach, detach
from kansoku_plugins.switchbot.stats import Thresholds
from kansoku_plugins.switchbot.tracker import Tracker


@dataclasses.dataclass
class Listening:
    """How a source or command hears adverts: scanner settings plus the clock its stats use."""

    settings: ScannerSettings
    clock: Callable[[], float]
    replay: str | None = None
    problem: str | None = None  #: why it cannot start (a replay file that is not there)


def listening(options: Mapping[str, Any], log: logging.Logger) -> Listening:
    """Scanner settings from the options; a replay gets its backend and a capture clock."""
    settings = ScannerSettings(
        adapter=options["adapter"],
        mode=options["scan_mode"],
        duplicate_data=options["duplicate_data"],
        watchdog=options["watchdog"],
        max_backoff=options["max_backoff"],
    )
    replay = options["replay"]
    if not replay:
        return Listening(settings, time.monotonic)
    capture = resolve(replay)
    try:
        with capture.open("r", encoding="utf-8"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return Listening(settings, time.monotonic, replay, f"replay file {capture}: {reason}")
    clock = ReplayClock(options["speed"])
    backend = replay_backend(capture, clock, options["loop"], log)
    return Listening(dataclasses.replace(settings, watchdog=0, backend=backend), clock, replay)


class SwitchBotSource:
    """A listening source: SwitchBot readings plus reception statistics per device."""

    schema = SCHEMA

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        if options["replay"] and options["loop"] and math.isinf(options["speed"]):
            raise ConfigError(
                f"[source.{context.name}] loop = true needs a finite speed (e.g. speed = 1)"
            )
        self.options = options
        self.log = context.log
        limits = Thresholds(options["gone_after"], options["quiet_after"], options["flaky_rssi"])
        self.tracker = Tracker(options["devices"], limits, self.log, options["only_configured"])
        self.clock: Callable[[], float] = time.monotonic
        self._scanner: Scanner | None = None
        self._problem: str | None = None
        self._replay = False
        self._adverts_seen = 0

    def start(self) -> None:
        """Begin hearing adverts (the scanner runs in its own thread)."""
        how = listening(self.options, self.log)
        self.clock, self._problem, self._replay = how.clock, how.problem, bool(how.replay)
        if how.problem:
            self.log.error("%s", how.problem)
            return
        self.tracker.started = self.clock()
        try:
            self._scanner = attach(how.settings, self, self.log)
        except SourceError as exc:  # reported by every collection, not fatal to the agent
            self._problem = str(exc)
            self.log.error("%s", exc)

    def detected(self, device: Any, advertisement: Any) -> None:
        """bleak's detection callback (live or replayed)."""
        self.tracker.hear(device, advertisement, self.clock())

    def scanner_restarted(self) -> None:
        """The scanner was rebuilt: relearn advertising intervals."""
        self.tracker.restart()

    def collect(self) -> Iterable[Metric]:
        """What was heard since the last collection, plus reception and scanner statistics."""
        if self._problem:
            raise SourceError(self._problem)
        scanner = self._scanner
        if scanner is None:
            raise SourceError("the switchbot source was not started")
        health = scanner.health
        heard_now = health.adverts != self._adverts_seen
        self._adverts_seen = health.adverts
        if not scanner.running and not heard_now and health.last_error:
            raise SourceError(health.last_error)
        wall = time.time_ns()
        metrics = self.tracker.hand_over(self.clock(), wall)
        fields: dict[str, Any] = {
            "state": health.state,
            "scan_mode": "replay" if self._replay else health.scan_mode or "none",
            "restarts": health.restarts,
            "start_failures": health.start_failures,
            "adverts": health.adverts,
        }
        if health.last_advert is not None and not self._replay:
            fields["silence_s"] = round(time.monotonic() - health.last_advert, 3)
        tags = {"adapter": scanner.settings.adapter}
        metrics.append(Metric("switchbot_scanner", fields, tags, wall))
        return metrics

    def close(self) -> None:
        """Stop listening (the scanner stops when its last source leaves)."""
        if self._scanner is not None:
            detach(self._scanner, self)
            self._scanner = None
