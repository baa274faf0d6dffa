"""The ``catena`` command line: ``up``, ``migrate``, ``secret new``, ``health``, ``portal create``,
``cache rebuild``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from . import db, ids, migrations, portals, safety
from .errors import CatenaError
from .health_check import SERVICES, check
from .redis import RedisSettingsError
from .settings import BaseSettings, SettingsError, load


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        sys.exit(2)
    try:
        args.run(args)
    except (SettingsError, RedisSettingsError) as exc:
        sys.exit(f"catena: {exc}")
    except CatenaError as exc:
        sys.exit(f"catena: {exc.message}")
    except (OSError, ConnectionError) as exc:
        sys.exit(f"catena: cannot reach a server: {exc}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="catena", description=__doc__)
    commands = parser.add_subparsers(title="commands")

    up = commands.add_parser("up", help="start everything (embedded PostgreSQL and Redis unless configured)")
    up.add_argument("--var-dir", default=None, help="where embedded data lives (default ./var)")
    up.set_defaults(run=_run_up)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument(
        "--accept-changed",
        action="store_true",
        help="emergencies only: record the new checksums of applied migrations whose files changed "
        "(by default a changed applied migration stops the run); see docs/deploy.md",
    )
    migrate.set_defaults(run=_sync(_migrate))

    secret = commands.add_parser("secret", help="playback-token and cursor secrets")
    secret_commands = secret.add_subparsers(title="secret commands")
    new_secret = secret_commands.add_parser(
        "new", help="print a new kid:secret for CATENA_TOKEN_SECRETS (put it first to rotate)"
    )
    new_secret.add_argument("--kid", default=None, help="the key id (default: k<UTC date and time>)")
    new_secret.set_defaults(run=_secret_new)

    health = commands.add_parser("health", help="exit 0 when a service on this host answers /health")
    health.add_argument("service", nargs="?", choices=sorted(SERVICES), help="default: any of them")
    health.set_defaults(run=_health)

    local = commands.add_parser(
        "local-redis", help="run a Redis Cluster or a sentinel group on this machine (development)"
    )
    local.add_argument("kind", choices=("cluster", "sentinel"))
    local.add_argument("--port", type=int, default=None, help="first port (cluster 7000, sentinel 7100)")
    local.add_argument("--primaries", type=int, default=3, help="cluster primaries (default 3)")
    local.add_argument("--replicas", type=int, default=1, help="replicas per primary (default 1)")
    local.add_argument("--dir", default=None, help="where the servers keep their files (default var/)")
    local.set_defaults(run=_local_redis)

    portal = commands.add_parser("portal", help="manage portals")
    portal_commands = portal.add_subparsers(title="portal commands")
    create = portal_commands.add_parser("create", help="create a portal and its owner")
    create.add_argument("--name", required=True)
    create.add_argument("--domain", required=True)
    create.add_argument("--owner-email", required=True)
    create.add_argument("--owner-password", default=None, help="default: generated")
    create.add_argument("--title", default="")
    create.add_argument("--json", action="store_true", help="print the result as JSON")
    create.set_defaults(run=_sync(_portal_create))

    cache = commands.add_parser("cache", help="the Redis entitlement cache")
    cache_commands = cache.add_subparsers(title="cache commands")
    rebuild = cache_commands.add_parser("rebuild", help="rebuild Redis entitlements from PostgreSQL")
    rebuild.set_defaults(run=_sync(_cache_rebuild))
    return parser


Command = Callable[[argparse.Namespace], None]


def _sync(func: Callable[[argparse.Namespace], Coroutine[Any, Any, None]]) -> Command:
    def run(args: argparse.Namespace) -> None:
        asyncio.run(func(args))

    return run


async def _migrate(args: argparse.Namespace) -> None:
    settings = load(BaseSettings)
    conn = await db.connect(settings.database_url)
    try:
        applied = await migrations.apply(conn, accept_changed=args.accept_changed)
    finally:
        await conn.close()
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"database is up to date ({len(applied)} applied now)")


def _secret_new(args: argparse.Namespace) -> None:
    print(safety.new_token_secret(args.kid))


def _health(args: argparse.Namespace) -> None:
    problem = check(args.service)
    if problem:
        sys.exit(f"catena: {problem}")


async def _portal_create(args: argparse.Namespace) -> None:
    settings = load(BaseSettings)
    conn = await db.connect(settings.database_url)
    try:
        await ids.claim_node(conn)
        created = await portals.create(
            conn,
            name=args.name,
            domain=args.domain,
            owner_email=args.owner_email,
            owner_password=args.owner_password,
            title=args.title,
        )
    finally:
        await conn.close()
    if args.json:
        print(msgspec.json.encode(created).decode())
        return
    print(f"portal {created.name} created")
    for label, value in msgspec.structs.asdict(created).items():
        print(f"  {label}: {value}")


async def _cache_rebuild(args: argparse.Namespace) -> None:
    from importlib import import_module

    # The entitlement map (catena.entitlement_map) comes with the gateway.
    module = import_module("catena.entitlement_map")
    await module.rebuild_command()


def _local_redis(args: argparse.Namespace) -> None:
    from .embedded import serve_local_redis

    serve_local_redis(args.kind, args.port, args.primaries, args.replicas, args.dir)


def _run_up(args: argparse.Namespace) -> None:
    from .up import run

    run(var_dir=args.var_dir)
