"""Redis for every service: the three modes, the one client factory, scripts and batches.

``CATENA_REDIS_MODE`` picks how Redis is reached:

* ``single`` (default): one server, ``CATENA_REDIS_URL`` (``redis://``, ``rediss://``,
  ``unix://``);
* ``cluster``: a Redis Cluster; ``CATENA_REDIS_URL`` names one or more of its nodes,
  comma-separated (``redis://`` or ``rediss://``, database 0); the slot map is
  discovered from them and followed as it changes;
* ``sentinel``: one primary watched by Redis Sentinel; ``CATENA_REDIS_SENTINELS``
  (``host:port,…``) and ``CATENA_REDIS_SENTINEL_SERVICE`` name it, and the primary
  is looked up and followed on failover.  ``CATENA_REDIS_URL`` may carry the
  primary's credentials, database and TLS (its host is not used).

:func:`connect` is the one way every service gets a redis-py client; :func:`verify`
checks at start that the servers are what the settings say (a bad mode, a URL that is
not a cluster, an unknown sentinel service stop the service with a message naming
the variable).  Key names live in :mod:`catena.redis_keys`.

Batches of commands go through a :class:`Commands` (``run``: each command with the
hash slot of its keys, replies in order, errors as values), so that the code that
builds them works over redis-py here and over the gateway's own connections
(:mod:`authgate.redis_pipe`).  A command may carry :data:`RUN_ID`, replaced by the
``run_id`` of the server that executes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import NoScriptError, RedisError, ResponseError

from . import private_redis
from .redis_keys import SLOTS, KeySpace, key_slot

log = logging.getLogger("catena.redis")

MODES = ("single", "cluster", "sentinel")
# The older name of the key layout class, still imported by the admin API.
Keys = KeySpace
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
VERIFY_TIMEOUT = 2.0

__all__ = [
    "MODES",
    "RUN_ID",
    "Commands",
    "KeySpace",
    "Keys",
    "RedisPyCommands",
    "RedisTarget",
    "Script",
    "connect",
    "count_in_window",
    "get_many",
    "key_slot",
    "ping",
    "target",
    "verify",
]


# ---------------------------------------------------------------- settings


class RedisSettingsError(ValueError):
    """A ``CATENA_REDIS_*`` variable is malformed or names the wrong kind of server."""


@dataclass(frozen=True)
class RedisTarget:
    """What the ``CATENA_REDIS_*`` variables describe, checked."""

    mode: str
    # single: the URL; cluster: one URL per seed node; sentinel: the primary's URL
    # (credentials, database, TLS), if given.
    urls: tuple[str, ...]
    # cluster: the seed nodes; sentinel: the sentinels.
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    sentinel_password: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.urls[0]

    def describe(self) -> str:
        if self.mode == "cluster":
            return "Redis Cluster via " + ", ".join(f"{h}:{p}" for h, p in self.nodes)
        if self.mode == "sentinel":
            where = ", ".join(f"{h}:{p}" for h, p in self.nodes)
            return f"Redis primary {self.service!r} via sentinels {where}"
        return "Redis at " + _without_password(self.url)


def url_options(url: str) -> dict[str, Any]:
    """Connection options of a Redis URL (host, port, db, path, credentials, ``tls``)."""
    return private_redis.url_options(url)


def uses_tls(options: dict[str, Any]) -> bool:
    """Whether :func:`url_options` describes a ``rediss://`` URL."""
    return bool(options.get("tls"))


def tls_context(options: dict[str, Any]) -> ssl.SSLContext | None:
    """The TLS context of a ``rediss://`` URL (its ``ssl_cert_reqs`` / ``ssl_ca_certs`` honoured)."""
    if not uses_tls(options):
        return None
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", str(int(ssl.CERT_NONE))):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def target(
    mode: str, url: str, sentinels: str = "", service: str = "", sentinel_password: str = ""
) -> RedisTarget:
    """Check the ``CATENA_REDIS_*`` values; :class:`RedisSettingsError` names the culprit."""
    if mode not in MODES:
        raise RedisSettingsError(f"CATENA_REDIS_MODE: expected one of {', '.join(MODES)}, got {mode!r}")
    if mode == "cluster":
        return _cluster_target(url)
    if mode == "sentinel":
        return _sentinel_target(url, sentinels, service, sentinel_password or None)
    return RedisTarget("single", (url,), options=_options("CATENA_REDIS_URL", url, 0))


