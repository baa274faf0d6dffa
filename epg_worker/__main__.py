"""``python -m epg_worker``: fetch and import XMLTV guides; serve /health and /metrics."""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web

from catena import logs
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
