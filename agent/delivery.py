"""Sink workers: drain each sink's spool in batches, off the collection path, with retries.

What a failed write means is the sink's to say (see :mod:`kansoku.errors`):
:class:`RetryLater` keeps the batch and backs off exponentially with jitter up to
``retry_max_backoff``; :class:`Rejected` moves the refused points to the quarantine and
acknowledges the rest, so one bad point never blocks the queue (a ``reasons`` mapping on the
exception, index -> message, gives each refused point its own message). Any other exception
is a bug in the sink; it is logged with its traceback and treated like ``RetryLater``.

Only one drain runs at a time per sink (the worker thread, ``agent once`` and the final
flush at shutdown take turns), so a batch is never written twice at once.
"""

from __future__ import annotations

import fnmatch
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kansoku.errors import KansokuError, Rejected, RetryLater
from kansoku.metric import Metric
from kansoku.spool import Spool
from kansoku.types import Sink

log = logging.getLogger("kansoku.delivery")

#: first pause after a failed write (seconds); it doubles up to ``retry_max_backoff``
BACKOFF_START = 1.0
#: while a sink keeps failing with the same error, remind the log this often (seconds)
REMIND_INTERVAL = 300.0


@dataclass
class SinkStats:
    """Counters a sink worker reports as self-metrics."""

    written: int = 0
    failed_writes: int = 0
    quarantined: int = 0
    last_delivery: float | None = None
    last_error: str | None = None
    last_error_time: float | None = None
    consecutive_failures: int = 0


