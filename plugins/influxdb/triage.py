"""Which points of a batch did InfluxDB refuse? Reading 1.x ``/write`` error messages.

InfluxDB 1.x answers a batch with some bad points with HTTP 400 and one message, e.g.
``partial write: field type conflict: input field "temp" on measurement "room" is type
integer, already exists as type float dropped=2`` (the good points are stored). The message
names one kind of problem and how many points were dropped; :func:`identify` finds the
points that fit the description and trusts them only when their count matches ``dropped``
(or, for parse errors, when every quoted line is found). Anything else is left to the caller,
who splits the batch and sends the halves again (writes are idempotent).

:func:`unwritable` catches the few points line protocol cannot carry at all, or that
InfluxDB would drop without saying so, before they are sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from kansoku.metric import Metric

_DROPPED = re.compile(r"\s*dropped=(\d+)\s*$")
_TYPE_CONFLICT = re.compile(
    r'input field "(?P<field>.*)" on measurement "(?P<measurement>.*)" is type (?P<type>\w+), '
    r"already exists as type \w+"
)
_INVALID_FIELD = re.compile(
    r'invalid field name: input field "(?P<field>.*)" on measurement "(?P<measurement>.*)" '
    r"is invalid"
)
_PARSE = "unable to parse '"
#: keys InfluxDB 1.x discards silently (the point is lost with a 204)
_RESERVED_KEYS = frozenset({"_field", "_measurement"})


def error_text(body: bytes | str) -> str:
    """The ``error`` of a JSON error body, or the body itself as text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return text.strip()


def influx_type(value: object) -> str:
    """The InfluxDB name of a field value's type, as the server's messages spell it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "string"


def unwritable(metric: Metric) -> str | None:
    """Why a point cannot be written as line protocol, or None if it can."""
    if not metric.measurement:
        return "the measurement name is empty"
    names = [("measurement", metric.measurement)]
    names += [("tag key", k) for k in metric.tags]
    names += [("tag value", v) for v in metric.tags.values() if v != ""]
    names += [("field key", k) for k in metric.fields]
    for kind, name in names:
        if name == "":
            return f"a {kind} of measurement {metric.measurement!r} is empty"
        if str(name).endswith("\\"):
            return f"{kind} {name!r} ends with a backslash, which line protocol cannot carry"
    for key in (*metric.tags, *metric.fields):
        if key in _RESERVED_KEYS:
            return f"{key!r} is reserved: InfluxDB would drop the point without an error"
    return None


def identify(message: str, metrics: Sequence[Metric], lines: Sequence[str]) -> list[int] | None:
    """Positions of the points the server refused, when the message tells for sure; else None.

    ``lines`` are the points as sent (line protocol without newline), in the same order.
    """
    match = _DROPPED.search(message)
    dropped = int(match.group(1)) if match else None
    body = message[: match.start()] if match else message
    partial = body.startswith("partial write: ")
    if partial:
        body = body[len("partial write: ") :]
    if body.startswith(_PARSE):
        return _parse_errors(body, lines, partial)
    for pattern, wants_type in ((_TYPE_CONFLICT, True), (_INVALID_FIELD, False)):
        found = pattern.search(body)
        if found is None:
            continue
        field, measurement = found.group("field"), found.group("measurement")
        culprits = [
            i
            for i, m in enumerate(metrics)
            if m.measurement == measurement
            and field in m.fields
            and (not wants_type or influx_type(m.fields[field]) == found.group("type"))
        ]
        if partial and culprits and len(culprits) == dropped:
            return culprits
        return None
    # A message that names no point ("points beyond retention policy", "max-series-per-
    # database limit exceeded"): clear only when every point was dropped.
    if partial and dropped == len(metrics):
        return list(range(len(metrics)))
    return None


def _parse_errors(body: str, lines: Sequence[str], partial: bool) -> list[int] | None:
    """Lines quoted by ``unable to parse '<line>': <why>`` (one per message line)."""
    quoted = set()
    for part in body.split("\n"):
        if not part.startswith(_PARSE):
            return None
        end = part.rfind("': ")
        if end < len(_PARSE):
            return None
        quoted.add(part[len(_PARSE) : end])
    culprits = [i for i, line in enumerate(lines) if line in quoted]
    if {lines[i] for i in culprits} != quoted:
        return None
    if not partial and len(culprits) != len(lines):
        return None  # nothing was written, yet some lines are not named: unclear
    return culprits
