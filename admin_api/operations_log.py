"""``/operations``: the operations log, read forwards for billing and audit (docs/api.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import msgspec
from msgspec import Meta

from catena import operations
from catena.errors import InvalidInput, NotFound

from ._filters import MAX_ID, Where, decode_ids, fetch_page, id_at
from .auth import authenticate_manager
from .routing import Api, Call
from .schema import Response, TextId, Timestamp, iso, opt_text_id, text_id

api = Api("Operations", auth=authenticate_manager)

OperationType = Annotated[str, Meta(extra_json_schema={"enum": sorted(operations.TYPES)})]
Instant = Annotated[
    str,
    Meta(
        max_length=40,
        description="UTC: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (an offset or none, meaning UTC, also works)",
        examples=["2024-10-01", "2024-10-16T10:00:00Z"],
    ),
]


class OperationOut(Response):
    operationId: TextId
    type: str
    portalId: TextId
    subscriberId: TextId | None
    packageId: TextId | None
    createdAt: Timestamp
    updatedAt: Timestamp
    # Passed through as stored: PostgreSQL renders the JSON, nothing decodes and re-encodes it.
    payload: Annotated[msgspec.Raw, Meta(extra_json_schema={"type": "object"})]


class OperationList(Response):
    operations: list[OperationOut]
    next: str | None = None


class OperationsQuery(msgspec.Struct, kw_only=True):
    """Repeated parameters mean OR; different parameters combine with AND."""

    subscriberId: list[str] | None = None
    packageId: list[str] | None = None
    type: list[OperationType] | None = None
    created_at_gte: Instant | None = None
    created_at_lt: Instant | None = None
    cursor: str | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


COLUMNS = "id, portal_id, type, subscriber_id, package_id, payload::text AS payload, created_at, updated_at"
_GET = f"SELECT {COLUMNS} FROM operations WHERE portal_id = $1 AND id = $2"
_LIST = f"SELECT {COLUMNS} FROM operations WHERE {{where}} ORDER BY id LIMIT {{limit}}"

_INSTANT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$")
# Scripts that build URLs by hand send the '+' of an offset unencoded; it arrives as a space.
_BARE_OFFSET_RE = re.compile(r" (\d{2}:?\d{2})$")
_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def operation_out(row: asyncpg.Record) -> OperationOut:
    """The operation object, as ``GET /operations/{id}`` and webhooks send it."""
    created = iso(row["created_at"])
    return OperationOut(
        operationId=text_id(row["id"]),
        type=row["type"],
        portalId=text_id(row["portal_id"]),
        subscriberId=opt_text_id(row["subscriber_id"]),
        packageId=opt_text_id(row["package_id"]),
        createdAt=created,
        # Operations are written once; formatting one instant twice is a waste on long pages.
        updatedAt=created if row["updated_at"] == row["created_at"] else iso(row["updated_at"]),
        payload=msgspec.Raw(row["payload"].encode()),
    )


@api.get("/operations", query=OperationsQuery, response=OperationList)
async def list_operations(call: Call) -> OperationList:
    """The operations log, oldest first."""
    query: OperationsQuery = call.query
    rows, cursor = await fetch_page(
        call.services, "operations", _LIST, query, lambda after: _where(call.portal_id, query, after)
    )
    return OperationList(operations=[operation_out(r) for r in rows], next=cursor)


@api.get("/operations/{id}", response=OperationOut)
async def get_operation(call: Call) -> OperationOut:
    """One operation."""
    async with call.db.acquire() as conn:
        row = await conn.fetchrow(_GET, call.portal_id, call.path_id())
    if row is None:
        raise NotFound("no such operation", field="id")
    return operation_out(row)


def _where(portal_id: int, query: OperationsQuery, after: int | None) -> Where:
    where = Where()
    where.add("portal_id = {}", portal_id)
    # Inclusive lower bound: PostgreSQL prunes ranges by bounds, not knowing ids are integers.
    lower, upper = 0 if after is None else min(max(after + 1, 0), MAX_ID), MAX_ID
    gte, lt = _instant(query.created_at_gte, "created_at_gte"), _instant(query.created_at_lt, "created_at_lt")
    if gte is not None:
        lower = max(lower, id_at(_ms(gte)))
        where.add("created_at >= {}", gte)
    if lt is not None:
        if gte is not None and lt < gte:
            raise InvalidInput("created_at_lt must not be earlier than created_at_gte", field="created_at_lt")
        upper = id_at(_ms(lt, ceil=True))
        where.add("created_at < {}", lt)
    # Ids are time-ordered and the table is partitioned by id: these bounds prune months.
    where.add("id >= {} AND id < {}", lower, upper)
    _add_filters(where, query)
    return where


def _add_filters(where: Where, query: OperationsQuery) -> None:
    if query.subscriberId:
        where.add("subscriber_id = ANY({}::bigint[])", decode_ids(query.subscriberId, "subscriberId"))
    if query.packageId:
        where.add("package_id = ANY({}::bigint[])", decode_ids(query.packageId, "packageId"))
    if query.type:
        unknown = sorted(set(query.type) - operations.TYPES)
        if unknown:
            raise InvalidInput(
                f"unknown operation type {unknown[0]!r}; known types: {', '.join(sorted(operations.TYPES))}",
                field="type",
            )
        where.add("type = ANY({}::text[])", query.type)


def parse_instant(text: str, field: str) -> datetime:
    """``YYYY-MM-DD`` or an ISO 8601 timestamp; without an offset it is UTC."""
    candidate = _BARE_OFFSET_RE.sub(r"+\1", text.strip())
    if not _INSTANT_RE.match(candidate):
        raise _bad_instant(text, field, "expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")
    try:
        value = datetime.fromisoformat(candidate.replace("Z", "+00:00"))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise _bad_instant(text, field, str(exc)) from None


def _instant(text: str | None, field: str) -> datetime | None:
    return None if text is None else parse_instant(text, field)


def _bad_instant(text: str, field: str, why: str) -> InvalidInput:
    return InvalidInput(f"{field}: {text!r} is not a valid UTC date or time ({why})", field=field)


def _ms(value: datetime, *, ceil: bool = False) -> int:
    since = value - _EPOCH
    return -(-since // _MS) if ceil else since // _MS