def _cluster_target(value: str) -> RedisTarget:
    urls = tuple(part.strip() for part in value.split(","))
    nodes = []
    for index, url in enumerate(urls, 1):
        options = _options("CATENA_REDIS_URL", url, index)
        if "path" in options or not options.get("host"):
            raise RedisSettingsError(
                f"CATENA_REDIS_URL: entry {index} ({_without_password(url)!r}) must be a "
                "redis:// or rediss:// URL with a host: a cluster node is reached over TCP"
            )
        if options.get("db"):
            raise RedisSettingsError(
                f"CATENA_REDIS_URL: entry {index} ({_without_password(url)!r}) names database "
                f"{options['db']}; Redis Cluster has database 0 only"
            )
        nodes.append((str(options["host"]), int(options.get("port", 6379))))
    first = _options("CATENA_REDIS_URL", urls[0], 1)
    return RedisTarget("cluster", urls, tuple(nodes), options=first)


def _sentinel_target(url: str, sentinels: str, service: str, password: str | None) -> RedisTarget:
    if not sentinels.strip():
        raise RedisSettingsError("CATENA_REDIS_SENTINELS: required in sentinel mode (host:port,…)")
    if not service.strip():
        raise RedisSettingsError(
            "CATENA_REDIS_SENTINEL_SERVICE: required in sentinel mode (the name the sentinels monitor)"
        )
    nodes = tuple(_host_port(entry.strip(), index) for index, entry in enumerate(sentinels.split(","), 1))
    options = _options("CATENA_REDIS_URL", url, 0)
    if "path" in options:
        raise RedisSettingsError("CATENA_REDIS_URL: a unix:// URL cannot name a primary found by sentinels")
    return RedisTarget("sentinel", (url,), nodes, service.strip(), password, options)


def _options(variable: str, url: str, index: int) -> dict[str, Any]:
    """``url``'s options; ``index`` numbers it in a list (0: the variable holds one URL)."""
    shown = f"entry {index} ({_without_password(url)!r})" if index else repr(_without_password(url))
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise RedisSettingsError(f"{variable}: {shown} is not a redis://, rediss:// or unix:// URL")
    try:
        options = url_options(url)
    except ValueError as exc:
        raise RedisSettingsError(f"{variable}: {shown}: {exc}") from None
    if scheme != "unix" and not options.get("host"):
        raise RedisSettingsError(f"{variable}: {shown} has no host")
    return options


def _host_port(entry: str, index: int) -> tuple[str, int]:
    text = entry.split("://", 1)[1] if "://" in entry else entry
    host, sep, port = text.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisSettingsError(
            f"CATENA_REDIS_SENTINELS: entry {index} ({entry!r}) is not host:port with a port 1–65535"
        )
    return host.strip("[]"), int(port)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


# ---------------------------------------------------------------- clients


def connect(settings: Any, **overrides: Any) -> aioredis.Redis:
    """A redis-py client for the settings' mode (connects lazily).

    ``settings`` is any settings Struct with the ``redis_*`` fields, a
    :class:`RedisTarget`, or a single server's URL.  In cluster mode this is a ``RedisCluster`` and in
    sentinel mode a client that follows the primary; both answer the commands the
    services use, so the type is the plain client's.
    """
    if isinstance(settings, str):
        where = target("single", settings)
    else:
        where = settings if isinstance(settings, RedisTarget) else settings_target(settings)
    options: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": COMMAND_TIMEOUT}
    options.update(overrides)
    if where.mode == "cluster":
        return cast(aioredis.Redis, _cluster_client(where, options))
    if where.mode == "sentinel":
        return _sentinel_client(where, options)
    return aioredis.Redis.from_url(where.url, **options)


def settings_target(settings: Any) -> RedisTarget:
    return target(
        settings.redis_mode,
        settings.redis_url,
        settings.redis_sentinels,
        settings.redis_sentinel_service,
        settings.redis_sentinel_password,
    )


def _credentials(options: dict[str, Any]) -> dict[str, Any]:
    found = {k: options[k] for k in ("username", "password") if options.get(k)}
    if uses_tls(options):
        found["ssl"] = True
        for name in ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if name in options:
                found[name] = options[name]
    return found


def _cluster_client(where: RedisTarget, options: dict[str, Any]) -> aioredis.RedisCluster:
    options.pop("max_connections", None)
    return aioredis.RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in where.nodes],
        # A cluster missing a slot range still serves the others.
        require_full_coverage=False,
        **_credentials(where.options),
        **options,
    )


