"""What an action needs from the running application, in one typed object.

Actions (``create_channel``, ``subscribe``, ``terminate_session`` …) are plain
functions ``(services, actor, ids…, body) -> result`` that hold their rule, SQL,
operation record and entitlement signal.  The JSON handlers and the console pages
both call them with the :class:`Services` of their application, so neither holds a
second copy of a rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from catena.pagination import Cursors
from catena.settings import AdminSettings
from catena.tokens import TokenCodec

from .limiter import Limiter, PasswordChecker


@dataclass(frozen=True, slots=True)
class Services:
    db: asyncpg.Pool
    redis: aioredis.Redis
    settings: AdminSettings
    cursors: Cursors
    tokens: TokenCodec
    # Sign-in limits and the bounded bcrypt pool (admin_api.limiter).
    limiter: Limiter
    passwords: PasswordChecker
