"""The InfluxDB 1.x sink: line protocol to ``/write`` through influxdb-python's client.

Points are encoded with :mod:`kansoku.lineprotocol` (ints ``42i``, floats always with a
decimal point or exponent, bools ``true``/``false``) and posted with the client's
``request`` (auth, TLS, gzip, timeout). How each answer is handled:

=============================== ===========================================================
204                             delivered
400 (partial write, type        the points the message describes are refused for good
conflict, unable to parse, ...) (:class:`PointsRefused`, each with the server's message);
                                when the message does not tell which, the batch is split
                                and the halves are sent again (writes are idempotent)
413 (body too large)            split and sent again
404 database not found          ``CREATE DATABASE`` when ``create_database``, else retry
401 / 403                       retry later, with a sentence about the credentials
5xx, network errors, timeouts   retry later (the spool keeps the batch and backs off)
=============================== ===========================================================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

from kansoku import lineprotocol
from kansoku.errors import Rejected, RetryLater
from kansoku.metric import Metric
from kansoku.options import Secret
from kansoku_plugins.influxdb import triage

_ERRNO = re.compile(r"\[Errno -?\d+\][^')\"]*")
#: precision option -> (``precision=`` query value, nanoseconds per unit)
PRECISIONS = {
    "ns": ("n", 1),
    "us": ("u", 1_000),
    "ms": ("ms", 1_000_000),
    "s": ("s", 1_000_000_000),
    "m": ("m", 60_000_000_000),
    "h": ("h", 3_600_000_000_000),
}


@dataclass(frozen=True)
class Settings:
    """Where and how to write; built from the config section by the factory."""

    scheme: str
    host: str
    port: int
    path: str
    verify: bool | str
    database: str
    retention_policy: str
    precision: str
    username: str
    password: Secret
    timeout: float
    gzip: bool
    create_database: bool

    @property
    def url(self) -> str:
        """The server's base URL (never with credentials), for messages."""
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"


class PointsRefused(Rejected):
    """Points InfluxDB refused for good; ``reasons`` maps each batch index to its message."""

    def __init__(self, reasons: dict[int, str]) -> None:
        distinct = sorted(set(reasons.values()))
        summary = distinct[0] if len(distinct) == 1 else "; ".join(distinct)
        super().__init__(summary, reasons=reasons)


@dataclass(frozen=True)
class _Attempt:
    """One batch being written: the points and their encoded lines (b"" = not sent)."""

    batch: Sequence[Metric]
    lines: list[bytes]

    def body(self, indexes: Sequence[int]) -> bytes:
        """The request body for the points at ``indexes``."""
        return b"\n".join([self.lines[i] for i in indexes]) + b"\n"


@dataclass(frozen=True)
class _Refusal:
    """A 400 or 413 answer: some or all points of the request will never be accepted."""

    status: int
    message: str


