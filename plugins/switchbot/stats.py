"""Per-device reception statistics and the status word that sums them up.

What is counted is what bleak delivers: on BlueZ a callback arrives when the payload changed,
when RSSI moved by 8 dBm or more, or for every packet when duplicate data is requested, so
callbacks are not radio packets (research notes §3.1, §5).

The device's advertising interval is learned the way Home Assistant's ``AdvertisementTracker``
does it: the longest gap among the first 16 gaps; it is learned again after a scanner restart so
a pause of the scanner is not taken for a silent device. Until it is known, only ``gone_after``
applies.

Status words, first match wins:

``gone``               not heard for longer than ``gone_after`` (default 15 min)
``needs-active-scan``  heard, but nothing to decode: the model is unknown (passive scan, not
                       configured) or the firmware only sends values in scan responses
``flaky``              silent for longer than the learned interval + 5 s, or a gap in this
                       period longer than 3 x the learned interval, or median RSSI below -88 dBm
``quiet``              heard, but the reading has not changed for ``quiet_after`` (default 30 min)
``healthy``            none of the above
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HEALTHY, QUIET, FLAKY, GONE, NEEDS_ACTIVE_SCAN = (
    "healthy",
    "quiet",
    "flaky",
    "gone",
    "needs-active-scan",
)
GAPS_TO_LEARN = 16  # habluetooth ADVERTISING_TIMES_NEEDED
WOBBLE_S = 5.0  # habluetooth TRACKER_BUFFERING_WOBBLE_SECONDS
FLAKY_GAP_FACTOR = 3.0


@dataclass(frozen=True)
class Thresholds:
    """The limits behind the status words (all configurable)."""

    gone_after: float = 900.0
    quiet_after: float = 1800.0
    flaky_rssi: int = -88


@dataclass
class DeviceStats:
    """Reception of one device: counters for the current period plus what outlives it."""

    first_heard: float | None = None
    last_heard: float | None = None
    last_change: float | None = None
    battery_seen: float | None = None
    expected_interval: float | None = None
    _learning: list[float] = field(default_factory=list)
    _gap_from: float | None = None  #: where the next gap starts; ``None`` after a restart
    adverts: int = 0
    scan_responses: int = 0
    reading_changes: int = 0
    decode_errors: int = 0
    _longest_gap: float = 0.0
    _rssi: Counter[int] = field(default_factory=Counter)

    def heard(self, now: float, rssi: int | None, scan_response: bool) -> None:
        """One callback for this device at ``now`` (seconds on the source's clock)."""
        if self._gap_from is not None:
            gap = max(0.0, now - self._gap_from)
            self._longest_gap = max(self._longest_gap, gap)
            if self.expected_interval is None:
                self._learning.append(gap)
                if len(self._learning) >= GAPS_TO_LEARN:
                    self.expected_interval = max(self._learning)
                    self._learning.clear()
        if self.first_heard is None:
            self.first_heard = now
        self.last_heard = self._gap_from = now
        self.adverts += 1
        self.scan_responses += scan_response
        if rssi is not None:
            self._rssi[rssi] += 1

    def relearn(self) -> None:
        """Forget the learned interval (the scanner restarted; its pause is no device's fault)."""
        self.expected_interval = None
        self._learning.clear()
        self._gap_from = None

    def period(self, now: float, limits: Thresholds, decodable: bool) -> dict[str, Any]:
        """The fields for this period, then start a new period."""
        fields: dict[str, Any] = {
            "adverts": self.adverts,
            "scan_responses": self.scan_responses,
            "reading_changes": self.reading_changes,
            "decode_errors": self.decode_errors,
        }
        gap = self._longest_gap
        if self._gap_from is not None:
            gap = max(gap, now - self._gap_from)
        if self.last_heard is not None:
            fields["last_heard_s"] = round(now - self.last_heard, 3)
        fields["longest_gap_s"] = round(gap, 3)
        if self._rssi:
            fields["rssi_median_dbm"] = _median_low(self._rssi)
            fields["rssi_min_dbm"] = min(self._rssi)
        if self.battery_seen is not None:
            fields["battery_age_s"] = round(now - self.battery_seen, 3)
        if self.expected_interval is not None:
            fields["expected_interval_s"] = round(self.expected_interval, 3)
        fields["status"] = self.status(now, limits, decodable, gap, fields.get("rssi_median_dbm"))
        self.adverts = self.scan_responses = self.reading_changes = self.decode_errors = 0
        self._longest_gap = 0.0
        self._rssi.clear()
        return fields

    def current_status(self, now: float, limits: Thresholds, decodable: bool) -> str:
        """The status word right now, without ending the period (for a live table)."""
        gap = self._longest_gap
        if self._gap_from is not None:
            gap = max(gap, now - self._gap_from)
        median = _median_low(self._rssi) if self._rssi else None
        return self.status(now, limits, decodable, gap, median)

    def status(
        self,
        now: float,
        limits: Thresholds,
        decodable: bool,
        longest_gap: float,
        rssi_median: int | None,
    ) -> str:
        """The status word (module docstring) for the period ending at ``now``."""
        heard = self.last_heard
        if heard is None or now - heard > limits.gone_after:
            return GONE
        if not decodable:
            return NEEDS_ACTIVE_SCAN
        expected = self.expected_interval
        if expected is not None:
            if now - heard > expected + WOBBLE_S:
                return FLAKY
            if longest_gap > FLAKY_GAP_FACTOR * expected + WOBBLE_S:
                return FLAKY
        if rssi_median is not None and rssi_median < limits.flaky_rssi:
            return FLAKY
        if self.last_change is None or now - self.last_change > limits.quiet_after:
            return QUIET
        return HEALTHY


def _median_low(counts: Counter[int]) -> int:
    total = sum(counts.values())
    middle = (total - 1) // 2
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen > middle:
            return value
    raise ValueError("no values")
