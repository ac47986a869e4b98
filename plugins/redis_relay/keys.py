"""Reading string keys (GET) and hashes (HGETALL): one key, or every key a pattern matches.

A pattern is walked with ``SCAN MATCH`` and the keys are read through a pipeline, 1,000 per
round trip. A key that is missing is reported once (and again when it is back), not at every
interval. WRONGTYPE at the one configured key fails the collection with a sentence; a key of
another type that merely matches a pattern is skipped and reported once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from kansoku import Metric

from .connection import is_wrong_type, wrong_type
from .mapping import KeyPattern, Mapping, text

PIPELINE_CHUNK = 1000
SCAN_COUNT = 1000


class Presence:
    """Says once that something is missing, and once that it is back."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._missing: set[str] = set()

    def missing(self, what: str, hint: str) -> None:
        """Report ``what`` as missing unless it is already reported."""
        if what not in self._missing:
            self._missing.add(what)
            self.log.warning("%s %s; reported once, until it is back", what, hint)

    def present(self, what: str) -> None:
        """Note that ``what`` is there (again)."""
        if what in self._missing:
            self._missing.discard(what)
            self.log.info("%s is back", what)


class KeyReader:
    """``type = string`` or ``type = hash``: a key or a pattern of keys, read at each collection."""

    def __init__(
        self,
        client: redis.Redis,
        pattern: KeyPattern,
        mapping: Mapping,
        kind: str,
        presence: Presence,
    ) -> None:
        self.client = client
        self.pattern = pattern
        self.mapping = mapping
        self.kind = kind
        self.presence = presence
        self._field = next(iter(mapping.fields), "value")
        self._wrong_type_reported: set[str] = set()

    def read(self) -> list[Metric]:
        """The points of this collection."""
        now = time.time_ns()
        if self.pattern.is_pattern:
            return self._read_pattern(now)
        key = self.pattern.text
        try:
            value = self.client.get(key) if self.kind == "string" else self.client.hgetall(key)
        except redis.ResponseError as exc:
            if is_wrong_type(exc):
                raise wrong_type(self.client, key, self.kind) from None
            raise
        if value is None or value == {}:
            self.presence.missing(f"redis key {key!r}", "does not exist")
            return []
        self.presence.present(f"redis key {key!r}")
        return [self._point(value, {}, now)]

    def acknowledge(self) -> None:
        """Nothing to confirm: keys are read again at every collection."""

    def _point(self, value: Any, tags: dict[str, str], now: int) -> Metric:
        if self.kind == "string":
            return self.mapping.point([(self._field, value)], tags, now)
        return self.mapping.point(value, tags, now)

    def _read_pattern(self, now: int) -> list[Metric]:
        what = f"redis key pattern {self.pattern.text!r}"
        keys = list(dict.fromkeys(self.client.scan_iter(match=self.pattern.glob, count=SCAN_COUNT)))
        if not keys:
            self.presence.missing(what, "matches no key")
            return []
        self.presence.present(what)
        points = []
        for start in range(0, len(keys), PIPELINE_CHUNK):
            chunk = keys[start : start + PIPELINE_CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for key in chunk:
                if self.kind == "string":
                    pipe.get(key)
                else:
                    pipe.hgetall(key)
            for key, value in zip(chunk, pipe.execute(raise_on_error=False), strict=True):
                point = self._pattern_point(text(key), value, now)
                if point is not None:
                    points.append(point)
        return points

    def _pattern_point(self, key: str, value: Any, now: int) -> Metric | None:
        if isinstance(value, Exception):
            if not is_wrong_type(value):
                raise value
            if key not in self._wrong_type_reported:
                self._wrong_type_reported.add(key)
                self.presence.log.warning(
                    "redis key %r matches %r but is not a %s; skipped (reported once)",
                    key,
                    self.pattern.text,
                    self.kind,
                )
            return None
        tags = self.pattern.tags_of(key)
        # gone since SCAN saw it (or not valid UTF-8 where the pattern has literal text)
        if value is None or value == {} or tags is None:
            return None
        return self._point(value, tags, now)
