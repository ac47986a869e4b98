"""SwitchBot figures: decode cost per advertisement, and the source's memory with 50 devices.

Run: ``python benchmarks/switchbot_decode.py [--minutes 60] [--realtime SECONDS]``

1. Decoding: ``adv.decode`` on public vectors (research notes §2), and the whole callback path
   (bleak ``AdvertisementData`` -> tracker -> statistics) measured through a replay.
2. Memory: a capture of 50 devices advertising at 1 Hz for ``--minutes`` is replayed through
   the switchbot source (bleak's scanner with the replay backend) in a fresh process; its peak
   RSS is compared with a process that imports the same modules and hears nothing.
   ``--realtime N`` also replays N seconds at real speed, collecting every 10 s, and prints
   the RSS after each collection (it should stay flat).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import textwrap
import timeit
from pathlib import Path

VECTORS = {  # (mfr, svc, model) from the research notes §2
    "Meter Plus, mfr + svc (ble_monitor#784)": ("c4f92675df22dc030096a9", "6900640096a9", None),
    "Meter, passive (pySwitchbot)": ("d7c17d5deb43de03069835", None, "meter"),
    "Outdoor, mfr + svc (ble_monitor#1411)": ("c76b0406155eff0203981f00", "770064", None),
    "Meter Pro CO2 (theengs test_ble.cpp)": ("b0e9feddeeff0ce40896280004037d00", "350064", None),
    "Hub 2 (pySwitchbot)": ("aabbccddeeff00ff66541af182079a3200", "7600", None),
    "foreign (Apple iBeacon)": (None, None, None),
}
DEVICES = 50

CHILD = textwrap.dedent(
    """
    import json, logging, sys, time
    from pathlib import Path
    from kansoku import PluginContext
    from kansoku_plugins.switchbot.config import OPTIONS, device_list
    from kansoku_plugins.switchbot.source import SwitchBotSource
    import bleak  # noqa: F401  (the baseline imports it too)

    capture, expected, speed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    def rss_kib(key="VmRSS"):
        return int(Path("/proc/self/status").read_text().split(key + ":")[1].split()[0])
    if not capture:
        print(json.dumps({"rss_kib": rss_kib()}))
        sys.exit()
    names = ", ".join(  # every device named; the passive-only Meters (n % 5 == 1) with a model
        f"AA:BB:CC:00:{n // 256:02X}:{n % 256:02X}=d{n}" + (":meter" if n % 5 == 1 else "")
        for n in range(50)
    )
    options = {o.name: o.default for o in OPTIONS} | {
        "replay": capture, "speed": speed, "devices": device_list(names)
    }
    log = logging.getLogger("bench")
    source = SwitchBotSource(options, PluginContext("switchbot", Path("."), log, Path(".")))
    started = time.perf_counter()
    source.start()
    samples = []
    while source._scanner.health.adverts < expected:
        time.sleep(10 if speed != float("inf") else 0.01)
        if speed != float("inf"):
            points = list(source.collect())
            samples.append((source._scanner.health.adverts, len(points), rss_kib()))
    seconds = time.perf_counter() - started
    points = list(source.collect())
    source.close()
    peak = rss_kib("VmHWM")
    print(json.dumps({"seconds": seconds, "points": len(points), "rss_kib": rss_kib(),
                      "peak_kib": peak, "samples": samples}))
    """
)


def decode_cost() -> None:
    from kansoku_plugins.switchbot import adv

    print("1. decode cost per advertisement (adv.decode, best of 5 x 20000)")
    costs = []
    for label, (mfr, svc, slug) in VECTORS.items():
        makers = {adv.COMPANY_ID: bytes.fromhex(mfr)} if mfr else {76: bytes(23)}
        service = {adv.SERVICE_UUID: bytes.fromhex(svc)} if svc else {}
        model = adv.MODELS_BY_SLUG.get(slug or "")
        call = functools.partial(adv.decode, makers, service, "AA:BB:CC:DD:EE:FF", model)
        runs = timeit.repeat(call, number=20000, repeat=5)
        cost = min(runs) / 20000 * 1e6
        costs.append(cost)
        print(f"   {label:44s} {cost:6.2f} µs")
    print(f"   {'mean':44s} {sum(costs) / len(costs):6.2f} µs")


def write_capture(path: Path, minutes: float) -> int:
    """50 devices (models rotating over the public vectors) at 1 Hz, values drifting."""
    lines = 0
    with path.open("w") as out:
        for second in range(int(minutes * 60)):
            for n in range(DEVICES):
                mfr, svc, _ = list(VECTORS.values())[n % 5]
                address = f"AA:BB:CC:00:{n // 256:02X}:{n % 256:02X}"
                tenths = (second // 30 + n) % 10
                body = bytearray.fromhex(mfr)
                offset = 13 if len(body) == 17 else 8  # Hub 2 keeps its triplet further on
                body[offset] = (body[offset] & 0xF0) | tenths
                record = {
                    "time": second + n / DEVICES,
                    "address": address,
                    "rssi": -60 - (second + n) % 20,
                    "local_name": None,
                    "service_data": {"0000fd3d-0000-1000-8000-00805f9b34fb": svc} if svc else {},
                    "manufacturer_data": {"2409": body.hex()},
                }
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
                lines += 1
    return lines


def child(capture: str, expected: int, speed: float) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, capture, str(expected), str(speed)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def memory(minutes: float, realtime: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        capture = Path(folder) / "fifty.jsonl"
        adverts = write_capture(capture, minutes)
        print(
            f"\n2. source with {DEVICES} devices at 1 Hz: {adverts} adverts "
            f"({minutes:g} min, {capture.stat().st_size / 1e6:.1f} MB capture)"
        )
        base = child("", 0, 0)["rss_kib"]
        fast = child(str(capture), adverts, float("inf"))
        rate = adverts / fast["seconds"]
        print(f"   baseline RSS (kansoku + bleak imported)   {base / 1024:8.1f} MiB")
        print(f"   RSS after the replay                      {fast['rss_kib'] / 1024:8.1f} MiB")
        print(f"   peak RSS                                  {fast['peak_kib'] / 1024:8.1f} MiB")
        share = (fast["rss_kib"] - base) / 1024
        print(f"   source's own share (after - baseline)     {share:8.1f} MiB")
        print(f"   points handed over at the end             {fast['points']:8d}")
        print(f"   whole callback path                       {1e6 / rate:8.1f} µs per advert")
        print(f"   adverts per second, one core              {rate:8.0f}")
        print(f"   CPU share at {DEVICES} x 1 Hz                     {DEVICES / rate * 100:8.3f} %")
        if realtime:
            seconds = min(realtime, minutes * 60)
            slow = child(str(capture), int(seconds * DEVICES), 1.0)
            print(f"\n   real time, {seconds:g} s, collecting every 10 s: adverts, points, RSS")
            for heard, points, rss in slow["samples"]:
                print(f"   {heard:8d} {points:5d} {rss / 1024:8.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="capture length")
    parser.add_argument("--realtime", type=float, default=0.0, help="also replay N s at 1x")
    args = parser.parse_args()
    decode_cost()
    memory(args.minutes, args.realtime)


if __name__ == "__main__":
    main()
