"""The metric model: one measurement with tags, typed fields and a UTC time in nanoseconds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

FieldValue = int | float | bool | str


@dataclass(slots=True)
class Metric:
    """One point. Sources may put raw values in ``fields``; the core coerces them to the schema."""

    measurement: str
    fields: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    time_ns: int = field(default_factory=time.time_ns)
    #: the source instance that collected it (``smartmeter``, ``memcached.web``; ``agent`` for
    #: self-metrics); set by the core, kept in the spool, not written to sinks as a tag
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the stdout sink and the spool."""
        return {
            "measurement": self.measurement,
            "tags": self.tags,
            "fields": self.fields,
            "time": self.time_ns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metric:
        """Inverse of :meth:`to_dict`."""
        return cls(
            data["measurement"],
            dict(data["fields"]),
            dict(data["tags"]),
            int(data["time"]),
            data.get("source", ""),
        )
