"""The ``memcached`` measurement: every ``stats`` field with its type, unit and kind.

Names are memcached's own, with one exception: ``time`` (the server's clock) is written as
``server_time`` because InfluxDB reserves ``time`` and drops a field of that name. Fields a newer
memcached adds are not listed here; the core types them from their first value and pins that
type (``extra_fields="infer"``), so :func:`typed_stats` hands them over as int, float or text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kansoku import FieldSpec, MeasurementSchema

MEASUREMENT = "memcached"
RENAMED = {"time": "server_time"}

_GAUGES_INT: dict[str, tuple[str, str]] = {
    "up": ("", "1 when the server answered this collection, 0 when it did not"),
    "pid": ("", "process id of the server"),
    "server_time": ("s", "the server's clock, UNIX seconds (memcached's `time`)"),
    "pointer_size": ("bit", "pointer size of the server's platform"),
    "max_connections": ("", "connection limit (-c)"),
    "curr_connections": ("", "open connections"),
    "connection_structures": ("", "connection structures allocated"),
    "response_obj_count": ("", "response objects in use"),
    "response_obj_bytes": ("bytes", "memory used by response objects"),
    "read_buf_count": ("", "read buffers in use"),
    "read_buf_bytes": ("bytes", "memory used by read buffers"),
    "read_buf_bytes_free": ("bytes", "memory in free read buffers"),
    "reserved_fds": ("", "file descriptors reserved for internal use"),
    "limit_maxbytes": ("bytes", "memory the server may use for items (-m)"),
    "accepting_conns": ("", "1 while the server accepts connections"),
    "threads": ("", "worker threads"),
    "hash_power_level": ("", "hash table size multiplier (power of two)"),
    "hash_bytes": ("bytes", "memory used by the hash table"),
    "hash_is_expanding": ("", "1 while the hash table grows"),
    "slab_reassign_running": ("", "1 while a slab page is being moved"),
    "lru_crawler_running": ("", "1 while the LRU crawler runs"),
    "log_watchers": ("", "connected log watchers"),
    "bytes": ("bytes", "memory used by items"),
    "curr_items": ("", "items stored now"),
    "slab_global_page_pool": ("", "slab pages in the global pool"),
    "extstore_pages_free": ("", "extstore: free pages"),
    "extstore_pages_used": ("", "extstore: used pages"),
    "extstore_objects_used": ("", "extstore: objects stored"),
    "extstore_bytes_used": ("bytes", "extstore: bytes stored"),
    "extstore_bytes_fragmented": ("bytes", "extstore: bytes lost to fragmentation"),
    "extstore_limit_maxbytes": ("bytes", "extstore: size limit"),
    "extstore_io_queue": ("", "extstore: queued I/O requests"),
}

_COUNTERS_INT: dict[str, tuple[str, str]] = {
    "uptime": ("s", "seconds since the server started"),
    "total_connections": ("", "connections opened since start"),
    "rejected_connections": ("", "connections refused at the limit"),
    "response_obj_oom": ("", "response objects that could not be allocated"),
    "read_buf_oom": ("", "read buffers that could not be allocated"),
    "cmd_get": ("", "retrieval requests (one per key)"),
    "cmd_set": ("", "storage requests"),
    "cmd_flush": ("", "flush_all requests"),
    "cmd_touch": ("", "touch requests"),
    "cmd_meta": ("", "meta protocol requests"),
    "get_hits": ("", "keys requested and found"),
    "get_misses": ("", "keys requested and not found"),
    "get_expired": ("", "keys requested after they expired"),
    "get_flushed": ("", "keys requested after a flush_all"),
    "delete_misses": ("", "deletes of missing keys"),
    "delete_hits": ("", "deletes that removed an item"),
    "incr_misses": ("", "incr of missing keys"),
    "incr_hits": ("", "successful incr"),
    "decr_misses": ("", "decr of missing keys"),
    "decr_hits": ("", "successful decr"),
    "cas_misses": ("", "cas of missing keys"),
    "cas_hits": ("", "successful cas"),
    "cas_badval": ("", "cas with a stale cas value"),
    "touch_hits": ("", "touches of present keys"),
    "touch_misses": ("", "touches of missing keys"),
    "store_too_large": ("", "stores refused: item too large"),
    "store_no_memory": ("", "stores refused: out of memory"),
    "auth_cmds": ("", "authentication commands"),
    "auth_errors": ("", "failed authentications"),
    "idle_kicks": ("", "connections closed at their idle timeout"),
    "bytes_read": ("bytes", "bytes read from the network"),
    "bytes_written": ("bytes", "bytes written to the network"),
    "listen_disabled_num": ("", "times accepting stopped at the connection limit"),
    "time_in_listen_disabled_us": ("us", "time spent at the connection limit"),
    "conn_yields": ("", "times a connection yielded (-R limit)"),
    "slab_reassign_rescues": ("", "items rescued during page moves"),
    "slab_reassign_chunk_rescues": ("", "chunks rescued during page moves"),
    "slab_reassign_evictions_nomem": ("", "items evicted during page moves"),
    "slab_reassign_inline_reclaim": ("", "chunks reclaimed inline during page moves"),
    "slab_reassign_busy_items": ("", "busy items during page moves"),
    "slab_reassign_busy_deletes": ("", "busy deletes during page moves"),
    "slabs_moved": ("", "slab pages moved"),
    "lru_crawler_starts": ("", "LRU crawler runs"),
    "lru_maintainer_juggles": ("", "LRU maintainer wake-ups"),
    "malloc_fails": ("", "failed memory allocations"),
    "log_worker_dropped": ("", "log lines dropped by workers"),
    "log_worker_written": ("", "log lines written by workers"),
    "log_watcher_skipped": ("", "log lines not sent to slow watchers"),
    "log_watcher_sent": ("", "log lines sent to watchers"),
    "unexpected_napi_ids": ("", "connections with an unexpected NAPI id"),
    "round_robin_fallback": ("", "NAPI round-robin fallbacks"),
    "total_items": ("", "items stored since start"),
    "expired_unfetched": ("", "items expired before any fetch"),
    "evicted_unfetched": ("", "items evicted before any fetch"),
    "evicted_active": ("", "recently used items evicted"),
    "evictions": ("", "valid items evicted to free memory"),
    "reclaimed": ("", "stores that reused an expired item's memory"),
    "crawler_reclaimed": ("", "items freed by the LRU crawler"),
    "crawler_items_checked": ("", "items examined by the LRU crawler"),
    "lrutail_reflocked": ("", "LRU tail items found referenced"),
    "moves_to_cold": ("", "items moved to the COLD LRU"),
    "moves_to_warm": ("", "items moved to the WARM LRU"),
    "moves_within_lru": ("", "items reshuffled within HOT or WARM"),
    "direct_reclaims": ("", "times workers reclaimed memory directly"),
    "lru_bumps_dropped": ("", "LRU bumps dropped"),
    "get_extstore": ("", "extstore: gets served from extstore"),
    "get_aborted_extstore": ("", "extstore: aborted gets"),
    "get_oom_extstore": ("", "extstore: gets failed for memory"),
    "recache_from_extstore": ("", "extstore: items recached to memory"),
    "miss_from_extstore": ("", "extstore: misses"),
    "badcrc_from_extstore": ("", "extstore: reads with a bad checksum"),
    "extstore_compact_lost": ("", "extstore: items lost in compaction"),
    "extstore_compact_rescues": ("", "extstore: items rescued in compaction"),
    "extstore_compact_resc_cold": ("", "extstore: cold items rescued in compaction"),
    "extstore_compact_resc_old": ("", "extstore: old items rescued in compaction"),
    "extstore_compact_skipped": ("", "extstore: compactions skipped"),
    "extstore_page_allocs": ("", "extstore: page allocations"),
    "extstore_page_evictions": ("", "extstore: page evictions"),
    "extstore_page_reclaims": ("", "extstore: page reclaims"),
    "extstore_objects_evicted": ("", "extstore: objects evicted"),
    "extstore_objects_read": ("", "extstore: objects read"),
    "extstore_objects_written": ("", "extstore: objects written"),
    "extstore_bytes_evicted": ("bytes", "extstore: bytes evicted"),
    "extstore_bytes_written": ("bytes", "extstore: bytes written"),
    "extstore_bytes_read": ("bytes", "extstore: bytes read"),
}

FIELDS: dict[str, FieldSpec] = {
    **{n: FieldSpec(int, unit, "gauge", text) for n, (unit, text) in _GAUGES_INT.items()},
    **{n: FieldSpec(int, unit, "counter", text) for n, (unit, text) in _COUNTERS_INT.items()},
    "rusage_user": FieldSpec(float, "s", "counter", "user CPU time of the server"),
    "rusage_system": FieldSpec(float, "s", "counter", "system CPU time of the server"),
    "get_hit_ratio": FieldSpec(
        float, "ratio", "gauge", "get_hits / (get_hits + get_misses) since the server started"
    ),
    "version": FieldSpec(str, description="memcached version"),
    "libevent": FieldSpec(str, description="libevent version"),
}

SCHEMA = {MEASUREMENT: MeasurementSchema(FIELDS, extra_fields="infer")}


def server_list(text: str) -> list[str]:
    """``127.0.0.1:11211, [::1]:11211, cache.lan, unix:/run/memcached/memcached.sock``."""
    servers: list[str] = []
    for item in (part.strip() for part in text.replace("\n", ",").split(",")):
        if not item:
            continue
        _check_server(item)
        if item in servers:
            raise ValueError(f"{item!r} is listed twice")
        servers.append(item)
    if not servers:
        raise ValueError("no server given (example: 127.0.0.1:11211)")
    return servers


def _check_server(item: str) -> None:
    if item.startswith("unix:"):
        if not item[5:].startswith("/"):
            raise ValueError(f"{item!r}: a socket path must be absolute (unix:/path/to/sock)")
        return
    host, port = item, "11211"
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif ":" in item:
        host, _, port = item.rpartition(":")
    if not host or (":" in host and not item.startswith("[")):
        raise ValueError(f"{item!r} is not HOST:PORT (write IPv6 addresses as [::1]:11211)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{item!r}: the port must be a number from 1 to 65535")


def typed_stats(raw: Mapping[bytes | str, Any]) -> dict[str, Any]:
    """Fields from a ``stats`` answer, plus ``get_hit_ratio`` when there were gets.

    Known fields are coerced by the core against :data:`FIELDS`; unknown ones leave here as the
    int, float or text they look like, so their first value pins a sensible type.
    """
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode("ascii", "replace") if isinstance(key, bytes) else key
        fields[RENAMED.get(name, name)] = _native(value)
    hits, misses = fields.get("get_hits"), fields.get("get_misses")
    if isinstance(hits, int) and isinstance(misses, int) and hits + misses > 0:
        fields["get_hit_ratio"] = hits / (hits + misses)
    return fields


def _native(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, bytes | str):
        return value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text
