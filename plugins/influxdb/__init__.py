"""The ``influxdb`` sink: InfluxDB 1.x line protocol over HTTP (also VictoriaMetrics & co).

Only the hook and the option list live here; the client (``influxdb``, ``requests``) is
imported by the factory, so ``agent get`` and ``agent cacti`` never load it.
See docs/plugins/influxdb.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kansoku import Option, PluginContext, SinkSpec, hookimpl
from kansoku.errors import ConfigError
from kansoku.options import Secret, boolean, choice, duration, integer, secret
from kansoku.types import Sink


def url(text: str) -> str:
    """``http://host:8086`` or ``https://host/prefix`` (no user or password in it)."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("put the user name and password in username and password, not in url")
    if parts.query or parts.fragment:
        raise ValueError("the url takes no ?query or #fragment")
    try:
        parts.port  # noqa: B018  (raises for a bad port)
    except ValueError:
        raise ValueError(f"{text!r} has a bad port number") from None
    return text.strip()


def verify(text: str) -> bool | str:
    """true / false, or the path of a CA bundle (PEM) to check the server's certificate."""
    try:
        return boolean(text)
    except ValueError:
        path = Path(text.strip()).expanduser()
        if not path.is_file():
            raise ValueError(f"{text!r} is neither true/false nor an existing CA file") from None
        return str(path)


OPTIONS = [
    Option("url", url, None, "server URL, e.g. http://localhost:8086 (or use host/port/ssl)"),
    Option("host", str, None, "server host name (default localhost; or use url)"),
    Option("port", integer, None, "server port (default 8086)"),
    Option("ssl", boolean, None, "use https (default false)"),
    Option("verify", verify, True, "check the server's TLS certificate: true, false or a CA file"),
    Option("database", str, help="database to write to"),
    Option("retention_policy", str, "", "retention policy (default: the database's default)"),
    Option(
        "precision",
        choice("ns", "us", "ms", "s", "m", "h"),
        "ns",
        "timestamp precision sent to the server; coarser compresses better, but points of one "
        "series closer than it overwrite each other",
    ),
    Option("username", str, "", "user name (empty: no authentication)"),
    Option("password", secret, Secret(""), "password; use ${ENV} to keep it out of the file"),
    Option("timeout", duration, 10.0, "give up on a request after this; the spool retries"),
    Option("gzip", boolean, False, "compress request bodies (Content-Encoding: gzip)"),
    Option("create_database", boolean, False, "CREATE DATABASE when the server says it is missing"),
]


def make_sink(options: Mapping[str, Any], context: PluginContext) -> Sink:
    """Build the sink from its parsed options (no network I/O here)."""
    from kansoku_plugins.influxdb.sink import InfluxDBSink, Settings

    where = f"[sink.{context.name}]"
    if options["url"] is not None:
        clash = [k for k in ("host", "port", "ssl") if options[k] is not None]
        if clash:
            raise ConfigError(f"{where} sets url and {', '.join(clash)}: use one or the other")
        parts = urlsplit(options["url"])
        scheme, host = parts.scheme, parts.hostname or "localhost"
        port = parts.port or (443 if scheme == "https" else 8086)
        path = parts.path.rstrip("/")
    else:
        scheme = "https" if options["ssl"] else "http"
        host, port, path = options["host"] or "localhost", options["port"] or 8086, ""
    if ":" in host:  # an IPv6 address goes in brackets in a URL
        host = f"[{host}]"
    if not options["database"].strip():
        raise ConfigError(f"{where} database is empty")
    if options["password"] and not options["username"]:
        raise ConfigError(f"{where} sets a password but no username")
    if options["timeout"] <= 0:
        raise ConfigError(f"{where} timeout must be more than 0s")
    settings = Settings(
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        verify=options["verify"],
        database=options["database"].strip(),
        retention_policy=options["retention_policy"].strip(),
        precision=options["precision"],
        username=options["username"].strip(),
        password=options["password"],
        timeout=options["timeout"],
        gzip=options["gzip"],
        create_database=options["create_database"],
    )
    return InfluxDBSink(settings, context.log)


@hookimpl
def kansoku_register_sinks() -> Iterable[SinkSpec]:
    """The influxdb sink."""
    return [
        SinkSpec(
            name="influxdb",
            factory=make_sink,
            description="InfluxDB 1.x /write (line protocol); also VictoriaMetrics",
            options=OPTIONS,
            default_batch_size=5000,
        )
    ]
