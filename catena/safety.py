"""What a service refuses to start with: the defaults that are only safe on a laptop.

The settings' defaults let the test suite and a developer's one-off runs work with
nothing configured.  A service started from its command line
(``python -m admin_api``, ``python -m authgate``, ``python -m epg_worker``)
refuses them, with a message naming each variable and how to set it:

- ``CATENA_TOKEN_SECRETS`` holding the development secret, which is public in the
  source: anybody could sign playback tokens and list cursors;
- ``CATENA_DATABASE_URL`` unset: the default is the ``postgres`` superuser's
  maintenance database on 127.0.0.1;
- ``CATENA_REDIS_URL`` unset: the default is 127.0.0.1's Redis, database 0; on a
  second host that is another Redis, so session limits and the entitlement map
  would silently stop being shared;
- ``CATENA_VAR_DIR`` not an absolute path (the gateway's spool of accepted play
  sessions, the EPG downloads): ``var`` lands wherever the process was started.

A ``CATENA_*`` variable that no settings Struct knows (a typo such as
``CATENA_ADMN_PORT`` in a unit or compose file) stops it too, rather than being
silently ignored; ``CATENA_TEST_*`` belong to the test suite and are let through.

``catena up`` sets all four for its children (its own secret under ``var/``); the
tests, benchmarks and load tests that start services set them too.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from .settings import (
    DEVELOPMENT_TOKEN_SECRETS,
    PREFIX,
    AuthgateSettings,
    BaseSettings,
    EpgSettings,
    SettingsError,
    load,
    parse_token_secrets,
)

S = TypeVar("S", bound=BaseSettings)

_KID = re.compile(r"[A-Za-z0-9_.-]{1,64}")

_DEVELOPMENT_SECRETS = {secret for _, secret in parse_token_secrets(DEVELOPMENT_TOKEN_SECRETS)}


def new_token_secret(kid: str | None = None) -> str:
    """A fresh ``kid:secret`` entry for ``CATENA_TOKEN_SECRETS`` (256 random bits)."""
    kid = kid or time.strftime("k%Y%m%d%H%M%S", time.gmtime())
    if not _KID.fullmatch(kid):
        raise SettingsError(f"--kid: expected 1-64 letters, digits, '.', '_' or '-', got {kid!r}")
    return f"{kid}:{secrets.token_urlsafe(32)}"


def laptop_defaults(settings: BaseSettings, environ: Mapping[str, str]) -> list[str]:
    """What in ``settings`` (read from ``environ``) is only safe on a laptop, one line each."""
    problems = []
    if any(secret in _DEVELOPMENT_SECRETS for _, secret in parse_token_secrets(settings.token_secrets)):
        problems.append(
            f"{PREFIX}TOKEN_SECRETS holds the development secret, which is public: make a secret with "
            f"`catena secret new` and set {PREFIX}TOKEN_SECRETS to what it prints"
        )
    needed = [("DATABASE_URL", "the deployment's PostgreSQL"), ("REDIS_URL", "its Redis")]
    if settings.redis_mode == "sentinel":  # the sentinels name the primary (CATENA_REDIS_SENTINELS)
        needed.pop()
    for name, meaning in needed:
        if not environ.get(PREFIX + name):
            problems.append(f"{PREFIX}{name} is not set: set it to {meaning} (the default is a laptop's)")
    if isinstance(settings, AuthgateSettings | EpgSettings) and not Path(settings.var_dir).is_absolute():
        problems.append(
            f"{PREFIX}VAR_DIR is {settings.var_dir!r}, relative to wherever the service starts: set an "
            "absolute path for its spool and downloads (e.g. /var/lib/catena)"
        )
    return problems


def known_variables() -> set[str]:
    """Every ``CATENA_*`` variable some settings Struct reads."""
    classes: list[type[BaseSettings]] = [BaseSettings]
    known: set[str] = set()
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        known.update(PREFIX + name.upper() for name in cls.__struct_fields__)
    return known


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``CATENA_*`` names in ``environ`` that no service reads (the test suite's own excepted)."""
    known = known_variables()
    return sorted(
        name
        for name in environ
        if name.startswith(PREFIX) and name not in known and not name.startswith(PREFIX + "TEST_")
    )


def load_for_service(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Settings for a service process: :func:`catena.settings.load`, then no laptop defaults.

    Raises :class:`SettingsError` listing every problem, so the service stops before
    it opens a port or a connection.
    """
    env = os.environ if environ is None else environ
    unknown = unknown_variables(env)
    if unknown:
        raise SettingsError(f"{', '.join(unknown)}: not a Catena setting (misspelt?); see docs/deploy.md")
    settings = load(cls, env)
    problems = laptop_defaults(settings, env)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise SettingsError(
            f"refusing to start with defaults that are only safe on a laptop:\n{lines}\n"
            "(`catena up` sets all of these for a development machine; see docs/deploy.md)"
        )
    return settings
