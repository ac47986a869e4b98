"""How fast are the memcached and redis-relay sources? Collection times and stream throughput.

Prints:
- the time one memcached collection takes, per server (TCP and unix socket, median and 95th
  percentile of 200 collections), and for both servers in one section;
- the time to collect 10,000 redis hashes matched by a key pattern (SCAN + pipelined HGETALL,
  1,000 keys per round trip), against the same keys read one HGETALL per round trip;
- the stream relay end to end: N entries (default 20,000) XADDed beforehand, then the real
  ``agent run`` reads them through its consumer group, spools them and prints them with the
  stdout sink; entries per second from the first to the last printed line and including
  start-up, against a bare XREADGROUP + XACK loop on the same stream (the redis ceiling).

Needs ``memcached`` and ``redis-server`` (Debian packages). Run: ``python benchmarks/relay.py``
(``--entries N`` to change the stream size).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from servers import answers, binary, free_port, start, start_redis, stop

from kansoku.plugins import Registry
from kansoku.types import PluginContext, Source

HASH_KEYS = 10_000
MEMCACHED_RUNS = 200


def make_source(plugin: str, text: dict[str, str], folder: Path) -> Source:
    """A source built by its plugin's factory from option texts, as the config loader does."""
    spec = Registry().source(plugin)
    options: dict[str, Any] = {
        o.name: o.parse(text[o.name]) if o.name in text else o.default for o in spec.options
    }
    context = PluginContext(plugin, folder, logging.getLogger(plugin), folder)
    return spec.factory(options, context)


def timings(collect: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and 95th percentile of ``runs`` calls, in milliseconds."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        collect()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def bench_memcached(folder: Path) -> None:
    """Collection time per memcached server and for both in one section."""
    port, sock = free_port(), str(folder / "memcached.sock")
    tcp = ("127.0.0.1", port)
    user = ["-u", "root"] if os.geteuid() == 0 else []
    base = [binary("memcached", "memcached"), "-U", "0", "-m", "64", *user]
    version = b"version\r\n"
    procs = [
        start([*base, "-l", "127.0.0.1", "-p", str(port)], lambda: answers(tcp, version), folder),
        start([*base, "-s", sock], lambda: answers(sock, version), folder),
    ]
    servers = {
        "TCP": f"127.0.0.1:{port}",
        "unix socket": f"unix:{sock}",
        "both, one section": f"127.0.0.1:{port}, unix:{sock}",
    }
    try:
        for label, server in servers.items():
            source = make_source("memcached", {"servers": server}, folder)
            points = source.collect()
            assert all(p.fields["up"] == 1 for p in points), points
            median, p95 = timings(source.collect, MEMCACHED_RUNS)
            print(
                f"memcached collection, {label:30} {median:7.3f} ms median, {p95:7.3f} ms p95 "
                f"({len(points[0].fields)} fields per server)"
            )
            source.close()
    finally:
        for proc in procs:
            stop(proc)


def bench_hashes(client: redis.Redis, url: str, folder: Path) -> None:
    """10,000 hashes through a key pattern: pipelined, and one round trip per key."""
    pipe = client.pipeline(transaction=False)
    for i in range(HASH_KEYS):
        pipe.hset(f"sensor:{i}", mapping={"temperature": f"{20 + i % 50 / 10}", "humidity": "55"})
    pipe.execute()
    options = {"url": url, "type": "hash", "key": "sensor:{id}", "measurement": "room"}
    options["fields"] = "temperature:float, humidity:int"
    source = make_source("redis-relay", options, folder)
    assert len(source.collect()) == HASH_KEYS
    piped, _ = timings(source.collect, 5)
    source.close()

    def one_by_one() -> None:
        for key in client.scan_iter(match="sensor:?*", count=1000):
            client.hgetall(key)

    single, _ = timings(one_by_one, 3)
    per_key = f"{piped * 1000 / HASH_KEYS:.1f} µs per key"
    print(f"redis {HASH_KEYS:,} hashes, SCAN + pipeline:        {piped:8.1f} ms ({per_key})")
    print(
        f"redis {HASH_KEYS:,} hashes, one HGETALL per trip:   {single:8.1f} ms "
        f"(pipelining is {single / piped:.1f}x faster)"
    )


def fill_stream(client: redis.Redis, key: str, entries: int) -> None:
    """XADD ``entries`` sensor readings."""
    pipe = client.pipeline(transaction=False)
    for n in range(entries):
        pipe.xadd(key, {"sensor": f"s{n % 8}", "n": n, "temperature": f"{20 + n % 100 / 10}"})
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def bare_stream_rate(client: redis.Redis, entries: int) -> float:
    """Entries per second of XREADGROUP + XACK alone, 10,000 at a time."""
    fill_stream(client, "bare", entries)
    client.xgroup_create("bare", "bench", "0")
    started = time.perf_counter()
    read = 0
    while read < entries:
        answer = client.xreadgroup("bench", "bench", {"bare": ">"}, count=10_000)
        ids = [entry_id for entry_id, _ in answer[0][1]]
        client.xack("bare", "bench", *ids)
        read += len(ids)
    return entries / (time.perf_counter() - started)


STREAM_INI = """\
[agent]
state_dir = {state}
self_metrics = false

[source.redis-relay.readings]
url = {url}
type = stream
key = readings
measurement = reading
fields = n:int, temperature:float
tag_fields = sensor
interval = 0.2s
max_entries = 10000

[sink.stdout]
batch_size = 1000
flush_interval = 0.1s
"""


def bench_stream(client: redis.Redis, url: str, folder: Path, entries: int) -> None:
    """The real ``agent run`` relays a stream to the stdout sink; entries per second."""
    fill_stream(client, "readings", entries)
    ini = folder / "stream.ini"
    ini.write_text(STREAM_INI.format(state=folder / "state", url=url))
    started = time.perf_counter()
    agent = subprocess.Popen(
        [sys.executable, "-m", "kansoku.cli", "-c", str(ini), "run"],
        stdout=subprocess.PIPE,
        stderr=open(folder / "agent.log", "wb"),  # noqa: SIM115  (closed with the process)
    )
    assert agent.stdout is not None
    first = None
    for count, _ in enumerate(agent.stdout, start=1):
        first = first or time.perf_counter()
        if count == entries:
            break
    last = time.perf_counter()
    agent.send_signal(signal.SIGTERM)
    agent.wait(30)
    bare = bare_stream_rate(client, entries)
    steady = entries / (last - first) if first and last > first else float("inf")
    overall = entries / (last - started)
    print(
        f"stream {entries:,} entries, agent run -> stdout: {steady:9,.0f} entries/s first to "
        f"last line ({overall:,.0f}/s with start-up)"
    )
    print(
        f"stream, bare XREADGROUP + XACK:             {bare:9,.0f} entries/s "
        f"(the relay reaches {steady / bare:.2f} of it)"
    )


def main() -> int:
    """Start the servers, run the three measurements, print figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000, help="stream entries")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="kansoku-bench-") as tmp:
        folder = Path(tmp)
        bench_memcached(folder)
        server, port = start_redis(folder)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            bench_hashes(client, url, folder)
            bench_stream(client, url, folder, args.entries)
        finally:
            stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
