"""``?q=``: a case-insensitive substring search inside a keyset-paged list.

A page of matches in list order can be found two ways, and each is fast exactly
where the other is slow:

- **walk** the list's btree from the cursor and keep the rows that match: cheap
  when matches are common (a page of 100 at 50 % needs 200 rows), hopeless when
  they are rare (every row of the portal for a page of none);
- ask the **n-gram index** (migration 0600) for every match after the cursor and
  sort them: cheap when matches are rare, slow when they are common (half the
  portal sorted for a page).

So a page walks at most :func:`budget` rows first.  If that fills the page, done;
if not, matches are rarer than one in fifty, and the index finds the rest after
the walked stretch, a few thousand rows at most at 100,000 rows.  Neither path
depends on PostgreSQL guessing the selectivity of a pattern it cannot see in a
prepared statement.
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
# Rows walked per row wanted before the index takes over: matches rarer than one
# in this many are found through the index.  A walk reads a btree in order (for
# channels without touching the table: the index carries the searched text),
# while every index candidate costs a random visit to the table and a sort, so
# the walk is given the larger share: at 100,000 rows the worst case is about
# 5,000 rows walked plus 2,000 candidates (benchmarks/bench_content_api.py).
WALK_RATIO = 50
MIN_WALK = 5000


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


def budget(want: int) -> int:
    """How many rows a page may walk before asking the index."""
    return max(MIN_WALK, WALK_RATIO * want)


@dataclass(frozen=True, slots=True)
class SearchSql:
    """The three statements of one searchable list.

    Each takes ``$1`` the portal, then the key the page continues after, then:

    - ``walk``: q, rows wanted, rows to walk — the matches among the walked rows;
    - ``edge``: rows to walk — the key of the last walked row (none: the list ends);
    - ``indexed``: q, rows wanted — the matches after the key, found by the index.
    """

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
    walk = budget(want)
    rows = list(await conn.fetch(sql.walk, portal_id, *after, q, want, walk))
    if len(rows) >= want:
        return rows
    edge = await conn.fetchrow(sql.edge, portal_id, *after, walk)
    if edge is None:
        return rows  # the walk reached the end of the list
    rows += await conn.fetch(sql.indexed, portal_id, *edge, q, want - len(rows))
    return rows
