"""Webhook delivery: every new operation, POSTed to each of its portal's webhooks, in order.

Operations reach a webhook in the order of the portal's operations feed (commit
order, see ``catena/migrations/0200_subscribers_webhooks.sql``), at least once.  A
webhook is worked on by one worker at a time, so any number of admin_api instances
may run this loop; the worker POSTs the operation object, exactly as
``GET /operations/{id}`` returns it, and moves the webhook's position only after a
2xx.  Anything else stops that webhook until its next attempt,
``webhook_retry_base`` doubled per consecutive failure up to ``webhook_retry_max``;
later operations wait behind the failing one.

No database connection is held while a receiver is being waited for: a worker
claims a webhook by moving its ``next_attempt_at`` a lease ahead (one short
statement), gives the connection back, POSTs, then records the answer with a
statement that also renews the lease, and only while the lease is still the one
it set.  A worker that dies mid-delivery leaves a lease that runs out after
``webhook_timeout`` + :data:`LEASE_MARGIN` seconds, and another worker goes on from
the last recorded position (at least once).  While a delivery is under way,
``nextAttemptAt`` is when its lease runs out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime

import aiohttp
import asyncpg
import msgspec
import prometheus_client
from aiohttp import web

from catena import __version__, ids, outbound, tasks
from catena.settings import AdminSettings

from . import keys
from .operations import COLUMNS, operation_out

log = logging.getLogger("admin_api.webhooks")

SIGNATURE_HEADER = "X-Catena-Signature"
OPERATION_HEADER = "X-Catena-Operation-Id"
WEBHOOK_HEADER = "X-Catena-Webhook-Id"
PRUNE_EVERY = 60.0
MEASURE_EVERY = 15.0
# A claim outlives one POST by this much (database round trips, a slow event loop).
LEASE_MARGIN = 15.0
_ERROR_CHARS = 500

_DUE = """
SELECT w.id FROM webhooks w
WHERE w.next_attempt_at <= now()
  AND EXISTS (SELECT 1 FROM operation_feed f WHERE f.portal_id = w.portal_id AND f.seq > w.last_delivered_seq)
ORDER BY w.next_attempt_at, w.id LIMIT $1
"""
# Claim a due webhook for one lease: ``next_attempt_at`` moves past now, so no
# other worker sees it as due; the value set is the claim's token.
_CLAIM = """
UPDATE webhooks SET next_attempt_at = now() + make_interval(secs => $2)
WHERE id = $1 AND next_attempt_at <= now()
RETURNING id, portal_id, url, secret, last_delivered_seq, next_attempt_at AS lease
"""
# Give a claimed webhook back, due at once (more may be pending).
_RELEASE = "UPDATE webhooks SET next_attempt_at = now() WHERE id = $1 AND next_attempt_at = $2"
_PENDING = f"""
SELECT f.seq, o.* FROM operation_feed f
LEFT JOIN LATERAL (SELECT {COLUMNS} FROM operations WHERE id = f.operation_id) o ON true
WHERE f.portal_id = $1 AND f.seq > $2 ORDER BY f.seq LIMIT $3
"""
# Record a 2xx and renew the lease, only while the lease is ours; the new token.
_DELIVERED = """
UPDATE webhooks SET last_delivered_seq = $2,
       last_delivered_operation_id = coalesce($3, last_delivered_operation_id),
       last_delivered_at = now(), last_attempt_at = now(), failures = 0, last_error = NULL,
       next_attempt_at = now() + make_interval(secs => $5)
WHERE id = $1 AND last_delivered_seq < $2 AND next_attempt_at = $4
RETURNING next_attempt_at
"""
_FAILED = """
UPDATE webhooks SET failures = failures + 1, last_error = $2, last_attempt_at = now(),
       next_attempt_at = now() + make_interval(secs => least($3 * power(2, least(failures, 40)), $4))
WHERE id = $1 AND next_attempt_at = $5
"""
# Feed rows every webhook of their portal is past, and rows of portals without webhooks.
# What the backlog gauges report (every webhook of the deployment, not of one process).
_BACKLOG = """
SELECT (SELECT count(*) FROM webhooks w JOIN operation_feed f
        ON f.portal_id = w.portal_id AND f.seq > w.last_delivered_seq) AS backlog,
       (SELECT count(*) FROM webhooks WHERE failures > 0) AS failing
