"""``/webhooks``: URLs that receive every new operation of the portal (manual §5.2.8).

Delivery itself is :mod:`admin_api.webhook_delivery`.  The signing secret is
generated here and shown once, in the answer to ``POST /webhooks``.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated

import asyncpg
from msgspec import UNSET, Meta, UnsetType
from yarl import URL

from catena import ids, operations, outbound
from catena.errors import Conflict, InvalidInput, NotFound

from .auth import authenticate_manager
from .principal import Principal
from .routing import Api, Call
from .schema import PageQuery, Request, Response, TextId, Timestamp, iso, opt_iso, opt_text_id, text_id
from .services import Services

api = Api("Webhooks", auth=authenticate_manager)

WebhookUrl = Annotated[
    str,
    Meta(
        max_length=2000,
        extra_json_schema={"format": "uri"},
        description="http or https URL that receives a POST per operation",
        examples=["https://billing.example.com/catena/operations"],
    ),
]


class WebhookCreate(Request):
    url: WebhookUrl


class WebhookOut(Response):
    webhookId: TextId
    portalId: TextId
    url: str
    lastDeliveredOperationId: TextId | None
    lastDeliveredAt: Timestamp | None
    lastAttemptAt: Timestamp | None
    lastError: str | None
    failures: int
    nextAttemptAt: Timestamp
    backlog: int
    createdAt: Timestamp
    updatedAt: Timestamp
    # Only in the answer to POST /webhooks: keep it, it is never shown again.
    secret: str | UnsetType = UNSET


class WebhookList(Response):
    webhooks: list[WebhookOut]
    next: str | None = None


_SELECT = """
SELECT w.*, (SELECT count(*) FROM operation_feed f
             WHERE f.portal_id = w.portal_id AND f.seq > w.last_delivered_seq) AS backlog
FROM webhooks w
"""
_GET = _SELECT + "WHERE w.portal_id = $1 AND w.id = $2"
_LIST = _SELECT + "WHERE w.portal_id = $1 AND ($2::bigint IS NULL OR w.id > $2) ORDER BY w.id LIMIT $3"
# The feed lock orders this registration among the portal's commits: the webhook
# receives exactly the operations committed after it.
_FEED_LOCK = "SELECT pg_advisory_xact_lock(2001, hashint8($1))"
_FEED_POSITION = "SELECT nextval('operation_feed_seq')"
_INSERT = """
INSERT INTO webhooks (id, portal_id, url, secret, last_delivered_seq) VALUES ($1, $2, $3, $4, $5)
RETURNING *, 0::bigint AS backlog
"""
_DELETE = "DELETE FROM webhooks WHERE portal_id = $1 AND id = $2 RETURNING id, url"
# Spaces and control characters (NUL included) have no business in a URL.
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
_RETRY = "UPDATE webhooks SET next_attempt_at = now() WHERE portal_id = $1 AND id = $2"


def webhook_out(row: asyncpg.Record) -> WebhookOut:
    return WebhookOut(
        webhookId=text_id(row["id"]),
        portalId=text_id(row["portal_id"]),
        url=row["url"],
        lastDeliveredOperationId=opt_text_id(row["last_delivered_operation_id"]),
        lastDeliveredAt=opt_iso(row["last_delivered_at"]),
        lastAttemptAt=opt_iso(row["last_attempt_at"]),
        lastError=row["last_error"],
        failures=row["failures"],
        nextAttemptAt=iso(row["next_attempt_at"]),
        backlog=row["backlog"],
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


# Actions: what the JSON handlers below and the console call.  Reads need isAdmin too.


async def list_webhooks(services: Services, actor: Principal, query: PageQuery) -> WebhookList:
    """The portal's webhooks and their delivery state (needs isAdmin)."""
    actor.require("admin", reading=True)
    after = services.cursors.decode("webhooks", query.cursor, (int,))
    async with services.db.acquire() as conn:
        rows = await conn.fetch(_LIST, actor.portal_id, after[0] if after else None, query.limit + 1)
    rows, cursor = services.cursors.page(rows, query.limit, "webhooks", lambda r: (r["id"],))
    return WebhookList(webhooks=[webhook_out(r) for r in rows], next=cursor)


