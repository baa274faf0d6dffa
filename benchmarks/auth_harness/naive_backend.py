"""Baseline (c): the auth backend most operators write — aiohttp, one SQL query per check.

It verifies the playback token (``catena.tokens``), then asks PostgreSQL in one
query whether the subscriber exists, is enabled, holds the current token version
and may watch the channel through its own or the portal's free packages.  It does
not count sessions across servers and records nothing: that is what it leaves out.

    CATENA_DATABASE_URL=... CATENA_TOKEN_SECRETS=... \\
        python -m benchmarks.auth_harness.naive_backend --port 8153
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import msgspec
from aiohttp import web

from catena import db, ids
from catena.settings import BaseSettings, load
from catena.tokens import TokenCodec, TokenError

from . import _serving

CHECK = """
SELECT s.disabled, s.token_version,
       coalesce(s.max_sessions, (p.settings->>'maxSessions')::int, 2) AS max_sessions,
       coalesce((p.settings->>'authDuration')::int, 180) AS auth_duration,
       EXISTS (
           SELECT 1 FROM channels c JOIN channel_packages cp ON cp.channel_id = c.id
           WHERE c.portal_id = s.portal_id AND c.name = $3
             AND (cp.package_id IN (SELECT package_id FROM subscriptions WHERE subscriber_id = s.id)
                  OR cp.package_id IN (SELECT package_id FROM portal_free_packages
                                       WHERE portal_id = s.portal_id))
       ) AS entitled
FROM subscribers s JOIN portals p ON p.id = s.portal_id
WHERE s.id = $1 AND s.portal_id = $2
"""
DENY_DURATION = "60"
POOL = web.AppKey("pool", asyncpg.Pool)
CODEC = web.AppKey("codec", TokenCodec)


def deny(reason: str) -> web.Response:
    body = msgspec.json.encode({"error": reason})
    headers = {"X-AuthDuration": DENY_DURATION}
    return web.Response(status=403, body=body, content_type="application/json", headers=headers)


async def check(request: web.Request) -> web.Response:
    name, token = request.query.get("name"), request.query.get("token")
    if not name or not request.query.get("session_id"):
        return deny("bad_request")
    if not token:
        return deny("no_token")
    try:
        claims = request.app[CODEC].verify(token)
    except TokenError:
        return deny("bad_token")
    row = await request.app[POOL].fetchrow(CHECK, claims.subscriber_id, claims.portal_id, name)
    reason = _refusal(row, claims.version)
    if reason is not None:
        return deny(reason)
    headers = {
        "X-AuthDuration": str(row["auth_duration"]),
        "X-UserId": ids.encode(claims.subscriber_id),
        "X-Max-Sessions": str(row["max_sessions"]),
    }
    return web.Response(status=200, headers=headers)


def _refusal(row: asyncpg.Record | None, version: int) -> str | None:
    if row is None:
        return "unknown_subscriber"
    if row["disabled"]:
        return "subscriber_disabled"
    if row["token_version"] != version:
        return "token_revoked"
    return None if row["entitled"] else "channel_not_in_packages"


def create_app(settings: BaseSettings) -> web.Application:
    app = web.Application()
    app[CODEC] = TokenCodec(settings.token_secrets)

    async def database(app: web.Application) -> AsyncIterator[None]:
        size = settings.database_pool_size
        app[POOL] = await db.create_pool(settings.database_url, max_size=size)
        yield
        await app[POOL].close()

    app.cleanup_ctx.append(database)
    app.router.add_get("/auth", check)
    return app


def main(argv: list[str] | None = None) -> None:
    args = _serving.arguments(__doc__.splitlines()[0]).parse_args(argv)
    _serving.run(create_app(load(BaseSettings)), args.host, args.port)


if __name__ == "__main__":
    main()
