"""Applies a source's schema to what it collected: coerce, reject, count, pin discovered types.

Every rejected value is counted per source, measurement and field, and logged with its value
the first time that field rejects something (then at debug level, so a broken sensor does not
flood the log). Types of fields discovered at run time are pinned in ``types.json`` in the
state directory and survive restarts.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from kansoku.metric import Metric
from kansoku.schema import TYPES, CoercionError, FieldSpec, Schema, coerce, infer_type

log = logging.getLogger("kansoku.validation")


class TypePins:
    """Field types fixed on first sight, stored as JSON: {source: {measurement: {field: type}}}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raw = {}
        except (OSError, ValueError) as exc:
            log.error("cannot read pinned field types from %s (%s); starting afresh", path, exc)
            raw = {}
        self._pins: dict[str, dict[str, dict[str, str]]] = raw

    def get(self, source: str, measurement: str, name: str) -> type | None:
        """The pinned type of a field, if it has one."""
        type_name = self._pins.get(source, {}).get(measurement, {}).get(name)
        return TYPES.get(type_name) if type_name else None

    def pin(self, source: str, measurement: str, name: str, field_type: type) -> type:
        """Pin a type (unless one is already pinned) and return the type that holds."""
        with self._lock:
            fields = self._pins.setdefault(source, {}).setdefault(measurement, {})
            if name not in fields:
                fields[name] = field_type.__name__
                self._save()
            return TYPES[fields[name]]

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".types.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self._pins, handle, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


class Validator:
    """Coerces one source's metrics against its schema and counts what it rejects."""

    def __init__(self, source: str, schema: Schema, pins: TypePins) -> None:
        self.source = source
        self.schema = schema
        self.pins = pins
        self.rejected: Counter[tuple[str, str]] = Counter()
        self._reported: set[tuple[str, str]] = set()

    def apply(self, metrics: Iterable[Metric]) -> list[Metric]:
        """Typed copies of ``metrics``; points left with no field at all are dropped."""
        out = []
        for metric in metrics:
            fields = {}
            for name, value in metric.fields.items():
                if value is None:
                    self._reject(metric, name, value, "no value")
                    continue
                field_type = self._type_of(metric.measurement, name, value)
                if field_type is None:
                    self._reject(metric, name, value, "not in the source's schema")
                    continue
                try:
                    fields[name] = coerce(value, field_type)
                except CoercionError as exc:
                    self._reject(metric, name, value, f"{exc} ({field_type.__name__} field)")
            if fields:
                out.append(
                    Metric(
                        metric.measurement, fields, dict(metric.tags), metric.time_ns, self.source
                    )
                )
        return out

    def _type_of(self, measurement: str, name: str, value: object) -> type | None:
        spec = self.schema.get(measurement)
        if spec is None:
            return None
        declared: FieldSpec | None = spec.fields.get(name)
        if declared is not None:
            return declared.type
        if spec.extra_fields == "reject":
            return None
        if spec.extra_fields == "float":
            return float
        pinned = self.pins.get(self.source, measurement, name)
        if pinned is not None:
            return pinned
        return self.pins.pin(self.source, measurement, name, infer_type(value))

    def _reject(self, metric: Metric, name: str, value: object, reason: str) -> None:
        key = (metric.measurement, name)
        self.rejected[key] += 1
        level = logging.DEBUG if key in self._reported else logging.WARNING
        self._reported.add(key)
        tags = ",".join(f"{k}={v}" for k, v in sorted(metric.tags.items()))
        log.log(
            level,
            "source %s rejected %s.%s = %r%s: %s (counted in agent_rejected)",
            self.source,
            metric.measurement,
            name,
            value,
            f" [{tags}]" if tags else "",
            reason,
        )
