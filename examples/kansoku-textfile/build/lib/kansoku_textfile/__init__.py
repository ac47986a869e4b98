"""Example kansoku plugin: the ``textfile`` source reads ``name=value`` lines from files.

Other programs (cron jobs, shell scripts) write a small file such as::

    # written by my-sensor.sh
    temperature=21.5
    door_open=false

and the agent picks the values up each interval. Fields get their type from the first value
seen and keep it (``extra_fields="infer"``), so a later ``temperature=abc`` is rejected and
counted instead of turning the field into text.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kansoku import MeasurementSchema, Metric, Option, PluginContext, SourceSpec, hookimpl
from kansoku.errors import SourceError
from kansoku.options import text_list


class TextfileSource:
    """One point per file: measurement from the config, tag ``file``, fields from the lines."""

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.paths = [Path(p) for p in options["paths"]]
        self.measurement = options["measurement"]
        self.schema = {self.measurement: MeasurementSchema(extra_fields="infer")}
        self.log = context.log

    def collect(self) -> Iterable[Metric]:
        """Read every file; a missing file is an error only when all of them are missing."""
        points, missing = [], []
        for path in self.paths:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                missing.append(f"{path}: {exc.strerror}")
                continue
            fields = {}
            for line in text.splitlines():
                name, sep, value = line.partition("=")
                if sep and not line.lstrip().startswith("#"):
                    fields[name.strip()] = value.strip()
            if fields:
                points.append(Metric(self.measurement, fields, {"file": path.name}, time.time_ns()))
        if missing and not points:
            raise SourceError("cannot read " + "; ".join(missing))
        for reason in missing:
            self.log.warning("cannot read %s", reason)
        return points

    def close(self) -> None:
        """Nothing to release."""


@hookimpl
def kansoku_register_sources() -> Iterable[SourceSpec]:
    """Register the textfile source."""
    return [
        SourceSpec(
            name="textfile",
            factory=TextfileSource,
            description="name=value lines from text files (example plugin)",
            options=[
                Option("paths", text_list, help="files to read, comma-separated"),
                Option("measurement", str, "textfile", "measurement name of the points"),
            ],
            default_interval=60.0,
        )
    ]