class _SentinelClient(aioredis.Redis):
    """The primary's client; closing it closes the sentinels' connections too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            await manager.aclose()


def _sentinel_client(where: RedisTarget, options: dict[str, Any]) -> aioredis.Redis:
    sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
    if where.sentinel_password:
        sentinel_options["password"] = where.sentinel_password
    watcher = Sentinel(list(where.nodes), sentinel_kwargs=sentinel_options)
    master = dict(_credentials(where.options), **options)
    if where.options.get("db"):
        master["db"] = where.options["db"]
    client: aioredis.Redis = watcher.master_for(where.service, redis_class=_SentinelClient, **master)
    return client


async def ping(client: aioredis.Redis) -> bool:
    """Whether Redis answers PING (every primary of a cluster)."""
    try:
        return bool(await client.ping())
    except (RedisError, OSError, TimeoutError):
        return False


# ---------------------------------------------------------------- start-up check


class Unreachable(Exception):
    """No server the settings name answered; the service may start and wait for it."""


async def verify(where: RedisTarget, timeout: float = VERIFY_TIMEOUT) -> None:
    """Check that the servers are what the mode says, within ``timeout`` per server.

    Raises :class:`RedisSettingsError` naming the variable when they are not, and
    :class:`Unreachable` when none answers (services start anyway and wait).
    """
    if where.mode == "sentinel":
        await _verify_sentinels(where, timeout)
        return
    # Every node at once: a list of unreachable seeds costs one timeout, not one each.
    found = await asyncio.gather(
        *(_cluster_enabled(url, timeout) for url in where.urls), return_exceptions=True
    )
    answered = 0
    for index, (url, enabled) in enumerate(zip(where.urls, found, strict=True), 1):
        if isinstance(enabled, RedisError | OSError | TimeoutError):
            continue
        if isinstance(enabled, BaseException):
            raise enabled
        answered += 1
        _check_cluster_flag(where, index, url, enabled)
    if not answered:
        raise Unreachable(where.describe())


def _check_cluster_flag(where: RedisTarget, index: int, url: str, enabled: bool) -> None:
    shown = _without_password(url)
    if where.mode == "cluster" and not enabled:
        raise RedisSettingsError(
            f"CATENA_REDIS_URL: entry {index} ({shown}) is not a Redis Cluster node "
            "(cluster_enabled:0); name cluster nodes or set CATENA_REDIS_MODE=single"
        )
    if where.mode == "single" and enabled:
        raise RedisSettingsError(
            f"CATENA_REDIS_URL: {shown} is a Redis Cluster node; set CATENA_REDIS_MODE=cluster"
        )


async def _cluster_enabled(url: str, timeout: float) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        async with asyncio.timeout(timeout * 2):
            info = await client.info("cluster")
    finally:
        await client.aclose()
    return bool(int(info.get("cluster_enabled", 0)))


async def _verify_sentinels(where: RedisTarget, timeout: float) -> None:
    answered = 0
    for index, (host, port) in enumerate(where.nodes, 1):
        client = aioredis.Redis(
            host=host,
            port=port,
            password=where.sentinel_password,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
        )
        try:
            async with asyncio.timeout(timeout * 2):
                found = await client.execute_command("SENTINEL", "get-master-addr-by-name", where.service)
        except ResponseError as exc:
            raise RedisSettingsError(
                f"CATENA_REDIS_SENTINELS: entry {index} ({host}:{port}) is not a sentinel: {exc}"
            ) from None
        except (RedisError, OSError, TimeoutError):
            continue
        finally:
            await client.aclose()
        answered += 1
        if found:
            return
    if not answered:
        raise Unreachable(where.describe())
    raise RedisSettingsError(
        f"CATENA_REDIS_SENTINEL_SERVICE: no sentinel of CATENA_REDIS_SENTINELS monitors a primary "
        f"named {where.service!r}"
    )


async def check_at_start(settings: Any, service: str) -> None:
    """:func:`verify` for a service's start: wrong servers stop it; absent ones are logged."""
    where = settings_target(settings)
    try:
        await verify(where)
    except Unreachable:
        log.warning("Redis unreachable at start; carrying on without it", extra={"redis": where.describe()})


# ---------------------------------------------------------------- batches and scripts


class _RunId:
    """Stands in a command for the ``run_id`` of the server that executes it."""

    def __repr__(self) -> str:
        return "RUN_ID"


RUN_ID: Any = _RunId()

Call = tuple[int, Sequence[Any]]  # (hash slot of the command's keys, the command)


class Commands(Protocol):
    """Something that runs batches of commands: replies in order, failures as exception values."""

    clustered: bool

    async def run(self, calls: Sequence[Call]) -> list[Any]: ...


