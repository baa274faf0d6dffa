"""Counters of one gateway process and their Prometheus text (``GET /metrics``).

Counters are plain attributes incremented on the request path; nothing is
formatted until a scrape.  Cache hits are not counted per request: a layer's hits
are the lookups that reached it minus its misses.  With ``--workers N`` every
process writes a snapshot to ``<state dir>/metrics/worker-<i>.json`` each second,
and whichever process answers a scrape reports all of them, labelled by worker.
"""

from __future__ import annotations

import contextlib
import os
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

import msgspec

# Upper bounds of the latency buckets, in seconds.
LATENCY_BOUNDS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
SNAPSHOT_MAX_AGE = 10.0


class Metrics:
    """Everything ``/metrics`` reports for one process."""

    def __init__(self) -> None:
        self.allowed = 0
        self.denied: dict[str, int] = {}
        self.unavailable = 0
        self.http_errors: dict[int, int] = {}
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latency_sum = 0.0
        self.checks = 0
        self.token_misses = 0
        self.subscriber_misses = 0
        self.portal_misses = 0
        self.redis_hits = 0
        self.redis_misses = 0
        self.pg_loads = 0
        self.redis_round_trips = 0
        self.admissions = 0
        self.admission_batches = 0
        self.local_admissions = 0
        self.unavailable_admissions = 0
        # Commands written to Redis on the gateway's own connections (every mode).
        self.redis_commands = 0
        self.redis_recoveries = 0
        self.refreshes = 0
        self.evictions = 0
        self.batch_rows = 0
        self.batches = 0
        self.spool_bytes = 0
        self.spooled_bytes_total = 0
        self.replayed_rows_total = 0
        self.records_dropped_total = 0
        self.records_refused_total = 0
        self.events_accepted = 0
        self.events_rejected = 0
        self.events_duplicate = 0
        self.events_ignored = 0
        # Events refused because their token or user_id is not the admitted session's.
        self.events_foreign = 0
        # Requests to /auth and /events refused: not an allowed address, no secret.
        self.untrusted_auth = 0
        self.untrusted_events = 0
        self.signals = 0
        self.signal_gaps = 0
        self.listener_reconnects = 0
        self.sessions_tracked = 0
        self.sessions_swept = 0
        self.sessions_active = -1
        self.pg_up = True
        self.redis_up = True
        self.redis_ready = True
        self.listener_up = False

    def deny(self, reason: str) -> None:
        self.denied[reason] = self.denied.get(reason, 0) + 1

    def http_error(self, status: int) -> None:
        self.http_errors[status] = self.http_errors.get(status, 0) + 1

    def observe_latency(self, seconds: float) -> None:
        self.latency[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.latency_sum += seconds

    def observe_batch(self, rows: int) -> None:
        self.batches += 1
        self.batch_rows += rows

    def snapshot(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


_COUNTERS: list[tuple[str, str, str]] = [
    # (attribute, metric name, help)
    ("checks", "authgate_checks_total", "Playback checks decided (allowed + denied + unavailable)"),
    ("token_misses", "authgate_token_cache_misses_total", "Checks whose token was not in the process cache"),
    (
        "subscriber_misses",
        "authgate_subscriber_cache_misses_total",
        "Subscriber lookups that missed the process cache",
    ),
    ("portal_misses", "authgate_portal_cache_misses_total", "Portal lookups that missed the process cache"),
    ("redis_hits", "authgate_redis_cache_hits_total", "Entries found valid in Redis after a process miss"),
    ("redis_misses", "authgate_redis_cache_misses_total", "Entries missing or stale in Redis"),
    ("pg_loads", "authgate_postgres_loads_total", "Entries built from PostgreSQL"),
    ("redis_round_trips", "authgate_redis_round_trips_total", "Commands and scripts sent to Redis"),
    ("admissions", "authgate_session_admissions_total", "Session admissions and refreshes sent to Redis"),
    ("admission_batches", "authgate_session_admission_batches_total", "Script calls carrying admissions"),
    (
        "local_admissions",
        "authgate_session_local_admissions_total",
        "Admissions decided in-process while Redis was away",
    ),
    (
        "unavailable_admissions",
        "authgate_session_unavailable_admissions_total",
        "Admissions answered 503: their counts were being rebuilt or their cluster node was away",
    ),
    (
        "redis_commands",
        "authgate_redis_commands_total",
        "Commands written to Redis on the gateway's connections",
    ),
    ("redis_recoveries", "authgate_redis_recoveries_total", "Session counts rebuilt after Redis lost them"),
    ("evictions", "authgate_session_evictions_total", "Sessions evicted by evict_oldest"),
    ("batches", "authgate_record_batches_total", "Session batches flushed"),
    ("batch_rows", "authgate_record_batch_rows_total", "Rows in flushed session batches"),
    ("spooled_bytes_total", "authgate_spooled_bytes_total", "Bytes appended to the spool"),
    ("replayed_rows_total", "authgate_spool_replayed_rows_total", "Spooled rows replayed into PostgreSQL"),
    ("records_dropped_total", "authgate_records_dropped_total", "Session rows dropped at the memory bound"),
    ("records_refused_total", "authgate_records_refused_total", "Session rows PostgreSQL refused"),
    ("events_accepted", "authgate_events_accepted_total", "Event-sink events accepted"),
    ("events_rejected", "authgate_events_rejected_total", "Event-sink events rejected"),
    ("events_duplicate", "authgate_events_duplicate_total", "Event-sink events already seen"),
    ("events_ignored", "authgate_events_ignored_total", "Event-sink events of kinds the gateway ignores"),
    (
        "events_foreign",
        "authgate_events_foreign_total",
        "Events rejected: their token or user_id is not the session's admitted portal and subscriber",
    ),
    (
        "untrusted_auth",
        "authgate_untrusted_auth_total",
        "/auth requests refused: the address is not allowed and no secret was carried",
    ),
    (
        "untrusted_events",
        "authgate_untrusted_events_total",
        "/events requests refused: the address is not allowed and no secret was carried",
    ),
    ("signals", "authgate_entitlement_signals_total", "Entitlement signals applied"),
    ("signal_gaps", "authgate_entitlement_signal_gaps_total", "Version gaps that dropped a portal's entries"),
    ("listener_reconnects", "authgate_listener_reconnects_total", "Reconnects of the entitlement listener"),
    (
        "sessions_swept",
        "authgate_sessions_swept_total",
        "Idle play sessions closed by this process's sweeper",
    ),
]
_GAUGES: list[tuple[str, str, str]] = [
    ("spool_bytes", "authgate_spool_bytes", "Bytes waiting in the spool"),
    ("sessions_tracked", "authgate_sessions_tracked", "Play sessions this process holds in memory"),
    (
        "sessions_active",
        "authgate_play_sessions_active",
        "Active play sessions in PostgreSQL (last sweep; -1 unknown)",
    ),
    ("pg_up", "authgate_postgres_up", "Whether PostgreSQL answered the last write"),
    ("redis_up", "authgate_redis_up", "Whether Redis answered the last probe"),
    ("redis_ready", "authgate_redis_ready", "Whether every probed slot's session counts were ready"),
    ("listener_up", "authgate_listener_up", "Whether the entitlement listener is connected"),
]


def render(snapshots: dict[str, dict[str, Any]]) -> bytes:
    """Prometheus text for the snapshots of every worker."""
    lines: list[str] = []
    _answers(lines, snapshots)
    _latency(lines, snapshots)
    for attribute, name, help_text in _COUNTERS:
        _series(lines, name, "counter", help_text, snapshots, attribute)
    for attribute, name, help_text in _GAUGES:
        _series(lines, name, "gauge", help_text, snapshots, attribute)
    return ("\n".join(lines) + "\n").encode()


def _series(
    lines: list[str],
    name: str,
    kind: str,
    help_text: str,
    snapshots: dict[str, dict[str, Any]],
    attribute: str,
) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for worker, snap in snapshots.items():
        lines.append(f'{name}{{worker="{worker}"}} {_number(snap.get(attribute, 0))}')


def _answers(lines: list[str], snapshots: dict[str, dict[str, Any]]) -> None:
    name = "authgate_requests_total"
    lines += [f"# HELP {name} Answers to /auth by status and reason", f"# TYPE {name} counter"]
    for worker, snap in snapshots.items():
        lines.append(f'{name}{{worker="{worker}",status="200",reason="allowed"}} {snap["allowed"]}')
        for reason, count in sorted(snap["denied"].items()):
            lines.append(f'{name}{{worker="{worker}",status="403",reason="{reason}"}} {count}')
        lines.append(f'{name}{{worker="{worker}",status="503",reason="unavailable"}} {snap["unavailable"]}')
        for status, count in sorted(snap["http_errors"].items()):
            lines.append(f'{name}{{worker="{worker}",status="{status}",reason="http"}} {count}')


def _latency(lines: list[str], snapshots: dict[str, dict[str, Any]]) -> None:
    name = "authgate_request_seconds"
    lines += [f"# HELP {name} Time from a complete /auth request to its answer", f"# TYPE {name} histogram"]
    for worker, snap in snapshots.items():
        running = 0
        for bound, count in zip((*LATENCY_BOUNDS, "+Inf"), snap["latency"], strict=True):
            running += count
            lines.append(f'{name}_bucket{{worker="{worker}",le="{bound}"}} {running}')
        lines.append(f'{name}_sum{{worker="{worker}"}} {snap["latency_sum"]:.6f}')
        lines.append(f'{name}_count{{worker="{worker}"}} {running}')


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class SnapshotFiles:
    """Where the workers of one gateway leave their snapshots for each other."""

    def __init__(self, directory: Path, worker: str) -> None:
        self.directory = directory
        self.worker = worker

    def write(self, snapshot: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"worker-{self.worker}.json"
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(msgspec.json.encode(snapshot))
        os.replace(temporary, path)

    def read_all(self, own: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Every worker's recent snapshot, this process's taken live."""
        found: dict[str, dict[str, Any]] = {}
        now = time.time()
        for path in sorted(self.directory.glob("worker-*.json")) if self.directory.exists() else ():
            worker = path.stem.removeprefix("worker-")
            with contextlib.suppress(OSError, msgspec.DecodeError):
                if worker != self.worker and now - path.stat().st_mtime <= SNAPSHOT_MAX_AGE:
                    found[worker] = msgspec.json.decode(path.read_bytes())
        found[self.worker] = own
        return dict(sorted(found.items()))
