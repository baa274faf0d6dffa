"""``python -m admin_api``: serve the Management API and the client API."""

from __future__ import annotations

import asyncio
import logging
import sys

from catena import logs
from catena import redis as catena_redis
from catena.safety import load_for_service
from catena.service import run_app
from catena.settings import AdminSettings, SettingsError

from .app import create_app
from .errors import JsonErrorRequestHandler


def main() -> None:
    try:
        settings = load_for_service(AdminSettings)
    except SettingsError as exc:
        sys.exit(f"admin_api: {exc}")
    logs.setup("admin_api", settings.log_level)
    try:
        asyncio.run(catena_redis.check_at_start(settings, "admin_api"))
    except catena_redis.RedisSettingsError as exc:
        sys.exit(f"admin_api: {exc}")
    logging.getLogger("admin_api").info(
        "listening", extra={"host": settings.admin_host, "port": settings.admin_port}
    )
    run_app(create_app(settings), settings.admin_host, settings.admin_port, JsonErrorRequestHandler)


if __name__ == "__main__":
    main()
