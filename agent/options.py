"""Typed option values for INI sections: durations, sizes, lists, tag lists and secrets.

Each parser takes the raw text of one key and returns the typed value or raises ``ValueError``
with a sentence the config loader puts after the file, section and key.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}


class Secret:
    """A password or key: prints as ``***`` everywhere; :meth:`reveal` gives the text."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret text, for the one place that must send it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def duration(text: str) -> float:
    """``"30s"``, ``"5m"``, ``"1.5h"``, ``"250ms"`` or plain seconds -> seconds."""
    parts = re.fullmatch(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)?)+\s*", text.strip().lower())
    if not parts or not text.strip():
        raise ValueError(f"{text!r} is not a duration (examples: 30s, 5m, 1h, 250ms)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION.findall(text.lower()))


def positive_duration(text: str) -> float:
    """A :func:`duration` longer than zero (intervals)."""
    seconds = duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return seconds


def size(text: str) -> int:
    """``"100MB"``, ``"64MiB"``, ``"1g"`` or plain bytes -> bytes."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 500MB, 64MiB, 1G)")
    unit = (match.group(2) or "").lower().rstrip("b")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def boolean(text: str) -> bool:
    """true/false, yes/no, on/off, 1/0."""
    word = text.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{text!r} is not true or false")


def integer(text: str) -> int:
    """A whole number."""
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def number(text: str) -> float:
    """A decimal number."""
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def text_list(text: str) -> list[str]:
    """Comma- or newline-separated words, blanks dropped."""
    return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]


def tag_map(text: str) -> dict[str, str]:
    """``host=pi, room=kitchen`` -> ``{"host": "pi", "room": "kitchen"}``."""
    tags: dict[str, str] = {}
    for item in text_list(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{item!r} is not key=value")
        tags[key.strip()] = value.strip()
    return tags


def host_port(text: str) -> tuple[str, int]:
    """``127.0.0.1:8095`` or ``[::1]:8095`` -> (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def choice(*allowed: str) -> Callable[[str], str]:
    """A parser that accepts one of ``allowed`` words."""

    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
        return word

    parse.__doc__ = f"One of {', '.join(allowed)}."
    return parse


def secret(text: str) -> Secret:
    """A password or key; never logged."""
    return Secret(text.strip())
