"""How one ``[source.redis-relay.NAME]`` section turns redis data into points.

Three pieces, all free of redis itself so the plugin loads fast:

* :func:`field_types` parses ``temperature:float, battery:int, door:bool, label:str``;
* :class:`KeyPattern` parses ``key``: a plain key, or a pattern whose ``{name}`` placeholders
  become tags (``sensor:{room}`` → ``SCAN MATCH sensor:?*``, tag ``room``) and whose ``*``/``?``
  match like redis globs;
* :class:`Mapping` makes one point from a hash, a string value or a stream entry, and gives the
  schema the core coerces against (undeclared fields are floats unless ``other_fields = ignore``).

A stream entry's point takes its time from the entry id (``<ms>-<seq>`` → ms·10⁶ + seq ns), so
an entry read twice becomes the very same point.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as MappingType
from dataclasses import dataclass
from typing import Any

from kansoku import FieldSpec, MeasurementSchema, Metric
from kansoku.options import text_list
from kansoku.schema import Schema

FIELD_TYPES: dict[str, type] = {"float": float, "int": int, "bool": bool, "str": str}
RESERVED = frozenset({"time"})  # InfluxDB drops a field or tag called "time"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PIECES = re.compile(r"\{([^{}]*)\}|([{}])|([*?])|([^{}*?]+)")
_GLOB_SPECIAL = re.compile(r"([\[\]\\])")


def field_types(text: str) -> dict[str, type]:
    """``temperature:float, battery:int, door:bool, label:str`` → ``{name: type}``."""
    declared: dict[str, type] = {}
    for item in text_list(text):
        name, sep, kind = (part.strip() for part in item.partition(":"))
        if not name:
            raise ValueError(f"{item!r} has no field name (example: temperature:float)")
        if not sep or kind.lower() not in FIELD_TYPES:
            raise ValueError(
                f"{item!r}: write NAME:TYPE with TYPE one of float, int, bool, str "
                f"(example: {name}:float)"
            )
        _check_name(name, "field")
        if name in declared:
            raise ValueError(f"field {name!r} is declared twice")
        declared[name] = FIELD_TYPES[kind.lower()]
    return declared


def name_list(text: str) -> list[str]:
    """Field names that become tags: ``sensor, room``."""
    names = text_list(text)
    for name in names:
        _check_name(name, "tag")
    return names


def measurement_name(text: str) -> str:
    """A measurement name: not empty."""
    name = text.strip()
    if not name:
        raise ValueError("the measurement needs a name")
    return name


def _check_name(name: str, what: str) -> None:
    if name in RESERVED:
        raise ValueError(f"{name!r} cannot be a {what} name (InfluxDB reserves it)")


@dataclass(frozen=True)
class KeyPattern:
    """The ``key`` option: one key, or a SCAN pattern with the tags it yields."""

    text: str
    glob: str | None
    regex: re.Pattern[str] | None
    tag_names: tuple[str, ...]

    @property
    def is_pattern(self) -> bool:
        """Whether the key is a pattern (read with SCAN MATCH)."""
        return self.glob is not None

    @classmethod
    def parse(cls, text: str) -> KeyPattern:
        """``sensor:kitchen``, ``sensor:{room}``, ``sensor:{room}:{kind}`` or ``sensor:*``."""
        text = text.strip()
        if not text:
            raise ValueError("the key is empty")
        glob, regex, names, is_pattern = [], [], [], False
        for placeholder, brace, wildcard, literal in _PIECES.findall(text):
            if brace:
                raise ValueError(f"{text!r}: unmatched {brace!r} (placeholders look like {{room}})")
            if literal:
                glob.append(_GLOB_SPECIAL.sub(r"\\\1", literal))
                regex.append(re.escape(literal))
            elif wildcard:
                is_pattern = True
                glob.append(wildcard)
                regex.append(".*?" if wildcard == "*" else ".")
            else:
                name = placeholder.strip()
                if not _NAME.fullmatch(name):
                    raise ValueError(
                        f"{text!r}: {{{placeholder}}} is not a tag name "
                        "(letters, digits and _, e.g. {room})"
                    )
                _check_name(name, "tag")
                if name in names:
                    raise ValueError(f"{text!r}: the placeholder {{{name}}} appears twice")
                is_pattern = True
                names.append(name)
                glob.append("?*")
                regex.append(f"(?P<{name}>.+?)")
        if not is_pattern:
            return cls(text, None, None, ())
        return cls(text, "".join(glob), re.compile("".join(regex), re.DOTALL), tuple(names))

    def tags_of(self, key: str) -> dict[str, str] | None:
        """The tags a matching key yields (``key=<name>`` when there are no placeholders)."""
        if self.regex is None:
            return {}
        match = self.regex.fullmatch(key)
        if match is None:
            return None
        if not self.tag_names:
            return {"key": key}
        return match.groupdict()


def key_pattern(text: str) -> KeyPattern:
    """Option parser for ``key``."""
    return KeyPattern.parse(text)


@dataclass(frozen=True)
class Mapping:
    """Measurement, declared field types, fields that are tags, and what to do with the rest."""

    measurement: str
    fields: MappingType[str, type]
    tag_fields: Sequence[str] = ()
    other_fields: str = "float"

    @property
    def schema(self) -> Schema:
        """What the core coerces against: declared types; other fields float or refused."""
        extra = "float" if self.other_fields == "float" else "reject"
        specs = {name: FieldSpec(kind) for name, kind in self.fields.items()}
        return {self.measurement: MeasurementSchema(specs, extra_fields=extra)}

    def point(
        self,
        values: MappingType[bytes, Any] | Iterable[tuple[str, Any]],
        tags: MappingType[str, str],
        time_ns: int,
    ) -> Metric:
        """One point from redis values (raw bytes; the core coerces them)."""
        items = values.items() if isinstance(values, MappingType) else values
        fields: dict[str, Any] = {}
        point_tags = dict(tags)
        for raw_name, value in items:
            name = text(raw_name)
            if name in self.tag_fields:
                point_tags[name] = text(value)
            elif name in self.fields or self.other_fields == "float":
                fields[name] = value
        return Metric(self.measurement, fields, point_tags, time_ns)


def text(value: bytes | str) -> str:
    """Redis bytes as text (invalid UTF-8 is kept visible as escapes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def entry_time_ns(entry_id: bytes | str) -> int:
    """A stream entry's time: ``1700000000123-4`` → 1700000000123_000_004 ns.

    The sequence number becomes the nanoseconds so that entries added in the same millisecond
    stay distinct points; sequence numbers above 999999 (not produced by ``XADD *`` in practice)
    share the last nanosecond of their millisecond.
    """
    millis, _, seq = text(entry_id).partition("-")
    return int(millis) * 1_000_000 + min(int(seq or 0), 999_999)
