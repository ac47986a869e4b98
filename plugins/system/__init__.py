"""The ``system`` source: load average, memory and uptime of the machine the agent runs on."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kansoku import FieldSpec, MeasurementSchema, Metric, PluginContext, SourceSpec, hookimpl

SCHEMA = {
    "system": MeasurementSchema(
        {
            "load1": FieldSpec(float, description="1-minute load average"),
            "load5": FieldSpec(float, description="5-minute load average"),
            "load15": FieldSpec(float, description="15-minute load average"),
            "uptime_s": FieldSpec(int, "s", "counter", "seconds since boot"),
            "mem_total_bytes": FieldSpec(int, "bytes", description="MemTotal"),
            "mem_available_bytes": FieldSpec(int, "bytes", description="MemAvailable"),
        }
    ),
}
MEMINFO_FIELDS = {"MemTotal": "mem_total_bytes", "MemAvailable": "mem_available_bytes"}


class SystemSource:
    """Reads /proc (Linux); each collection is one point."""

    schema = SCHEMA

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.proc = Path("/proc")

    def collect(self) -> Iterable[Metric]:
        """One ``system`` point."""
        load1, load5, load15 = os.getloadavg()
        fields: dict[str, Any] = {"load1": load1, "load5": load5, "load15": load15}
        uptime = (self.proc / "uptime").read_text().split()[0]
        fields["uptime_s"] = int(float(uptime))
        for line in (self.proc / "meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in MEMINFO_FIELDS:
                fields[MEMINFO_FIELDS[key]] = int(rest.split()[0]) * 1024
        return [Metric("system", fields, time_ns=time.time_ns())]

    def close(self) -> None:
        """Nothing to release."""


@hookimpl
def kansoku_register_sources() -> Iterable[SourceSpec]:
    """The system source."""
    return [
        SourceSpec(
            name="system",
            factory=SystemSource,
            description="load average, memory and uptime from /proc",
            default_interval=60.0,
            schema=SCHEMA,
        )
    ]
