"""``python -m epg_worker``: fetch and import XMLTV guides; serve /health and /metrics."""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web

from catena import logs
from catena import redis as catena_redis
from catena.safety import load_for_service
from catena.settings import EpgSettings, SettingsError

from . import importer
from .app import create_app


def main() -> None:
    try:
        settings = load_for_service(EpgSettings)
    except SettingsError as exc:
        sys.exit(f"epg_worker: {exc}")
    logs.setup("epg_worker", settings.log_level)
    try:
        asyncio.run(catena_redis.check_at_start(settings, "epg_worker"))
    except catena_redis.RedisSettingsError as exc:
        sys.exit(f"epg_worker: {exc}")
    importer.tune_gc()
    uvloop.install()
    web.run_app(
        create_app(settings),
        host=settings.epg_host,
        port=settings.epg_port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
