"""``/operations``: the operations log, read forwards for billing and audit (docs/api.md)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import msgspec
from aiohttp import web
from msgspec import Meta

from catena import ids, operations
from catena.errors import InvalidInput, NotFound

from . import csv_export
from ._filters import MAX_ID, Where, add_id_filter, decode_ids, fetch_page, id_at
from .auth import authenticate_manager
from .principal import Principal
from .routing import Api, Call
from .schema import Response, TextId
from .services import Services

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


# Whole seconds in UTC (the query truncates): msgspec writes them as 2024-10-16T14:30:00Z
# in C, several times faster than formatting a string per row in Python.
UtcSeconds = Annotated[datetime, Meta(examples=["2024-10-16T14:30:00Z"])]


class OperationOut(Response):
    operationId: TextId
    type: str
    portalId: TextId
    subscriberId: TextId | None
    packageId: TextId | None
    createdAt: UtcSeconds
    updatedAt: UtcSeconds
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
    managerEmail: (
        list[Annotated[str, Meta(max_length=320, description="the acting manager's email, or apiKey")]] | None
    ) = None
    created_at_gte: Instant | None = None
    created_at_lt: Instant | None = None
    cursor: str | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


# The payload arrives as UTF-8 bytes and is passed through as raw JSON (no decoding
# to str and encoding back); times in whole seconds, which msgspec writes itself.
COLUMNS = """id, portal_id, type, subscriber_id, package_id, convert_to(payload::text, 'UTF8') AS payload,
       date_trunc('second', created_at) AS created_at, date_trunc('second', updated_at) AS updated_at"""
_GET = f"SELECT {COLUMNS} FROM operations WHERE portal_id = $1 AND id = $2"
_LIST = f"SELECT {COLUMNS} FROM operations WHERE {{where}} ORDER BY id LIMIT {{limit}}"
# The same rows for a CSV export: every match, through a server-side cursor, with
# PostgreSQL writing the times (ISO 8601 UTC) while Python formats the batch before.
_iso, _quoted = csv_export.ISO_UTC.format, csv_export.QUOTED.format
_EXPORT = f"""
SELECT id, type, subscriber_id, package_id, {_quoted("payload::text")} AS payload,
       {_iso("created_at")} AS created_at, {_iso("updated_at")} AS updated_at
FROM operations WHERE {{where}} ORDER BY id
"""
# CSV columns: the JSON object's fields, in its order.
CSV_HEADER = OperationOut.__struct_fields__

_INSTANT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$")
# Scripts that build URLs by hand send the '+' of an offset unencoded; it arrives as a space.
_BARE_OFFSET_RE = re.compile(r" (\d{2}:?\d{2})$")
_MS = timedelta(milliseconds=1)
_encode = ids.encode
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def operation_out(row: asyncpg.Record, portal: str | None = None) -> OperationOut:
    """The operation object, as ``GET /operations/{id}`` and webhooks send it.

    ``portal`` is the portal's text id when the caller has it already (a page is
    all one portal's).
    """
    subscriber, package = row["subscriber_id"], row["package_id"]
    return OperationOut(
        operationId=_encode(row["id"]),
        type=row["type"],
        portalId=portal or _encode(row["portal_id"]),
        subscriberId=None if subscriber is None else _encode(subscriber),
        packageId=None if package is None else _encode(package),
        createdAt=row["created_at"],
        updatedAt=row["updated_at"],
        payload=msgspec.Raw(row["payload"]),
    )


def operations_out(rows: Sequence[asyncpg.Record], portal: str) -> list[OperationOut]:
    """A page of operations of one portal: each id column encoded in one call."""
    operation_ids = ids.encode_many([r["id"] for r in rows])
    subscribers = ids.encode_optional_many([r["subscriber_id"] for r in rows])
    packages = ids.encode_optional_many([r["package_id"] for r in rows])
    raw, out = msgspec.Raw, OperationOut
    return [
        out(operationId=o, type=r["type"], portalId=portal, subscriberId=s, packageId=p,
            createdAt=r["created_at"], updatedAt=r["updated_at"], payload=raw(r["payload"]))
        for o, s, p, r in zip(operation_ids, subscribers, packages, rows, strict=True)
    ]  # fmt: skip


def _csv_lines(portal: str) -> csv_export.Convert:
    def convert(rows: list[asyncpg.Record]) -> csv_export.Lines:
        operation_ids = ids.encode_many([r["id"] for r in rows])
        subscribers = ids.encode_optional_many([r["subscriber_id"] for r in rows])
        packages = ids.encode_optional_many([r["package_id"] for r in rows])
        return [
            f"{o},{r['type']},{portal},{s or ''},{p or ''},{r['created_at']},{r['updated_at']},{r['payload']}"
            for o, s, p, r in zip(operation_ids, subscribers, packages, rows, strict=True)
        ]

    return convert


# Actions: what the JSON handlers below and the console call.


async def list_operations(services: Services, actor: Principal, query: OperationsQuery) -> OperationList:
    """The operations log, oldest first."""
    rows, cursor = await fetch_page(
        services, "operations", _LIST, query, lambda after: _where(actor.portal_id, query, after)
    )
    return OperationList(operations=operations_out(rows, ids.encode(actor.portal_id)), next=cursor)


async def export_operations(
    services: Services, actor: Principal, query: OperationsQuery
) -> csv_export.CsvExport:
    """Every operation the filters match, oldest first, as CSV; ``cursor`` starts after a page."""
    after = services.cursors.decode("operations", query.cursor, (int,))
    where = _where(actor.portal_id, query, after[0] if after else None)
    batches = csv_export.cursor_batches(
        services, _EXPORT.format(where=where.sql), where.args, _csv_lines(ids.encode(actor.portal_id))
    )
    return csv_export.CsvExport(csv_export.filename("operations"), CSV_HEADER, batches)


async def get_operation(services: Services, actor: Principal, operation_id: int) -> OperationOut:
    """One operation; 404 naming ``id`` for another portal's or an unknown one."""
    async with services.db.acquire() as conn:
        row = await conn.fetchrow(_GET, actor.portal_id, operation_id)
    if row is None:
        raise NotFound("no such operation", field="id")
    return operation_out(row)


# The JSON API: decode, call the action, encode.


@api.get("/operations", response=OperationList, csv=True, description=csv_export.DESCRIPTION)
async def handle_list_operations(call: Call[None, OperationsQuery]) -> OperationList | web.StreamResponse:
    """The operations log, oldest first."""
    if call.csv:
        export = await export_operations(call.services, call.caller, call.query)
        return await csv_export.stream(call.request, export)
    return await list_operations(call.services, call.caller, call.query)


@api.get("/operations/{id}", response=OperationOut)
async def handle_get_operation(call: Call[None, None]) -> OperationOut:
    """One operation."""
    return await get_operation(call.services, call.caller, call.path_id())


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
        add_id_filter(where, "subscriber_id", decode_ids(query.subscriberId, "subscriberId"))
    if query.packageId:
        add_id_filter(where, "package_id", decode_ids(query.packageId, "packageId"))
    if query.type:
        unknown = sorted(set(query.type) - operations.TYPES)
        if unknown:
            raise InvalidInput(
                f"unknown operation type {unknown[0]!r}; known types: {', '.join(sorted(operations.TYPES))}",
                field="type",
            )
        where.add("type = ANY({}::text[])", query.type)
    if query.managerEmail:
        # Who acted is in the payload (catena.operations.record writes managerEmail).
        where.add("payload->>'managerEmail' = ANY({}::text[])", [e.strip() for e in query.managerEmail])


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
