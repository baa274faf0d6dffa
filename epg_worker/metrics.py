"""Prometheus metrics of the EPG worker (``GET /metrics``)."""

from __future__ import annotations

import prometheus_client

FETCHES = prometheus_client.Counter(
    "catena_epg_fetches_total", "EPG update attempts by final status", ["status"]
)
PROGRAMS = prometheus_client.Counter(
    "catena_epg_programs_imported_total", "Programmes written by successful imports"
)
ACTIVE = prometheus_client.Gauge("catena_epg_updates_running", "EPG updates in progress")
SCHEDULED = prometheus_client.Counter(
    "catena_epg_scheduled_total", "Updates queued because a source's period had passed"
)
RECLAIMED = prometheus_client.Counter(
    "catena_epg_reclaimed_total", "Jobs queued again after their worker stopped responding"
)
PRUNED = prometheus_client.Counter(
    "catena_epg_programs_pruned_total", "Programmes deleted for being older than the archive depth"
)
