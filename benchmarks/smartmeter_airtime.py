"""Airtime per sample on the B-route: the agent's long session against a classic cron script.

A classic script runs every few minutes, joins the meter afresh (active scan, PANA
authentication), sends one Get per property and ends the session. The agent joins once, keeps
the session and asks for E7, E8, E0 and E3 in a single Get. Both read the same four values
from the built-in emulator, which counts what the stick sends on air:

- ECHONET Lite frames and bytes (the UDP payloads handed to SKSENDTO), and
- radio frames and bytes with the emulator's airtime model: about 40 bytes of PHY/MAC/security/
  6LoWPAN/UDP overhead per frame, one beacon request per channel during an active scan, four
  PANA messages from the stick per join and one per SKTERM; TX time at 100 kbit/s.

The agent is measured in steady state (after its first join), the script over whole runs. The
ratio is the figure the project aims at (at least 5x fewer bytes on air per sample); the TX time
per hour is set against the 360 s per hour the radio rules allow (ARIB STD-T108).

Usage: python benchmarks/smartmeter_airtime.py [--samples N] [--interval SECONDS]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import serial

from kansoku import PluginContext
from kansoku.plugins import Registry
from kansoku_plugins.smartmeter import echonet as el
from kansoku_plugins.smartmeter import skstack as sk
from kansoku_plugins.smartmeter.emulator import Emulator
from kansoku_plugins.smartmeter.emulator_settings import EmulatorSettings

ROUTE_B_ID = "00112233445566778899AABBCCDDEEFF"
PASSWORD = "0123456789AB"
TARGET_RATIO = 5.0
HOURLY_LIMIT_MS = 360_000
FAST = EmulatorSettings(scan_time_scale=0.0, join_seconds=0.02, response_delay=0.005)


@dataclass
class Usage:
    """What the stick sent over some samples."""

    samples: int
    echonet_frames: int
    echonet_bytes: int
    radio_frames: int
    radio_bytes: int
    tx_ms: int

    def per_sample(self, name: str) -> float:
        return getattr(self, name) / self.samples


def snapshot(emu: Emulator) -> tuple[int, int, int, int, int]:
    air = emu.stats.airtime
    return (emu.stats.echonet_frames, emu.stats.echonet_bytes, air.frames, air.bytes, air.tx_ms)


def usage(emu: Emulator, before: tuple[int, ...], samples: int) -> Usage:
    return Usage(samples, *(a - b for a, b in zip(snapshot(emu), before, strict=True)))


def measure_agent(emu: Emulator, state: Path, samples: int) -> Usage:
    """The smartmeter source as the agent runs it: one join, then one Get per sample."""
    spec = Registry(load_entrypoints=False).source("smartmeter")
    options = {option.name: option.default for option in spec.options}
    options.update(
        device=emu.path,
        route_b_id=spec.options[2].parse(ROUTE_B_ID),
        route_b_password=spec.options[3].parse(PASSWORD),
    )
    context = PluginContext("smartmeter", state, logging.getLogger("benchmark"), state)
    source = spec.factory(options, context)
    try:
        source.collect()  # the first join is not steady state
        before = snapshot(emu)
        for _ in range(samples):
            source.collect()
        return usage(emu, before, samples)
    finally:
        source.close()


class CronScript:
    """What typical scripts do on every run: join, one Get per property, terminate."""

    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, 115200, timeout=0.02)
        self.parser = sk.StreamParser()

    def until(self, wanted, timeout: float = 5.0) -> list[sk.Item]:
        items: list[sk.Item] = []
        end = time.monotonic() + timeout
        while not any(wanted(item) for item in items):
            if time.monotonic() > end:
                raise RuntimeError(f"the emulator did not answer as expected: {items[-5:]}")
            items += self.parser.feed(self.port.read(4096))
        return items

    def command(self, text: str, wanted=lambda i: isinstance(i, sk.Ok)) -> list[sk.Item]:
        self.port.write((text + "\r\n").encode())
        return self.until(wanted)

    def run(self, epcs: list[int]) -> None:
        self.command(f"SKSETPWD {len(PASSWORD):X} {PASSWORD}")
        self.command(f"SKSETRBID {ROUTE_B_ID}")
        scan = self.command(sk.BP35C2.scan(6), lambda i: isinstance(i, sk.Event) and i.num == 0x22)
        desc = {i.key: i.value for i in scan if isinstance(i, sk.PanField)}
        ip = self.command(f"SKLL64 {desc['Addr']}", lambda i: isinstance(i, sk.Address))[-1]
        self.command(f"SKSREG S2 {desc['Channel']}")
        self.command(f"SKSREG S3 {desc['Pan ID']}")
        self.command(f"SKJOIN {ip.ip}", lambda i: isinstance(i, sk.Event) and i.num == 0x25)
        for tid, epc in enumerate(epcs, start=1):
            data = el.get_request(tid, [epc]).encode()
            self.port.write(sk.BP35C2.sendto(ip.ip, len(data)).encode() + data)
            self.until(lambda i, t=tid: isinstance(i, sk.RxUdp) and i.data[2:4] == t.to_bytes(2))
        self.command("SKTERM", lambda i: isinstance(i, sk.Event) and i.num == 0x27)
        self.port.close()


def measure_cron(emu: Emulator, samples: int) -> Usage:
    before = snapshot(emu)
    for _ in range(samples):
        CronScript(emu.path).run([el.POWER, el.CURRENTS, el.ENERGY_IMPORT, el.ENERGY_EXPORT])
    return usage(emu, before, samples)


def report(agent: Usage, cron: Usage, interval: float) -> bool:
    rows = (
        ("ECHONET frames", "echonet_frames", "{:.1f}"),
        ("ECHONET bytes", "echonet_bytes", "{:.0f}"),
        ("radio frames", "radio_frames", "{:.1f}"),
        ("radio bytes (on air)", "radio_bytes", "{:.0f}"),
        ("TX time (ms)", "tx_ms", "{:.1f}"),
    )
    print(f"B-route airtime per sample ({agent.samples} samples each, measured on the emulator)")
    print(f"{'':24}{'agent':>12}{'cron script':>14}{'ratio':>9}")
    for label, name, form in rows:
        a, c = agent.per_sample(name), cron.per_sample(name)
        ratio = c / a if a else float("inf")
        print(f"{label:24}{form.format(a):>12}{form.format(c):>14}{ratio:>8.1f}x")
    per_hour = 3600 / interval
    for who, used in (("agent", agent), ("cron script", cron)):
        share = used.per_sample("tx_ms") * per_hour / HOURLY_LIMIT_MS
        print(f"TX time per hour at one sample every {interval:g}s, {who}: {share:.2%} of 360 s")
    ratio = cron.per_sample("radio_bytes") / agent.per_sample("radio_bytes")
    ok = ratio >= TARGET_RATIO
    print(f"bytes on air: {ratio:.1f}x fewer with the agent (target >= {TARGET_RATIO:g}x): "
          f"{'met' if ok else 'NOT met'}")  # fmt: skip
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20, help="samples per approach")
    parser.add_argument("--interval", type=float, default=60.0, help="sampling interval, s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kansoku-airtime-") as folder:
        emu = Emulator(FAST, link=Path(folder) / "ttyWISUN")
        emu.start()
        try:
            agent = measure_agent(emu, Path(folder) / "state", args.samples)
            cron = measure_cron(emu, args.samples)
        finally:
            emu.stop()
    return 0 if report(agent, cron, args.interval) else 1


if __name__ == "__main__":
    raise SystemExit(main())