async def get_webhook(services: Services, actor: Principal, webhook_id: int) -> WebhookOut:
    """One webhook and its delivery state (needs isAdmin)."""
    actor.require("admin", reading=True)
    async with services.db.acquire() as conn:
        return webhook_out(_found(await conn.fetchrow(_GET, actor.portal_id, webhook_id)))


async def create_webhook(services: Services, actor: Principal, body: WebhookCreate) -> WebhookOut:
    """Register a URL; it receives every operation committed from now on. The secret is shown once."""
    actor.require("admin")
    url = _checked_url(body.url)
    outbound.check_url(outbound.policy(services.settings.outbound_allow), url, "url")
    secret = secrets.token_urlsafe(32)
    async with services.db.acquire() as conn, conn.transaction():
        await conn.execute(_FEED_LOCK, actor.portal_id)
        position = await conn.fetchval(_FEED_POSITION)
        try:
            row = await conn.fetchrow(_INSERT, ids.new_id(), actor.portal_id, url, secret, position)
        except asyncpg.UniqueViolationError:
            raise Conflict("this URL is already a webhook of this portal", field="url") from None
        await _record(conn, actor, "createWebhook", row)
    out = webhook_out(row)
    out.secret = secret
    return out


async def delete_webhook(services: Services, actor: Principal, webhook_id: int) -> None:
    """Stop delivering to a webhook (needs isAdmin)."""
    actor.require("admin")
    async with services.db.acquire() as conn, conn.transaction():
        row = _found(await conn.fetchrow(_DELETE, actor.portal_id, webhook_id))
        await _record(conn, actor, "deleteWebhook", row)


async def retry_webhook(services: Services, actor: Principal, webhook_id: int) -> WebhookOut:
    """Retry a failing webhook now instead of at ``nextAttemptAt`` (needs isAdmin)."""
    actor.require("admin")
    async with services.db.acquire() as conn:
        await conn.execute(_RETRY, actor.portal_id, webhook_id)
        return webhook_out(_found(await conn.fetchrow(_GET, actor.portal_id, webhook_id)))


# The JSON API: decode, call the action, encode.


@api.get("/webhooks", response=WebhookList, permission="admin")
async def handle_list_webhooks(call: Call[None, PageQuery]) -> WebhookList:
    """The portal's webhooks and their delivery state (needs isAdmin)."""
    return await list_webhooks(call.services, call.caller, call.query)


@api.get("/webhooks/{id}", response=WebhookOut, permission="admin")
async def handle_get_webhook(call: Call[None, None]) -> WebhookOut:
    """One webhook and its delivery state (needs isAdmin)."""
    return await get_webhook(call.services, call.caller, call.path_id())


@api.post("/webhooks", response=WebhookOut, permission="admin")
async def handle_create_webhook(call: Call[WebhookCreate, None]) -> WebhookOut:
    """Register a URL; it receives every operation committed from now on. The secret is shown once."""
    return await create_webhook(call.services, call.caller, call.body)


@api.delete("/webhooks/{id}", permission="admin")
async def handle_delete_webhook(call: Call[None, None]) -> None:
    """Stop delivering to a webhook (needs isAdmin)."""
    await delete_webhook(call.services, call.caller, call.path_id())


@api.post("/webhooks/{id}/retry", response=WebhookOut, permission="admin")
async def handle_retry_webhook(call: Call[None, None]) -> WebhookOut:
    """Retry a failing webhook now instead of at ``nextAttemptAt`` (needs isAdmin)."""
    return await retry_webhook(call.services, call.caller, call.path_id())


def _checked_url(text: str) -> str:
    try:
        url = URL(text)
        valid = (
            url.scheme.lower() in ("http", "https")
            and bool(url.host)
            and url.port is not None
            and not _UNSAFE.search(text)
        )
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise InvalidInput(f"url must be an absolute http(s) URL with a host, got {text!r}", field="url")
    return text


def _found(row: asyncpg.Record | None) -> asyncpg.Record:
    if row is None:
        raise NotFound("no such webhook", field="id")
    return row


async def _record(conn: asyncpg.Connection, actor: Principal, kind: str, row: asyncpg.Record) -> None:
    # Credentials may hide in a URL's user part or query string; the log keeps neither.
    shown = str(URL(row["url"]).with_user(None).with_query(None).with_fragment(None))
    payload = {"webhookId": text_id(row["id"]), "url": shown}
    await operations.record(conn, actor.portal_id, kind, actor.actor, payload=payload)
