"""The running agent: builds sources and sinks from a config, schedules, publishes, stops.

Each source runs its collection in a thread of its own, so a slow or hung device delays
nothing else; the scheduler's job only waits up to the source's ``timeout`` to report it.
Collected points are coerced (:mod:`kansoku.validation`), tagged and put in every sink's spool
(:mod:`kansoku.spool`); sink workers (:mod:`kansoku.delivery`) write them in the background.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kansoku import sdnotify, sourcelock, status
from kansoku.config import Config, SectionConfig
from kansoku.delivery import SinkWorker
from kansoku.errors import ConfigError, KansokuError
from kansoku.metric import Metric
from kansoku.plugins import Registry
from kansoku.schema import FieldSpec, MeasurementSchema
from kansoku.spool import Spool
from kansoku.types import PluginContext, SinkSpec, Source, SourceInfo, SourceSpec
from kansoku.validation import TypePins, Validator

log = logging.getLogger("kansoku.agent")

STATUS_INTERVAL = 10.0

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
        self.section = section
        self.spec = spec
        self.source = source
        self.validator = validator
        self.agent = agent
        common = section.common
        self.interval: float = common["interval"] or spec.default_interval
        self.jitter: float = common["jitter"]
        self.timeout: float = common["timeout"] or self.interval
        self.window: float = common["window"] or min(self.interval, 30.0)
        self.tags = self.tags_with(agent.config.agent.tags)
        self.stats = SourceStats()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, f"source-{self.name}")
        self._busy: concurrent.futures.Future[bool] | None = None

    def tags_with(self, global_tags: dict[str, str]) -> dict[str, str]:
        """Tags for this source's points: global, then the section's, then the instance."""
        tags = {**global_tags, **self.section.common["tags"]}
        if self.section.instance:
            tags["instance"] = self.section.instance
        return tags

    def status(self) -> dict[str, Any]:
        """What ``agent status`` shows about this source."""
        s = self.stats
        device = getattr(self.source, "status", None)
        return {
            "plugin": self.spec.name,
            "interval": self.interval,
            "last_success": s.last_success,
            "last_error": s.last_error,
            "collect_seconds": s.collect_seconds,
            "collections": s.collections,
            "errors": s.errors + s.timeouts,
            "device": device() if device is not None else None,
        }

    @property
    def listening(self) -> bool:
        """Whether the source hears events in the background between collections."""
        return self.spec.mode == "listen"

    def start(self) -> None:
        """Let a listening source begin listening; a failure is reported, the agent goes on."""
        if not self.listening:
            return
        try:
            self.source.start()  # type: ignore[attr-defined]
        except KansokuError as exc:
            self._failed(f"could not start listening: {exc}", traceback=False)
        except Exception as exc:
            self._failed(f"{type(exc).__name__} when starting: {exc}", traceback=True)

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
        try:
            typed = self.validator.apply(raw)
            for metric in typed:
                metric.tags = {**self.tags, **metric.tags}
            spooled = self.agent.publish(typed)
        except Exception as exc:  # a full disk, a damaged spool, a source returning junk
            message = f"could not spool what it collected: {type(exc).__name__}: {exc}"
            return self._failed(message, traceback=True)
        acknowledge = getattr(self.source, "acknowledge", None)
        if acknowledge is not None and spooled:  # the points are on disk in every spool now
            try:
                acknowledge()
            except KansokuError as exc:
                return self._failed(f"could not confirm what it read: {exc}", traceback=False)
            except Exception as exc:
                return self._failed(f"{type(exc).__name__} in acknowledge: {exc}", traceback=True)
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


def plugin_context(section: SectionConfig, state_dir: Path) -> PluginContext:
    """The context a plugin instance is built with: its name, state folder and logger."""
    return PluginContext(
        name=section.id,
        state_dir=state_dir / f"{section.kind}s" / section.id,
        log=logging.getLogger(f"kansoku.{section.kind}.{section.id}"),
        agent_state_dir=state_dir,
    )


def build_plugin(config: Config, registry: Registry, section: SectionConfig) -> Any:
    """Call the plugin's factory for one section; its refusals name the file and section."""
    spec: SourceSpec | SinkSpec = (
        registry.source(section.plugin)
        if section.kind == "source"
        else registry.sink(section.plugin)
    )
    context = plugin_context(section, config.agent.state_dir)
    try:
        return spec.factory(section.options, context)
    except ConfigError as exc:
        if str(config.path) in str(exc):
            raise
        raise ConfigError(f"{config.path}: [{section.section}] {exc}") from None
    except (KansokuError, ValueError) as exc:
        raise ConfigError(f"{config.path}: [{section.section}] {exc}") from None


