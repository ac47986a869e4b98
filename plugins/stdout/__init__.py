"""The ``stdout`` sink: JSON lines or InfluxDB line protocol on standard output."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kansoku import Metric, Option, PluginContext, SinkSpec, hookimpl, lineprotocol
from kansoku.options import choice


class StdoutSink:
    """Writes each point as one line: ``format = json`` or ``format = line``."""

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.format = options["format"]
        self._lock = threading.Lock()

    def write(self, batch: Sequence[Metric]) -> None:
        """Print the batch and flush, so a pipe reader sees it at once."""
        if self.format == "json":
            text = "".join(
                json.dumps(m.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"
                for m in batch
            )
        else:
            text = lineprotocol.encode_many(batch)
        with self._lock:
            sys.stdout.write(text)
            sys.stdout.flush()

    def close(self) -> None:
        """Nothing to release."""


@hookimpl
def kansoku_register_sinks() -> Iterable[SinkSpec]:
    """The stdout sink."""
    return [
        SinkSpec(
            name="stdout",
            factory=StdoutSink,
            description="print points as JSON lines or InfluxDB line protocol",
            options=[
                Option(
                    "format", choice("json", "line"), "json", "json (one object per line) or line"
                ),
            ],
            default_batch_size=100,
        )
    ]
