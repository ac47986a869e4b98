"""InfluxDB line protocol encoding with the escaping rules of InfluxDB 1.x.

Measurement: escape comma and space. Tag keys, tag values and field keys: escape comma,
equals sign and space. String field values: double-quoted, with backslash and double quote
escaped (a newline inside the quotes is stored as it is). ints carry the ``i`` suffix, bools
are ``true``/``false``, floats use ``repr`` (always with a decimal point or exponent, so 25.0
never turns into the integer 25).
"""

from __future__ import annotations

from collections.abc import Iterable

from kansoku.metric import Metric

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})


def _field_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    raise TypeError(f"cannot encode {type(value).__name__} as a field value")


def encode(metric: Metric, precision_divisor: int = 1) -> str:
    """One line (without newline); ``precision_divisor`` 10**9 gives seconds, 1 nanoseconds."""
    parts = [metric.measurement.translate(_MEASUREMENT)]
    for key in sorted(metric.tags):
        value = metric.tags[key]
        if value != "":
            parts.append(f"{key.translate(_KEY)}={str(value).translate(_KEY)}")
    fields = ",".join(
        f"{name.translate(_KEY)}={_field_value(value)}" for name, value in metric.fields.items()
    )
    return f"{','.join(parts)} {fields} {metric.time_ns // precision_divisor}"


def encode_many(metrics: Iterable[Metric], precision_divisor: int = 1) -> str:
    """Lines joined by newlines, with a trailing newline."""
    return "".join(encode(m, precision_divisor) + "\n" for m in metrics)
