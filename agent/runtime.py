"""The running agent: builds sources and sinks from a config, schedules, publishes, stops.

Each source runs its collection in a thread of its own, so a slow or hung device delays
nothing else; the scheduler's job only waits up to the source's ``timeout`` to report it.
Collected points are coerced (:mod:`kansoku.validation`), tagged and put in every sink's spool
(:mod:`kansoku.spool`); sink workers (:mod:`kansoku.delivery`) write them in the background.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kansoku.config import Config, SectionConfig
from kansoku.delivery import SinkWorker
from kansoku.errors import KansokuError
from kansoku.metric import Metric
from kansoku.plugins import Registry
from kansoku.schema import FieldSpec, MeasurementSchema
from kansoku.spool import Spool
from kansoku.types import PluginContext, Source, SourceSpec
from kansoku.validation import TypePins, Validator

log = logging.getLogger("kansoku.agent")

_COUNTER = {"kind": "counter"}
AGENT_SCHEMA = {
    "agent": MeasurementSchema(
        {
            "collections": FieldSpec(int, **_COUNTER, description="collections that finished"),
            "errors": FieldSpec(int, **_COUNTER, description="collections that failed"),
            "timeouts": FieldSpec(int, **_COUNTER, description="collections over their timeout"),
            "skipped": FieldSpec(int, **_COUNTER, description="runs skipped: previous still busy"),
            "points": FieldSpec(int, **_COUNTER, description="points collected"),
            "rejected_values": FieldSpec(int, **_COUNTER, description="values failing coercion"),
            "collect_seconds": FieldSpec(float, "s", description="duration of the last collection"),
            "written": FieldSpec(int, **_COUNTER, description="points delivered"),
            "failed_writes": FieldSpec(int, **_COUNTER, description="write attempts that failed"),
            "quarantined": FieldSpec(int, **_COUNTER, description="points refused for good"),
            "dropped": FieldSpec(int, **_COUNTER, description="points dropped by spool bounds"),
            "spool_depth": FieldSpec(int, "points", description="points waiting for delivery"),
            "quarantine_depth": FieldSpec(int, "points", description="points in quarantine"),
        }
    ),
    "agent_rejected": MeasurementSchema(
        {
            "count": FieldSpec(int, **_COUNTER, description="values of this field rejected"),
        }
    ),
}


@dataclass
class SourceStats:
    """Counters a source runner reports as self-metrics."""

    collections: int = 0
    errors: int = 0
    timeouts: int = 0
    skipped: int = 0
    points: int = 0
    collect_seconds: float = 0.0
    last_success: float | None = None
    last_error: str | None = None


class SourceRunner:
    """One configured source: its schedule, its own collection thread, validation, tags."""

    def __init__(
        self,
        section: SectionConfig,
        spec: SourceSpec,
        source: Source,
        validator: Validator,
        agent: Agent,
    ) -> None:
        self.name = section.id
        self.spec = spec
        self.source = source
        self.validator = validator
        self.agent = agent
        common = section.common
        self.interval: float = common["interval"] or spec.default_interval
        self.jitter: float = common["jitter"]
        self.timeout: float = common["timeout"] or self.interval
        self.window: float = common["window"] or min(self.interval, 30.0)
        self.tags = {**agent.config.agent.tags, **common["tags"]}
        if section.instance:
            self.tags["instance"] = section.instance
        self.stats = SourceStats()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, f"source-{self.name}")
        self._busy: concurrent.futures.Future[bool] | None = None

    @property
    def listening(self) -> bool:
        """Whether the source hears events in the background between collections."""
        return self.spec.mode == "listen"

    def start(self) -> None:
        """Let a listening source begin listening."""
        if self.listening:
            self.source.start()  # type: ignore[attr-defined]

    def run_once(self) -> bool:
        """Collect once in the source's own thread; wait at most ``timeout`` for it."""
        if self._busy is not None and not self._busy.done():
            self.stats.skipped += 1
            log.warning(
                "source %s is still busy with its previous collection; this run is skipped",
                self.name,
            )
            return False
        self._busy = self._executor.submit(self._collect)
        try:
            return self._busy.result(self.timeout)
        except concurrent.futures.TimeoutError:
            self.stats.timeouts += 1
            self.stats.last_error = f"no answer within {self.timeout:g}s"
            log.error(
                "source %s has not finished collecting after %gs (timeout); it keeps its "
                "thread, and no other source waits for it",
                self.name,
                self.timeout,
            )
            return False

    def _collect(self) -> bool:
        started = time.monotonic()
        try:
            raw = list(self.source.collect())
        except KansokuError as exc:
            return self._failed(str(exc), traceback=False)
        except Exception as exc:  # a plugin bug must not stop the agent
            return self._failed(f"{type(exc).__name__}: {exc}", traceback=True)
        self.stats.collect_seconds = time.monotonic() - started
        typed = self.validator.apply(raw)
        for metric in typed:
            metric.tags = {**self.tags, **metric.tags}
        self.agent.publish(typed)
        acknowledge = getattr(self.source, "acknowledge", None)
        if acknowledge is not None:  # the points are in every sink's spool now
            acknowledge()
        self.stats.collections += 1
        self.stats.points += len(typed)
        self.stats.last_success = time.time()
        self.stats.last_error = None
        return True

    def _failed(self, message: str, traceback: bool) -> bool:
        first = message != self.stats.last_error
        self.stats.errors += 1
        self.stats.last_error = message
        log.log(
            logging.ERROR if first else logging.DEBUG,
            "source %s could not collect: %s",
            self.name,
            message,
            exc_info=traceback and first,
        )
        return False

    def close(self) -> None:
        """Close the source; a hung collection thread is left behind, not waited for."""
        try:
            self.source.close()
        except Exception:
            log.exception("source %s failed to close", self.name)
        self._executor.shutdown(wait=False, cancel_futures=True)


