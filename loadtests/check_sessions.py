"""After a load test: did any subscriber ever hold more sessions than allowed?

Reads ``play_sessions`` as the gateways wrote them.  A session is held from its
``opened_at`` until its ``closed_at`` or, while open, its last ``updated_at``: the
last moment a gateway vouched for it.  For each subscriber, a running sum over
those intervals (ends before starts at the same instant) gives the most sessions
held at once, compared with the subscriber's limit or the portal's default.  Rows
that share a Flussonic session id are one session.

It also checks that every session the gateways admitted (``--tally``, written by
the locustfile's ``test_stop`` hook) has its row: nothing accepted is lost.

    python -m loadtests.check_sessions --database-url URL --portal ID [--tally FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from catena import db, ids, portals

from .viewing import Admitted, read_tally

_HELD = """
WITH sessions AS (
    SELECT subscriber_id, flussonic_id, min(opened_at) AS opened_at,
           max(coalesce(closed_at, updated_at)) AS ended_at
    FROM play_sessions
    WHERE portal_id = $1 AND subscriber_id IS NOT NULL
    GROUP BY subscriber_id, flussonic_id
), edges AS (
    SELECT subscriber_id, opened_at AS at, 1 AS delta FROM sessions
    UNION ALL
    SELECT subscriber_id, ended_at, -1 FROM sessions
), running AS (
    SELECT subscriber_id,
           sum(delta) OVER (PARTITION BY subscriber_id ORDER BY at, delta
                            ROWS UNBOUNDED PRECEDING) AS held
    FROM edges
)
SELECT r.subscriber_id, max(r.held) AS most, s.max_sessions
FROM running r LEFT JOIN subscribers s ON s.id = r.subscriber_id
GROUP BY r.subscriber_id, s.max_sessions
"""
_TOTALS = """
SELECT count(*) AS rows, count(DISTINCT flussonic_id) AS sessions,
       count(DISTINCT subscriber_id) AS subscribers,
       count(*) FILTER (WHERE subscriber_id IS NULL) AS unattributed
FROM play_sessions WHERE portal_id = $1
"""
_RECORDED = "SELECT flussonic_id FROM play_sessions WHERE portal_id = $1"


@dataclass
class Findings:
    rows: int = 0
    sessions: int = 0
    subscribers: int = 0
    unattributed: int = 0
    # (subscriber id, most held at once, allowed)
    over_limit: list[tuple[int, int, int]] = field(default_factory=list)
    admitted: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.over_limit and not self.missing and self.sessions > 0

    def summary(self) -> str:
        lines = [
            f"play_sessions: {self.rows:,} rows, {self.sessions:,} sessions of "
            f"{self.subscribers:,} subscribers ({self.unattributed:,} rows without a subscriber)",
            f"subscribers over their limit at any moment: {len(self.over_limit)}",
        ]
        lines += [
            f"    {ids.encode(sub)}: held {most} sessions at once, allowed {limit}"
            for sub, most, limit in self.over_limit[:20]
        ]
        if self.admitted:
            lines.append(f"admitted sessions without a row: {len(self.missing):,} of {self.admitted:,}")
            lines += [f"    {session_id}" for session_id in self.missing[:20]]
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


async def check(conn: asyncpg.Connection, portal_id: int, admitted: list[Admitted] | None = None) -> Findings:
    """Compare what ``play_sessions`` says was held with each subscriber's limit."""
    totals = await conn.fetchrow(_TOTALS, portal_id)
    found = Findings(totals["rows"], totals["sessions"], totals["subscribers"], totals["unattributed"])
    default = await _default_limit(conn, portal_id)
    for row in await conn.fetch(_HELD, portal_id):
        allowed = row["max_sessions"] or default
        if row["most"] > allowed:
            found.over_limit.append((row["subscriber_id"], row["most"], allowed))
    if admitted:
        recorded = {r["flussonic_id"] for r in await conn.fetch(_RECORDED, portal_id)}
        found.admitted = len(admitted)
        found.missing = [a.session_id for a in admitted if a.session_id not in recorded]
    return found


async def _default_limit(conn: asyncpg.Connection, portal_id: int) -> int:
    raw = await conn.fetchval("SELECT settings FROM portals WHERE id = $1", portal_id)
    return portals.load_settings(raw).maxSessions


async def _main(args: argparse.Namespace) -> Findings:
    portal_id = ids.decode(args.portal)
    if portal_id is None:
        sys.exit(f"check_sessions: --portal expects a portal id, got {args.portal!r}")
    admitted = read_tally(Path(args.tally)).admitted if args.tally else None
    conn = await db.connect(args.database_url)
    try:
        return await check(conn, portal_id, admitted)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--portal", required=True, help="portal id (12 characters)")
    parser.add_argument("--tally", default=None, help="tally.json the locustfile wrote")
    findings = asyncio.run(_main(parser.parse_args(argv)))
    print(findings.summary())
    sys.exit(0 if findings.ok else 1)


if __name__ == "__main__":
    main()
