"""``--collect``: collect one source once, directly, for users without a running agent.

This is the classic Cacti script use (open the device, read, print). It builds the one source
from the configuration file with the plugin manager, takes the source's lock (a running agent
holds it: then this refuses, see :mod:`kansoku.sourcelock`), collects once through the same
runner, validation and tags as ``agent run``, and returns the typed points as a last-values
cache that ``agent cacti|get|discover`` print like the agent's own cache. Nothing is written to
the cache or to any sink.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from kansoku import sourcelock
from kansoku.errors import ConfigError, SourceError
from kansoku.lastvalues import SourceCache
from kansoku.metric import Metric


class _Host:
    """What a SourceRunner needs from its agent: the settings and a place to publish to."""

    def __init__(self, config: object) -> None:
        self.config = config
        self.metrics: list[Metric] = []

    def publish(self, metrics: Sequence[Metric]) -> bool:
        """Keep the points in memory; False: nothing is spooled, so nothing is acknowledged."""
        self.metrics.extend(metrics)
        return False


class DirectCollector:
    """The configuration file and its plugins, loaded once; collects one source on request."""

    def __init__(self, config_path: Path) -> None:
        from kansoku import config as config_module
        from kansoku.plugins import Registry

        self.path = config_path
        self.registry = Registry()
        self.config = config_module.load(config_path, self.registry)
        self.sources = {s.id: s for s in self.config.sources}

    def collect(self, source_id: str) -> SourceCache:
        """Collect ``source_id`` once and return its values."""
        from kansoku.runtime import SourceRunner, build_plugin
        from kansoku.validation import TypePins, Validator

        section = self.sources.get(source_id)
        if section is None:
            known = ", ".join(self.sources) or "none"
            raise ConfigError(
                f"{self.path}: no enabled section [source.{source_id}] (sources: {known})"
            )
        state_dir = self.config.agent.state_dir
        spec = self.registry.source(section.plugin)
        host = _Host(self.config)
        with sourcelock.claim(state_dir, source_id):
            source = build_plugin(self.config, self.registry, section)
            validator = Validator(section.id, source.schema, TypePins(state_dir / "types.json"))
            runner = SourceRunner(section, spec, source, validator, host)  # type: ignore[arg-type]
            try:
                runner.start()
                if runner.listening:
                    time.sleep(runner.window)
                collected = runner.run_once()
            finally:
                runner.close()
        if not collected:
            raise SourceError(f"source {source_id} could not collect: {runner.stats.last_error}")
        cache = SourceCache(source_id)
        cache.describe(runner.interval, source.schema, 0.0)
        for metric in host.metrics:
            cache.update(metric)
        return cache
