"""Operations (manual §5.2): the operations log, filtered, one operation's detail, CSV export.

The list is :func:`admin_api.operations.list_operations` (oldest first, as the
API reads it for billing; keyset pages), the detail
:func:`~admin_api.operations.get_operation` and the export
:func:`~admin_api.operations.export_operations`, with the filters of the form
turned into the API's :class:`~admin_api.operations.OperationsQuery`.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from aiohttp import web

from catena import operations as operation_types
from catena.errors import CatenaError

from .. import csv_export
from .. import operations as operations_api
from ..operations import OperationList, OperationOut, OperationsQuery
from . import filters, forms
from .pages import Page, Pages

pages = Pages(section="/operations")

PAGE_SIZE = 50
FILTERS = ("type", "subscriber", "package", "manager", "from", "to")
API_FIELDS = {
    "type": "type",
    "subscriberId": "subscriber",
    "packageId": "package",
    "managerEmail": "manager",
    "created_at_gte": "from",
    "created_at_lt": "to",
    "from": "from",
    "to": "to",
    "cursor": "cursor",
}
TYPES = sorted(operation_types.TYPES)


@pages.get("/operations")
async def operation_list(page: Page) -> web.StreamResponse:
    errors, status = forms.FormErrors(), 200
    result = OperationList(operations=[])
    try:
        result = await operations_api.list_operations(page.services, page.principal, _query(page, paged=True))
    except CatenaError as exc:
        errors, status = filters.errors(exc, API_FIELDS), exc.status
    return page.render(
        "operations/list.html",
        status=status,
        operations=[(operation, _payload(operation)) for operation in result.operations],
        next=result.next,
        errors=errors,
        filters=filters.values(page, FILTERS),
        types=TYPES,
        export=filters.export_url(page, "/operations/export", FILTERS),
    )


@pages.get("/operations/export")
async def operation_export(page: Page) -> web.StreamResponse:
    """Every operation the filters match (the cursor is dropped: the whole log, not a page)."""
    export = await operations_api.export_operations(page.services, page.principal, _query(page, paged=False))
    return await csv_export.stream(page.request, export)


@pages.get("/operations/{id}")
async def operation_detail(page: Page) -> web.StreamResponse:
    operation = await operations_api.get_operation(page.services, page.principal, page.path_id())
    payload = _payload(operation)
    return page.render(
        "operations/detail.html",
        operation=operation,
        payload=payload,
        payload_text=json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True),
    )


def _query(page: Page, *, paged: bool) -> OperationsQuery:
    values: dict[str, Any] = {
        "type": filters.listed(page, "type"),
        "subscriberId": filters.listed(page, "subscriber"),
        "packageId": filters.listed(page, "package"),
        "managerEmail": filters.listed(page, "manager"),
        "created_at_gte": _utc(filters.text(page, "from")),
        "created_at_lt": _utc(filters.text(page, "to")),
        "limit": PAGE_SIZE,
        "cursor": (filters.text(page, "cursor") or None) if paged else None,
    }
    return forms.decode(OperationsQuery, values)


def _utc(value: str) -> str | None:
    """A ``datetime-local`` value is UTC here (console.js converted it); the API reads it as such."""
    return value or None


def _payload(operation: OperationOut) -> dict[str, Any]:
    decoded = msgspec.json.decode(operation.payload)
    return decoded if isinstance(decoded, dict) else {"payload": decoded}
