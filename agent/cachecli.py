"""``agent cacti``, ``agent get`` and ``agent discover``: Cacti and Zabbix read the last values.

Pollers run these on every poll, so this module imports only the standard library and light
kansoku modules; only ``--collect`` (collect the source directly, without a running agent)
loads the plugin manager, through :mod:`kansoku.directcollect`.

Contracts:

- ``agent cacti SOURCE[.INSTANCE]``: one line ``name:value name:value`` without a newline,
  nothing on stderr, exit 0. Names are RRD data-source names (:mod:`kansoku.cacheformat`);
  a value that is missing or older than ``--max-age`` prints ``U``. When the command cannot
  answer at all (no cache, a tag that matches nothing, an ambiguous selection) it says why on
  stderr and exits 1; Cacti then stores ``U``.
- ``agent get SOURCE[.INSTANCE].FIELD``: the value and a newline, exit 0; unknown or stale gives
  ``ZBX_NOTSUPPORTED`` on stdout, the reason on stderr, exit 1.
- ``agent discover SOURCE``: Zabbix low-level discovery JSON (an array), one entry per series
  (distinct tag set) of SOURCE and of every SOURCE.INSTANCE; failures as for ``agent get``.

Series are chosen with ``--tag KEY=VALUE`` or ``--tag KEY`` (has the tag at all; repeatable; an
empty argument is ignored, so Zabbix UserParameters can pass an unused ``$2``) and
``--measurement``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kansoku import cacheformat, lastvalues
from kansoku.cacheview import cacti_line, cacti_table, discovery, get_value
from kansoku.errors import KansokuError
from kansoku.lastvalues import CacheError, SourceCache
from kansoku.options import duration

if TYPE_CHECKING:
    from kansoku.directcollect import DirectCollector

NOT_SUPPORTED = "ZBX_NOTSUPPORTED"
ConfigPath = Callable[[argparse.Namespace], Path]


def _duration(text: str) -> float:
    try:
        return duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the agent's state directory (default: [agent] state_dir of the config file); "
        "use it when this user may not read the config file",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only the series with this tag value, or with this tag at all (bare KEY); "
        "repeatable; an empty argument is ignored",
    )
    parser.add_argument("--measurement", metavar="M", help="only this measurement of the source")
    parser.add_argument(
        "--max-age",
        type=_duration,
        metavar="DURATION",
        help="values older than this are unknown (default: 2 x the source's interval "
        "+ the sink's flush_interval)",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="collect the source once directly instead of reading the running agent's cache "
        "(refused while an agent runs the source)",
    )


def add_commands(sub: argparse._SubParsersAction, config_path: ConfigPath) -> None:  # type: ignore[type-arg]
    """Add ``cacti``, ``get`` and ``discover`` to the ``agent`` subcommands."""
    text = "print a source's last values for a Cacti data input method"
    cacti = sub.add_parser("cacti", help=text, description=text)
    cacti.add_argument("source", metavar="SOURCE[.INSTANCE]")
    cacti.add_argument(
        "-f",
        "--fields",
        action="append",
        default=[],
        metavar="A,B",
        help="only these fields, in this order (field or output names; comma-separated, "
        "repeatable)",
    )
    cacti.add_argument(
        "--list",
        action="store_true",
        help="list the output names with their fields, types and suggested RRD type",
    )
    _add_selection(cacti)
    cacti.set_defaults(func=lambda args: run_cacti(args, config_path))

    text = "print one last value for a Zabbix UserParameter or external check"
    get = sub.add_parser("get", help=text, description=text)
    get.add_argument("key", metavar="SOURCE[.INSTANCE].FIELD")
    _add_selection(get)
    get.set_defaults(func=lambda args: run_get(args, config_path))

    text = "print Zabbix low-level discovery JSON: one entry per series of a source"
    discover = sub.add_parser("discover", help=text, description=text)
    discover.add_argument("source", metavar="SOURCE[.INSTANCE]")
    discover.add_argument(
        "--per-field",
        action="store_true",
        help="one entry per series and field, with {#FIELD}, {#TYPE}, {#KIND}, {#UNIT}",
    )
    _add_selection(discover)
    discover.set_defaults(func=lambda args: run_discover(args, config_path))


class Reader:
    """Where the values come from: the agent's cache files, or a direct collection."""

    def __init__(self, args: argparse.Namespace, config_path: ConfigPath) -> None:
        self.max_age: float | None = args.max_age
        self.collector: DirectCollector | None = None
        self.state_dir = args.state_dir
        if args.collect:
            from kansoku.directcollect import DirectCollector

            if not args.log_level:  # pollers take anything on stderr for a failure
                logging.getLogger().setLevel(logging.ERROR)
            self.collector = DirectCollector(config_path(args))
        elif self.state_dir is None:
            from kansoku.config import read_agent_settings

            path = config_path(args)
            try:
                self.state_dir = read_agent_settings(path).state_dir
            except KansokuError as exc:
                raise CacheError(f"{exc}; or give the state directory with --state-dir") from None

    def sources(self) -> list[str]:
        """The source instances there are values for."""
        if self.collector is not None:
            return list(self.collector.sources)
        return lastvalues.cached_sources(self.state_dir)

    def load(self, source: str) -> SourceCache:
        """The last values of one source instance."""
        if self.collector is not None:
            return self.collector.collect(source)
        return lastvalues.read(self.state_dir, source)

    def limit(self, cache: SourceCache) -> float | None:
        """The age in seconds beyond which a value is stale (None: fresh from --collect)."""
        if self.collector is not None:
            return None
        return self.max_age if self.max_age is not None else cache.max_age()


