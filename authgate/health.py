"""What one gateway process knows about its servers, and ``GET /health``.

The flags are set by whoever last talked to a server (the Redis probe, the
recorder, the listener); the request path only reads them.  ``/health`` answers
``200`` while the gateway can decide (either server reachable) and ``503`` when it
cannot, with the state of each.  ``redis`` is ``up``, ``down`` (unreachable, hung:
the gateway answers without it), ``partial`` (some of a cluster's slot ranges
unreachable: admissions of their subscribers get 503) or ``rebuilding`` (session
counts being rebuilt after Redis lost them: admissions there wait).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from . import responses


class HealthBody(msgspec.Struct):
    status: str
    postgres: str
    redis: str
    listener: str
    spoolBytes: int


class Health:
    """Reachability of Redis, PostgreSQL and the entitlement listener."""

    def __init__(self, on_change: Callable[[bool], None]) -> None:
        self.redis_up = False
        # Since when Redis is lost (it starts lost: counts as lost since start).
        self.redis_lost_at = time.monotonic()
        # Reachable, but part of a cluster is not / some counts are being rebuilt.
        self.redis_partial = False
        self.redis_rebuilding = False
        self.pg_up = False
        self.listener_up = False
        # Told whether in-process entries can be trusted without a staleness limit.
        self._on_change = on_change

    def set_redis(self, up: bool) -> None:
        lost = self.redis_up and not up
        if lost:
            self.redis_lost_at = time.monotonic()
        self.redis_up = up
        self._changed()
        if lost:
            self.on_redis_lost()

    def on_redis_lost(self) -> None:
        """Called once when Redis is lost (the worker probes again at once)."""

    def redis_lost_for(self) -> float:
        """Seconds since Redis was lost (0 while it answers)."""
        return 0.0 if self.redis_up else time.monotonic() - self.redis_lost_at

    def set_pg(self, up: bool) -> None:
        self.pg_up = up

    def set_listener(self, up: bool) -> None:
        self.listener_up = up
        self._changed()

    def _changed(self) -> None:
        self._on_change(self.redis_up and self.listener_up)

    def redis_state(self) -> str:
        if not self.redis_up:
            return "down"
        if self.redis_partial:
            return "partial"
        return "rebuilding" if self.redis_rebuilding else "up"

    def response(self, spool_bytes: int) -> bytes:
        can_decide = self.redis_up or self.pg_up
        redis = self.redis_state()
        body = HealthBody(
            status="ok" if redis == "up" and self.pg_up and self.listener_up else "degraded",
            postgres="up" if self.pg_up else "down",
            redis=redis,
            listener="up" if self.listener_up else "down",
            spoolBytes=spool_bytes,
        )
        return responses.encode(200 if can_decide else 503, msgspec.json.encode(body))
