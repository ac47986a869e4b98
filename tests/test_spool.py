"""The durable spool and the sink worker: order, bounds, quarantine, kill -9, retries, CLI."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from kansoku.delivery import SinkWorker
from kansoku.errors import Rejected, RetryLater
from kansoku.metric import Metric
from kansoku.spool import Spool, SpoolError

BIG = 2**40


def point(seq: int, **extra: object) -> Metric:
    fields = {"seq": seq, "ratio": seq / 4, "even": seq % 2 == 0, "name": f"p{seq}", **extra}
    return Metric("m", fields, {"host": "pi"}, 1_700_000_000_000_000_000 + seq, "feed")


def seqs(metrics: Sequence[Metric]) -> list[int]:
    return [m.fields["seq"] for m in metrics]


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "sink.sqlite"


def open_spool(path: Path, max_bytes: int = BIG, max_age: float = 1e9) -> Spool:
    return Spool(path, max_bytes=max_bytes, max_age=max_age, name="sink")


# ---------------------------------------------------------------------- the queue


def test_points_keep_order_and_types_across_a_reopen(spool_path: Path) -> None:
    spool = open_spool(spool_path)
    assert spool.put(point(i) for i in range(3)) == 3
    spool.put([point(3), point(4)])
    spool.close()
    spool = open_spool(spool_path)
    assert spool.depth() == 5
    batch = spool.peek(4)
    assert list(batch) == [point(i) for i in range(4)]
    assert [type(v) for v in batch[1].fields.values()] == [int, float, bool, str]
    assert batch[0].source == "feed"
    spool.ack(batch.ids[:2])
    assert seqs(spool.peek(10)) == [2, 3, 4]
    assert seqs(spool.peek(10, after=batch.ids[2])) == [3, 4]
    assert spool.depth() == 3
    spool.close()


def test_prepared_forms_are_stored_beside_the_points(spool_path: Path) -> None:
    spool = open_spool(spool_path)
    spool.put([point(0), point(1)], prepare=lambda m: f"line {m.fields['seq']}".encode())
    spool.put([point(2)])
    batch = spool.peek(10)
    assert batch.prepared == [b"line 0", b"line 1", None]
    assert spool.size() == sum(len(p or b"") for p in batch.prepared) + sum(
        len(b) for b in batch._bodies
    )
    spool.close()


def test_the_size_bound_drops_the_oldest_counts_and_logs(spool_path: Path, caplog) -> None:
    limit = 2000
    spool = open_spool(spool_path, max_bytes=limit)
    with caplog.at_level(logging.WARNING, logger="kansoku.spool"):
        for i in range(30):
            spool.put([point(i)])
            assert spool.size() <= limit
        kept = seqs(spool.peek(100))
        assert spool.dropped == 30 - len(kept) > 10
        assert kept == list(range(spool.dropped, 30))  # the oldest went first
        # The first drop is logged at once, the next ones summed up later (here: at close).
        assert [r.getMessage() for r in caplog.records] == [
            "spool sink dropped its 1 oldest points: spool over max_spool_size (2000 bytes) "
            "(1 dropped since start)"
        ]
        spool.close()
    assert f"dropped its {spool.dropped - 1} oldest points" in caplog.records[-1].getMessage()
    assert f"({spool.dropped} dropped since start)" in caplog.records[-1].getMessage()


def test_the_age_bound_drops_old_points(spool_path: Path, caplog) -> None:
    spool = open_spool(spool_path, max_age=0.3)
    spool.put([point(0), point(1)])
    time.sleep(0.4)
    with caplog.at_level(logging.WARNING, logger="kansoku.spool"):
        spool.put([point(2)])
    assert seqs(spool.peek(10)) == [2]
    assert spool.dropped == 2
    assert "older than max_spool_age (0.3s)" in caplog.text
    spool.close()


def test_quarantine_retry_and_drop(spool_path: Path) -> None:
    spool = open_spool(spool_path)
    spool.put(point(i) for i in range(4))
    batch = spool.peek(4)
    spool.quarantine([batch.ids[1], batch.ids[3]], "field type conflict")
    spool.ack([batch.ids[0]])
    assert spool.quarantine_depth() == 2
    assert [(seqs([q.metric])[0], q.reason) for q in spool.quarantined()] == [
        (1, "field type conflict"),
        (3, "field type conflict"),
    ]
    assert spool.retry_quarantine() == 2
    assert seqs(spool.peek(10)) == [2, 1, 3]  # back at the end of the queue
    batch = spool.peek(10)
    spool.quarantine(batch.ids[1:], "again")
    assert spool.drop_quarantine() == 2
    assert spool.quarantine_depth() == 0
    assert seqs(spool.peek(10)) == [2]
    spool.close()


def test_a_damaged_file_is_a_sentence(spool_path: Path) -> None:
    spool_path.parent.mkdir(parents=True)
    spool_path.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(SpoolError, match=r"spool sink: cannot open .*sink.sqlite: file is not"):
        open_spool(spool_path)


WRITER = """
import sys
from kansoku.metric import Metric
from kansoku.spool import Spool
spool = Spool(__import__("pathlib").Path(sys.argv[1]), max_bytes=2**40, max_age=1e9)
seq = 0
while True:
    spool.put([Metric("m", {"seq": seq + i}, {}, seq + i) for i in range(10)])
    seq += 10
    print(seq, flush=True)