class Script:
    """A Lua script sent by its SHA1, and in full when a server has not seen it."""

    __slots__ = ("body", "sha")

    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.sha = hashlib.sha1(self.body).hexdigest().encode()

    def call(self, slot: int, keys: Sequence[Any], args: Sequence[Any]) -> Call:
        return slot, ("EVALSHA", self.sha, len(keys), *keys, *args)

    def full(self, call: Call) -> Call:
        slot, command = call
        return slot, ("EVAL", self.body, *command[2:])

    async def run(self, commands: Commands, calls: Sequence[Call]) -> list[Any]:
        """Run the calls; those refused with ``NOSCRIPT`` go again with the script's body."""
        replies = await commands.run(calls)
        missing = [i for i, reply in enumerate(replies) if _noscript(reply)]
        if missing:
            again = await commands.run([self.full(calls[i]) for i in missing])
            for index, reply in zip(missing, again, strict=True):
                replies[index] = reply
        return replies


def _noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT")
    )


def first_error(replies: Sequence[Any]) -> None:
    """Raise the first failure among ``replies`` (a batch's errors come back as values)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def by_slot(clustered: bool, items: Iterable[Any], slot: Any) -> dict[int, list[Any]]:
    """``items`` grouped by ``slot(item)`` on a cluster; in one group otherwise."""
    groups: dict[int, list[Any]] = {}
    for item in items:
        groups.setdefault(slot(item) if clustered else 0, []).append(item)
    return groups


class RedisPyCommands:
    """:class:`Commands` over a redis-py client of any mode, one pipeline per batch."""

    def __init__(self, client: aioredis.Redis, timeout: float | None = None) -> None:
        self.client = client
        self.clustered = isinstance(client, aioredis.RedisCluster)
        self.timeout = timeout

    async def run(self, calls: Sequence[Call]) -> list[Any]:
        if not calls:
            return []
        try:
            async with asyncio.timeout(self.timeout):
                return await self._run(calls)
        except (RedisError, OSError, TimeoutError) as exc:
            return [exc] * len(calls)

    async def _run(self, calls: Sequence[Call]) -> list[Any]:
        run_ids = await self._run_ids(calls) if any(RUN_ID in c for _, c in calls) else {}
        pipe = self.client.pipeline(transaction=False)
        for slot, command in calls:
            pipe.execute_command(*(run_ids.get(slot, b"") if a is RUN_ID else a for a in command))
        return list(await pipe.execute(raise_on_error=False))

    async def _run_ids(self, calls: Sequence[Call]) -> dict[int, bytes]:
        if not self.clustered:
            info = await self.client.info("server")
            run_id = str(info["run_id"]).encode()
            return {slot: run_id for slot, _ in calls}
        cluster = cast(aioredis.RedisCluster, self.client)
        await cluster.initialize()
        by_node: dict[str, bytes] = {}
        found = {}
        for slot, _ in calls:
            node = cluster.nodes_manager.get_node_from_slot(slot)
            if node.name not in by_node:
                info = await cluster.execute_command("INFO", "server", target_nodes=node)
                by_node[node.name] = str(info["run_id"]).encode()
            found[slot] = by_node[node.name]
        return found


async def mark_ready(commands: Commands, space: KeySpace, slots: Iterable[int] | None = None) -> None:
    """Mark ``slots`` (default: all) ready on the servers serving them now.

    For tests and tools: the gateways mark slots themselves once they have rebuilt
    their counts (:mod:`authgate.session_limiter`).
    """
    chosen = range(SLOTS) if slots is None else slots
    calls = [(slot, ("SET", space.marker(slot), RUN_ID)) for slot in chosen]
    for start in range(0, len(calls), 1000):
        first_error(await commands.run(calls[start : start + 1000]))


# ---------------------------------------------------------------- small helpers for the services

_WINDOW = """
redis.call('SET', KEYS[1], 0, 'EX', ARGV[1], 'NX')
local count = redis.call('INCR', KEYS[1])
return {count, redis.call('TTL', KEYS[1])}
"""


async def count_in_window(client: aioredis.Redis, key: str, window: int) -> tuple[int, int]:
    """Count one event under ``key`` in a fixed window of ``window`` seconds.

    Returns the count so far (this event included) and the seconds left in the
    window, which starts at the first event.  One script on one key: atomic, and
    valid on a Redis Cluster.
    """
    count, ttl = await client.register_script(_WINDOW)(keys=[key], args=[window])
    return int(count), int(ttl)


async def get_many(client: aioredis.Redis, keys: Sequence[str]) -> list[Any]:
    """The values of ``keys`` (which may lie in different cluster slots) in one round trip per node."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
        return list(await pipe.execute())
