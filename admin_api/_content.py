"""What the content modules share: ids sent in bodies, name conflicts, read-only echoes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import asyncpg
from msgspec import UNSET, Meta

from catena import ids
from catena.errors import Conflict, InvalidInput, NotFound

from ._search import SearchText
from .schema import NO_NUL, NO_NUL_TEXT, PageQuery
from .services import Services

# The first key of a list sorted by id, for keyset paging without an
# "IS NULL OR" in the SQL (which would stop PostgreSQL from using the index).
FIRST_ID = -(2**63)
LAST_ID = 2**63 - 1

# Ids sent in request bodies and query strings; anything else is a 404 on that field.
BodyId = Annotated[str, Meta(max_length=64)]

# A package named by a request, locked against deletion until the change commits.
PACKAGE_REF = "SELECT id, name FROM packages WHERE portal_id = $1 AND id = $2 FOR SHARE"

_NOUNS = {
    "channelId": "channel",
    "packageId": "package",
    "portalId": "portal",
    "epgSourceId": "EPG source",
}


def name_taken() -> Conflict:
    """The manual's own message for a duplicate channel, package or EPG source name."""
    return Conflict("Name must be unique", field="name", code="name_taken")


def decode_id(value: str, field: str) -> int:
    """An id sent by the client; one that does not decode names nothing (404)."""
    decoded = ids.decode(value)
    if decoded is None:
        raise not_found(field)
    return decoded


def not_found(field: str) -> NotFound:
    return NotFound(f"no such {_NOUNS.get(field, field)}", field=field)


def check_echo(body: Any, current: Mapping[str, Any], messages: Mapping[str, str]) -> None:
    """Fields a client may send back unchanged (a GET body PUT back) but not change.

    ``current`` holds their present values; lists compare as sets.
    """
    for field, value in current.items():
        sent = getattr(body, field)
        if sent is UNSET:
            continue
        if isinstance(value, list) and isinstance(sent, list):
            sent, value = sorted(sent), sorted(value)
        if sent != value:
            raise InvalidInput(messages.get(field, f"{field} is read-only"), field=field)


async def fetch_owned(
    conn: asyncpg.Connection, sql: str, portal_id: int, item_id: int, field: str
) -> asyncpg.Record:
    """The row ``sql`` selects by ``($1 portal, $2 id)``; 404 naming ``field`` when none."""
    row: asyncpg.Record | None = await conn.fetchrow(sql, portal_id, item_id)
    if row is None:
        raise not_found(field)
    return row


def check_portal(sent: str | None, portal_id: int) -> None:
    """A ``portalId`` in a body must be the caller's own portal (never another's)."""
    if sent is not None and ids.decode(sent) != portal_id:
        raise not_found("portalId")


async def id_page(
    services: Services, portal_id: int, tag: str, sql: str, query: PageQuery, *args: Any
) -> tuple[Sequence[asyncpg.Record], str | None]:
    """One page of a list in id order: ``sql`` takes ($1 portal, $2 after id, $3 limit, ...)."""
    after = services.cursors.decode(tag, query.cursor, (int,))
    async with services.db.acquire() as conn:
        rows = await conn.fetch(sql, portal_id, after[0] if after else FIRST_ID, query.limit + 1, *args)
    return services.cursors.page(rows, query.limit, tag, lambda r: (r["id"],))


class NamedPageQuery(PageQuery):
    """A list that can also be filtered by exact names (``?name=a&name=b``) and searched (``?q=``)."""

    name: list[Annotated[str, Meta(max_length=200, pattern=NO_NUL, description=NO_NUL_TEXT)]] | None = None
    q: SearchText | None = None
