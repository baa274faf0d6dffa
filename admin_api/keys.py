"""Typed application state keys, declared in one place."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from catena.pagination import Cursors
from catena.settings import AdminSettings
from catena.tokens import TokenCodec

from .services import Services

SETTINGS = web.AppKey("settings", AdminSettings)
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
TOKENS = web.AppKey("tokens", TokenCodec)
CURSORS = web.AppKey("cursors", Cursors)
# Built once the pool and Redis client are open (admin_api.app._resources).
SERVICES = web.AppKey("services", Services)
