"""The durable spool: a per-sink SQLite (WAL) queue, so nothing accepted is lost.

Points are on disk before a collection counts as done; a sink drains them in order and in
batches; they survive sink outages, agent restarts and ``kill -9``. The spool is bounded by
size and age (oldest first), and every dropped point is counted and logged. Points a sink
refuses for good wait in the quarantine with the sink's message until the user retries or
drops them (``agent spool``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kansoku.metric import Metric

log = logging.getLogger("kansoku.spool")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    enqueued REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    quarantined REAL NOT NULL,
    reason TEXT NOT NULL,
    body TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Quarantined:
    """A point a sink refused, with the sink's reason."""

    id: int
    quarantined: float
    reason: str
    metric: Metric


def encode(metric: Metric) -> str:
    """The spool's text form of a metric (JSON keeps ints, floats and bools apart)."""
    return json.dumps(
        {**metric.to_dict(), "source": metric.source}, separators=(",", ":"), ensure_ascii=False
    )


def decode(body: str) -> Metric:
    """Inverse of :func:`encode`."""
    return Metric.from_dict(json.loads(body))


class Spool:
    """One sink's queue on disk. Thread-safe: collectors put, the sink worker peeks and acks."""

    def __init__(self, path: Path, max_bytes: int, max_age: float, name: str = "") -> None:
        self.path = path
        self.name = name or path.stem
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.dropped = 0
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._bytes, self._depth = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(body)), 0), COUNT(*) FROM points"
        ).fetchone()

    def put(self, metrics: Iterable[Metric]) -> int:
        """Append points durably; returns how many were stored."""
        now = time.time()
        rows = [(now, encode(m)) for m in metrics]
        if not rows:
            return 0
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO points (enqueued, body) VALUES (?, ?)", rows)
            self._bytes += sum(len(body) for _, body in rows)
            self._depth += len(rows)
            self._enforce_bounds(now)
        return len(rows)

    def peek(self, limit: int) -> list[tuple[int, Metric]]:
        """The oldest ``limit`` points, in order, without removing them."""
        with self._lock:
            self._enforce_bounds(time.time())
            rows = self._db.execute(
                "SELECT id, body FROM points ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            if len(rows) < limit:  # the whole queue is in hand: resynchronise the counts
                self._depth = len(rows)
                self._bytes = sum(len(body) for _, body in rows)
        return [(row_id, decode(body)) for row_id, body in rows]

    def ack(self, ids: Sequence[int]) -> None:
        """Remove delivered points."""
        if not ids:
            return
        with self._lock:
            self._remove("DELETE FROM points WHERE id IN (%s) RETURNING LENGTH(body)", ids)

    def quarantine(self, items: Sequence[tuple[int, Metric]], reason: str) -> None:
        """Move refused points out of the queue into the quarantine, with the sink's reason."""
        if not items:
            return
        now = time.time()
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO quarantine (quarantined, reason, body) VALUES (?, ?, ?)",
                    [(now, reason, encode(m)) for _, m in items],
                )
                self._remove(
                    "DELETE FROM points WHERE id IN (%s) RETURNING LENGTH(body)",
                    [i for i, _ in items],
                    transaction=False,
                )

    def depth(self) -> int:
        """Points waiting for delivery."""
        return self._depth

    def quarantine_depth(self) -> int:
        """Points in the quarantine."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]

    def quarantined(self, limit: int | None = None) -> list[Quarantined]:
        """The quarantined points, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, quarantined, reason, body FROM quarantine ORDER BY id LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [Quarantined(i, t, reason, decode(body)) for i, t, reason, body in rows]

    def retry_quarantine(self) -> int:
        """Put every quarantined point back at the end of the queue; returns how many."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            moved = self._db.execute(
                "INSERT INTO points (enqueued, body) SELECT ?, body FROM quarantine ORDER BY id",
                (time.time(),),
            ).rowcount
            self._db.execute("DELETE FROM quarantine")
            self._bytes, self._depth = self._db.execute(
                "SELECT COALESCE(SUM(LENGTH(body)), 0), COUNT(*) FROM points"
            ).fetchone()
        return moved

    def drop_quarantine(self) -> int:
        """Delete every quarantined point; returns how many."""
        with self._lock, self._db:
            return self._db.execute("DELETE FROM quarantine").rowcount

    def close(self) -> None:
        """Close the database (the data stays on disk)."""
        with self._lock:
            self._db.close()

    def _remove(self, sql: str, ids: Sequence[int], transaction: bool = True) -> int:
        removed_bytes = 0
        removed = 0
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            query = sql % ",".join("?" * len(chunk))
            if transaction:
                with self._db:
                    lengths = self._db.execute(query, chunk).fetchall()
            else:
                lengths = self._db.execute(query, chunk).fetchall()
            removed += len(lengths)
            removed_bytes += sum(n for (n,) in lengths)
        self._bytes -= removed_bytes
        self._depth -= removed
        return removed

    def _enforce_bounds(self, now: float) -> None:
        cutoff = now - self.max_age
        oldest = self._db.execute("SELECT enqueued FROM points ORDER BY id LIMIT 1").fetchone()
        if oldest and oldest[0] < cutoff:
            expired = self._db.execute(
                "SELECT id FROM points WHERE enqueued < ? ORDER BY id", (cutoff,)
            ).fetchall()
            self._drop([i for (i,) in expired], f"older than {self.max_age:.0f}s")
        while self._bytes > self.max_bytes and self._depth:
            over = self._bytes - self.max_bytes
            ids, total = [], 0
            for row_id, length in self._db.execute(
                "SELECT id, LENGTH(body) FROM points ORDER BY id LIMIT 1000"
            ):
                ids.append(row_id)
                total += length
                if total >= over:
                    break
            self._drop(ids, f"spool larger than {self.max_bytes} bytes")

    def _drop(self, ids: list[int], why: str) -> None:
        removed = self._remove("DELETE FROM points WHERE id IN (%s) RETURNING LENGTH(body)", ids)
        self.dropped += removed
        log.warning(
            "spool %s dropped its %d oldest points: %s (%d dropped since start)",
            self.name,
            removed,
            why,
            self.dropped,
        )
