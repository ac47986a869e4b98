"""Reception statistics and status rules of one device, on a clock the test drives."""

from __future__ import annotations

from kansoku_plugins.switchbot.stats import DeviceStats, Thresholds

LIMITS = Thresholds(gone_after=60.0, quiet_after=30.0, flaky_rssi=-88)


def heard_every(stats: DeviceStats, seconds: float, times: int, start: float = 0.0) -> float:
    now = start
    for _ in range(times):
        stats.heard(now, -60, False)
        now += seconds
    return now - seconds


def test_interval_is_learned_from_the_first_16_gaps():
    stats = DeviceStats()
    heard_every(stats, 2.0, 16)
    assert stats.expected_interval is None  # 15 gaps so far
    stats.heard(31.5, -60, False)
    assert stats.expected_interval == 2.0
    stats.heard(60.0, -60, False)  # a later long gap does not change what was learned
    assert stats.expected_interval == 2.0


def test_silence_beyond_the_interval_plus_wobble_is_flaky_then_gone():
    stats = DeviceStats(last_change=0.0)
    last = heard_every(stats, 1.0, 20)
    stats.last_change = last
    assert stats.current_status(last + 5.9, LIMITS, True) == "healthy"
    assert stats.current_status(last + 6.1, LIMITS, True) == "flaky"
    assert stats.current_status(last + 60.1, LIMITS, True) == "gone"


def test_a_long_gap_inside_the_period_is_flaky_even_if_heard_since():
    stats = DeviceStats()
    last = heard_every(stats, 1.0, 20)
    stats.heard(last + 9.0, -60, False)  # 9 s > 3 x 1 s + 5 s
    stats.last_change = last + 9.0
    fields = stats.period(last + 9.5, LIMITS, True)
    assert fields["status"] == "flaky" and fields["longest_gap_s"] == 9.0
    assert stats.period(last + 10.0, LIMITS, True)["status"] == "healthy"  # next period


def test_restart_relearns_and_the_pause_is_not_a_gap():
    stats = DeviceStats(last_change=0.0)
    last = heard_every(stats, 1.0, 20)
    stats.relearn()
    stats.heard(last + 30.0, -60, False)
    stats.last_change = last + 30.0
    fields = stats.period(last + 30.0, LIMITS, True)
    assert "expected_interval_s" not in fields and fields["longest_gap_s"] == 1.0
    assert fields["status"] == "healthy"


def test_rssi_median_and_weak_signal():
    stats = DeviceStats(last_change=0.0)
    for n, rssi in enumerate((-90, -91, -60, -92)):
        stats.heard(float(n), rssi, n % 2 == 0)
    fields = stats.period(4.0, LIMITS, True)
    assert (fields["rssi_median_dbm"], fields["rssi_min_dbm"]) == (-91, -92)
    assert fields["status"] == "flaky" and fields["scan_responses"] == 2
    assert stats.period(5.0, LIMITS, True)["adverts"] == 0


def test_quiet_and_needs_active_scan():
    stats = DeviceStats(last_change=0.0)
    last = heard_every(stats, 1.0, 40)
    assert stats.current_status(last, LIMITS, True) == "quiet"  # unchanged for 39 s
    assert stats.current_status(last, LIMITS, False) == "needs-active-scan"
    assert stats.current_status(last + 61, LIMITS, False) == "gone"  # gone comes first
