"""The durable spool: a per-sink SQLite (WAL) queue, so nothing accepted is lost.

Points are on disk (committed) before a collection counts as done; a sink drains them in order
and in batches; they survive sink outages, agent restarts and ``kill -9`` (a power cut may
lose the last commits: the WAL is synced at checkpoints, not on every commit). The queue is
bounded by size and age: the oldest points go first, and every dropped point is counted
(:attr:`Spool.dropped`) and logged. Points a sink refuses for good wait in the quarantine
with the sink's message until the user retries or drops them (``agent spool``); the
quarantine has the same size bound.

Each point is stored as one JSON object (ints, floats and bools stay apart), so a spool can
be inspected with the ``sqlite3`` shell. Several processes may open the same file: the
agent drains it while ``agent spool`` looks at it or moves points back from the quarantine.

A sink may also hand over a *prepare* function (its wire form of a point, e.g. a line of
line protocol), which is stored beside the JSON when the point is spooled. A backlog then
drains without decoding and re-encoding every point: :meth:`Spool.peek` returns a
:class:`SpooledBatch` whose metrics are decoded only when looked at and whose ``prepared``
list holds those stored forms.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from kansoku.errors import KansokuError
from kansoku.metric import Metric

log = logging.getLogger("kansoku.spool")

#: the first drop is logged at once; later ones are summed up at most this often (seconds)
DROP_LOG_INTERVAL = 60.0
#: rows looked at per step when dropping the oldest points
_STEP = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    enqueued REAL NOT NULL,
    body BLOB NOT NULL,
    prepared BLOB
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    quarantined REAL NOT NULL,
    reason TEXT NOT NULL,
    body BLOB NOT NULL
);
"""
#: bytes a queued row holds
_ROW_BYTES = "LENGTH(body) + IFNULL(LENGTH(prepared), 0)"

#: a sink's wire form of a point, stored when it is spooled (None: nothing to store)
Prepare = Callable[[Metric], bytes | None]


class SpoolError(KansokuError):
    """The spool file cannot be opened, read or written (disk full, permissions, damage)."""


@dataclass(frozen=True)
class Quarantined:
    """A point a sink refused, with the sink's reason; ``metric`` is None if unreadable."""

    id: int
    quarantined: float
    reason: str
    metric: Metric | None
    body: str


def encode(metric: Metric) -> bytes:
    """The spool's form of a metric: compact UTF-8 JSON (ints, floats and bools stay apart)."""
    data = {**metric.to_dict(), "source": metric.source}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def decode(body: bytes | str) -> Metric:
    """Inverse of :func:`encode`; raises ValueError for a damaged entry."""
    try:
        return Metric.from_dict(json.loads(body))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a spooled point ({type(exc).__name__}: {exc})") from None


class DamagedEntry(SpoolError):
    """A queued entry cannot be decoded; the sink worker moves it to the quarantine."""

    def __init__(self, row_id: int, why: str) -> None:
        super().__init__(f"damaged spool entry {row_id}: {why}")
        self.row_id = row_id


class SpooledBatch(Sequence[Metric]):
    """The oldest points of a spool, in order: ``ids``, lazily decoded metrics, ``prepared``.

    Indexing decodes a point (once); a damaged entry raises :class:`DamagedEntry`.
    ``prepared[i]`` is the sink's stored wire form of point ``i``, or None.
    """

    def __init__(self, rows: Sequence[tuple[int, bytes, bytes | None]]) -> None:
        self.ids = [row[0] for row in rows]
        self.prepared = [row[2] for row in rows]
        self._bodies = [row[1] for row in rows]
        self._metrics: list[Metric | None] = [None] * len(rows)

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Metric: ...

    @overload
    def __getitem__(self, index: slice) -> list[Metric]: ...

    def __getitem__(self, index: int | slice) -> Metric | list[Metric]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        metric = self._metrics[index]
        if metric is None:
            try:
                metric = decode(self._bodies[index])
            except ValueError as exc:
                raise DamagedEntry(self.ids[index], str(exc)) from None
            self._metrics[index] = metric
        return metric


