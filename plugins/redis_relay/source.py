"""The redis-relay source: one section, one mapping (a key, a key pattern or a stream).

Values leave as the bytes redis holds; the core coerces them against the mapping's declared
types, so a text in a numeric field is refused and counted, never written as a string.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingType
from typing import Any

from kansoku import Metric, PluginContext
from kansoku.errors import ConfigError

from .connection import connect, describe, redis_errors
from .keys import KeyReader, Presence
from .mapping import Mapping
from .stream import StreamReader


class RedisRelaySource:
    """Relays what other programs leave in redis, with the types the section declares."""

    def __init__(self, options: MappingType[str, Any], context: PluginContext) -> None:
        section = f"source.{context.name}"
        self.mapping = _mapping(options, section)
        self.schema = self.mapping.schema
        self.timeout: float = options["server_timeout"]
        self.client = connect(options, section)
        self.where = describe(self.client)
        presence = Presence(context.log)
        pattern = options["key"]
        self.reader: KeyReader | StreamReader
        if options["type"] == "stream":
            self.reader = StreamReader(
                self.client, pattern.text, self.mapping, dict(options), presence, context.log
            )
        else:
            self.reader = KeyReader(self.client, pattern, self.mapping, options["type"], presence)

    def collect(self) -> list[Metric]:
        """Read the key(s) or the stream once."""
        with redis_errors(self.where, self.timeout):
            return self.reader.read()

    def acknowledge(self) -> None:
        """Called by the core once the last points are spooled: confirm stream entries."""
        self.reader.acknowledge()

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


def _mapping(options: MappingType[str, Any], section: str) -> Mapping:
    kind, pattern = options["type"], options["key"]
    fields, tag_fields = options["fields"], options["tag_fields"]
    if kind == "stream" and pattern.is_pattern:
        raise ConfigError(
            f"[{section}] key: type = stream reads one stream; {pattern.text!r} is a pattern "
            "(use one section per stream)"
        )
    if kind == "string":
        if len(fields) > 1:
            raise ConfigError(
                f"[{section}] fields: a string key holds one value; declare one field "
                "(e.g. fields = temperature:float)"
            )
        if tag_fields:
            raise ConfigError(f"[{section}] tag_fields: a string key has no fields to make tags")
    both = sorted(set(fields) & set(tag_fields))
    if both:
        raise ConfigError(f"[{section}] {', '.join(both)}: declared both in fields and tag_fields")
    clash = sorted(set(tag_fields) & set(pattern.tag_names))
    if clash:
        raise ConfigError(f"[{section}] {', '.join(clash)}: both a key placeholder and a tag field")
    return Mapping(options["measurement"], fields, tuple(tag_fields), options["other_fields"])
