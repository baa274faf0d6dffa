"""Query-string filters and keyset pages shared by the filtered list endpoints.

``operations`` and ``play_sessions`` are partitioned by id ranges, i.e. by month;
their filters become id bounds so PostgreSQL reads only the partitions concerned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import asyncpg

from catena import ids
from catena.errors import InvalidInput

from .services import Services

MAX_ID = (1 << 63) - 1


class Where:
    """A WHERE clause assembled from constant SQL fragments and numbered parameters.

    Fragments are fixed text with ``{}`` where a parameter goes; values only ever
    travel as parameters, and the few fragment combinations keep asyncpg's
    statement cache warm.
    """

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def add(self, fragment: str, *values: Any) -> None:
        numbers = [f"${len(self.args) + i + 1}" for i in range(len(values))]
        self.clauses.append(fragment.format(*numbers))
        self.args.extend(values)

    def next_param(self) -> str:
        """The placeholder the next parameter will take (e.g. for LIMIT)."""
        return f"${len(self.args) + 1}"

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses)


def decode_ids(values: Iterable[str], field: str) -> list[int]:
    """Decode a repeated id filter; one that is not an id is a 400 naming the field."""
    decoded = []
    for text in values:
        value = ids.decode(text)
        if value is None:
            raise InvalidInput(f"{field} must be an id like 'pK19SW3AAAE.', got {text!r}", field=field)
        decoded.append(value)
    return decoded


def add_id_filter(where: Where, column: str, values: list[int]) -> None:
    """``column`` equal to one of ``values`` (ids).

    One id is written as an equality: asyncpg prepares every statement, and after a
    few runs PostgreSQL may use the statement's generic plan, which for ``= ANY($n)``
    cannot walk the ``(portal_id, column, id)`` index in id order and walks the
    whole table by id instead (50 ms and more for a subscriber with few sessions
    among 200,000).  With ``=`` the generic plan reads that index, in order.
    """
    if len(values) == 1:
        where.add(f"{column} = {{}}", values[0])
    else:
        where.add(f"{column} = ANY({{}}::bigint[])", values)


def id_at(unix_ms: int) -> int:
    """The smallest id made at ``unix_ms``, clamped to the ``BIGINT`` range."""
    return min(ids.lowest_at(max(unix_ms, 0)), MAX_ID)


# After five runs PostgreSQL may keep a generic plan of a list statement, which
# knows neither the id bounds nor how rare a filter's value is: for one subscriber's
# sessions it walked every session of the portal backwards (0.3 ms became 90-170 ms
# with 100,000 sessions, benchmarks/bench_console.py).  Planning each run costs
# well under a millisecond.  Transaction-local.
_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"


class Paged(Protocol):
    """A list endpoint's query: where to continue and how many."""

    cursor: str | None
    limit: int


async def fetch_page(
    services: Services, tag: str, template: str, query: Paged, where_after: Callable[[int | None], Where]
) -> tuple[Sequence[asyncpg.Record], str | None]:
    """One page of a list keyed by ``id``; ``template`` has ``{where}`` and ``{limit}`` slots.

    ``where_after`` builds the filters given the id the cursor continues after.
    """
    after = services.cursors.decode(tag, query.cursor, (int,))
    where = where_after(after[0] if after else None)
    sql = template.format(where=where.sql, limit=where.next_param())
    async with services.db.acquire() as conn:
        async with conn.transaction(readonly=True):
            await conn.execute(_CUSTOM_PLANS)
            rows = await conn.fetch(sql, *where.args, query.limit + 1)
    return services.cursors.page(rows, query.limit, tag, lambda r: (r["id"],))
