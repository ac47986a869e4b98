"""Answers from a last-values cache: the Cacti line, one Zabbix value, Zabbix LLD entries.

Selection rules shared by all three: a series is one measurement with one tag set; ``--tag``
and ``--measurement`` narrow the series of a source; a field held by several selected series
is ambiguous and answered with a sentence listing what tells them apart. Standard library and
light kansoku modules only (used by the fast commands).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kansoku import cacheformat
from kansoku.lastvalues import CacheError, Point, SourceCache
from kansoku.metric import FieldValue

BUILTIN_MACROS = frozenset({"SOURCE", "MEASUREMENT", "FIELD", "TYPE", "KIND", "UNIT"})


def _filter_text(measurement: str | None, tags: Mapping[str, str | None]) -> str:
    words = [f"measurement {measurement}"] if measurement else []
    words += [k if v is None else f"{k}={v}" for k, v in tags.items()]
    return " and ".join(words)


def _series_text(points: Sequence[Point]) -> str:
    """What tells the points apart, e.g. ``server=a | server=b``."""
    keys = sorted({k for p in points for k in p.tags})
    varying = [k for k in keys if len({p.tags.get(k) for p in points}) > 1]
    measurements = len({p.measurement for p in points}) > 1
    shown = []
    for p in points:
        words = [f"measurement {p.measurement}"] if measurements else []
        words += [f"{k}={p.tags.get(k, '')}" for k in varying]
        shown.append(" ".join(words))
    return " | ".join(shown)


def _ambiguous(source: str, field: str, points: Sequence[Point]) -> CacheError:
    return CacheError(
        f"{len(points)} series of source {source} have the field {field}; choose one with "
        f"--tag or --measurement: {_series_text(points)}"
    )


def _fresh(value_time: tuple[FieldValue, int], limit: float | None, now_ns: int) -> bool:
    return limit is None or (now_ns - value_time[1]) / 1e9 <= limit


def _selected(
    cache: SourceCache, measurement: str | None, tags: Mapping[str, str | None]
) -> list[Point]:
    points = cache.select(measurement, tags)
    if not points and (measurement or tags):
        everything = cache.select(None, {})
        raise CacheError(
            f"no series of source {cache.source} has {_filter_text(measurement, tags)} "
            f"(series: {_series_text(everything) or 'none yet'})"
        )
    return points


def _printable_fields(
    cache: SourceCache,
    holders: Mapping[str, list[Point]],
    measurements: set[str],
    wanted: Sequence[str],
    names: Mapping[str, str],
) -> list[str]:
    """The fields ``agent cacti`` prints: ``wanted`` (field or output names), else every
    numeric field the selected measurements declare or hold."""

    def measurement_of(field: str) -> str:
        if field in holders:
            return holders[field][0].measurement
        return next((m for m in sorted(measurements) if field in cache.schema.get(m, {})), "")

    def numeric(field: str) -> bool:
        return cache.field_info(measurement_of(field), field).type != "str"

    if not wanted:
        declared = {f for m in measurements for f in cache.schema.get(m, {})}
        return [f for f in cache.field_names() if (f in holders or f in declared) and numeric(f)]
    by_output = {ds: f for f, ds in names.items()}
    fields = []
    for word in wanted:
        field = word if word in names else by_output.get(word)
        if field is None:
            known = ", ".join(names)
            raise CacheError(f"source {cache.source} has no field {word!r} (fields: {known})")
        if not numeric(field):
            raise CacheError(f"{word} is a text field; Cacti graphs numbers")
        fields.append(field)
    return fields


def cacti_line(
    cache: SourceCache,
    measurement: str | None,
    tags: Mapping[str, str | None],
    wanted: Sequence[str],
    limit: float | None,
    now_ns: int,
) -> str:
    """The ``name:value name:value`` line for Cacti."""
    points = _selected(cache, measurement, tags)
    names = cacheformat.ds_names(cache.field_names())
    holders: dict[str, list[Point]] = {}
    for point in points:
        for field in point.values:
            holders.setdefault(field, []).append(point)
    measurements = {measurement} if measurement else {p.measurement for p in points}
    fields = _printable_fields(cache, holders, measurements or set(cache.schema), wanted, names)
    if not fields:
        raise CacheError(f"source {cache.source} has no numeric fields to print")
    words = []
    for field in fields:
        held = holders.get(field, [])
        if len(held) > 1:
            raise _ambiguous(cache.source, field, held)
        shown = cacheformat.UNKNOWN
        if held and _fresh(held[0].values[field], limit, now_ns):
            shown = cacheformat.number(held[0].values[field][0])
        words.append(f"{names[field]}:{shown}")
    return " ".join(words)


def cacti_table(cache: SourceCache, measurement: str | None) -> str:
    """``--list``: output name, field, measurement, type, kind, unit and RRD type per field."""
    names = cacheformat.ds_names(cache.field_names())
    rows = [("NAME", "FIELD", "MEASUREMENT", "TYPE", "KIND", "UNIT", "RRD")]
    seen = set()
    pairs = [(m, f) for m, fields in cache.schema.items() for f in fields]
    pairs += [(p.measurement, f) for p in cache.points.values() for f in p.values]
    for m, f in pairs:
        if (m, f) in seen or (measurement and m != measurement):
            continue
        seen.add((m, f))
        info = cache.field_info(m, f)
        rrd = cacheformat.rrd_type(info)
        rows.append((names[f], f, m, info.type, info.kind, info.unit or "-", rrd))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]) for r in rows
    ]
    return "\n".join(lines) + "\n"


def get_value(
    cache: SourceCache,
    field: str,
    measurement: str | None,
    tags: Mapping[str, str | None],
    limit: float | None,
    now_ns: int,
) -> FieldValue:
    """The one value ``agent get`` prints, or a CacheError saying why there is none."""
    points = [p for p in _selected(cache, measurement, tags) if field in p.values]
    if not points:
        if field not in cache.field_names():
            known = ", ".join(cache.field_names()) or "none yet"
            raise CacheError(f"source {cache.source} has no field {field!r} (fields: {known})")
        raise CacheError(f"source {cache.source} has delivered no value of {field} yet")
    if len(points) > 1:
        raise _ambiguous(cache.source, field, points)
    value = points[0].values[field]
    if not _fresh(value, limit, now_ns):
        age = (now_ns - value[1]) / 1e9
        raise CacheError(
            f"{cache.source}.{field} is stale: the last value is {age:.0f}s old, max age "
            f"{limit:g}s; is the agent running and the source collecting?"
        )
    return value[0]


def _tag_macros(tags: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for key, value in sorted(tags.items()):
        out[cacheformat.lld_macro(f"tag.{key}")] = value
        macro = cacheformat.lld_macro(key)
        if macro[2:-1] not in BUILTIN_MACROS:
            out[macro] = value
    return out


def discovery(
    caches: Sequence[SourceCache],
    measurement: str | None,
    tags: Mapping[str, str | None],
    per_field: bool,
) -> list[dict[str, str]]:
    """LLD entries: one per source instance and tag set (``per_field``: and field)."""
    entries: list[dict[str, str]] = []
    seen: set[tuple[Any, ...]] = set()
    for cache in caches:
        for point in cache.select(measurement, tags):
            base = {"{#SOURCE}": cache.source, **_tag_macros(point.tags)}
            if not per_field:
                key: tuple[Any, ...] = (cache.source, point.key[1])
                if key not in seen:
                    seen.add(key)
                    entries.append(base)
                continue
            for field in point.values:
                info = cache.field_info(point.measurement, field)
                entries.append(
                    {
                        **base,
                        "{#MEASUREMENT}": point.measurement,
                        "{#FIELD}": field,
                        "{#TYPE}": info.type,
                        "{#KIND}": info.kind,
                        "{#UNIT}": info.unit,
                    }
                )
    return entries
