"""The private parts of aiohttp that Catena relies on, in one place.

aiohttp answers a request it cannot parse (two ``Content-Length`` headers, bytes
that are not HTTP) inside its connection handler, before any application code
runs, and offers no hook for that answer (aio-libs/aiohttp#3287).  A
``web.RequestHandler`` subclass overriding ``handle_error`` is the one way to answer
it in our JSON shape; connection handlers are made by the runner's ``Server``, so
this module overrides ``BaseRunner._make_server`` and reads ``Server._loop`` and
``Server._kwargs`` to build a ``Server`` that makes the subclass.

Checked against aiohttp 3.9 to 3.14; ``pyproject.toml`` caps aiohttp below 3.15, and
``tests/catena/test_private_apis.py`` fails, naming this module, when an upgrade
moves any of it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


def server_making(server: web.Server, handler_class: type[web.RequestHandler]) -> web.Server:
    """A copy of ``server`` (same handler, factory and options) making ``handler_class`` connections."""
    return _Server(server, handler_class)


class AppRunner(web.AppRunner):
    """aiohttp's ``AppRunner`` whose connections are handled by ``handler_class``."""

    def __init__(
        self,
        app: web.Application,
        *,
        handler_class: type[web.RequestHandler] = web.RequestHandler,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.handler_class = handler_class

    async def _make_server(self) -> web.Server:  # private hook of web.BaseRunner
        return server_making(await super()._make_server(), self.handler_class)


class _Server(web.Server):
    def __init__(self, server: web.Server, handler_class: type[web.RequestHandler]) -> None:
        super().__init__(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
        self.handler_class = handler_class

    def __call__(self) -> web.RequestHandler:
        return self.handler_class(self, loop=self._loop, **self._kwargs)
