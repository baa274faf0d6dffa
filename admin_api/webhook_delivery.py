"""Webhook delivery: every new operation, POSTed to each of its portal's webhooks, in order.

Operations reach a webhook in the order of the portal's operations feed (commit
order, see ``catena/migrations/0200_subscribers_webhooks.sql``), at least once.  A
webhook is worked on by one worker at a time (a session advisory lock, so any
number of admin_api instances may run this loop); the worker POSTs the operation
object, exactly as ``GET /operations/{id}`` returns it, and moves the webhook's
position only after a 2xx.  Anything else stops that webhook until its next
attempt, ``webhook_retry_base`` doubled per consecutive failure up to
``webhook_retry_max``; later operations wait behind the failing one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import msgspec
from aiohttp import web

from catena import __version__, ids, tasks
from catena.settings import AdminSettings

from . import keys
from .operations_log import COLUMNS, operation_out

log = logging.getLogger("admin_api.webhooks")

SIGNATURE_HEADER = "X-Catena-Signature"
OPERATION_HEADER = "X-Catena-Operation-Id"
WEBHOOK_HEADER = "X-Catena-Webhook-Id"
PRUNE_EVERY = 60.0
_ERROR_CHARS = 500

_DUE = """
SELECT w.id FROM webhooks w
WHERE w.next_attempt_at <= now()
  AND EXISTS (SELECT 1 FROM operation_feed f WHERE f.portal_id = w.portal_id AND f.seq > w.last_delivered_seq)
ORDER BY w.next_attempt_at, w.id LIMIT $1
"""
# Advisory lock class 2002 (two-key form): one webhook being delivered.
_TRY_LOCK = "SELECT pg_try_advisory_lock(2002, hashint8($1))"
_UNLOCK = "SELECT pg_advisory_unlock(2002, hashint8($1))"
_HOOK = """
SELECT id, portal_id, url, secret, last_delivered_seq FROM webhooks
WHERE id = $1 AND next_attempt_at <= now()
"""
_PENDING = f"""
SELECT f.seq, o.* FROM operation_feed f
LEFT JOIN LATERAL (SELECT {COLUMNS} FROM operations WHERE id = f.operation_id) o ON true
WHERE f.portal_id = $1 AND f.seq > $2 ORDER BY f.seq LIMIT $3
"""
_DELIVERED = """
UPDATE webhooks SET last_delivered_seq = $2,
       last_delivered_operation_id = coalesce($3, last_delivered_operation_id),
       last_delivered_at = now(), last_attempt_at = now(), failures = 0, last_error = NULL
WHERE id = $1 AND last_delivered_seq < $2
RETURNING id
"""
_FAILED = """
UPDATE webhooks SET failures = failures + 1, last_error = $2, last_attempt_at = now(),
       next_attempt_at = now() + make_interval(secs => least($3 * power(2, least(failures, 40)), $4))
WHERE id = $1
"""
# Feed rows every webhook of their portal is past, and rows of portals without webhooks.
_PRUNE_DELIVERED = """
DELETE FROM operation_feed f
USING (SELECT portal_id, min(last_delivered_seq) AS done FROM webhooks GROUP BY portal_id) w
WHERE f.portal_id = w.portal_id AND f.seq <= w.done
"""
_PRUNE_ORPHANS = """
DELETE FROM operation_feed f WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.portal_id = f.portal_id)
"""


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

    async def run(self) -> None:
        """Deliver until cancelled; sleep only when there was nothing to do."""
        pruned_at = 0.0
        while True:
            delivered = 0
            try:
                delivered = await self.run_once()
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
        """Deliver one webhook's pending operations unless another worker holds it."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval(_TRY_LOCK, webhook_id):
                return 0
            try:
                return await self._deliver_locked(conn, webhook_id)
            finally:
                await conn.execute(_UNLOCK, webhook_id)

    async def _deliver_locked(self, conn: asyncpg.Connection, webhook_id: int) -> int:
        # Read again under the lock: another worker may have moved it meanwhile.
        hook = await conn.fetchrow(_HOOK, webhook_id)
        if hook is None:
            return 0
        batch = self.settings.webhook_batch
        pending = await conn.fetch(_PENDING, hook["portal_id"], hook["last_delivered_seq"], batch)
        delivered = 0
        for row in pending:
            # An operation whose partition was dropped meanwhile is skipped, not retried forever.
            error = await self._post(hook, row) if row["id"] is not None else None
            if error is not None:
                await self._failed(conn, webhook_id, error)
                break
            if await conn.fetchval(_DELIVERED, webhook_id, row["seq"], row["id"]) is None:
                break  # deleted meanwhile
            delivered += 1
        return delivered

    async def _post(self, hook: asyncpg.Record, row: asyncpg.Record) -> str | None:
        """POST one operation; ``None`` on a 2xx answer, else why it failed."""
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

    async def _failed(self, conn: asyncpg.Connection, webhook_id: int, error: str) -> None:
        base, cap = self.settings.webhook_retry_base, self.settings.webhook_retry_max
        await conn.execute(_FAILED, webhook_id, error, base, cap)

    async def prune(self) -> None:
        """Forget feed entries that no webhook still needs."""
        async with self.pool.acquire() as conn:
            await conn.execute(_PRUNE_DELIVERED)
            await conn.execute(_PRUNE_ORPHANS)


async def background(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: run the delivery loop for as long as the application runs."""
    settings = app[keys.SETTINGS]
    session = aiohttp.ClientSession()
    task = asyncio.create_task(Deliverer(app[keys.DB], settings, session).run())
    yield
    await tasks.cancel_all([task])
    await session.close()
