"""Field schemas and coercion: every value leaves a source with the one type its field declares.

Coercion rules (value -> declared type):

======== ===================================================================
int      ints within int64; integral floats (``85.0``); numeric text
         (``"85"``, ``b"85"``, ``"1e3"``) when the number is integral;
         ``True``/``False`` as 1/0.
float    ints and finite floats; numeric text (``"23.5"``, ``b"23.5"``);
         ``True``/``False`` as 1.0/0.0.
bool     bools; 0/1; the words true/false, yes/no, on/off, 1/0 (any case).
str      text; bytes decoded as UTF-8; numbers and bools as their text.
======== ===================================================================

Everything else is rejected with a :class:`CoercionError`: NaN, infinities, numbers outside
int64, empty or unparsable text, ``None``. A rejected value is never passed on as a string.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from kansoku.metric import FieldValue

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})


class CoercionError(ValueError):
    """A value cannot be given the type its field declares."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What a field is: its Python type, unit and whether it is a gauge or a counter."""

    type: type
    unit: str = ""
    kind: Literal["gauge", "counter"] = "gauge"
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES.values():
            raise TypeError(f"field type must be one of int, float, bool, str, not {self.type!r}")

    @property
    def type_name(self) -> str:
        """``"int"``, ``"float"``, ``"bool"`` or ``"str"``."""
        return self.type.__name__


@dataclass(frozen=True, slots=True)
class MeasurementSchema:
    """The declared fields of one measurement.

    ``extra_fields`` says what happens to a field the schema does not name: ``"reject"``
    drops and counts it; ``"infer"`` gives it a type from its first value and pins that type
    in the state directory so it never changes (memcached stats that a newer server adds);
    ``"float"`` makes it a float field (numbers from redis).
    """

    fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    extra_fields: Literal["reject", "infer", "float"] = "reject"


Schema = Mapping[str, MeasurementSchema]


def coerce(value: Any, to: type) -> FieldValue:
    """Return ``value`` as ``to`` (int, float, bool or str) or raise :class:`CoercionError`."""
    if isinstance(value, Decimal):
        value = str(value)
    if to is float:
        return _to_float(value)
    if to is int:
        return _to_int(value)
    if to is bool:
        return _to_bool(value)
    if to is str:
        return _to_str(value)
    raise TypeError(f"unsupported field type {to!r}")


def infer_type(value: Any) -> type:
    """The field type a first value suggests: numbers keep their kind, numeric text is a float."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, numbers.Integral):
        return int
    if isinstance(value, numbers.Real):
        return float
    try:
        _to_float(value)
    except CoercionError:
        return str
    return float


def _text(value: bytes | str) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise CoercionError("bytes are not UTF-8 text") from None
    return value


def _number_from_text(value: bytes | str) -> float | int:
    text = _text(value).strip()
    if not text:
        raise CoercionError("empty text is not a number")
    try:
        return int(text, 10)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise CoercionError(f"{text!r} is not a number") from None
    _check_finite(number)
    return number


def _check_finite(number: float) -> None:
    if math.isnan(number):
        raise CoercionError("NaN is not a value")
    if math.isinf(number):
        raise CoercionError("infinity is not a value")


def _to_float(value: Any) -> float:
    if isinstance(value, bytes | bytearray | str):
        value = _number_from_text(value)
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:
            raise CoercionError("number too large for a float") from None
        _check_finite(number)
        return number
    raise CoercionError(f"{type(value).__name__} is not a number")


def _to_int(value: Any) -> int:
    if isinstance(value, bytes | bytearray | str):
        value = _number_from_text(value)
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real):
        real = float(value)
        _check_finite(real)
        if not real.is_integer():
            raise CoercionError(f"{real!r} is not a whole number")
        number = int(real)
    else:
        raise CoercionError(f"{type(value).__name__} is not a number")
    if not INT64_MIN <= number <= INT64_MAX:
        raise CoercionError(f"{number} is outside the int64 range")
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, bytes | bytearray | str):
        word = _text(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise CoercionError(f"{word!r} is not a boolean word")
    if isinstance(value, numbers.Real) and value in (0, 1):
        return bool(value)
    raise CoercionError(f"{value!r} is not a boolean")


def _to_str(value: Any) -> str:
    if isinstance(value, bytes | bytearray | str):
        return _text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Real):
        if isinstance(value, float):
            _check_finite(value)
        return str(value)
    raise CoercionError(f"{type(value).__name__} is not text")
