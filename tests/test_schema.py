"""Coercion table: each kind of input against each field type."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kansoku.schema import INT64_MAX, INT64_MIN, CoercionError, FieldSpec, coerce, infer_type

REJECT = CoercionError

# (input, int field, float field, bool field, str field); REJECT means a CoercionError.
TABLE = [
    (b"23.5", REJECT, 23.5, REJECT, "23.5"),
    ("23.5", REJECT, 23.5, REJECT, "23.5"),
    ("85", 85, 85.0, REJECT, "85"),
    (b"85", 85, 85.0, REJECT, "85"),
    (" 85\n", 85, 85.0, REJECT, " 85\n"),
    ("-524", -524, -524.0, REJECT, "-524"),
    ("1e3", 1000, 1000.0, REJECT, "1e3"),
    ("1.5e3", 1500, 1500.0, REJECT, "1.5e3"),
    ("nan", REJECT, REJECT, REJECT, "nan"),
    ("inf", REJECT, REJECT, REJECT, "inf"),
    ("-Infinity", REJECT, REJECT, REJECT, "-Infinity"),
    ("", REJECT, REJECT, REJECT, ""),
    ("abc", REJECT, REJECT, REJECT, "abc"),
    ("true", REJECT, REJECT, True, "true"),
    ("OFF", REJECT, REJECT, False, "OFF"),
    ("1", 1, 1.0, True, "1"),
    ("0", 0, 0.0, False, "0"),
    (None, REJECT, REJECT, REJECT, REJECT),
    (True, 1, 1.0, True, "true"),
    (False, 0, 0.0, False, "false"),
    (7, 7, 7.0, REJECT, "7"),
    (1, 1, 1.0, True, "1"),
    (85.0, 85, 85.0, REJECT, "85.0"),
    (85.5, REJECT, 85.5, REJECT, "85.5"),
    (float("nan"), REJECT, REJECT, REJECT, REJECT),
    (float("inf"), REJECT, REJECT, REJECT, REJECT),
    (2**63, REJECT, float(2**63), REJECT, str(2**63)),
    (INT64_MAX, INT64_MAX, float(INT64_MAX), REJECT, str(INT64_MAX)),
    (INT64_MIN, INT64_MIN, float(INT64_MIN), REJECT, str(INT64_MIN)),
    (str(2**63), REJECT, float(2**63), REJECT, str(2**63)),
    ("1e400", REJECT, REJECT, REJECT, "1e400"),
    (10**400, REJECT, REJECT, REJECT, str(10**400)),
    (Decimal("2.50"), REJECT, 2.5, REJECT, "2.50"),
    (Decimal("3"), 3, 3.0, REJECT, "3"),
    (b"\xff\xfe", REJECT, REJECT, REJECT, REJECT),
    ([1], REJECT, REJECT, REJECT, REJECT),
]


@pytest.mark.parametrize(
    ("value", "to", "expected"),
    [
        pytest.param(row[0], to, row[i + 1], id=f"{row[0]!r}->{to.__name__}")
        for row in TABLE
        for i, to in enumerate((int, float, bool, str))
    ],
)
def test_coercion_table(value: object, to: type, expected: object) -> None:
    if expected is REJECT:
        with pytest.raises(CoercionError):
            coerce(value, to)
        return
    result = coerce(value, to)
    assert type(result) is to
    assert result == expected


def test_rejection_messages_say_why() -> None:
    with pytest.raises(CoercionError, match="NaN"):
        coerce("nan", float)
    with pytest.raises(CoercionError, match="int64"):
        coerce(2**63, int)
    with pytest.raises(CoercionError, match="not a whole number"):
        coerce(85.5, int)
    with pytest.raises(CoercionError, match="'abc' is not a number"):
        coerce("abc", float)


@given(st.one_of(st.text(), st.binary(), st.floats(), st.integers(), st.booleans(), st.none()))
def test_coercion_either_types_or_rejects(value: object) -> None:
    for to in (int, float, bool, str):
        try:
            result = coerce(value, to)
        except CoercionError:
            continue
        assert type(result) is to
        if to is float:
            assert math.isfinite(result)
        if to is int:
            assert INT64_MIN <= result <= INT64_MAX


def test_infer_type() -> None:
    assert infer_type(3) is int
    assert infer_type(3.0) is float
    assert infer_type(True) is bool
    assert infer_type("2.5") is float
    assert infer_type(b"12") is float
    assert infer_type("1.6.18") is str


def test_field_spec_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        FieldSpec(list)
    assert FieldSpec(int, "W", "counter").type_name == "int"
