"""The ``redis-relay`` source: values other programs leave in redis, relayed with declared types.

One section per mapping: ``[source.redis-relay.NAME]`` with ``type`` (string, hash, stream),
``key`` (a key, or a pattern like ``sensor:{room}``), ``measurement`` and ``fields``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from typing import Any

from kansoku import Option, PluginContext, SourceSpec, hookimpl
from kansoku.options import Secret, boolean, choice, duration, integer, secret
from kansoku.types import Source

from .mapping import field_types, key_pattern, measurement_name, name_list

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _build(options: Mapping[str, Any], context: PluginContext) -> Source:
    from .source import RedisRelaySource  # imports redis

    if options["consumer"] is None:
        options = {**options, "consumer": socket.gethostname()}
    return RedisRelaySource(options, context)


def _positive(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise ValueError(f"{value} is not a positive number")
    return value


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


OPTIONS = [
    Option(
        "url",
        secret,
        Secret(DEFAULT_URL),
        "redis://[USER:PASSWORD@]HOST:PORT/DB, rediss://… for TLS, or unix:///PATH?db=N "
        f"(default {DEFAULT_URL}); treated as a secret",
    ),
    Option("password", secret, None, "the password, when it is not in url (e.g. ${REDIS_PASS})"),
    Option("tls_ca", _text, "", "rediss://: CA certificate file (default: the system's CAs)"),
    Option("tls_verify", boolean, True, "rediss://: verify the server's certificate"),
    Option("server_timeout", duration, 5.0, "how long to wait for redis to connect and answer"),
    Option("type", choice("string", "hash", "stream"), help="string (GET), hash, stream"),
    Option("key", key_pattern, help="a key, or a pattern: sensor:{room} makes a tag room"),
    Option("measurement", measurement_name, help="the measurement of the points"),
    Option("fields", field_types, {}, "declared types: temperature:float, battery:int, door:bool"),
    Option("tag_fields", name_list, [], "hash or stream fields that become tags"),
    Option("other_fields", choice("float", "ignore"), "float", "undeclared fields: float, ignore"),
    Option("group", _text, "kansoku", "stream: the consumer group"),
    Option("consumer", _text, None, "stream: this agent's consumer name (default: host name)"),
    Option("group_start", choice("all", "new"), "all", "stream: a new group reads all or new"),
    Option("max_entries", _positive, 10000, "stream: most entries one collection hands over"),
    Option("claim_idle", duration, 0.0, "stream: take over entries idle this long elsewhere"),
]


@hookimpl
def kansoku_register_sources() -> Iterable[SourceSpec]:
    """The redis-relay source."""
    return [
        SourceSpec(
            name="redis-relay",
            factory=_build,
            description="relay redis keys, hashes and streams with declared field types",
            options=OPTIONS,
            default_interval=10.0,
        )
    ]
