"""The whole agent's footprint on a small machine, against collectd in the same run.

Starts real memcached, redis-server and influxd on loopback, then ``agent run`` with every
built-in plugin: system, smartmeter (the built-in Wi-SUN emulator), switchbot (the shipped
capture replayed in a loop at real speed), memcached, redis-relay (a hash and a stream),
and the influxdb, cacti and stdout sinks. Two phases of ``--seconds`` each (default 60):

- idle: the intervals a user would configure (smartmeter 60 s, others 30-60 s);
- load: every interval 1 s, a feeder adding 200 stream entries per second to redis and
  memcached traffic.

For each phase it prints the agent's RSS (peak of samples every second), CPU seconds per
minute, and thread count; then the same for collectd (memcached and redis plugins, the csv
writer) with interval 60 s and 1 s. Targets (issue: run it as a service): RSS of ``agent
run`` with all built-ins <= 40 MB; idle CPU <= 0.2 s per minute.

Run: ``python benchmarks/footprint.py [--seconds 60]``. Needs memcached, redis-server,
influxdb and collectd (Debian packages).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from servers import binary, start_influxd, start_memcached, start_redis, stop

TICKS = os.sysconf("SC_CLK_TCK")
UNIT_ENVIRONMENT = dict(
    line.removeprefix("Environment=").split("=", 1)
    for line in (Path(__file__).parent.parent / "etc/systemd/kansoku.service")
    .read_text()
    .split("\n")
    if line.startswith("Environment=") and "KANSOKU_CONFIG" not in line
)
RSS_TARGET_MB = 40.0
IDLE_CPU_TARGET = 0.2


@dataclass
class Usage:
    """What one process used over one phase."""

    rss_mb: float
    cpu_per_min: float
    threads: int


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / TICKS


def status_value(pid: int, key: str) -> int:
    """A number from /proc/PID/status (VmRSS in kB, Threads)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def measure(proc: subprocess.Popen[bytes], seconds: float, warmup: float) -> Usage:
    """Wait ``warmup``, then sample RSS and threads every second for ``seconds``."""
    time.sleep(warmup)
    if proc.poll() is not None:
        sys.exit(f"{proc.args[0]} exited with {proc.returncode} during warm-up")
    start_cpu, started = cpu_seconds(proc.pid), time.monotonic()
    peak, threads = 0, 0
    while time.monotonic() - started < seconds:
        peak = max(peak, status_value(proc.pid, "VmRSS"))
        threads = max(threads, status_value(proc.pid, "Threads"))
        time.sleep(1)
    cpu = cpu_seconds(proc.pid) - start_cpu
    return Usage(peak / 1024, cpu * 60 / (time.monotonic() - started), threads)


def agent_config(folder: Path, servers: dict[str, str], load: bool) -> Path:
    """An INI with every built-in plugin; ``load`` makes every interval 1 s."""

    def every(seconds: int) -> str:
        return "1s" if load else f"{seconds}s"

    text = textwrap.dedent(f"""
        [agent]
        state_dir = {folder / "state"}
        self_metrics_interval = {every(60)}
        [source.system]
        interval = {every(60)}
        [source.smartmeter]
        device = emulator
        emulator = animate=yes, scan_time_scale=0, response_delay=0.05s
        interval = {every(60)}
        [source.switchbot]
        replay = demo
        speed = 1
        loop = true
        interval = {every(60)}
        [source.memcached]
        servers = {servers["memcached"]}
        interval = {every(30)}
        [source.redis-relay.rooms]
        url = {servers["redis"]}
        type = hash
        key = room:{{room}}
        measurement = room
        fields = temperature:float, humidity:int
        interval = {every(30)}
        [source.redis-relay.readings]
        url = {servers["redis"]}
        type = stream
        key = readings
        measurement = reading
        fields = temperature:float, battery:int
        interval = {every(10)}
        [sink.influxdb]
        url = {servers["influxdb"]}
        database = footprint
        create_database = true
        [sink.cacti]
        [sink.stdout]
        format = line
    """)
    path = folder / ("load.ini" if load else "idle.ini")
    path.write_text(text)
    path.chmod(0o600)
    return path


def collectd_config(folder: Path, mc_port: int, redis_port: int, interval: int) -> Path:
    """collectd with its memcached and redis plugins and the csv writer."""
    work = folder / f"collectd-{interval}"
    work.mkdir()
    path = work / "collectd.conf"
    path.write_text(
        textwrap.dedent(f"""
        Hostname "footprint"
        FQDNLookup false
        BaseDir "{work}"
        PIDFile "{work}/collectd.pid"
        PluginDir "/usr/lib/collectd"
        TypesDB "/usr/share/collectd/types.db"
        Interval {interval}
        AutoLoadPlugin false
        LoadPlugin memcached
        <Plugin memcached>
          <Instance "local">
            Host "127.0.0.1"
            Port "{mc_port}"
          </Instance>
        </Plugin>
        LoadPlugin redis
        <Plugin redis>
          <Node "local">
            Host "127.0.0.1"
            Port {redis_port}
          </Node>
        </Plugin>
        LoadPlugin csv
        <Plugin csv>
          DataDir "{work}/csv"
        </Plugin>
    """)
    )
    return path


