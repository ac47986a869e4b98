"""How cached values are spelled for Cacti, RRD files and Zabbix.

RRD data-source names (``agent cacti`` output names) are 1–19 characters of ``[A-Za-z0-9_]``.
The mapping from a field name is stable and depends on nothing but the name:

1. A field name that is already a valid DS name is used as it is (``power_w``).
2. Otherwise every other character becomes ``_``; if the result has at most 19 characters it
   is the name (``current-r`` → ``current_r``).
3. Longer names keep their first 12 characters, then ``_`` and the first 6 hex digits of the
   SHA-1 of the full field name (UTF-8): ``connection_structures`` → ``connection_s_0a215b``.
4. If two fields of one source still end with the same name, the fields are sorted (names valid
   as they are first, then by name); the first keeps the name, each further one gets the first
   12 characters, ``_`` and 6 hex digits of the SHA-1 of ``NAME\\x00N`` for N = 1, 2, … until the
   name is free.

Values: ints print as integers (``87002``, never ``87002.0``: COUNTER and DERIVE data sources
take digits only), bools as ``1``/``0``, floats in plain decimal (``23.5``, ``0.00001``, never
an exponent), an unknown or stale value as ``U``.

Zabbix low-level discovery macros are upper case and use ``A-Z 0-9 _ .`` only:
tag ``address`` → ``{#ADDRESS}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kansoku.lastvalues import FieldInfo
from kansoku.metric import FieldValue

DS_NAME = re.compile(r"[A-Za-z0-9_]{1,19}")
_NOT_DS = re.compile(r"[^A-Za-z0-9_]")
_NOT_MACRO = re.compile(r"[^A-Z0-9_.]")
DS_MAX = 19
_KEEP = 12
UNKNOWN = "U"


def _hashed(base: str, text: str) -> str:
    import hashlib  # only long or clashing names need it; it costs OpenSSL's start-up

    return f"{base[:_KEEP]}_{hashlib.sha1(text.encode('utf-8')).hexdigest()[:6]}"


def ds_name(field: str) -> str:
    """The DS name of one field (rules 1–3; rule 4 needs all names, see :func:`ds_names`)."""
    if DS_NAME.fullmatch(field):
        return field
    base = _NOT_DS.sub("_", field)
    if 0 < len(base) <= DS_MAX:
        return base
    return _hashed(base, field)


def ds_names(fields: Iterable[str]) -> dict[str, str]:
    """Field name → DS name for all fields of a source, collisions resolved (rule 4)."""
    ordered = sorted(set(fields), key=lambda f: (DS_NAME.fullmatch(f) is None, f))
    taken: set[str] = set()
    out: dict[str, str] = {}
    for field in ordered:
        name = ds_name(field)
        salt = 0
        while name in taken:
            salt += 1
            name = _hashed(_NOT_DS.sub("_", field), f"{field}\x00{salt}")
        taken.add(name)
        out[field] = name
    return out


def number(value: FieldValue) -> str:
    """A numeric value as Cacti and rrdtool want it; text values are not numbers (ValueError)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" not in text:
            return text
        from decimal import Decimal  # only for the rare exponent case

        return format(Decimal(text), "f")
    raise ValueError(f"{value!r} is text, not a number")


def text(value: FieldValue) -> str:
    """Any value for ``agent get``: numbers as :func:`number`, text as it is."""
    return value if isinstance(value, str) else number(value)


def rrd_type(info: FieldInfo) -> str:
    """The RRD data-source type a field fits: COUNTER, DCOUNTER or GAUGE (``-`` for text)."""
    if info.type == "str":
        return "-"
    if info.kind == "counter":
        return "COUNTER" if info.type in ("int", "bool") else "DCOUNTER"
    return "GAUGE"


def lld_macro(name: str) -> str:
    """``address`` → ``{#ADDRESS}``; characters Zabbix does not allow become ``_``."""
    return "{#" + _NOT_MACRO.sub("_", name.upper()) + "}"
