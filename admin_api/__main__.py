"""``python -m admin_api``: serve the Management API."""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web

from catena import logs
from catena.settings import AdminSettings, SettingsError, load

from .app import create_app


def main() -> None:
    try:
        settings = load(AdminSettings)
    except SettingsError as exc:
        sys.exit(f"admin_api: {exc}")
    logs.setup("admin_api", settings.log_level)
    uvloop.install()
    web.run_app(
        create_app(settings),
        host=settings.admin_host,
        port=settings.admin_port,
        access_log=None,
        print=None,
        reuse_port=True,
    )


if __name__ == "__main__":
    main()