def parse_tags(items: Sequence[str]) -> dict[str, str | None]:
    """``["server=a", "address", ""]`` -> ``{"server": "a", "address": None}``.

    ``KEY=VALUE`` wants that value, a bare ``KEY`` wants the tag with any value, an empty
    item is ignored.
    """
    tags: dict[str, str | None] = {}
    for item in items:
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not key.strip():
            raise CacheError(f"--tag {item!r}: expected KEY=VALUE or KEY")
        tags[key.strip()] = value.strip() if sep else None
    return tags


def split_key(key: str, sources: Sequence[str]) -> tuple[str, str]:
    """``memcached.web.curr_items`` -> (``memcached.web``, ``curr_items``) when that instance
    exists, else (``memcached``, ``web.curr_items``)."""
    parts = key.split(".")
    if len(parts) < 2 or not all(parts[:2]):
        raise CacheError(f"{key!r}: expected SOURCE.FIELD or SOURCE.INSTANCE.FIELD")
    if len(parts) > 2 and ".".join(parts[:2]) in sources:
        return ".".join(parts[:2]), ".".join(parts[2:])
    return parts[0], ".".join(parts[1:])


def run_cacti(args: argparse.Namespace, config_path: ConfigPath) -> int:
    """``agent cacti``."""
    try:
        reader = Reader(args, config_path)
        cache = reader.load(args.source)
        if args.list:
            output = cacti_table(cache, args.measurement)
        else:
            wanted = [w.strip() for item in args.fields for w in item.split(",") if w.strip()]
            tags = parse_tags(args.tag)
            limit = reader.limit(cache)
            output = cacti_line(cache, args.measurement, tags, wanted, limit, time.time_ns())
    except (KansokuError, OSError) as exc:
        print(f"agent cacti: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(output)
    sys.stdout.flush()
    return 0


def _not_supported(command: str, exc: Exception) -> int:
    sys.stdout.write(NOT_SUPPORTED + "\n")
    sys.stdout.flush()
    print(f"agent {command}: {exc}", file=sys.stderr)
    return 1


def run_get(args: argparse.Namespace, config_path: ConfigPath) -> int:
    """``agent get``."""
    try:
        reader = Reader(args, config_path)
        source, field = split_key(args.key, reader.sources())
        cache = reader.load(source)
        tags = parse_tags(args.tag)
        value = get_value(cache, field, args.measurement, tags, reader.limit(cache), time.time_ns())
    except (KansokuError, OSError) as exc:
        return _not_supported("get", exc)
    sys.stdout.write(cacheformat.text(value) + "\n")
    return 0


def run_discover(args: argparse.Namespace, config_path: ConfigPath) -> int:
    """``agent discover``."""
    try:
        reader = Reader(args, config_path)
        name = args.source
        sources = [s for s in reader.sources() if s == name or s.startswith(name + ".")]
        if not sources:
            known = ", ".join(reader.sources()) or "none"
            raise CacheError(f"no source {name!r} or {name}.INSTANCE (sources: {known})")
        caches = [reader.load(s) for s in sources]
        entries = discovery(caches, args.measurement, parse_tags(args.tag), args.per_field)
    except (KansokuError, OSError) as exc:
        return _not_supported("discover", exc)
    sys.stdout.write(json.dumps(entries, ensure_ascii=False) + "\n")
    return 0
