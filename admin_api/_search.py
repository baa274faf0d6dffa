"""``?q=``: a case-insensitive substring search inside a keyset-paged list.

A page of matches in list order can be found two ways, and each is fast exactly
where the other is slow:

- **walk** the list's btree from the cursor and keep the rows that match: cheap
  when matches are common (a page of 100 at 50 % needs 200 rows), hopeless when
  they are rare (every row of the portal for a page of none);
- ask the **n-gram index** (migration 0600) for every match after the cursor and
  sort them: cheap when matches are rare, slow when they are common (half the
  portal sorted for a page, and long posting lists to read first).

So a page first **peeks**: it walks a few hundred rows.  That fills the page when
matches are common.  When they are rare there (under 1 in 50), the index's
candidates are counted, stopping at :data:`FEW`; few, and the index answers.
Otherwise the page walks up to :func:`budget` rows, and if even that does not
fill it (matches common in the portal but not here), the index finds the rest
after the walked stretch.  Every branch gives the exact answer; the estimates
only choose the cheaper one.  None depends on PostgreSQL guessing the
selectivity of a pattern it cannot see in a prepared statement, and none reads
more than a few thousand rows at 100,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from msgspec import Meta

MAX_QUERY = 100
# Control characters split the indexed text into lines (migration 0600), so a
# query cannot carry one.
SearchText = Annotated[
    str,
    Meta(
        max_length=MAX_QUERY,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="text to search for (case-insensitive substring), without control characters",
    ),
]
# Up to this many candidates the index answers a page by itself: each costs a
# visit to the table and a place in a sort, about what walking 2-3 rows of a
# btree costs.
FEW = 2000
# Rows walked per row wanted.  A walk reads a btree in order (for channels
# without touching the table: the index carries the searched text).  A peek
# that finds matches rarer than 1 in RARE asks the index how many there are.
PEEK_RATIO, MIN_PEEK = 5, 500
WALK_RATIO, MIN_WALK = 50, 5000
RARE = 50


def peek(want: int) -> int:
    """How many rows a page walks before judging how common matches are."""
    return max(MIN_PEEK, PEEK_RATIO * want)


def budget(want: int) -> int:
    """How many rows a page may walk before asking the index."""
    return max(MIN_WALK, WALK_RATIO * want)


def candidates(table: str, columns: str, q: str) -> str:
    """A ``candidates`` CTE: the rows of ``table`` holding every n-gram of ``q`` (a placeholder).

    MATERIALIZED fences the index condition off from the keyset and portal
    filters: with those beside it, the generic plan of a prepared statement ANDs
    the GIN bitmap with a btree range over the whole portal (300 ms instead of 3).
    """
    return f"""WITH candidates AS MATERIALIZED (
    SELECT {columns} FROM {table}
    WHERE catena_search_grams(portal_id, search) @> catena_search_query($1, lower({q}))
)
"""


def count(table: str) -> str:
    """How many rows of ``table`` the index offers for $2 in portal $1, counting up to $3."""
    return f"""SELECT count(*) FROM (
    SELECT FROM {table}
    WHERE catena_search_grams(portal_id, search) @> catena_search_query($1, lower($2)) LIMIT $3
) AS offered"""


@dataclass(frozen=True, slots=True)
class SearchSql:
    """The statements of one searchable list.

    ``count`` takes the portal, q and a cap (:func:`count`).  The others take
    ``$1`` the portal, then the key the page continues after, then:

    - ``walk``: q, rows wanted, rows to walk — the matches among the walked rows;
    - ``edge``: rows to walk — the key of the last walked row (none: the list ends);
    - ``indexed``: q, rows wanted — the matches after the key, found by the index.
    """

    count: str
    walk: str
    edge: str
    indexed: str


async def search(
    conn: asyncpg.Connection,
    sql: SearchSql,
    portal_id: int,
    after: Sequence[Any],
    q: str,
    want: int,
) -> list[asyncpg.Record]:
    """Up to ``want`` rows matching ``q`` after ``after``, in list order."""
    glance = peek(want)
    rows = list(await conn.fetch(sql.walk, portal_id, *after, q, want, glance))
    if len(rows) >= want:
        return rows
    if len(rows) * RARE < glance and await conn.fetchval(sql.count, portal_id, q, FEW + 1) <= FEW:
        return list(await conn.fetch(sql.indexed, portal_id, *after, q, want))
    walk = budget(want)
    rows = list(await conn.fetch(sql.walk, portal_id, *after, q, want, walk))
    if len(rows) >= want:
        return rows
    edge = await conn.fetchrow(sql.edge, portal_id, *after, walk)
    if edge is None:
        return rows  # the walk reached the end of the list
    rows += await conn.fetch(sql.indexed, portal_id, *edge, q, want - len(rows))
    return rows
