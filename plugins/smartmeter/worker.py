"""The thread that owns the stick: keeps the session up, hears events, runs the polls.

The worker opens the port, joins the meter and keeps listening between polls, so EVENT 29,
INFC notifications and an unplugged stick are handled when they happen, not at the next poll.
:meth:`SessionWorker.call` runs a poll in this thread and waits for its result.

Failures are retried with a delay that doubles from ``first_delay`` up to ``max_delay``
(``auth_delay`` after a rejected password, so a wrong password never makes it spin); a lost
serial port is closed and reopened. While the worker waits for its next attempt, callers get
its last error at once instead of waiting.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kansoku.errors import SourceError
from kansoku_plugins.smartmeter.errors import AuthRejected, LinkLost, NoAnswer
from kansoku_plugins.smartmeter.link import Link
from kansoku_plugins.smartmeter.session import (
    FixedReading,
    LinkCounters,
    PanCache,
    Session,
    SessionSettings,
)

T = TypeVar("T")
IDLE_LISTEN = 1.0
FAREWELL_TIMEOUT = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    """Delays between attempts to (re)establish the session, in seconds."""

    first_delay: float = 10.0
    max_delay: float = 300.0
    auth_delay: float = 900.0

    def delay(self, failures: int) -> float:
        """The pause after ``failures`` failed attempts in a row."""
        return min(self.max_delay, self.first_delay * 2 ** max(0, failures - 1))


class SessionWorker:
    """Runs the session in a thread of its own; see the module docstring."""

    def __init__(
        self,
        link: Link,
        settings: SessionSettings,
        cache: PanCache,
        policy: RetryPolicy,
        log: logging.Logger,
    ) -> None:
        self.link = link
        self.settings = settings
        self.cache = cache
        self.policy = policy
        self.log = log
        self.counters = LinkCounters()
        self.fixed: collections.deque[FixedReading] = collections.deque(maxlen=1000)
        self.session: Session | None = None
        self._cond = threading.Condition()
        self._jobs: collections.deque[tuple[Callable[[Session], object], concurrent.futures.Future]]
        self._jobs = collections.deque()
        self._state = "connecting"
        self._last_error: str | None = None
        self._next_attempt = 0.0
        self._failures = 0
        self._opened_before = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- callers

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"smartmeter-{self.link.device}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the session politely and stop the thread."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.link.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def phase(self) -> str:
        """What the worker is doing now, for messages."""
        session = self.session
        return session.phase if session is not None else "opening the stick"

    def wait_ready(self, timeout: float) -> None:
        """Return once the session is up; raise SourceError with the reason otherwise."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._state == "ready":
                    return
                if self._state == "waiting" and self._last_error:
                    raise SourceError(self._last_error)
                if self._stop.is_set():
                    raise SourceError("the smartmeter source is closed")
                left = end - time.monotonic()
                if left <= 0:
                    raise SourceError(
                        f"not connected to the meter yet ({self.phase}, waited {timeout:g}s); "
                        "the first scan and join can take a few minutes"
                    )
                self._cond.wait(left)

    def call(self, function: Callable[[Session], T], timeout: float) -> T:
        """Run ``function(session)`` in the worker thread and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._state != "ready":
                raise SourceError(self._last_error or f"not connected to the meter ({self.phase})")
            self._jobs.append((function, future))
            self._cond.notify_all()
        self.link.wake()
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise NoAnswer(f"the request to the meter did not finish within {timeout:g}s") from None

    # ------------------------------------------------------------- the thread

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                session = self.session
                if session is None or not session.joined:
                    if time.monotonic() < self._next_attempt:
                        with self._cond:
                            self._cond.wait(self._next_attempt - time.monotonic())
                        continue
                    self._attempt()
                else:
                    self._serve(session)
        finally:
            self._farewell()

    def _attempt(self) -> None:
        self._set_state("connecting")
        try:
            if not self.link.is_open:
                self.session = None
                self.link.open()
                if self._opened_before:
                    self.counters.reopens += 1
                self._opened_before = True
            if self.session is None:
                session = Session(
                    self.link,
                    self.settings,
                    self.cache,
                    self.counters,
                    self.fixed,
                    self.log,
                    self._stop,
                )
                self.session = session
                session.start_module()
            self.session.establish()
        except AuthRejected as exc:
            self._failed(exc, delay=self.policy.auth_delay)
        except LinkLost as exc:
            self._failed(exc, close=True)
        except SourceError as exc:
            started = self.session is not None and self.session.dialect is not None
            self._failed(exc, close=not started)
        except Exception as exc:  # a bug: report it, start afresh, never die
            self.log.exception("smartmeter session failed unexpectedly")
            self._failed(SourceError(f"internal error ({type(exc).__name__}: {exc})"), close=True)
        else:
            self._failures = 0
            self._set_state("ready")

    def _serve(self, session: Session) -> None:
        job = None
        with self._cond:
            while self._jobs:
                function, future = self._jobs.popleft()
                if future.set_running_or_notify_cancel():
                    job = function, future
                    break
        try:
            if job is None:
                session.pump(IDLE_LISTEN)
            else:
                function, future = job
                try:
                    future.set_result(function(session))
                except BaseException as exc:
                    future.set_exception(exc)
                    if isinstance(exc, LinkLost):
                        raise
        except LinkLost as exc:
            self._failed(exc, close=True)
            return
        except SourceError as exc:
            if self._stop.is_set():
                return
            self._failed(exc)
            return
        if not session.joined:
            self._failed(SourceError(f"{session.down_reason}; joining again"), count=False)

    def _failed(
        self, exc: Exception, delay: float | None = None, close: bool = False, count: bool = True
    ) -> None:
        if self._stop.is_set():
            self._set_state("waiting", str(exc))
            return
        if count:
            self._failures += 1
        if delay is None:
            delay = self.policy.delay(max(1, self._failures))
        self._next_attempt = time.monotonic() + delay
        message = str(exc)  # collections report it; the log only gets the schedule
        self.log.debug("%s (next attempt in %s)", message, describe_delay(delay))
        if close:
            self.link.close()
            self.session = None
        self._set_state("waiting", message)
        with self._cond:
            pending, self._jobs = list(self._jobs), collections.deque()
        for _, future in pending:
            if future.set_running_or_notify_cancel():
                future.set_exception(SourceError(message))

    def _set_state(self, state: str, error: str | None = None) -> None:
        with self._cond:
            self._state = state
            if error is not None or state == "ready":
                self._last_error = error
            self._cond.notify_all()

    def _farewell(self) -> None:
        session = self.session
        if session is not None and session.joined and self.link.is_open:
            session.stop = threading.Event()  # let the polite SKTERM run despite stopping
            try:
                session.terminate()
            except SourceError as exc:
                self.log.debug("could not end the session politely: %s", exc)
        self._set_state("stopped")
        self.link.dispose()


def describe_delay(seconds: float) -> str:
    """``"10s"``, ``"5m"``, ``"1h"`` for log messages."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