class Feeder:
    """Load for the load phase: stream entries into redis and get/set traffic on memcached."""

    def __init__(self, redis_url: str, mc_port: int, per_second: int) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.mc_port = mc_port
        self.per_second = per_second
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        from pymemcache.client.base import Client

        memcached = Client(("127.0.0.1", self.mc_port))
        n = 0
        while not self.stop.wait(1.0 / self.per_second * 10):
            pipe = self.client.pipeline(transaction=False)
            for _ in range(10):
                n += 1
                pipe.xadd("readings", {"temperature": f"{20 + n % 50 / 10:.1f}", "battery": "87"})
            pipe.execute()
            memcached.set(f"k{n % 100}", b"x" * 100)
            memcached.get(f"k{(n + 7) % 100}")


def run_phase(name: str, argv: list[str], seconds: float, warmup: float) -> Usage:
    """Start a process (with the unit file's environment), measure it, stop it."""
    env = {**os.environ, **UNIT_ENVIRONMENT}
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(argv, stdout=devnull, stderr=subprocess.PIPE, env=env)
    try:
        usage = measure(proc, seconds, warmup)
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if proc.returncode not in (0, -15):
        sys.exit(f"{name} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    errors = [line for line in err.decode(errors="replace").splitlines() if " ERROR " in line]
    if errors:
        print(f"  {name}: {len(errors)} error lines, first: {errors[0]}", file=sys.stderr)
    return usage


LIBRARIES = (
    "kansoku.runtime, apscheduler.schedulers.background, bleak, influxdb, redis, "
    "pymemcache.client.base, serial"
)


def import_rss_mb(modules: str) -> float:
    """Peak RSS of a bare interpreter that only imports ``modules`` (what the libraries cost)."""
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's size across exec
    code = (
        f"import {modules}; print(next(line.split()[1] for line in open('/proc/self/status') "
        "if line.startswith('VmHWM:')))"
    )
    env = {**os.environ, **UNIT_ENVIRONMENT}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return int(out.stdout) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    args = parser.parse_args()
    collectd = binary("collectd", "collectd")
    agent = [sys.executable, "-m", "kansoku.cli"]
    results: dict[str, Usage] = {}
    with tempfile.TemporaryDirectory(prefix="kansoku-footprint-") as tmp:
        folder = Path(tmp)
        mc, mc_port = start_memcached(folder)
        rd, redis_port = start_redis(folder)
        influx, influx_url = start_influxd(folder)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        servers = {"memcached": f"127.0.0.1:{mc_port}", "redis": redis_url, "influxdb": influx_url}
        client = redis.Redis.from_url(redis_url)
        for room in ("kitchen", "attic", "bath"):
            client.hset(f"room:{room}", mapping={"temperature": "21.5", "humidity": "55"})
        try:
            idle = agent_config(folder, servers, load=False)
            busy = agent_config(folder, servers, load=True)
            print(f"measuring {args.seconds:g} s per phase ...", file=sys.stderr)
            results["agent idle"] = run_phase(
                "agent", [*agent, "-c", str(idle), "run"], args.seconds, 10
            )
            feeder = Feeder(redis_url, mc_port, per_second=200)
            feeder.thread.start()
            results["agent load"] = run_phase(
                "agent", [*agent, "-c", str(busy), "run"], args.seconds, 10
            )
            for interval, label in ((60, "collectd idle"), (1, "collectd load")):
                conf = collectd_config(folder, mc_port, redis_port, interval)
                results[label] = run_phase(
                    "collectd", [collectd, "-f", "-C", str(conf)], args.seconds, 3
                )
            feeder.stop.set()
        finally:
            for proc in (influx, rd, mc):
                stop(proc)
    print(f"{'process':<15} {'RSS MB':>8} {'CPU s/min':>10} {'threads':>8}")
    for label, usage in results.items():
        print(f"{label:<15} {usage.rss_mb:>8.1f} {usage.cpu_per_min:>10.2f} {usage.threads:>8}")
    agent_rss = max(results["agent idle"].rss_mb, results["agent load"].rss_mb)
    bare, libraries = import_rss_mb("sys"), import_rss_mb(LIBRARIES)
    print(
        f"of which imports: {libraries:.1f} MB (interpreter {bare:.1f} MB + libraries the "
        f"built-ins use {libraries - bare:.1f} MB); the agent's own data: "
        f"{results['agent idle'].rss_mb - libraries:.1f} MB"
    )
    collectd_idle_cpu = max(results["collectd idle"].cpu_per_min, 0.01)
    print(
        f"agent / collectd RSS: {agent_rss / results['collectd load'].rss_mb:.1f}x, idle CPU: "
        f"{results['agent idle'].cpu_per_min / collectd_idle_cpu:.1f}x"
    )
    print(
        f"target RSS <= {RSS_TARGET_MB:g} MB: {'met' if agent_rss <= RSS_TARGET_MB else 'MISSED'}"
        f" ({agent_rss:.1f} MB)"
    )
    idle_cpu = results["agent idle"].cpu_per_min
    print(
        f"target idle CPU <= {IDLE_CPU_TARGET:g} s/min: "
        f"{'met' if idle_cpu <= IDLE_CPU_TARGET else 'MISSED'} ({idle_cpu:.2f} s/min)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
