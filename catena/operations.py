"""The operations log (docs/api.md): one writer, called inside each mutation's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from . import ids

# Types the manual documents (billing relies on them), then the audit-only ones.
BILLING_TYPES = (
    "autoCreateSubscriber",
    "createSubscriber",
    "deleteSubscriber",
    "disableSubscriber",
    "enableSubscriber",
    "createPackageSubscriber",
    "deletePackageSubscriber",
    "createPackage",
    "deletePackage",
)
AUDIT_TYPES = (
    "updateSubscriber",
    "resetPlaybackToken",
    "terminatePlaySession",
    "updatePackage",
    "createChannel",
    "updateChannel",
    "deleteChannel",
    "addChannelToPackage",
    "removeChannelFromPackage",
    "addFreePackage",
    "removeFreePackage",
    "createEpgSource",
    "updateEpgSource",
    "deleteEpgSource",
    "createManager",
    "updateManager",
    "deleteManager",
    "updatePortal",
    "resetApiKey",
    "createWebhook",
    "deleteWebhook",
)
TYPES: frozenset[str] = frozenset(BILLING_TYPES + AUDIT_TYPES)

# Keys that must never reach the log, whatever a caller passes.
_SECRET_KEYS = frozenset(("password", "apiKey", "api_key", "playback_token", "token", "secret"))

# created_at is the id's own instant, so that date filters and id ranges (which
# prune the monthly partitions) always agree about which side of a boundary a row is.
_INSERT = """
INSERT INTO operations (id, portal_id, type, subscriber_id, package_id, payload, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
"""


async def record(
    conn: asyncpg.Connection,
    portal_id: int,
    type: str,
    actor: str,
    *,
    subscriber_id: int | None = None,
    package_id: int | None = None,
    payload: Mapping[str, Any] | None = None,
) -> int:
    """Write one operation row and return its id.

    ``actor`` is the acting manager's email, ``"apiKey"`` for the portal's API key,
    or another principal name (``"client"`` for the subscriber apps); it is stored
    in the payload as ``managerEmail``.  Call it inside the transaction that makes
    the change, so a failed change leaves no row behind.
    """
    if type not in TYPES:
        raise ValueError(f"unknown operation type {type!r}")
    body = {k: v for k, v in (payload or {}).items() if k not in _SECRET_KEYS}
    body["managerEmail"] = actor
    op_id = ids.new_id()
    at = datetime.fromtimestamp(ids.timestamp_ms(op_id) / 1000, UTC)
    await conn.execute(_INSERT, op_id, portal_id, type, subscriber_id, package_id, body, at)
    return op_id
