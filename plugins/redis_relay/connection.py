"""The redis client of one relay section, and redis errors turned into sentences.

The url may hold a password, so it is a :class:`~kansoku.options.Secret` and never appears in a
message: errors name the server as ``host:port/db`` (or ``unix:/path``) only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kansoku.errors import ConfigError, SourceError

WRONGTYPE = "WRONGTYPE"


def connect(options: Mapping[str, Any], section: str) -> redis.Redis:
    """A client for the section's url (no I/O yet: redis-py connects on the first command)."""
    url = options["url"].reveal()
    password = options["password"]
    timeout = options["server_timeout"]
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # one quiet reconnect for a connection redis closed while idle; the agent retries the
        # rest at the next interval
        "retry": Retry(NoBackoff(), 1),
    }
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"[{section}] url: not a redis URL (expected redis://HOST:PORT/DB, rediss://… for "
            "TLS or unix:///PATH?db=N); the value is not shown because it may hold a password"
        )
    if password:
        if parts.password:
            raise ConfigError(f"[{section}] the password is given twice: in url and in password")
        kwargs["password"] = password.reveal()
    if parts.scheme == "rediss":
        kwargs["ssl_cert_reqs"] = "required" if options["tls_verify"] else "none"
        if options["tls_ca"]:
            kwargs["ssl_ca_certs"] = options["tls_ca"]
    elif options["tls_ca"] or not options["tls_verify"]:
        raise ConfigError(f"[{section}] tls_ca and tls_verify need a rediss:// url")
    try:
        return redis.Redis.from_url(url, **kwargs)
    except ValueError:
        raise ConfigError(
            f"[{section}] url: its query options are not valid; the value is not shown because "
            "it may hold a password"
        ) from None


def describe(client: redis.Redis) -> str:
    """``127.0.0.1:6379/0``, ``unix:/run/redis.sock/0``, with ``(TLS)`` for rediss; no secrets."""
    kwargs = client.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{db}"
    where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"
    tls = client.connection_pool.connection_class.__name__ == "SSLConnection"
    return f"{where} (TLS)" if tls else where


def is_wrong_type(exc: BaseException) -> bool:
    """Whether redis answered WRONGTYPE (the key holds another kind of value)."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(WRONGTYPE)


def wrong_type(client: redis.Redis, key: str, expected: str) -> SourceError:
    """The error for a key that holds something else than the section reads."""
    try:
        actual = client.type(key).decode()
    except redis.RedisError:
        actual = "different kind of value"
    return SourceError(
        f"redis key {key!r} holds a {actual}, but this section reads a {expected} "
        f"(type = {expected}); point key at a {expected} or change type"
    )


@contextmanager
def redis_errors(where: str, timeout: float) -> Iterator[None]:
    """Turn redis-py's exceptions into :class:`SourceError` sentences naming the server."""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise SourceError(
            f"redis at {where} refused the login ({exc}); check the password in url or "
            "password (it is not shown here)"
        ) from None
    except redis.TimeoutError:
        raise SourceError(
            f"redis at {where} did not answer within {timeout:g}s (server_timeout)"
        ) from None
    except redis.ConnectionError as exc:
        raise SourceError(
            f"cannot reach redis at {where} ({exc}); check that redis-server runs there and "
            "the url (host, port, rediss:// for TLS)"
        ) from None
    except redis.ResponseError as exc:
        if str(exc).startswith("NOPERM"):
            raise SourceError(
                f"redis at {where}: this user may not run the command ({exc}); grant it with "
                "ACL SETUSER"
            ) from None
        raise SourceError(f"redis at {where} answered with an error: {exc}") from None
    except redis.RedisError as exc:
        raise SourceError(f"redis at {where}: {type(exc).__name__}: {exc}") from None
