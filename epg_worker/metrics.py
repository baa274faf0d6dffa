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
DURATION = prometheus_client.Histogram(
    "catena_epg_fetch_seconds",
    "Download plus import time of finished EPG updates, by final status",
    ["status"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
# Set from the database at each scrape (every source of the deployment, not of this worker).
SOURCES_FAILING = prometheus_client.Gauge(
    "catena_epg_sources_failing", "EPG sources whose last update ended in error or timeout"
)
STALEST_SOURCE = prometheus_client.Gauge(
    "catena_epg_stalest_source_age_seconds",
    "Seconds since the EPG source longest without a successful update last had one (or was created)",
)