"""
_PRUNE_DELIVERED = """
DELETE FROM operation_feed f
USING (SELECT portal_id, min(last_delivered_seq) AS done FROM webhooks GROUP BY portal_id) w
WHERE f.portal_id = w.portal_id AND f.seq <= w.done
"""
_PRUNE_ORPHANS = """
DELETE FROM operation_feed f WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.portal_id = f.portal_id)
"""


DELIVERIES = prometheus_client.Counter(
    "catena_webhook_deliveries_total", "Webhook POSTs by result (delivered = 2xx)", ["result"]
)
BACKLOG = prometheus_client.Gauge(
    "catena_webhook_backlog_operations", "Operations waiting for delivery, summed over every webhook"
)
FAILING = prometheus_client.Gauge("catena_webhook_failing", "Webhooks whose last attempt failed")


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Deliverer:
    """Delivers pending operations to due webhooks; safe to run in many processes at once."""

    def __init__(self, pool: asyncpg.Pool, settings: AdminSettings, session: aiohttp.ClientSession) -> None:
        self.pool = pool
        self.settings = settings
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout)
        self.lease = settings.webhook_timeout + LEASE_MARGIN
        self.backoff = (settings.webhook_retry_base, settings.webhook_retry_max)

    async def run(self) -> None:
        """Deliver until cancelled; sleep only when there was nothing to do."""
        pruned_at = measured_at = 0.0
        while True:
            delivered = 0
            try:
                delivered = await self.run_once()
                if time.monotonic() - measured_at > MEASURE_EVERY:
                    await self.measure()
                    measured_at = time.monotonic()
                if time.monotonic() - pruned_at > PRUNE_EVERY:
                    await self.prune()
                    pruned_at = time.monotonic()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhook delivery paused: %s", exc)
            except Exception:
                # A bug must not end deliveries for the life of the process: log it, go on.
                log.exception("webhook delivery pass failed")
            if not delivered:
                await asyncio.sleep(self.settings.webhook_poll_interval)

    async def run_once(self) -> int:
        """One pass over the due webhooks; returns how many operations were delivered."""
        due = await self.pool.fetch(_DUE, self.settings.webhook_concurrency * 4)
        limit = asyncio.Semaphore(self.settings.webhook_concurrency)

        async def one(webhook_id: int) -> int:
            async with limit:
                return await self.deliver(webhook_id)

        results = await asyncio.gather(*(one(r["id"]) for r in due), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("webhook delivery failed", exc_info=result)
        return sum(r for r in results if isinstance(r, int))

    async def deliver(self, webhook_id: int) -> int:
        """Deliver one webhook's pending operations unless another worker has claimed it."""
        async with self.pool.acquire() as conn:
            hook = await conn.fetchrow(_CLAIM, webhook_id, self.lease)
            if hook is None:
                return 0
            pending = await conn.fetch(
                _PENDING, hook["portal_id"], hook["last_delivered_seq"], self.settings.webhook_batch
            )
        return await self._deliver_claimed(hook, pending)

    async def _deliver_claimed(self, hook: asyncpg.Record, pending: list[asyncpg.Record]) -> int:
        """POST ``pending`` in order with no connection held; record each answer while the lease holds."""
        lease: datetime | None = hook["lease"]
        delivered = 0
        for row in pending:
            # An operation whose partition was dropped meanwhile is skipped, not retried forever.
            error = await self._post(hook, row) if row["id"] is not None else None
            if error is not None:
                await self.pool.execute(_FAILED, hook["id"], error, *self.backoff, lease)
                return delivered
            lease = await self.pool.fetchval(_DELIVERED, hook["id"], row["seq"], row["id"], lease, self.lease)
            if lease is None:
                return delivered  # deleted, or the lease ran out and another worker took over
            delivered += 1
        await self.pool.execute(_RELEASE, hook["id"], lease)
        return delivered

    async def _post(self, hook: asyncpg.Record, row: asyncpg.Record) -> str | None:
        """POST one operation; ``None`` on a 2xx answer, else why it failed."""
        error = await self._send(hook, row)
        DELIVERIES.labels("failed" if error else "delivered").inc()
        return error

    async def _send(self, hook: asyncpg.Record, row: asyncpg.Record) -> str | None:
        operation = operation_out(row)
        body = msgspec.json.encode(operation)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"Catena-Webhooks/{__version__}",
            SIGNATURE_HEADER: sign(hook["secret"], body),
            OPERATION_HEADER: operation.operationId,
            WEBHOOK_HEADER: ids.encode(hook["id"]),
        }
        try:
            async with self.session.post(
                hook["url"], data=body, headers=headers, allow_redirects=False, timeout=self.timeout
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status} {response.reason or ''}".strip()
        except TimeoutError:
            return f"no answer within {self.settings.webhook_timeout:g} s"
        except (aiohttp.ClientError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]

    async def measure(self) -> None:
        """Set the backlog gauges from the database."""
        row = await self.pool.fetchrow(_BACKLOG)
        BACKLOG.set(row["backlog"])
        FAILING.set(row["failing"])

    async def prune(self) -> None:
        """Forget feed entries that no webhook still needs."""
        async with self.pool.acquire() as conn:
            await conn.execute(_PRUNE_DELIVERED)
            await conn.execute(_PRUNE_ORPHANS)


async def background(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: run the delivery loop for as long as the application runs."""
    settings = app[keys.SETTINGS]
    # Connects only where CATENA_OUTBOUND_ALLOW allows: webhook URLs are the tenants'.
    session = outbound.client_session(outbound.policy(settings.outbound_allow))
    task = asyncio.create_task(Deliverer(app[keys.DB], settings, session).run())
    yield
    await tasks.cancel_all([task])
    await session.close()
