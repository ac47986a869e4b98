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
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    quarantined REAL NOT NULL,
    reason TEXT NOT NULL,
    body BLOB NOT NULL
);
"""


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
            self._resync()

    # ------------------------------------------------------------------ the queue

    def put(self, metrics: Iterable[Metric]) -> int:
        """Append points durably (committed when this returns); returns how many."""
        now = time.time()
        rows = [(now, encode(m)) for m in metrics]
        if not rows:
            return 0
        with self._lock, self._guard("store points in"):
            with self._transaction():
                self._db.executemany("INSERT INTO points (enqueued, body) VALUES (?, ?)", rows)
            self._bytes += sum(len(body) for _, body in rows)
            self._depth += len(rows)
            self._enforce_bounds(now)
        return len(rows)

    def peek(self, limit: int) -> list[tuple[int, Metric]]:
        """The oldest ``limit`` points, in order, without removing them.

        Entries that cannot be decoded (damaged file) go to the quarantine instead.
        """
        with self._lock, self._guard("read"):
            self._enforce_bounds(time.time())
            rows = self._db.execute(
                "SELECT id, body FROM points ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            if len(rows) < limit:  # the whole queue is in hand: resynchronise the counts
                self._depth = len(rows)
                self._bytes = sum(len(body) for _, body in rows)
            batch, damaged = [], []
            for row_id, body in rows:
                try:
                    batch.append((row_id, decode(body)))
                except ValueError as exc:
                    damaged.append((row_id, str(exc)))
            for row_id, why in damaged:
                log.error("spool %s: entry %d is damaged (%s); quarantined", self.name, row_id, why)
                with self._transaction():
                    self._move_to_quarantine([row_id], f"damaged spool entry: {why}", time.time())
        return batch

    def ack(self, ids: Sequence[int]) -> None:
        """Remove delivered points."""
        if not ids:
            return
        with self._lock, self._guard("remove delivered points from"):
            with self._transaction():
                self._delete_ids("points", ids)

    def quarantine(self, items: Sequence[tuple[int, Metric]], reason: str) -> None:
        """Move refused points out of the queue into the quarantine, with the sink's reason."""
        if not items:
            return
        with self._lock, self._guard("quarantine points in"):
            with self._transaction():
                self._move_to_quarantine([row_id for row_id, _ in items], reason, time.time())
            self._bound_quarantine()

    def depth(self) -> int:
        """Points waiting for delivery."""
        return self._depth

    def size(self) -> int:
        """Bytes of the points waiting for delivery (their stored JSON)."""
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
            "SELECT COALESCE(SUM(LENGTH(body)), 0), COUNT(*) FROM points"
        ).fetchone()

    def _delete_ids(self, table: str, ids: Sequence[int]) -> tuple[int, int]:
        """Delete rows by id (one statement); returns (rows, bytes) removed."""
        lengths = self._db.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?)) "
            "RETURNING LENGTH(body)",
            (json.dumps(list(ids)),),
        ).fetchall()
        removed, removed_bytes = len(lengths), sum(n for (n,) in lengths)
        if table == "points":
            self._depth -= removed
            self._bytes -= removed_bytes
        return removed, removed_bytes

    def _move_to_quarantine(self, ids: Sequence[int], reason: str, now: float) -> None:
        self._db.execute(
            "INSERT INTO quarantine (quarantined, reason, body) "
            "SELECT ?, ?, body FROM points WHERE id IN (SELECT value FROM json_each(?)) "
            "ORDER BY id",
            (now, reason, json.dumps(list(ids))),
        )
        self._delete_ids("points", ids)

    def _delete_through(self, table: str, last_id: int) -> tuple[int, int]:
        lengths = self._db.execute(
            f"DELETE FROM {table} WHERE id <= ? RETURNING LENGTH(body)", (last_id,)
        ).fetchall()
        return len(lengths), sum(n for (n,) in lengths)

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
                removed, removed_bytes = self._delete_through("points", last_id)
            self._depth -= removed
            self._bytes -= removed_bytes
            self._count_drop(removed, f"older than max_spool_age ({self.max_age:g}s)")
        while self._bytes > self.max_bytes:
            over, last_id, total = self._bytes - self.max_bytes, None, 0
            for row_id, length in self._db.execute(
                "SELECT id, LENGTH(body) FROM points ORDER BY id LIMIT ?", (_STEP,)
            ):
                last_id, total = row_id, total + length
                if total >= over:
                    break
            if last_id is None:  # the counts were off: the queue is empty
                self._resync()
                break
            with self._transaction():
                removed, removed_bytes = self._delete_through("points", last_id)
            self._depth -= removed
            self._bytes -= removed_bytes
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
                removed, _ = self._delete_through("quarantine", last_id)
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
