"""``GET /subscribers?q=``: phone digits or part of a name, anywhere in the value.

A ``q`` of digits (with an optional leading ``+``, spaces, dashes, dots or
brackets) looks for those digits in the phone written with its country code, so
``916123``, ``+7 916 123`` and ``7-916-123`` all find ``+7 9161234567``.  Anything
else looks for the text in the name, case-insensitively and reading ``ё`` as
``е``.  Both are substrings, so prefixes are found too.

The list stays in id order and keyset-paged, so a page is the first ``limit``
matches after the cursor.  Two ways to find them (migration 0700 has the index):

- *walk*: read the portal's subscribers in id order and check each one.  Cheap
  when matches are common (a short ``q``), hopeless when they are rare;
- *index*: ask the GIN index for the rows holding every piece of ``q``, check
  those, sort them.  Cheap when matches are rare, costly when there are thousands
  (each is a row read from a different page).

A page walks :data:`FIRST_WALK` rows first.  When that did not fill it, the
matches seen so far say how dense they are: it walks on (at most doubling what it
read, then deciding again) while the whole walk should stay under
:data:`WALK_ON` rows, and asks the index otherwise.  At 100,000 subscribers the
two cost the same at about 1.5 % density: some 7,000 rows walked, or 1,500 read
through the index, each from a different page.  The choice is made
here rather than by the planner, whose estimates for a prepared statement's
parameters are guesses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from ._filters import Where

# Rows a page walks before deciding how to go on, and the most it walks in all
# rather than asking the index: about where the two cost the same at 100,000
# subscribers (benchmarks/bench_subscriber_search.py).
FIRST_WALK = 500
WALK_ON = 7000
# Pieces of the phone the index holds: shorter digit queries always walk (two
# digits occur in about one phone in ten, so the walk is short anyway).
PHONE_PIECE = 3

_PHONE_QUERY = re.compile(r"\+?[0-9 ()\-.]*[0-9][0-9 ()\-.]*")
_COLUMNS = "s.id, s.portal_id, s.search_name, s.phone_country_code, s.phone, s.disabled"

# The row comparison steers PostgreSQL to the (portal_id, id) index: walking the
# primary key instead would step over every other portal's rows.
_WALK = f"""
SELECT count(*) AS scanned, max(s.id) AS last,
       (array_agg(s.id ORDER BY s.id) FILTER (WHERE {{match}}))[1:{{want}}] AS found
FROM (SELECT {_COLUMNS} FROM subscribers s
      WHERE s.portal_id = {{portal}} AND (s.portal_id, s.id) > ({{portal}}, {{after}})
      ORDER BY s.portal_id, s.id LIMIT {{budget}}) s
"""
# Materialized, so that the index scan is the GIN one alone (not ANDed with the
# portal index, which would read every row id of the portal).
_INDEXED = f"""
WITH hits AS MATERIALIZED (
    SELECT {_COLUMNS} FROM subscribers s
    WHERE catena_subscriber_keys(s.portal_id, s.search_name, s.phone_country_code, s.phone)
          @> (SELECT catena_query_keys({{portal}}, {{kind}}, {{folded}})))
SELECT s.id FROM hits s
WHERE s.portal_id = {{portal}} AND s.id > {{after}} AND {{match}}
ORDER BY s.id LIMIT {{want}}
"""

Filters = Callable[[Where], None]


@dataclass(frozen=True, slots=True)
class Search:
    """What ``q`` asks for: ``digits`` of a phone, or ``text`` in a name."""

    phone: bool
    value: str

    @property
    def indexed(self) -> bool:
        return not self.phone or len(self.value) >= PHONE_PIECE

    def check(self, where: Where) -> None:
        """The exact test of one row (the index only narrows)."""
        if self.phone:
            where.add("strpos(s.phone_country_code || s.phone, {}) > 0", self.value)
        else:
            # An InitPlan: folded once per statement, not once per row.
            where.add("strpos(s.search_name, (SELECT catena_fold({}))) > 0", self.value)


def parse(q: str | None) -> Search | None:
    """The search ``q`` asks for; ``None`` for an absent or blank ``q``."""
    text = " ".join((q or "").split())
    if not text:
        return None
    if _PHONE_QUERY.fullmatch(text):
        return Search(True, re.sub(r"[^0-9]", "", text))
    return Search(False, text)


async def matching_ids(
    conn: asyncpg.Connection, portal_id: int, after: int, want: int, search: Search, filters: Filters
) -> list[int]:
    """Ids of the first ``want`` matching subscribers after ``after``, in id order."""
    found: list[int] = []
    walked, budget = 0, FIRST_WALK
    while True:
        scanned, last, more = await _walk(conn, portal_id, after, want - len(found), budget, search, filters)
        found += more
        walked += scanned
        if len(found) >= want or scanned < budget:
            return found
        # Rows the rest should take at the density seen so far.
        expected = (want - len(found)) * walked / max(len(found), 0.5)
        if search.indexed and walked + expected > WALK_ON:
            return found + await _from_index(conn, portal_id, last, want - len(found), search, filters)
        # At most doubling what was read: a guess from a few matches is corrected soon.
        after, budget = last, max(min(int(expected * 1.2) + 1, walked), FIRST_WALK // 5)


async def _walk(
    conn: asyncpg.Connection,
    portal_id: int,
    after: int,
    want: int,
    budget: int,
    search: Search,
    filters: Filters,
) -> tuple[int, int, list[int]]:
    """Check the next ``budget`` rows after ``after``: (rows read, the last one's id, matches)."""
    where, match = _match(search, filters)
    names = _params(where, portal_id, after, budget, want)
    sql = _WALK.format(match=match, portal=names[0], after=names[1], budget=names[2], want=names[3])
    row = await conn.fetchrow(sql, *where.args)
    return row["scanned"], row["last"], list(row["found"] or [])


async def _from_index(
    conn: asyncpg.Connection, portal_id: int, after: int, want: int, search: Search, filters: Filters
) -> list[int]:
    where, match = _match(search, filters)
    kind = "p" if search.phone else "n"
    portal, after_, limit, kind_, value = _params(where, portal_id, after, want, kind, search.value)
    folded = value if search.phone else f"catena_fold({value})"
    sql = _INDEXED.format(match=match, portal=portal, after=after_, want=limit, kind=kind_, folded=folded)
    return [r["id"] for r in await conn.fetch(sql, *where.args)]


def _match(search: Search, filters: Filters) -> tuple[Where, str]:
    where = Where()
    search.check(where)
    filters(where)
    return where, where.sql


def _params(where: Where, *values: Any) -> list[str]:
    """Placeholders for ``values``, numbered after the filters' own."""
    names = []
    for value in values:
        names.append(where.next_param())
        where.args.append(value)
    return names