"""


def test_kill_9_while_writing_loses_nothing_committed(spool_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(spool_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    committed = 0
    try:
        while committed < 2000:
            committed = int(writer.stdout.readline())
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)
    spool = open_spool(spool_path)
    stored = seqs(spool.peek(10**6))
    assert len(stored) >= committed
    assert stored == list(range(len(stored)))  # in order, no gap, no duplicate
    spool.close()


# ---------------------------------------------------------------------- the sink worker


class RecordingSink:
    """A sink that keeps what it was given; ``failures`` says how the next writes fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.failures: list[Exception] = []
        self.delay = 0.0

    def write(self, batch: Sequence[Metric]) -> None:
        time.sleep(self.delay)
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(seqs(batch))

    def close(self) -> None:
        pass

    @property
    def delivered(self) -> list[int]:
        return [seq for batch in self.batches for seq in batch]


def worker_for(spool_path: Path, sink: RecordingSink, batch_size: int = 3, **kw) -> SinkWorker:
    kw.setdefault("retry_max_backoff", 0.05)
    return SinkWorker("sink", sink, open_spool(spool_path), batch_size, 0.05, **kw)


def test_batches_drain_in_order(spool_path: Path) -> None:
    sink = RecordingSink()
    worker = worker_for(spool_path, sink)
    worker.offer([point(i) for i in range(8)])
    assert worker.drain(time.monotonic() + 5)
    assert sink.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert worker.stats.written == 8
    assert worker.spool.depth() == 0
    worker.close()


def test_retry_later_keeps_the_batch_and_backs_off(spool_path: Path, caplog) -> None:
    sink = RecordingSink()
    sink.failures = [RetryLater("server down"), RetryLater("server down"), OSError("bug")]
    worker = worker_for(spool_path, sink, retry_max_backoff=0.4)
    worker.offer([point(i) for i in range(4)])
    with caplog.at_level(logging.DEBUG, logger="kansoku.delivery"):
        assert not worker.drain(time.monotonic() + 5)
        assert worker.stats.consecutive_failures == 1
        assert not worker.drain(time.monotonic() + 5)  # still backing off: no attempt
        assert worker.stats.failed_writes == 1
        for _ in range(2):
            time.sleep(0.45)
            assert not worker.drain(time.monotonic() + 5)
        time.sleep(0.45)
        assert worker.drain(time.monotonic() + 5)
    assert sink.delivered == [0, 1, 2, 3]
    assert worker.stats.failed_writes == 3
    levels = [(r.levelname, bool(r.exc_info)) for r in caplog.records if "could not" in r.msg]
    assert levels == [("ERROR", False), ("DEBUG", False), ("ERROR", True)]
    assert "delivers again after 3 failed attempts" in caplog.text
    worker.close()


