"""The last-values cache: what each source instance delivered last, for Cacti and Zabbix.

The ``[sink.cacti]`` sink keeps one JSON file per source instance in
``STATE_DIR/lastvalues/SOURCE.json`` (``smartmeter.json``, ``memcached.web.json``, ``agent.json``
for the self-metrics). ``agent cacti``, ``agent get`` and ``agent discover`` read it, so a poller
never opens a device the agent owns. A file is replaced atomically (a temporary file in the same
folder, then ``rename``): a reader sees the old or the new file, never a mix.

File format (``"format": "kansoku-lastvalues"``, ``"version": 1``)::

    {"format": "kansoku-lastvalues", "version": 1, "source": "memcached.web",
     "interval": 60.0, "delay": 1.0,
     "schema": {"memcached": {"curr_items": {"type": "int", "kind": "gauge", "unit": ""}}},
     "points": [{"measurement": "memcached", "tags": {"server": "10.0.0.2:11211"},
                 "fields": {"curr_items": [1234, 1700000000000000000]}}]}

Each field keeps its own ``[value, time in ns]``; values keep their JSON type (an int stays an
int, a float keeps its decimal point), so ``agent cacti`` can print integers for COUNTER data
sources. ``interval`` is the source's collection interval and ``delay`` the sink's
``flush_interval``: a value is stale when it is older than ``2 × interval + delay``.

Standard library only: the fast commands import this module.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kansoku.errors import KansokuError
from kansoku.metric import FieldValue, Metric

CACHE_FOLDER = "lastvalues"
FORMAT = "kansoku-lastvalues"
VERSION = 1
FILE_MODE = 0o640
FOLDER_MODE = 0o750
#: assumed when the cache does not know the source's interval (Cacti's default poll period)
FALLBACK_INTERVAL = 300.0

#: a source instance id as config sections allow it: ``smartmeter``, ``memcached.web``
SOURCE_ID = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)?")
PointKey = tuple[str, tuple[tuple[str, str], ...]]


class CacheError(KansokuError):
    """The cache cannot answer: no file for the source, unreadable, or the selection is wrong."""


@dataclass(frozen=True)
class FieldInfo:
    """What the schema says about a field: ``int|float|bool|str``, ``gauge|counter``, unit."""

    type: str
    kind: str = "gauge"
    unit: str = ""


@dataclass
class Point:
    """The newest value of each field of one measurement with one tag set."""

    measurement: str
    tags: dict[str, str]
    values: dict[str, tuple[FieldValue, int]] = field(default_factory=dict)

    @property
    def key(self) -> PointKey:
        """Measurement and sorted tags: what makes two points the same series."""
        return self.measurement, tuple(sorted(self.tags.items()))

    @property
    def newest(self) -> int:
        """Time (ns) of the newest field value."""
        return max((t for _, t in self.values.values()), default=0)

    def matches(self, measurement: str | None, tags: Mapping[str, str | None]) -> bool:
        """Whether this point is of ``measurement`` (any if None) and carries all ``tags``
        (a tag whose wanted value is None may have any value)."""
        if measurement is not None and self.measurement != measurement:
            return False
        return all(k in self.tags if v is None else self.tags.get(k) == v for k, v in tags.items())


@dataclass
class SourceCache:
    """The last values of one source instance, with its interval and field schema."""

    source: str
    interval: float | None = None
    delay: float = 0.0
    schema: dict[str, dict[str, FieldInfo]] = field(default_factory=dict)
    points: dict[PointKey, Point] = field(default_factory=dict)

    def describe(self, interval: float | None, schema: Mapping[str, Any], delay: float) -> None:
        """Record the source's interval and its schema (``MeasurementSchema`` objects)."""
        self.interval = interval
        self.delay = delay
        for measurement, spec in schema.items():
            self.schema[measurement] = {
                name: FieldInfo(f.type.__name__, f.kind, f.unit) for name, f in spec.fields.items()
            }

    def update(self, metric: Metric) -> None:
        """Take the metric's fields unless the cache already holds newer values for them."""
        point = Point(metric.measurement, dict(metric.tags))
        point = self.points.setdefault(point.key, point)
        for name, value in metric.fields.items():
            held = point.values.get(name)
            if held is None or held[1] <= metric.time_ns:
                point.values[name] = (value, metric.time_ns)

    def forget(self, before_ns: int) -> int:
        """Drop series whose newest value is older than ``before_ns``; return how many."""
        old = [key for key, point in self.points.items() if point.newest < before_ns]
        for key in old:
            del self.points[key]
        return len(old)

    def max_age(self) -> float:
        """Seconds after which a value is stale: 2 × interval + the sink's flush delay."""
        return 2 * (self.interval or FALLBACK_INTERVAL) + self.delay

    def select(self, measurement: str | None, tags: Mapping[str, str | None]) -> list[Point]:
        """The points of ``measurement`` (any if None) that carry all ``tags``."""
        return [p for p in self.points.values() if p.matches(measurement, tags)]

    def field_info(self, measurement: str, name: str) -> FieldInfo:
        """The schema entry of a field, or one inferred from its cached value."""
        info = self.schema.get(measurement, {}).get(name)
        if info is not None:
            return info
        for point in self.points.values():
            if point.measurement == measurement and name in point.values:
                return FieldInfo(type(point.values[name][0]).__name__)
        return FieldInfo("float")

    def field_names(self) -> list[str]:
        """Every field name the source has: schema order first, then the others sorted."""
        names = dict.fromkeys(n for fields in self.schema.values() for n in fields)
        extra = {n for p in self.points.values() for n in p.values if n not in names}
        return [*names, *sorted(extra)]

    def to_json(self) -> bytes:
        """The file contents."""
        data = {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "interval": self.interval,
            "delay": self.delay,
            "schema": {
                m: {n: vars(info) for n, info in fields.items()}
                for m, fields in self.schema.items()
            },
            "points": [
                {
                    "measurement": p.measurement,
                    "tags": p.tags,
                    "fields": {n: list(vt) for n, vt in p.values.items()},
                }
                for p in self.points.values()
            ],
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> SourceCache:
        """Parse a cache file; ``where`` names it in errors."""
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise ValueError("not a kansoku last-values file")
            if data.get("version") != VERSION:
                raise ValueError(
                    f"format version {data.get('version')}, this agent reads {VERSION}"
                )
            cache = cls(data["source"], data["interval"], float(data.get("delay") or 0.0))
            for measurement, fields in data["schema"].items():
                cache.schema[measurement] = {n: FieldInfo(**i) for n, i in fields.items()}
            for item in data["points"]:
                point = Point(item["measurement"], dict(item["tags"]))
                point.values = {n: (v, int(t)) for n, (v, t) in item["fields"].items()}
                cache.points[point.key] = point
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CacheError(f"{where}: unreadable last-values cache ({exc})") from None
        return cache


def cache_dir(state_dir: Path) -> Path:
    """The folder of the cache files."""
    return Path(state_dir) / CACHE_FOLDER


def cache_path(state_dir: Path, source: str) -> Path:
    """The cache file of one source instance."""
    return cache_dir(state_dir) / f"{source}.json"


def cached_sources(state_dir: Path) -> list[str]:
    """The source instances that have a cache file."""
    try:
        names = os.listdir(cache_dir(state_dir))
    except OSError:
        return []
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json") and n[0] != ".")


def read(state_dir: Path, source: str) -> SourceCache:
    """The cache of one source instance, or a :class:`CacheError` saying what to check."""
    if not SOURCE_ID.fullmatch(source):
        raise CacheError(f"{source!r} is not a source name (SOURCE or SOURCE.INSTANCE)")
    path = cache_path(state_dir, source)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        known = ", ".join(cached_sources(state_dir)) or "none"
        raise CacheError(
            f"no last values for source {source!r} in {cache_dir(state_dir)} (sources there: "
            f"{known}); is the agent running with a [sink.cacti] section and [source.{source}]?"
        ) from None
    except PermissionError:
        raise CacheError(
            f"{path} is not readable by this user; add it to the group named by [sink.cacti] group"
        ) from None
    except OSError as exc:
        raise CacheError(f"{path}: {exc.strerror}") from None
    return SourceCache.from_json(raw, str(path))


def write_atomic(path: Path, data: bytes, gid: int | None = None) -> None:
    """Replace ``path`` with ``data`` (mode 0640, group ``gid``) in one rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), FILE_MODE)
            if gid is not None:
                os.fchown(handle.fileno(), -1, gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