class InfluxDBSink:
    """Writes batches to one database of an InfluxDB 1.x (or compatible) server."""

    def __init__(self, settings: Settings, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        self.query_precision, self.divisor = PRECISIONS[settings.precision]
        self.client = InfluxDBClient(
            host=settings.host,
            port=settings.port,
            path=settings.path,
            ssl=settings.scheme == "https",
            verify_ssl=settings.verify,
            username=settings.username or None,
            password=settings.password.reveal() if settings.username else None,
            database=settings.database,
            timeout=settings.timeout,
            retries=1,  # one attempt: the spool retries with backoff
            gzip=settings.gzip,
            headers={"Accept": "application/json"},
        )
        self.params = {"db": settings.database, "precision": self.query_precision}
        if settings.retention_policy:
            self.params["rp"] = settings.retention_policy

    def prepare(self, metric: Metric) -> bytes | None:
        """The point as nanosecond line protocol, stored in the spool beside it (None when it
        cannot be written; :meth:`write` then refuses it with the reason)."""
        if triage.unwritable(metric) is not None:
            return None
        return lineprotocol.encode(metric).encode()

    def write(self, batch: Sequence[Metric]) -> None:
        """Deliver the batch; raise RetryLater or PointsRefused (see the module docstring).

        Lines the spool kept from :meth:`prepare` (``batch.prepared``) are sent as they are
        (timestamps cut to ``precision``); other points are encoded here.
        """
        prepared: Sequence[bytes | None] = getattr(batch, "prepared", None) or [None] * len(batch)
        reasons: dict[int, str] = {}
        sendable: list[int] = []
        lines: list[bytes] = []
        for index, line in enumerate(prepared):
            if line is not None:
                if self.divisor != 1:
                    head, _, stamp = line.rpartition(b" ")
                    line = b"%s %d" % (head, int(stamp) // self.divisor)
                lines.append(line)
                sendable.append(index)
                continue
            metric = batch[index]
            why = triage.unwritable(metric)
            if why is None:
                lines.append(lineprotocol.encode(metric, self.divisor).encode())
                sendable.append(index)
            else:
                reasons[index] = f"not sent: {why}"
                lines.append(b"")
        if sendable:
            reasons.update(self._settle(_Attempt(batch, lines), sendable))
        if reasons:
            raise PointsRefused(reasons)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    # ------------------------------------------------------------------ sorting refusals

    def _settle(self, attempt: _Attempt, indexes: list[int]) -> dict[int, str]:
        """Post the points at ``indexes``; return the refused ones with their message."""
        refusal = self._post(attempt.body(indexes))
        if refusal is None:
            return {}
        if len(indexes) == 1:
            return {indexes[0]: refusal.message}
        if refusal.status == 400:
            culprits = triage.identify(
                refusal.message,
                [attempt.batch[i] for i in indexes],
                [attempt.lines[i].decode("utf-8", "replace") for i in indexes],
            )
            if culprits is not None:
                return {indexes[j]: refusal.message for j in culprits}
        middle = len(indexes) // 2
        return {
            **self._settle(attempt, indexes[:middle]),
            **self._settle(attempt, indexes[middle:]),
        }

    # ------------------------------------------------------------------ one request

    def _post(self, body: bytes, may_create: bool = True) -> _Refusal | None:
        try:
            self._request(body)
        except InfluxDBClientError as exc:
            message = triage.error_text(exc.content)
            if exc.code == 404 and "database not found" in message:
                self._create_database(message, may_create)
                return self._post(body, may_create=False)
            return self._client_error(exc.code, message)
        return None

    def _request(self, body: bytes) -> None:
        s = self.settings
        try:
            self.client.request(
                url="write",
                method="POST",
                params=self.params,
                data=body,
                expected_response_code=204,
                headers={"Content-Type": "text/plain; charset=utf-8", "Accept": "application/json"},
            )
        except InfluxDBServerError as exc:
            message = triage.error_text(exc.args[0] if exc.args else "")
            hint = ""
            if "retention policy not found" in message:
                hint = f" (check retention_policy = {s.retention_policy})"
            raise RetryLater(f"{s.url} answered with a server error: {message}{hint}") from None
        except requests.exceptions.Timeout:
            raise RetryLater(f"no answer from {s.url} within {s.timeout:g}s (timeout)") from None
        except requests.exceptions.SSLError as exc:
            raise RetryLater(
                f"TLS connection to {s.url} failed: {_reason(exc)} "
                "(check ssl, verify and the server's certificate)"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise RetryLater(f"cannot reach {s.url}: {_reason(exc)}") from None
        except OSError as exc:  # e.g. a CA file that disappeared
            raise RetryLater(f"cannot reach {s.url}: {exc}") from None

    def _client_error(self, code: int | None, message: str) -> _Refusal:
        s = self.settings
        if code in (400, 413):
            return _Refusal(code, message)
        if code == 401:
            who = f"user {s.username!r}" if s.username else "no user (username is not set)"
            raise RetryLater(
                f"{s.url} refused the credentials of {who}: {message}; check username and "
                "password (points stay in the spool)"
            )
        if code == 403:
            raise RetryLater(
                f"{s.url}: user {s.username!r} may not write to database {s.database!r}: "
                f'{message}; GRANT WRITE ON "{s.database}" TO "{s.username}" '
                "(points stay in the spool)"
            )
        if code == 404:
            raise RetryLater(
                f"{s.url}/write answered 404 ({message}): is this an InfluxDB 1.x server, "
                "and is the url's path right?"
            )
        raise RetryLater(f"{s.url}/write answered HTTP {code}: {message}")

    def _create_database(self, message: str, may_create: bool) -> None:
        s = self.settings
        if not (s.create_database and may_create):
            raise RetryLater(
                f'{s.url}: {message}; create it (CREATE DATABASE "{s.database}") or set '
                "create_database = true (points stay in the spool)"
            )
        try:
            self.client.create_database(s.database)
        except InfluxDBClientError as exc:
            raise RetryLater(
                f"{s.url}: database {s.database!r} does not exist and creating it failed: "
                f"{triage.error_text(exc.content)}"
            ) from None
        except (InfluxDBServerError, requests.exceptions.RequestException) as exc:
            raise RetryLater(f"{s.url}: creating database {s.database!r} failed: {exc}") from None
        self.log.info("created database %r on %s", s.database, s.url)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, e.g. ``[Errno 111] Connection refused``."""
    inner: BaseException = exc
    while True:
        nested = getattr(inner, "reason", None) or (inner.args[0] if inner.args else None)
        if not isinstance(nested, BaseException) or nested is inner:
            break
        inner = nested
    text = str(inner)
    errno = _ERRNO.search(text)
    return errno.group(0) if errno else text or type(exc).__name__
