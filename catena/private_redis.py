"""The private part of redis-py that Catena relies on, in one place.

The gateway's own pipelined Redis connection (``authgate/redis_pipe.py``) must
read ``CATENA_REDIS_URL`` exactly as redis-py's clients do (``redis://``,
``rediss://`` with ``ssl_cert_reqs`` / ``ssl_ca_certs``, ``unix://``, ``?db=``,
credentials).  redis-py documents only ``from_url`` (redis/redis-py#246, #247);
the parser behind it, ``redis.asyncio.connection.parse_url``, is undocumented, and
it says TLS by handing back a connection class.  :func:`url_options` is the one
call of it, and turns the class into a plain ``tls`` flag.

Checked against redis-py 5.0 to 8.1; ``pyproject.toml`` caps redis below 9, and
``tests/catena/test_private_apis.py`` fails, naming this module, when an upgrade
changes what it returns.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import connection

_KEPT = ("host", "port", "path", "username", "password", "db", "ssl_ca_certs", "ssl_cert_reqs")


def url_options(url: str) -> dict[str, Any]:
    """What a Redis URL says: ``host``/``port`` or ``path``, credentials, ``db``, ``tls`` and its options."""
    parsed: dict[str, Any] = dict(connection.parse_url(url))
    options = {key: parsed[key] for key in _KEPT if key in parsed}
    kind = parsed.get("connection_class")
    options["tls"] = isinstance(kind, type) and issubclass(kind, connection.SSLConnection)
    return options
