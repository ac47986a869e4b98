"""Reading a redis stream through a consumer group, so each entry is handed over once.

Each collection first re-reads this consumer's pending entries (read before but never
confirmed: the agent was killed, or the last confirmation failed), then new ones (``>``), up to
``max_entries``. The core calls :meth:`StreamReader.acknowledge` only once the points are on
disk in every sink's spool; only then are the entries confirmed with XACK. An entry read again
gives the same point, because the point's time is the entry id and its tags and fields come
from the entry alone.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from kansoku import Metric

from .connection import is_wrong_type, wrong_type
from .keys import Presence
from .mapping import Mapping, entry_time_ns

READ_CHUNK = 1000


class StreamReader:
    """``type = stream``: XREADGROUP on one stream, XACK after the points are spooled."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        mapping: Mapping,
        options: dict[str, Any],
        presence: Presence,
        log: logging.Logger,
    ) -> None:
        self.client = client
        self.key = key
        self.mapping = mapping
        self.group: str = options["group"]
        self.consumer: str = options["consumer"]
        self.start_id = "0" if options["group_start"] == "all" else "$"
        self.max_entries: int = options["max_entries"]
        self.claim_idle_ms = int(options["claim_idle"] * 1000)
        self.presence = presence
        self.log = log
        self._group_ready = False
        self._unconfirmed: list[bytes] = []

    def read(self) -> list[Metric]:
        """Pending entries of this consumer, then new ones, as points."""
        self._unconfirmed = []
        if not self._ensure_group():
            return []
        try:
            if self.claim_idle_ms:
                self._claim_abandoned()
            entries = self._fetch_all("0")  # pending: read before, never confirmed
            entries += self._fetch_all(">", self.max_entries - len(entries))
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            self._group_ready = False
            self.log.warning(
                "consumer group %r of stream %r is gone (stream deleted or group destroyed); "
                "it is created again at the next collection",
                self.group,
                self.key,
            )
            return []
        self._unconfirmed = [entry_id for entry_id, _ in entries]
        trimmed = [entry_id.decode() for entry_id, values in entries if not values]
        if trimmed:
            self.log.warning(
                "%d entries of stream %r were deleted before they were confirmed (the first: "
                "%s); there is nothing to relay for them, they are confirmed",
                len(trimmed),
                self.key,
                trimmed[0],
            )
        return [
            self.mapping.point(values, {}, entry_time_ns(entry_id))
            for entry_id, values in entries
            if values
        ]

    def acknowledge(self) -> None:
        """Confirm (XACK) the entries of the last read: their points are spooled."""
        ids, self._unconfirmed = self._unconfirmed, []
        try:
            for start in range(0, len(ids), READ_CHUNK):
                self.client.xack(self.key, self.group, *ids[start : start + READ_CHUNK])
        except redis.RedisError as exc:
            self.log.warning(
                "could not confirm %d entries of stream %r (%s); they are read again at the "
                "next collection and give the same points",
                len(ids),
                self.key,
                exc,
            )

    def _ensure_group(self) -> bool:
        if self._group_ready:
            return True
        what = f"redis stream {self.key!r}"
        try:
            self.client.xgroup_create(self.key, self.group, id=self.start_id)
        except redis.ResponseError as exc:
            message = str(exc)
            if is_wrong_type(exc):
                raise wrong_type(self.client, self.key, "stream") from None
            if "requires the key to exist" in message:
                self.presence.missing(what, "does not exist (the first XADD creates it)")
                return False
            if not message.startswith("BUSYGROUP"):
                raise
        else:
            self.log.info(
                "created consumer group %r on stream %r, starting at %s",
                self.group,
                self.key,
                "its first entry" if self.start_id == "0" else "new entries",
            )
        self.presence.present(what)
        self._group_ready = True
        return True

    def _claim_abandoned(self) -> None:
        """Take over entries another consumer read but left unconfirmed for ``claim_idle``."""
        _, claimed, *_ = self.client.xautoclaim(
            self.key,
            self.group,
            self.consumer,
            self.claim_idle_ms,
            start_id="0-0",
            count=READ_CHUNK,
            justid=True,
        )
        if claimed:
            self.log.warning(
                "took over %d entries of stream %r that another consumer left unconfirmed",
                len(claimed),
                self.key,
            )

    def _fetch_all(self, start: str, limit: int | None = None) -> list[tuple[bytes, Any]]:
        limit = self.max_entries if limit is None else limit
        entries: list[tuple[bytes, Any]] = []
        while len(entries) < limit:
            answer = self.client.xreadgroup(
                self.group,
                self.consumer,
                {self.key: start},
                count=min(READ_CHUNK, limit - len(entries)),
            )
            batch = answer[0][1] if answer else []
            if not batch:
                break
            entries += batch
            if start != ">":  # history: continue after the last entry seen
                start = batch[-1][0]
        return entries
