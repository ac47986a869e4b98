"""Sink workers: drain each sink's spool in batches, off the collection path, with retries.

What a failed write means is the sink's to say (see :mod:`kansoku.errors`):
:class:`RetryLater` keeps the batch and backs off exponentially with jitter up to
``retry_max_backoff``; :class:`Rejected` moves the refused points to the quarantine and
acknowledges the rest, so one bad point never blocks the queue (a ``reasons`` mapping on the
exception, index -> message, gives each refused point its own message). Any other exception
is a bug in the sink; it is logged with its traceback and treated like ``RetryLater``.

A sink may have ``prepare(metric) -> bytes | None``: its wire form of a point, stored in the
spool beside the point and handed back in ``batch.prepared`` (the batch is a
:class:`~kansoku.spool.SpooledBatch`), so a backlog drains without re-encoding. The form must
not depend on options that can change between runs (the influxdb sink stores nanosecond
line protocol and applies its ``precision`` when it writes).

Only one drain runs at a time per sink (the worker thread, ``agent once`` and the final
flush at shutdown take turns), so a batch is never written twice at once.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from kansoku.errors import KansokuError, Rejected, RetryLater
from kansoku.metric import Metric
from kansoku.spool import DamagedEntry, Prepare, Spool, SpooledBatch
from kansoku.types import Sink

log = logging.getLogger("kansoku.delivery")

#: first pause after a failed write (seconds); it doubles up to ``retry_max_backoff``
BACKOFF_START = 1.0
#: how long ``close`` waits for a write in progress before closing the spool under it
CLOSE_WAIT = 2.0
#: while a sink keeps failing with the same error, remind the log this often (seconds)
REMIND_INTERVAL = 300.0


class _Outcome(enum.Enum):
    """What became of one batch."""

    DONE = "delivered or settled"
    FAILED = "kept for a retry"
    AGAIN = "send the same batch again"


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
        self._prepare_failed = False
        sink_prepare = getattr(sink, "prepare", None)
        self._prepare = None if sink_prepare is None else self._guarded(sink_prepare)

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
        stored = self.spool.put((m for m in routed if m.fields), self._prepare)
        if stored and self.spool.depth() >= self.batch_size:
            self._wake.set()

    def _guarded(self, prepare: Callable[[Metric], bytes | None]) -> Prepare:
        def safe(metric: Metric) -> bytes | None:
            try:
                return prepare(metric)
            except Exception:  # a sink bug: the point is spooled without its wire form
                if not self._prepare_failed:
                    self._prepare_failed = True
                    log.exception("sink %s failed to prepare a point", self.name)
                return None

        return safe

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
        """Stop the thread (without a final flush), close the sink and its spool."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(CLOSE_WAIT)
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

        Returns True when the spool is empty. While one batch is being written, a helper
        thread acknowledges the previous one and reads the next (SQLite and the network
        both release the GIL), so a backlog drains at nearly the sink's own speed.
        """
        if not self._draining.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            with ThreadPoolExecutor(1, f"spool-{self.name}") as helper:
                return self._drain(deadline, ignore_backoff, helper)
        finally:
            self._draining.release()

    def _drain(self, deadline: float, ignore_backoff: bool, helper: ThreadPoolExecutor) -> bool:
        acks: list[Future[None]] = []

        def acknowledge(ids: list[int]) -> None:
            acks.append(helper.submit(self.spool.ack, ids))

        try:
            batch = self.spool.peek(self.batch_size)
            while batch:
                if time.monotonic() >= deadline:
                    return False
                if not ignore_backoff and time.monotonic() < self._backoff_until:
                    return False
                upcoming = helper.submit(self.spool.peek, self.batch_size, batch.ids[-1])
                outcome = self._deliver(batch, acknowledge)
                for done in [a for a in acks if a.done()]:
                    acks.remove(done)
                    done.result()  # a failed acknowledgement raises here
                if outcome is _Outcome.FAILED:
                    return False
                if outcome is _Outcome.AGAIN:  # a damaged entry was set aside: same batch
                    upcoming.result()
                    batch = self.spool.peek(self.batch_size)
                    continue
                batch = upcoming.result()
            return True
        finally:
            for pending in acks:
                pending.result()

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

    def _deliver(self, batch: SpooledBatch, acknowledge: Callable[[list[int]], None]) -> _Outcome:
        try:
            self.sink.write(batch)
        except Rejected as exc:
            self._settle_rejected(batch, exc)
            return _Outcome.DONE
        except RetryLater as exc:
            self._failed(str(exc), traceback=False)
            return _Outcome.FAILED
        except DamagedEntry as exc:  # the file was damaged: set the entry aside, go on
            self.spool.quarantine([exc.row_id], str(exc))
            self.stats.quarantined += 1
            log.error("sink %s: %s; moved to the quarantine", self.name, exc)
            return _Outcome.AGAIN
        except Exception as exc:  # a sink bug must not kill delivery
            self._failed(f"{type(exc).__name__}: {exc}", traceback=True)
            return _Outcome.FAILED
        acknowledge(batch.ids)
        self._delivered(len(batch))
        return _Outcome.DONE

    def _settle_rejected(self, batch: SpooledBatch, exc: Rejected) -> None:
        """Quarantine the refused points (each with its message), acknowledge the rest."""
        reasons: Mapping[int, str] = exc.reasons
        refused = set(range(len(batch)) if exc.indexes is None else exc.indexes)
        refused &= set(range(len(batch)))
        by_reason: dict[str, list[int]] = defaultdict(list)
        for index in sorted(refused):
            by_reason[reasons.get(index, str(exc))].append(batch.ids[index])
        for reason, ids in by_reason.items():
            self.spool.quarantine(ids, reason)
        self.spool.ack([row_id for i, row_id in enumerate(batch.ids) if i not in refused])
        self.stats.quarantined += len(refused)
        self._delivered(len(batch) - len(refused))
        for reason, ids in by_reason.items():
            log.error(
                "sink %s refused %d of %d points for good; they are in the quarantine "
                "(agent spool show-quarantine --sink %s): %s",
                self.name,
                len(ids),
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