def test_refused_points_go_to_quarantine_and_the_rest_is_delivered(spool_path: Path) -> None:
    sink = RecordingSink()
    refused = Rejected("some refused", [1])
    refused.reasons = {1: "point 1 is bad"}  # type: ignore[attr-defined]
    sink.failures = [refused, Rejected("all bad")]
    worker = worker_for(spool_path, sink)
    worker.offer([point(i) for i in range(6)])
    assert worker.drain(time.monotonic() + 5)
    assert sink.delivered == []  # both writes refused something; the rest counts as delivered
    assert worker.stats.written == 2
    assert worker.stats.quarantined == 4
    assert [(q.metric.fields["seq"], q.reason) for q in worker.spool.quarantined()] == [
        (1, "point 1 is bad"),
        (3, "all bad"),
        (4, "all bad"),
        (5, "all bad"),
    ]
    worker.close()


def test_a_damaged_entry_is_set_aside_and_does_not_block(spool_path: Path) -> None:
    sink = RecordingSink()
    worker = worker_for(spool_path, sink, batch_size=10)
    worker.offer([point(0)])
    with sqlite3.connect(spool_path) as db:
        db.execute("INSERT INTO points (enqueued, body) VALUES (?, ?)", (time.time(), b"{oops"))
    worker.offer([point(2)])
    assert worker.drain(time.monotonic() + 5)
    assert sink.delivered == [0, 2]
    [damaged] = worker.spool.quarantined()
    assert damaged.metric is None and damaged.body == "{oops"
    assert damaged.reason.startswith("damaged spool entry")
    worker.close()


def test_two_drains_at_once_never_deliver_twice(spool_path: Path) -> None:
    sink = RecordingSink()
    sink.delay = 0.05
    worker = worker_for(spool_path, sink, batch_size=2)
    worker.offer([point(i) for i in range(10)])
    threads = [
        threading.Thread(target=worker.drain, args=(time.monotonic() + 10,)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sink.delivered == list(range(10))
    worker.close()


def test_the_thread_delivers_full_batches_at_once_and_flushes_on_stop(spool_path: Path) -> None:
    sink = RecordingSink()
    worker = SinkWorker("sink", sink, open_spool(spool_path), 5, 3600.0, 0.05)
    worker.start()
    worker.offer([point(i) for i in range(5)])  # a full batch wakes the worker at once
    deadline = time.monotonic() + 5
    while sink.delivered != list(range(5)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.delivered == list(range(5))
    worker.offer([point(5)])  # waits for the flush interval... or the stop
    assert worker.stop(5)
    assert sink.delivered == list(range(6))
    worker.close()


# ---------------------------------------------------------------------- agent spool


def test_agent_spool_commands(write_config, agent_cli, tmp_path: Path) -> None:
    config = write_config("[source.system]\n[sink.stdout]\n")
    base = ["-c", str(config), "spool"]
    assert agent_cli(*base).stdout.strip() == f"no spools in {tmp_path / 'state' / 'spool'}"
    spool = Spool(tmp_path / "state" / "spool" / "influxdb.sqlite", BIG, 1e9, "influxdb")
    spool.put(point(i) for i in range(4))
    batch = spool.peek(10)
    spool.quarantine(batch.ids[:2], 'partial write: field type conflict: input field "seq"\n')
    spool.close()

    status = agent_cli(*base, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("influxdb: 2 points waiting (")
    assert "oldest spooled 0s ago" in status.stdout
    assert status.stdout.rstrip().endswith(", 2 in quarantine")

    shown = agent_cli(*base, "show-quarantine", "--limit", "1").stdout.splitlines()
    assert len(shown) == 1
    sink, row_id, when, reason, body = shown[0].split("\t")
    assert (sink, row_id) == ("influxdb", "1")
    assert reason == 'partial write: field type conflict: input field "seq"'
    assert '"fields": {"seq": 0, "ratio": 0.0, "even": true, "name": "p0"}' in body

    assert agent_cli(*base, "retry-quarantine").stdout == "influxdb: 2 points queued again\n"
    assert "4 points waiting" in agent_cli(*base, "status").stdout
    spool = Spool(tmp_path / "state" / "spool" / "influxdb.sqlite", BIG, 1e9, "influxdb")
    assert seqs(spool.peek(10)) == [2, 3, 0, 1]
    spool.quarantine(spool.peek(1).ids, "bad")
    spool.close()
    dropped = agent_cli(*base, "drop-quarantine", "--sink", "influxdb")
    assert dropped.stdout == "influxdb: 1 quarantined points dropped\n"
    missing = agent_cli(*base, "status", "--sink", "nope")
    assert missing.returncode == 1
    assert "no spool for sink 'nope'" in missing.stderr
