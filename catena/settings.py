"""Settings from ``CATENA_*`` environment variables: one frozen Struct per service.

Each field ``foo_bar`` of a settings Struct is read from ``CATENA_FOO_BAR``.  Values
are converted and checked once, at start; a bad value stops the service with a
message naming the variable ("CATENA_ADMIN_PORT: expected int, got 'x'").
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from . import outbound

Port = Annotated[int, Meta(ge=0, le=65535)]
Seconds = Annotated[float, Meta(gt=0)]
PositiveInt = Annotated[int, Meta(ge=1)]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PREFIX = "CATENA_"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Public in the source: services refuse it (catena.safety); tests and `catena up` never need it.
DEVELOPMENT_TOKEN_SECRETS = "dev:catena-development-secret-change-me-0123456789"


class SettingsError(Exception):
    """A ``CATENA_*`` variable is missing or malformed."""


def parse_networks(value: str) -> tuple[Network, ...]:
    """``cidr[,cidr...]`` (IPv4 and IPv6), or ``none`` for no network at all.

    Raises ``ValueError`` naming the entry at fault.
    """
    value = value.strip()
    if value.lower() == "none":
        return ()
    networks = []
    for entry in (part.strip() for part in value.split(",")):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IPv4 or IPv6 network (cidr[,cidr...] or 'none')") from None
    return tuple(networks)


class BaseSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every service needs."""

    database_url: str = DEFAULT_DATABASE_URL
    # How Redis is reached (catena/redis.py): "single" (redis_url), "cluster"
    # (redis_url names one or more nodes, comma-separated) or "sentinel" (the primary
    # named redis_sentinel_service, looked up through redis_sentinels).
    redis_mode: str = "single"
    redis_url: str = DEFAULT_REDIS_URL
    redis_sentinels: str = ""
    redis_sentinel_service: str = ""
    redis_sentinel_password: str = ""
    # Namespace of every Redis key and channel, so that two deployments (or two
    # test runs) can share one Redis server.
    redis_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_:.-]{1,64}$")] = "catena"
    log_level: Annotated[str, Meta(pattern=r"^(debug|info|warning|error)$")] = "info"
    database_pool_size: PositiveInt = 10
    # Playback-token signing keys: "kid:secret[,kid:secret...]"; the first signs,
    # all verify, so a secret can be rotated without logging anybody out.
    token_secrets: str = DEVELOPMENT_TOKEN_SECRETS
    var_dir: str = "var"
    # Networks outbound requests made for tenants (EPG downloads, webhooks, SMS
    # gateways) may reach besides public addresses: "none" or "cidr[,cidr...]".
    outbound_allow: str = "none"

    def __post_init__(self) -> None:
        # The Redis variables are checked together (the mode decides what the others
        # must hold); the message names the variable at fault.
        from .redis import settings_target

        settings_target(self)
        try:
            outbound.policy(self.outbound_allow)
        except ValueError as exc:
            raise ValueError(f"CATENA_OUTBOUND_ALLOW: {exc}") from None


