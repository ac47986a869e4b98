"""The ``memcached`` source: typed ``stats`` of one or more memcached servers, tag ``server``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kansoku import Option, PluginContext, SourceSpec, hookimpl
from kansoku.options import duration
from kansoku.types import Source

from .fields import SCHEMA, server_list


def _build(options: Mapping[str, Any], context: PluginContext) -> Source:
    from .source import MemcachedSource  # imports pymemcache

    return MemcachedSource(options, context)


@hookimpl
def kansoku_register_sources() -> Iterable[SourceSpec]:
    """The memcached source."""
    return [
        SourceSpec(
            name="memcached",
            factory=_build,
            description="memcached `stats` of each server, every field typed",
            options=[
                Option(
                    "servers",
                    server_list,
                    ["127.0.0.1:11211"],
                    "HOST:PORT, [IPv6]:PORT or unix:/PATH, comma-separated",
                ),
                Option(
                    "server_timeout",
                    duration,
                    2.0,
                    "how long to wait for each server to connect and answer",
                ),
            ],
            default_interval=60.0,
            schema=SCHEMA,
        )
    ]