class Spool:
    """One sink's queue on disk. Thread-safe: collectors put, the sink worker peeks and acks.

    ``depth()`` and the byte count are kept in memory and resynchronised from the file
    whenever a peek sees the whole queue (another process may have changed it).
    """

    def __init__(
        self, path: Path, max_bytes: int, max_age: float, name: str = "", create: bool = True
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.max_bytes = max_bytes
        self.max_age = max_age
        #: points removed by the size or age bound since this process opened the spool
        self.dropped = 0
        self._unlogged: dict[str, int] = {}
        self._last_drop_log = -math.inf
        self._lock = threading.Lock()
        #: id -> bytes of rows handed out by peek and still queued (acks need not read sizes)
        self._peeked: dict[int, int] = {}
        with self._guard("open"):
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            uri = self.path.absolute().as_uri() + ("" if create else "?mode=rw")
            self._db = sqlite3.connect(
                uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA journal_size_limit=67108864")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(points)")}
            if "prepared" not in columns:  # a spool written by kansoku 0.1.0 before release
                self._db.execute("ALTER TABLE points ADD COLUMN prepared BLOB")
            self._resync()

    # ------------------------------------------------------------------ the queue

    def put(self, metrics: Iterable[Metric], prepare: Prepare | None = None) -> int:
        """Append points durably (committed when this returns); returns how many.

        ``prepare`` (the sink's) gives each point's wire form to store beside it.
        """
        now = time.time()
        if prepare is None:
            rows = [(now, encode(m), None) for m in metrics]
        else:
            rows = [(now, encode(m), prepare(m)) for m in metrics]
        if not rows:
            return 0
        with self._lock, self._guard("store points in"):
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO points (enqueued, body, prepared) VALUES (?, ?, ?)", rows
                )
            self._bytes += sum(len(body) + len(extra or b"") for _, body, extra in rows)
            self._depth += len(rows)
            self._enforce_bounds(now)
        return len(rows)

    def peek(self, limit: int, after: int | None = None) -> SpooledBatch:
        """The oldest ``limit`` points (with ids above ``after``), in order, not removed."""
        with self._lock, self._guard("read"):
            self._enforce_bounds(time.time())
            rows = self._db.execute(
                "SELECT id, body, prepared FROM points WHERE id > ? ORDER BY id LIMIT ?",
                (-1 if after is None else after, limit),
            ).fetchall()
            sizes = {row_id: len(body) + len(extra or b"") for row_id, body, extra in rows}
            self._peeked.update(sizes)
            if after is None and len(rows) < limit:  # the whole queue is in hand: resync
                self._depth = len(rows)
                self._bytes = sum(sizes.values())
        return SpooledBatch(rows)

    def ack(self, ids: Sequence[int]) -> None:
        """Remove delivered points."""
        if not ids:
            return
        with self._lock, self._guard("remove delivered points from"):
            with self._transaction():
                self._remove_points(ids)

    def quarantine(self, ids: Sequence[int], reason: str) -> None:
        """Move refused points out of the queue into the quarantine, with the sink's reason."""
        if not ids:
            return
        with self._lock, self._guard("quarantine points in"):
            with self._transaction():
                self._move_to_quarantine(ids, reason, time.time())
            self._bound_quarantine()

    def depth(self) -> int:
        """Points waiting for delivery."""
        return self._depth

    def size(self) -> int:
        """Bytes of the points waiting for delivery (stored JSON and prepared forms)."""
        return self._bytes

    def oldest(self) -> float | None:
        """When the oldest waiting point was spooled (Unix time), or None if the queue is empty."""
        with self._lock, self._guard("read"):
            row = self._db.execute("SELECT enqueued FROM points ORDER BY id LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    # ------------------------------------------------------------------ the quarantine

    def quarantine_depth(self) -> int:
        """Points in the quarantine."""
        with self._lock, self._guard("read"):
            return int(self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])

    def quarantined(self, limit: int | None = None) -> list[Quarantined]:
        """The quarantined points, oldest first."""
        with self._lock, self._guard("read"):
            rows = self._db.execute(
                "SELECT id, quarantined, reason, body FROM quarantine ORDER BY id LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        out = []
        for row_id, when, reason, body in rows:
            text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
            try:
                metric: Metric | None = decode(body)
            except ValueError:
                metric = None
            out.append(Quarantined(row_id, when, reason, metric, text))
        return out

    def retry_quarantine(self) -> int:
        """Put every quarantined point back at the end of the queue; returns how many."""
        with self._lock, self._guard("move quarantined points in"):
            with self._transaction():
                moved = self._db.execute(
                    "INSERT INTO points (enqueued, body) "
                    "SELECT ?, body FROM quarantine ORDER BY id",
                    (time.time(),),
                ).rowcount
                self._db.execute("DELETE FROM quarantine")
            self._resync()
        return moved

    def drop_quarantine(self) -> int:
        """Delete every quarantined point; returns how many."""
        with self._lock, self._guard("delete quarantined points in"):
            with self._transaction():
                return int(self._db.execute("DELETE FROM quarantine").rowcount)

    def close(self) -> None:
        """Log drops not yet reported and close the file (the data stays on disk)."""
        with self._lock:
            self._log_drops(force=True)
            self._db.close()

    # ------------------------------------------------------------------ internals

    def _guard(self, doing: str) -> _SqliteGuard:
        return _SqliteGuard(self, doing)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _resync(self) -> None:
        self._bytes, self._depth = self._db.execute(
            f"SELECT COALESCE(SUM({_ROW_BYTES}), 0), COUNT(*) FROM points"
        ).fetchone()

    def _remove_points(self, ids: Sequence[int]) -> None:
        """Delete queued rows by id and keep the counts right."""
        if all(row_id in self._peeked for row_id in ids):  # the usual case: a peeked batch
            ordered = sorted(set(ids))
            start = previous = ordered[0]
            for row_id in [*ordered[1:], None]:
                if row_id is not None and row_id == previous + 1:
                    previous = row_id
                    continue
                self._db.execute("DELETE FROM points WHERE id BETWEEN ? AND ?", (start, previous))
                if row_id is not None:
                    start = previous = row_id
            self._depth -= len(ordered)
            self._bytes -= sum(self._peeked.pop(row_id) for row_id in ordered)
            return
        lengths = self._db.execute(
            "DELETE FROM points WHERE id IN (SELECT value FROM json_each(?)) "
            f"RETURNING {_ROW_BYTES}",
            (json.dumps(list(ids)),),
        ).fetchall()
        for row_id in ids:
            self._peeked.pop(row_id, None)
        self._depth -= len(lengths)
        self._bytes -= sum(n for (n,) in lengths)

    def _remove_points_through(self, last_id: int) -> int:
        """Delete the queue's head up to ``last_id``; returns how many rows went."""
        lengths = self._db.execute(
            f"DELETE FROM points WHERE id <= ? RETURNING {_ROW_BYTES}", (last_id,)
        ).fetchall()
        self._peeked = {k: v for k, v in self._peeked.items() if k > last_id}
        self._depth -= len(lengths)
        self._bytes -= sum(n for (n,) in lengths)
        return len(lengths)

    def _move_to_quarantine(self, ids: Sequence[int], reason: str, now: float) -> None:
        self._db.execute(
            "INSERT INTO quarantine (quarantined, reason, body) "
            "SELECT ?, ?, body FROM points WHERE id IN (SELECT value FROM json_each(?)) "
            "ORDER BY id",
            (now, reason, json.dumps(list(ids))),
        )
        self._remove_points(ids)

    def _enforce_bounds(self, now: float) -> None:
        """Drop the oldest points beyond ``max_age`` or ``max_bytes`` (head of the queue)."""
        cutoff = now - self.max_age
        while True:
            head = self._db.execute(
                "SELECT id, enqueued FROM points ORDER BY id LIMIT 1"
            ).fetchone()
            if head is None or head[1] >= cutoff:
                break
            last_id = head[0]
            for row_id, enqueued in self._db.execute(
                "SELECT id, enqueued FROM points ORDER BY id LIMIT ?", (_STEP,)
            ):
                if enqueued >= cutoff:
                    break
                last_id = row_id
            with self._transaction():
                removed = self._remove_points_through(last_id)
            self._count_drop(removed, f"older than max_spool_age ({self.max_age:g}s)")
        while self._bytes > self.max_bytes:
            over, last_id, total = self._bytes - self.max_bytes, None, 0
            for row_id, length in self._db.execute(
                f"SELECT id, {_ROW_BYTES} FROM points ORDER BY id LIMIT ?", (_STEP,)
            ):
                last_id, total = row_id, total + length
                if total >= over:
                    break
            if last_id is None:  # the counts were off: the queue is empty
                self._resync()
                break
            with self._transaction():
                removed = self._remove_points_through(last_id)
            self._count_drop(removed, f"spool over max_spool_size ({self.max_bytes} bytes)")
        self._log_drops()

    def _bound_quarantine(self) -> None:
        (held,) = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM quarantine"
        ).fetchone()
        if held <= self.max_bytes:
            return
        over, last_id, total = held - self.max_bytes, None, 0
        for row_id, length in self._db.execute(
            "SELECT id, LENGTH(body) FROM quarantine ORDER BY id"
        ):
            last_id, total = row_id, total + length
            if total >= over:
                break
        if last_id is not None:
            with self._transaction():
                removed = self._db.execute(
                    "DELETE FROM quarantine WHERE id <= ?", (last_id,)
                ).rowcount
            self._count_drop(removed, f"quarantine over max_spool_size ({self.max_bytes} bytes)")
            self._log_drops()

    def _count_drop(self, count: int, why: str) -> None:
        if count:
            self.dropped += count
            self._unlogged[why] = self._unlogged.get(why, 0) + count

    def _log_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._unlogged or (not force and now - self._last_drop_log < DROP_LOG_INTERVAL):
            return
        for why, count in self._unlogged.items():
            log.warning(
                "spool %s dropped its %d oldest points: %s (%d dropped since start)",
                self.name,
                count,
                why,
                self.dropped,
            )
        self._unlogged.clear()
        self._last_drop_log = now


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:  # SQLite may have rolled back already (disk full)
            self.db.execute("ROLLBACK")


class _SqliteGuard:
    """Turns SQLite errors into a :class:`SpoolError` sentence naming the sink and the file."""

    def __init__(self, spool: Spool, doing: str) -> None:
        self.spool = spool
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if isinstance(exc, sqlite3.Error):
            raise SpoolError(
                f"spool {self.spool.name}: cannot {self.doing} {self.spool.path}: {exc} "
                "(check free disk space and permissions of the state directory)"
            ) from exc