class AdminSettings(BaseSettings, frozen=True, kw_only=True):
    """The Management API and the subscriber client API (``admin_api``)."""

    admin_host: str = "127.0.0.1"
    admin_port: Port = 8080
    # Idle time after which a manager session stops working.
    manager_session_idle: Seconds = 8 * 3600.0
    bcrypt_rounds: Annotated[int, Meta(ge=4, le=16)] = 12
    # Password checks (bcrypt) run at once per process; 0 = half the cores, at least one.
    bcrypt_concurrency: Annotated[int, Meta(ge=0, le=256)] = 0
    # Failed logins allowed per email and per client IP within login_fail_window.
    login_fail_limit: PositiveInt = 10
    login_fail_window: Seconds = 900.0
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    # Longest wait for a pooled connection, a new connection or one statement of
    # the admin API; past it the request is answered 503 with Retry-After.
    database_timeout: Seconds = 5.0
    # A request's headers must arrive within admin_header_timeout of its first byte,
    # its body within admin_body_timeout after that (408); a client address may hold
    # this many connections that have not authenticated (trusted proxies: no cap).
    admin_header_timeout: Seconds = 10.0
    admin_body_timeout: Seconds = 60.0
    admin_unauthenticated_connections: PositiveInt = 64
    # Webhook delivery worker inside admin_api (several instances may run).
    webhooks_enabled: bool = True
    # Subscriber sign-in by SMS (client API): code lifetime, wrong codes allowed
    # per code, the wait before a new code for the same phone, and codes sent per
    # phone / per client IP (failed verifications per IP) within client_sms_window.
    client_code_ttl: Seconds = 300.0
    client_code_attempts: PositiveInt = 5
    client_code_cooldown: Seconds = 60.0
    client_sms_per_phone: PositiveInt = 5
    client_sms_per_ip: PositiveInt = 20
    client_verify_fail_per_ip: PositiveInt = 30
    client_sms_window: Seconds = 3600.0
    # Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For,
    # X-Forwarded-Proto and X-Forwarded-Host the client API believes.
    client_trusted_proxies: str = ""
    # How often the worker looks for new operations; the receiver's answer timeout;
    # the first retry delay, doubled per failure up to webhook_retry_max; how many
    # webhooks one instance delivers to at once; operations per claim of a webhook.
    webhook_poll_interval: Seconds = 1.0
    webhook_timeout: Seconds = 10.0
    webhook_retry_base: Seconds = 2.0
    webhook_retry_max: Seconds = 600.0
    webhook_concurrency: PositiveInt = 4
    webhook_batch: PositiveInt = 100


class AuthgateSettings(BaseSettings, frozen=True, kw_only=True):
    """The authorization gateway (``authgate``)."""

    auth_host: str = "127.0.0.1"
    auth_port: Port = 8081
    auth_workers: PositiveInt = 1
    # How long an in-process entry may answer while Redis is unreachable.
    auth_stale_limit: Seconds = 300.0
    # Grace on top of X-AuthDuration before an unrefreshed session stops counting.
    auth_session_grace: Seconds = 60.0
    # Sessions not updated for this long are closed by the sweeper.
    auth_session_idle: Seconds = 600.0
    auth_flush_interval: Seconds = 1.0
    # Where session batches wait while PostgreSQL is unreachable;
    # empty = {var_dir}/authgate-{auth_port}/spool.
    auth_spool_dir: str = ""
    auth_max_header_bytes: PositiveInt = 16 * 1024
    auth_max_body_bytes: PositiveInt = 1024 * 1024
    auth_idle_timeout: Seconds = 75.0
    # A request must arrive in full within this time of its first byte.
    auth_request_timeout: Seconds = 10.0
    # X-AuthDuration of a denial (capped by the portal's authDuration): how long
    # Flussonic keeps refusing before it asks again.
    auth_deny_duration: Annotated[int, Meta(ge=1, le=86400)] = 10
    # Entries per in-process cache (verified tokens, subscribers).
    auth_cache_size: PositiveInt = 200_000
    # Session records held in memory when neither PostgreSQL nor the spool takes them.
    auth_max_buffered_records: PositiveInt = 500_000
    # Every Redis command of the gateway must be answered within this deadline, else
    # its connection is closed and the gateway answers without Redis until a probe
    # finds it answering again (a hung or stopped Redis never freezes answers).
    auth_redis_timeout: Annotated[float, Meta(gt=0, le=10)] = 0.05
    # While Redis cannot count sessions (unreachable, hung, its primary failing over),
    # new sessions get 503 (Flussonic applies its own policy) for this many seconds;
    # after that each process counts the sessions it knows, which may exceed a limit
    # across processes until Redis is back.  0 = count locally at once.
    auth_local_count_after: Annotated[float, Meta(ge=0)] = 30.0
    # The gateway's Redis connections: its own pipelined ones ("pipe"), or redis-py's
    # client ("redis-py", slower; kept to compare in make bench-auth).
    auth_redis_client: Annotated[str, Meta(pattern=r"^(pipe|redis-py)$")] = "pipe"
    # How often the idle-session sweeper runs (any number of gateways may run it).
    auth_sweep_interval: Seconds = 30.0
    # A playing session's progress (updatedAt, bytes) is written at most this often;
    # opens and closes go out with the next flush.
    auth_progress_interval: Annotated[float, Meta(ge=0)] = 30.0
    # Who may call /auth and /events (authgate/trust.py): a peer address in these
    # networks ("cidr[,cidr...]", or "none"), or a request carrying auth_secret (the
    # X-Catena-Secret header or the catena_secret query parameter; "" = no secret).
    auth_allowed_nets: str = "127.0.0.0/8,::1/128"
    auth_secret: Annotated[str, Meta(pattern=r"^([A-Za-z0-9_.~-]{16,256})?$")] = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            parse_networks(self.auth_allowed_nets)
        except ValueError as exc:
            raise ValueError(f"CATENA_AUTH_ALLOWED_NETS: {exc}") from None


