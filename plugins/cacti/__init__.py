"""The ``cacti`` sink: the last-values cache that ``agent cacti``, ``agent get`` and ``agent
discover`` read, so Cacti and Zabbix never open a device the agent owns.

It keeps one file per source instance in ``STATE_DIR/lastvalues/`` (format and atomic
replacement: :mod:`kansoku.lastvalues`), mode 0640 and the group named by ``group`` so the
poller's user can read it. The core tells it each source's interval and field schema
(``describe_sources``), for staleness and for COUNTER vs GAUGE.
"""

from __future__ import annotations

import grp
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kansoku import Metric, Option, PluginContext, SinkSpec, hookimpl, lastvalues
from kansoku.errors import RetryLater
from kansoku.lastvalues import CacheError, SourceCache
from kansoku.options import duration
from kansoku.types import SourceInfo


def group_id(text: str) -> int:
    """A group name or number -> its gid (the group must exist on this machine)."""
    word = text.strip()
    try:
        return grp.getgrnam(word).gr_gid
    except KeyError:
        pass
    if word.isdigit():
        return int(word)
    raise ValueError(f"no group named {word!r} on this machine (see /etc/group)")


class LastValuesSink:
    """Merges each batch into the per-source caches and rewrites the files it touched."""

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.folder = lastvalues.cache_dir(context.agent_state_dir)
        self.gid: int | None = options["group"]
        self.forget_after: float = options["forget_after"]
        self.log = context.log
        self.caches: dict[str, SourceCache] = {}
        self.described: dict[str, tuple[float | None, Mapping[str, Any], float]] = {}
        self._lock = threading.Lock()
        self._ready = False
        self._unnamed_logged = False

    def describe_sources(self, sources: Sequence[SourceInfo], flush_interval: float) -> None:
        """Remember each source's interval and schema (called by the core at start and reload)."""
        with self._lock:
            for info in sources:
                self.described[info.name] = (info.interval, info.schema, flush_interval)
                if info.name in self.caches:
                    self.caches[info.name].describe(info.interval, info.schema, flush_interval)

    def write(self, batch: Sequence[Metric]) -> None:
        """Merge the batch into the caches and replace each touched file at once."""
        with self._lock:
            self._prepare()
            touched: set[str] = set()
            for metric in batch:
                if not metric.source:
                    self._log_unnamed()
                    continue
                self._cache(metric.source).update(metric)
                touched.add(metric.source)
            cutoff = time.time_ns() - int(self.forget_after * 1e9)
            for source in sorted(touched):
                cache = self.caches[source]
                cache.forget(cutoff)
                path = lastvalues.cache_path(self.folder.parent, source)
                try:
                    lastvalues.write_atomic(path, cache.to_json(), self.gid)
                except PermissionError:
                    self._write_without_group(path, cache)
                except OSError as exc:
                    raise RetryLater(f"cannot write {path}: {exc.strerror}") from None

    def _write_without_group(self, path: Path, cache: SourceCache) -> None:
        self.log.error(
            "cannot give the group %s to %s: the agent's user must be a member of it "
            "(usermod -aG GROUP USER) or root; the cache stays readable by the agent's own "
            "group only",
            self.gid,
            path,
        )
        self.gid = None
        try:
            lastvalues.write_atomic(path, cache.to_json(), None)
        except OSError as exc:
            raise RetryLater(f"cannot write {path}: {exc.strerror}") from None

    def _cache(self, source: str) -> SourceCache:
        cache = self.caches.get(source)
        if cache is None:
            try:
                cache = lastvalues.read(self.folder.parent, source)
                cache.source = source
            except CacheError:
                cache = SourceCache(source)
            if source in self.described:
                cache.describe(*self.described[source])
            self.caches[source] = cache
        return cache

    def _log_unnamed(self) -> None:
        if not self._unnamed_logged:
            self._unnamed_logged = True
            self.log.warning(
                "points without a source instance are not cached (spooled by an "
                "older agent); they still reach the other sinks"
            )

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            os.chmod(self.folder, lastvalues.FOLDER_MODE)
            if self.gid is not None:
                os.chown(self.folder, -1, self.gid)
        except PermissionError as exc:
            self.log.error("cannot set up %s for the group: %s", self.folder, exc.strerror)
        except OSError as exc:
            raise RetryLater(f"cannot create {self.folder}: {exc.strerror}") from None
        self._ready = True
        if self.gid is not None:
            self._warn_unreachable()

    def _warn_unreachable(self) -> None:
        for folder in [*reversed(self.folder.parents), self.folder]:
            try:
                info = folder.stat()
            except OSError:
                return
            group_may = info.st_gid == self.gid and info.st_mode & stat.S_IXGRP
            if not (info.st_mode & stat.S_IXOTH or group_may):
                self.log.warning(
                    "the group %s cannot enter %s (mode %o), so pollers cannot read the "
                    "last values; run: chmod o+x %s (or give it that group with g+x)",
                    self.gid,
                    folder,
                    stat.S_IMODE(info.st_mode),
                    folder,
                )
                return

    def close(self) -> None:
        """Nothing to release: every write is complete on disk."""


@hookimpl
def kansoku_register_sinks() -> Iterable[SinkSpec]:
    """The cacti sink."""
    return [
        SinkSpec(
            name="cacti",
            factory=LastValuesSink,
            description="last-values cache for Cacti (agent cacti) and Zabbix (agent get)",
            options=[
                Option(
                    "group",
                    group_id,
                    None,
                    "group that may read the cache (the Cacti or Zabbix user's group)",
                ),
                Option(
                    "forget_after",
                    duration,
                    86400.0,
                    "drop a series (device, server) not seen for this long",
                ),
            ],
            default_batch_size=500,
        )
    ]
