"""``catena health``: whether a service on this host answers ``/health`` (for container checks).

One image runs all three services, so its ``HEALTHCHECK`` cannot name the port:
without a service name the command asks each service's configured address and
succeeds when one of them answers ``200``.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from .settings import AdminSettings, AuthgateSettings, BaseSettings, EpgSettings, load

SERVICES: dict[str, tuple[type[BaseSettings], str]] = {
    "admin_api": (AdminSettings, "admin"),
    "authgate": (AuthgateSettings, "auth"),
    "epg_worker": (EpgSettings, "epg"),
}
_ANY_ADDRESS = {"", "0.0.0.0", "::"}


def health_url(service: str) -> str:
    """Where ``service``'s ``/health`` answers, from its ``CATENA_*`` settings."""
    cls, prefix = SERVICES[service]
    settings = load(cls)
    host, port = getattr(settings, f"{prefix}_host"), getattr(settings, f"{prefix}_port")
    host = "127.0.0.1" if host in _ANY_ADDRESS else host
    return f"http://[{host}]:{port}/health" if ":" in host else f"http://{host}:{port}/health"


def answers(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check(service: str | None) -> str | None:
    """``None`` when healthy, else what did not answer."""
    urls = [health_url(name) for name in ([service] if service else SERVICES)]
    if any(answers(url) for url in urls):
        return None
    return "no healthy answer from " + ", ".join(urls)