class EpgSettings(BaseSettings, frozen=True, kw_only=True):
    """The EPG worker (``epg_worker``)."""

    epg_host: str = "127.0.0.1"
    epg_port: Port = 8082
    epg_concurrency: PositiveInt = 2
    epg_poll_interval: Seconds = 2.0
    epg_connect_timeout: Seconds = 10.0
    epg_total_timeout: Seconds = 600.0
    epg_max_bytes: PositiveInt = 4 * 1024 * 1024 * 1024
    epg_max_redirects: Annotated[int, Meta(ge=0, le=20)] = 5
    epg_job_timeout: Seconds = 3600.0
    # A download that receives nothing for this long has stalled (status timeout).
    epg_read_timeout: Seconds = 60.0
    # A running job whose worker sent no heartbeat for epg_stale_after is queued again.
    epg_heartbeat_interval: Seconds = 10.0
    epg_stale_after: Seconds = 60.0
    # How often due sources are looked for, and how soon a failed source is retried.
    epg_schedule_interval: Seconds = 30.0
    epg_retry_after: Seconds = 3600.0
    # How often a running update writes its progress; how often old programmes are pruned.
    epg_progress_interval: Seconds = 5.0
    epg_prune_interval: Seconds = 3600.0


class BenchSettings(BaseSettings, frozen=True, kw_only=True):
    """The throughput harness and the load test (``benchmarks/``, ``loadtests/``)."""

    # The servers on which each run makes its own database and Redis key prefix;
    # embedded ones (under var/bench) when these do not answer or bench_embedded is set.
    bench_database_url: str = DEFAULT_DATABASE_URL
    bench_redis_url: str = "redis://127.0.0.1:6379/9"
    bench_embedded: bool = False


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], environ: Mapping[str, str] | None = None, **overrides: Any) -> S:
    """Build ``cls`` from ``CATENA_*`` variables (and ``overrides``), validating every value."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for name in cls.__struct_fields__:
        key = PREFIX + name.upper()
        if key in env:
            raw[name] = env[key]
    raw.update(overrides)
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc), raw)) from None


def _explain(message: str, raw: dict[str, Any]) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.admin_port`"; name the variable
    # and show the value it was given.
    text, _, path = message.partition(" - at `$.")
    if not path:
        return message
    name = path.rstrip("`")
    return f"{PREFIX}{name.upper()}: {text.removesuffix(', got `str`')}, got {raw.get(name)!r}"


def parse_token_secrets(value: str) -> list[tuple[str, bytes]]:
    """Split ``kid:secret,kid:secret`` into pairs; the first one signs."""
    pairs = []
    for item in value.split(","):
        kid, sep, secret = item.strip().partition(":")
        if not sep or not kid or len(secret) < 32:
            raise SettingsError(
                "CATENA_TOKEN_SECRETS: expected 'kid:secret[,kid:secret...]' with secrets "
                f"of at least 32 characters (HS256 wants 256 bits), got an entry {kid or item!r}"
            )
        pairs.append((kid, secret.encode()))
    return pairs


def var_path(settings: BaseSettings, *parts: str) -> Path:
    """A path under the deployment's ``var`` directory."""
    return Path(settings.var_dir).joinpath(*parts)