class Agent:
    """Sources, sinks and the glue between them, built from one validated config."""

    def __init__(self, config: Config, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.state_dir = config.agent.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pins = TypePins(self.state_dir / "types.json")
        self.sinks = [self._build_sink(section) for section in config.sinks]
        self.sources = [self._build_source(section) for section in config.sources]
        self._self_validator = Validator("agent", AGENT_SCHEMA, self.pins)
        self.closed = False

    def _context(self, kind: str, section: SectionConfig) -> PluginContext:
        folder = self.state_dir / f"{kind}s" / section.id
        return PluginContext(
            name=section.id,
            state_dir=folder,
            log=logging.getLogger(f"kansoku.{kind}.{section.id}"),
            agent_state_dir=self.state_dir,
        )

    def _build_source(self, section: SectionConfig) -> SourceRunner:
        spec = self.registry.source(section.plugin)
        source = spec.factory(section.options, self._context("source", section))
        validator = Validator(section.id, source.schema, self.pins)
        return SourceRunner(section, spec, source, validator, self)

    def _build_sink(self, section: SectionConfig) -> SinkWorker:
        spec = self.registry.sink(section.plugin)
        sink = spec.factory(section.options, self._context("sink", section))
        common = section.common
        spool = Spool(
            self.state_dir / "spool" / f"{section.id}.sqlite",
            max_bytes=common["max_spool_size"],
            max_age=common["max_spool_age"],
            name=section.id,
        )
        return SinkWorker(
            section.id,
            sink,
            spool,
            batch_size=common["batch_size"] or spec.default_batch_size,
            flush_interval=common["flush_interval"],
            retry_max_backoff=common["retry_max_backoff"],
            include=common["include"],
            exclude=common["exclude"],
            accepts=spec.accepts,
        )

    def publish(self, metrics: Iterable[Metric]) -> None:
        """Put typed, tagged metrics into every sink's spool."""
        batch = list(metrics)
        if not batch:
            return
        for worker in self.sinks:
            worker.offer(batch)

    def self_metrics(self) -> list[Metric]:
        """The agent's own counters as metrics (measurements ``agent`` and ``agent_rejected``)."""
        now = time.time_ns()
        out: list[Metric] = []
        for runner in self.sources:
            s = runner.stats
            fields: dict[str, Any] = {
                "collections": s.collections,
                "errors": s.errors,
                "timeouts": s.timeouts,
                "skipped": s.skipped,
                "points": s.points,
                "rejected_values": sum(runner.validator.rejected.values()),
                "collect_seconds": s.collect_seconds,
            }
            out.append(Metric("agent", fields, {"component": "source", "name": runner.name}, now))
            for (measurement, field), count in sorted(runner.validator.rejected.items()):
                tags = {"source": runner.name, "measurement": measurement, "field": field}
                out.append(Metric("agent_rejected", {"count": count}, tags, now))
        for worker in self.sinks:
            w = worker.stats
            fields = {
                "written": w.written,
                "failed_writes": w.failed_writes,
                "quarantined": w.quarantined,
                "dropped": worker.spool.dropped,
                "spool_depth": worker.spool.depth(),
                "quarantine_depth": worker.spool.quarantine_depth(),
            }
            out.append(Metric("agent", fields, {"component": "sink", "name": worker.name}, now))
        for metric in out:
            metric.tags = {**self.config.agent.tags, **metric.tags}
        return out

    def report_self(self) -> None:
        """Publish the self-metrics through the same pipeline as any source."""
        self.publish(self._self_validator.apply(self.self_metrics()))

    def start(self) -> None:
        """Start sink workers and listening sources, then tell the plugins."""
        for worker in self.sinks:
            worker.start()
        for runner in self.sources:
            runner.start()
        self.registry.pm.hook.kansoku_startup(agent=self)

    def run(self, stop: threading.Event) -> None:
        """Collect on schedule until ``stop`` is set, then flush and close."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        scheduler = BackgroundScheduler(
            timezone="UTC",
            executors={"default": ThreadPoolExecutor(len(self.sources) + 2)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self.start()
        now = _utcnow()
        for runner in self.sources:
            first = now
            if runner.listening:  # let it hear a first window before handing over
                first = _utcnow(runner.interval)
            scheduler.add_job(
                runner.run_once,
                IntervalTrigger(seconds=runner.interval, jitter=runner.jitter or None),
                id=f"source:{runner.name}",
                name=f"source {runner.name}",
                next_run_time=first,
                misfire_grace_time=max(1, int(runner.interval)),
            )
        if self.config.agent.self_metrics:
            interval = self.config.agent.self_metrics_interval
            scheduler.add_job(
                self.report_self,
                IntervalTrigger(seconds=interval),
                id="self-metrics",
                next_run_time=_utcnow(interval),
                misfire_grace_time=max(1, int(interval)),
            )
        scheduler.start()
        log.info(
            "agent running: %d sources, %d sinks, state in %s",
            len(self.sources),
            len(self.sinks),
            self.state_dir,
        )
        stop.wait()
        log.info("stopping: flushing sinks (at most %gs)", self.config.agent.shutdown_timeout)
        scheduler.shutdown(wait=False)
        if self.config.agent.self_metrics:
            self.report_self()
        self.close()

    def once(self) -> list[str]:
        """Collect every source once, deliver, and return one line per failure."""
        self.start()
        listeners = [r for r in self.sources if r.listening]
        if listeners:
            window = max(r.window for r in listeners)
            log.info("listening for %gs", window)
            time.sleep(window)
        failures: list[str] = []
        with concurrent.futures.ThreadPoolExecutor(max(1, len(self.sources))) as pool:
            results = list(pool.map(lambda r: r.run_once(), self.sources))
        for runner, ok in zip(self.sources, results, strict=True):
            if not ok:
                failures.append(f"source {runner.name}: {runner.stats.last_error}")
        deadline = time.monotonic() + self.config.agent.shutdown_timeout
        for worker in self.sinks:
            before = worker.stats.quarantined
            if not worker.drain(deadline, ignore_backoff=True):
                failures.append(
                    f"sink {worker.name}: {worker.stats.last_error or 'not finished in time'}; "
                    f"{worker.spool.depth()} points kept in the spool"
                )
            elif worker.stats.quarantined > before:
                failures.append(
                    f"sink {worker.name}: {worker.stats.quarantined - before} points refused "
                    "and quarantined"
                )
        self.close(flush=False)
        return failures

    def close(self, flush: bool = True) -> None:
        """Flush sinks within the shutdown timeout, close everything, tell the plugins."""
        self.closed = True
        deadline = time.monotonic() + self.config.agent.shutdown_timeout
        for runner in self.sources:
            runner.close()
        for worker in self.sinks:
            if flush:
                remaining = max(0.0, deadline - time.monotonic())
                if not worker.stop(remaining):
                    log.warning(
                        "sink %s: %d points stay in the spool for the next start",
                        worker.name,
                        worker.spool.depth(),
                    )
            worker.close()
        self.registry.pm.hook.kansoku_shutdown(agent=self)


def _utcnow(delay: float = 0.0) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(seconds=delay)
