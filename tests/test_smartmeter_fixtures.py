"""Fixtures for the smartmeter tests: the emulator on a pty and the real source reading it.

The source is built through the plugin registry from text options (the way a config file
builds it), with short timeouts so that the tests stay fast. Other smartmeter test modules
import the fixtures from here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kansoku import Metric, PluginContext
from kansoku.errors import SourceError
from kansoku.plugins import Registry
from kansoku_plugins.smartmeter.emulator import Emulator
from kansoku_plugins.smartmeter.emulator_settings import EmulatorSettings

ROUTE_B_ID = "0011223344556677889900AABBCCDD42"
PASSWORD = "S3CRETPASS99"
FAST_EMULATOR = {
    "scan_time_scale": 0.0,
    "join_seconds": 0.02,
    "response_delay": 0.005,
    "reauth_seconds": 0.1,
    "notify_every": 0.0,
}
FAST_SOURCE = {
    "route_b_id": ROUTE_B_ID,
    "route_b_password": PASSWORD,
    "response_timeout": "0.5s",
    "retries": "1",
    "join_timeout": "2s",
    "join_wait": "5s",
    "reauth_timeout": "3s",
    "retry_delay": "50ms",
    "retry_max_delay": "200ms",
    "auth_retry_delay": "1s",
}


def source_options(text: dict[str, str]) -> dict[str, Any]:
    """Parse text options with the plugin's own parsers, defaults filled in."""
    spec = Registry(load_entrypoints=False).source("smartmeter")
    values = {}
    for option in spec.options:
        values[option.name] = (
            option.parse(text[option.name]) if option.name in text else option.default
        )
    return values


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """``emulator(**settings)`` starts an emulator with a link in tmp_path (fast defaults)."""
    started: list[Emulator] = []

    def start(link_name: str = "ttyWISUN", **settings: Any) -> Emulator:
        emu = Emulator(
            EmulatorSettings(**{**FAST_EMULATOR, **settings}),
            link=tmp_path / link_name,
            log=logging.getLogger("tests.smartmeter.emulator"),
        )
        emu.start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def smartmeter(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``smartmeter(device, **options)`` builds the real source (closed at teardown)."""
    built: list[Any] = []
    spec = Registry(load_entrypoints=False).source("smartmeter")

    def build(device: str, state: str = "state", **options: str) -> Any:
        values = source_options({**FAST_SOURCE, "device": device, **options})
        context = PluginContext(
            "smartmeter",
            tmp_path / state / "sources" / "smartmeter",
            logging.getLogger("kansoku.source.smartmeter"),
            tmp_path / state,
        )
        source = spec.factory(values, context)
        built.append(source)
        return source

    yield build
    for source in built:
        source.close()


def fields(metrics: list[Metric], measurement: str = "smartmeter") -> dict[str, Any]:
    """The fields of the first point of ``measurement``."""
    return next(m.fields for m in metrics if m.measurement == measurement)


def collect_eventually(source: Any, timeout: float = 5.0) -> list[Metric]:
    """Collect until it works (the source is recovering); fail after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        try:
            return list(source.collect())
        except SourceError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait until ``condition()`` holds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)