class SinkWorker:
    """One sink with its spool and the thread that drains it."""

    def __init__(
        self,
        name: str,
        sink: Sink,
        spool: Spool,
        batch_size: int,
        flush_interval: float,
        retry_max_backoff: float,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        accepts: frozenset[type] = frozenset({int, float, bool, str}),
    ) -> None:
        self.name = name
        self.sink = sink
        self.spool = spool
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.retry_max_backoff = retry_max_backoff
        self.include = list(include)
        self.exclude = list(exclude)
        self.accepts = accepts
        self._unaccepted_logged: set[tuple[str, str]] = set()
        self.stats = SinkStats()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._draining = threading.Lock()
        self._thread: threading.Thread | None = None
        self._backoff_until = 0.0
        self._last_reminder = 0.0

    def wants(self, metric: Metric) -> bool:
        """Whether the include/exclude patterns let this measurement through."""
        name = metric.measurement
        if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)

    def offer(self, metrics: Sequence[Metric]) -> None:
        """Spool the metrics this sink wants (on disk when this returns); wake the worker
        when a batch is ready."""
        routed = (self._routable(m) for m in metrics if self.wants(m))
        stored = self.spool.put(m for m in routed if m.fields)
        if stored and self.spool.depth() >= self.batch_size:
            self._wake.set()

    def _routable(self, metric: Metric) -> Metric:
        if all(type(v) in self.accepts for v in metric.fields.values()):
            return metric
        fields = {}
        for name, value in metric.fields.items():
            if type(value) in self.accepts:
                fields[name] = value
            elif (metric.measurement, name) not in self._unaccepted_logged:
                self._unaccepted_logged.add((metric.measurement, name))
                log.info(
                    "sink %s takes no %s fields; %s.%s is not sent to it",
                    self.name,
                    type(value).__name__,
                    metric.measurement,
                    name,
                )
        return Metric(metric.measurement, fields, metric.tags, metric.time_ns, metric.source)

    def close(self) -> None:
        """Close the sink and its spool."""
        try:
            self.sink.close()
        except Exception:
            log.exception("sink %s failed to close", self.name)
        self.spool.close()

    def start(self) -> None:
        """Start draining in a background thread."""
        self._thread = threading.Thread(target=self._loop, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop the thread, then try to deliver what is left within ``timeout`` seconds.

        Returns True when the spool is empty. A write still hanging in the thread after
        ``timeout`` is left alone: its batch stays in the spool for the next start.
        """
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("sink %s is still busy with a write; not waiting for it", self.name)
                return False
        return self.drain(deadline, ignore_backoff=True)

    def drain(self, deadline: float, ignore_backoff: bool = False) -> bool:
        """Deliver batches until the spool is empty, a write fails or ``deadline`` passes.

        Returns True when the spool is empty.
        """
        if not self._draining.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            while time.monotonic() < deadline:
                if not ignore_backoff and time.monotonic() < self._backoff_until:
                    return False
                batch = self.spool.peek(self.batch_size)
                if not batch:
                    return True
                if not self._deliver(batch):
                    return False
            return self.spool.depth() == 0
        finally:
            self._draining.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            backoff = self._backoff_until - time.monotonic()
            self._wake.wait(backoff if backoff > 0 else self.flush_interval)
            self._wake.clear()
            while not self._stop.is_set():
                try:
                    if self.drain(time.monotonic() + max(self.flush_interval, 1.0)):
                        break
                except KansokuError as exc:  # the spool itself failed (disk full, ...)
                    self._failed(str(exc), traceback=False)
                except Exception as exc:
                    self._failed(f"{type(exc).__name__}: {exc}", traceback=True)
                if time.monotonic() < self._backoff_until:
                    break  # a write failed: wait for the backoff (or a stop)

    def _deliver(self, batch: list[tuple[int, Metric]]) -> bool:
        metrics = [m for _, m in batch]
        try:
            self.sink.write(metrics)
        except Rejected as exc:
            self._settle_rejected(batch, exc)
            return True
        except RetryLater as exc:
            self._failed(str(exc), traceback=False)
            return False
        except Exception as exc:  # a sink bug must not kill delivery
            self._failed(f"{type(exc).__name__}: {exc}", traceback=True)
            return False
        self.spool.ack([row_id for row_id, _ in batch])
        self._delivered(len(batch))
        return True

    def _settle_rejected(self, batch: list[tuple[int, Metric]], exc: Rejected) -> None:
        """Quarantine the refused points (each with its message), acknowledge the rest."""
        reasons: Mapping[int, str] = getattr(exc, "reasons", None) or {}
        refused = set(range(len(batch)) if exc.indexes is None else exc.indexes)
        refused &= set(range(len(batch)))
        by_reason: dict[str, list[tuple[int, Metric]]] = defaultdict(list)
        for index in sorted(refused):
            by_reason[reasons.get(index, str(exc))].append(batch[index])
        for reason, items in by_reason.items():
            self.spool.quarantine(items, reason)
        good = [row_id for i, (row_id, _) in enumerate(batch) if i not in refused]
        self.spool.ack(good)
        self.stats.quarantined += len(refused)
        self._delivered(len(good))
        for reason, items in by_reason.items():
            log.error(
                "sink %s refused %d of %d points for good; they are in the quarantine "
                "(agent spool show-quarantine --sink %s): %s",
                self.name,
                len(items),
                len(batch),
                self.name,
                reason,
            )

    def _delivered(self, count: int) -> None:
        self.stats.written += count
        self.stats.last_delivery = time.time()
        if self.stats.consecutive_failures:
            log.info(
                "sink %s delivers again after %d failed attempts; %d points waiting",
                self.name,
                self.stats.consecutive_failures,
                self.spool.depth(),
            )
        self.stats.consecutive_failures = 0
        self.stats.last_error = None
        self._backoff_until = 0.0

    def _failed(self, message: str, traceback: bool) -> None:
        stats = self.stats
        now = time.monotonic()
        remind = message == stats.last_error and now - self._last_reminder >= REMIND_INTERVAL
        first = message != stats.last_error
        stats.failed_writes += 1
        stats.consecutive_failures += 1
        stats.last_error = message
        stats.last_error_time = time.time()
        delay = min(self.retry_max_backoff, BACKOFF_START * 2 ** (stats.consecutive_failures - 1))
        delay *= random.uniform(0.5, 1.0)
        self._backoff_until = now + delay
        if first or remind:
            self._last_reminder = now
        log.log(
            logging.ERROR if first else logging.WARNING if remind else logging.DEBUG,
            "sink %s could not deliver (%s); %d points kept in the spool, retry in %.1fs",
            self.name,
            message,
            self.spool.depth(),
            delay,
            exc_info=traceback and first,
        )
        self._wake.clear()