class Agent:
    """Sources, sinks and the glue between them, built from one validated config."""

    def __init__(self, config: Config, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.state_dir = config.agent.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pins = TypePins(self.state_dir / "types.json")
        self.started = time.time()
        self._sinks_lock = threading.RLock()
        self._sink_sections: dict[str, SectionConfig] = {}
        self.sinks = [self._build_sink(section) for section in config.sinks]
        self.sources = [self._build_source(section) for section in config.sources]
        self._self_validator = Validator("agent", AGENT_SCHEMA, self.pins)
        self.reload_requested = threading.Event()
        self._locks: dict[str, int] = {}
        self.closed = False

    def _build_source(self, section: SectionConfig) -> SourceRunner:
        spec = self.registry.source(section.plugin)
        source = build_plugin(self.config, self.registry, section)
        validator = Validator(section.id, source.schema, self.pins)
        return SourceRunner(section, spec, source, validator, self)

    def _build_sink(self, section: SectionConfig) -> SinkWorker:
        spec = self.registry.sink(section.plugin)
        sink = build_plugin(self.config, self.registry, section)
        self._sink_sections[section.id] = section
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

    def publish(self, metrics: Iterable[Metric]) -> bool:
        """Put typed, tagged metrics into every sink's spool; True once they are on disk."""
        batch = list(metrics)
        if batch:
            with self._sinks_lock:
                for worker in self.sinks:
                    worker.offer(batch)
        return True

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

    def start(self, sink_threads: bool = True) -> None:
        """Lock the sources, start sink workers and listening sources, tell the plugins.

        ``agent once`` drains the spools itself and starts no sink threads.
        """
        self._locks = sourcelock.hold(self.state_dir, [r.name for r in self.sources])
        self._describe_sources()
        if sink_threads:
            for worker in self.sinks:
                worker.start()
        for runner in self.sources:
            runner.start()
        self.registry.pm.hook.kansoku_startup(agent=self)

    def source_infos(self) -> list[SourceInfo]:
        """Each source instance's name, interval and schema (self-metrics included)."""
        infos = [SourceInfo(r.name, r.interval, r.source.schema) for r in self.sources]
        if self.config.agent.self_metrics:
            interval = self.config.agent.self_metrics_interval
            infos.append(SourceInfo("agent", interval, AGENT_SCHEMA))
        return infos

    def _describe_sources(self) -> None:
        infos = self.source_infos()
        for worker in self.sinks:
            describe = getattr(worker.sink, "describe_sources", None)
            if describe is not None:
                describe(infos, worker.flush_interval)

    def run(self, stop: threading.Event, reload: Callable[[], Config] | None = None) -> None:
        """Collect on schedule until ``stop`` is set, then flush and close.

        Setting :attr:`reload_requested` (SIGHUP) makes the agent call ``reload`` for a new
        config, within a second, and apply it without a restart.
        """
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._scheduler = BackgroundScheduler(
            timezone="UTC",
            executors={"default": ThreadPoolExecutor(len(self.sources) + 4)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self.start()
        for runner in self.sources:
            self._schedule(runner)
        self._schedule_housekeeping()
        self._scheduler.start()
        health = self._start_health()
        log.info(
            "agent running: %d sources, %d sinks, state in %s",
            len(self.sources),
            len(self.sinks),
            self.state_dir,
        )
        sdnotify.ready(f"collecting from {len(self.sources)} sources")
        while not stop.wait(1.0):
            if self.reload_requested.is_set() and reload is not None:
                self.reload_requested.clear()
                self._reload(reload)
        sdnotify.stopping()
        log.info("stopping: flushing sinks (at most %gs)", self.config.agent.shutdown_timeout)
        self._scheduler.shutdown(wait=False)
        if health is not None:
            health.stop()
        if self.config.agent.self_metrics:
            self.report_self()
        self.close()

    def _schedule(self, runner: SourceRunner) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        first = _utcnow(runner.interval if runner.listening else 0.0)
        self._scheduler.add_job(
            runner.run_once,
            IntervalTrigger(seconds=runner.interval, jitter=runner.jitter or None),
            id=f"source:{runner.name}",
            name=f"source {runner.name}",
            next_run_time=first,
            misfire_grace_time=max(1, int(runner.interval)),
        )

    def _schedule_housekeeping(self) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        jobs: list[tuple[str, Callable[[], object], float]] = [
            ("status", self.write_status, STATUS_INTERVAL)
        ]
        if self.config.agent.self_metrics:
            jobs.append(("self-metrics", self.report_self, self.config.agent.self_metrics_interval))
        period = sdnotify.watchdog_period()
        if period is not None:  # pinged from the scheduler: proves the scheduler still runs
            jobs.append(("watchdog", sdnotify.watchdog, period))
        for name, func, interval in jobs:
            self._scheduler.add_job(
                func,
                IntervalTrigger(seconds=interval),
                id=name,
                replace_existing=True,
                next_run_time=_utcnow(0.0 if name == "status" else interval),
                misfire_grace_time=max(1, int(interval)),
            )

    def _start_health(self) -> Any:
        listen = self.config.agent.health_listen
        if listen is None:
            return None
        from kansoku.health import HealthServer, problems_of  # http.server: only when asked for

        staleness = self.config.agent.health_staleness
        server = HealthServer(*listen, check=lambda: problems_of(self, staleness))
        server.start()
        return server

    def _reload(self, load_config: Callable[[], Config]) -> None:
        sdnotify.reloading()
        try:
            new = load_config()
        except KansokuError as exc:
            log.error("reload failed, the running configuration stays: %s", exc)
            sdnotify.ready("reload failed; running the previous configuration")
            return
        if new.agent.state_dir != self.state_dir:
            log.warning("state_dir changed: that takes a restart; the old one stays in use")
            new.agent.state_dir = self.state_dir
        try:  # the plugins may refuse what their option parsers let through
            self._check_new_sections(new)
        except KansokuError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            sdnotify.ready("reload refused; running the previous configuration")
            return
        old_agent = self.config.agent
        self.config = new
        if new.agent.log_level != old_agent.log_level:
            logging.getLogger().setLevel(new.agent.log_level.upper())
        sourcelock.release(self._locks)  # before taking them again: flock is per open file
        self._reload_sinks(new)
        self._reload_sources(new)
        self._locks = sourcelock.hold(self.state_dir, [r.name for r in self.sources])
        self._describe_sources()
        if new.agent.self_metrics != old_agent.self_metrics or (
            new.agent.self_metrics_interval != old_agent.self_metrics_interval
        ):
            if self._scheduler.get_job("self-metrics") is not None:
                self._scheduler.remove_job("self-metrics")
            self._schedule_housekeeping()
        log.info("configuration reloaded: %d sources, %d sinks", len(self.sources), len(self.sinks))
        sdnotify.ready(f"collecting from {len(self.sources)} sources")

    def _check_new_sections(self, new: Config) -> None:
        running = {("source", r.name): r.section for r in self.sources}
        running |= {("sink", name): section for name, section in self._sink_sections.items()}
        for section in [*new.sources, *new.sinks]:
            if running.get((section.kind, section.id)) != section:
                build_plugin(new, self.registry, section).close()

    def _reload_sources(self, new: Config) -> None:
        wanted = {s.id: s for s in new.sources}
        kept = []
        for runner in self.sources:
            if wanted.get(runner.name) == runner.section:
                runner.tags = runner.tags_with(new.agent.tags)
                kept.append(runner)
                del wanted[runner.name]
                continue
            self._scheduler.remove_job(f"source:{runner.name}")
            runner.close()
            log.info("source %s %s", runner.name, "changed" if runner.name in wanted else "removed")
        self.sources = kept
        for section in wanted.values():
            runner = self._build_source(section)
            runner.start()
            self.sources.append(runner)
            self._schedule(runner)
            log.info("source %s added", runner.name)

    def _reload_sinks(self, new: Config) -> None:
        wanted = {s.id: s for s in new.sinks}
        with self._sinks_lock:
            kept = []
            for worker in self.sinks:
                if wanted.get(worker.name) == self._sink_sections[worker.name]:
                    kept.append(worker)
                    del wanted[worker.name]
                    continue
                # Stop delivering; what is spooled stays on disk for the new worker or restart.
                worker.stop(min(5.0, self.config.agent.shutdown_timeout))
                worker.close()
                del self._sink_sections[worker.name]
                log.info(
                    "sink %s %s", worker.name, "changed" if worker.name in wanted else "removed"
                )
            self.sinks = kept
            for section in wanted.values():
                worker = self._build_sink(section)
                worker.start()
                self.sinks.append(worker)
                log.info("sink %s added (%d points waiting)", worker.name, worker.spool.depth())

    def write_status(self, stopped: bool = False) -> None:
        """Write ``status.json`` for ``agent status`` (never raises)."""
        try:
            status.write(self.state_dir, self.status(stopped))
        except Exception:
            log.exception("cannot write %s", self.state_dir / status.FILENAME)

    def status(self, stopped: bool = False) -> dict[str, Any]:
        """What the agent is doing, for ``agent status``."""
        from kansoku import __version__

        return {
            "pid": os.getpid(),
            "version": __version__,
            "started": self.started,
            "updated": time.time(),
            "stopped": stopped,
            "sources": {r.name: r.status() for r in self.sources},
            "sinks": {w.name: self._sink_status(w) for w in self.sinks},
        }

    def _sink_status(self, worker: SinkWorker) -> dict[str, Any]:
        return {
            "plugin": self._sink_sections[worker.name].plugin,
            "spool_depth": worker.spool.depth(),
            "quarantine_depth": worker.spool.quarantine_depth(),
            "last_delivery": worker.stats.last_delivery,
            "last_error": worker.stats.last_error if worker.stats.consecutive_failures else None,
            "written": worker.stats.written,
        }

    def once(self) -> list[str]:
        """Collect every source once, deliver, and return one line per failure."""
        self.start(sink_threads=False)
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
        """Flush sinks within the shutdown timeout, record the final status, close everything."""
        self.closed = True
        deadline = time.monotonic() + self.config.agent.shutdown_timeout
        for runner in self.sources:
            runner.close()
        for worker in self.sinks:
            if flush and not worker.stop(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "sink %s: %d points stay in the spool for the next start",
                    worker.name,
                    worker.spool.depth(),
                )
        self.write_status(stopped=True)
        for worker in self.sinks:
            worker.close()
        sourcelock.release(self._locks)
        self.registry.pm.hook.kansoku_shutdown(agent=self)


def _utcnow(delay: float = 0.0) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(seconds=delay)
