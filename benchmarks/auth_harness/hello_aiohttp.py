"""Baseline (b): an aiohttp + uvloop "hello world" answering every path.

python -m benchmarks.auth_harness.hello_aiohttp --port 8151
"""

from __future__ import annotations

from aiohttp import web

from . import _serving


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="ok", headers={"X-AuthDuration": "180"})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    return app


def main(argv: list[str] | None = None) -> None:
    args = _serving.arguments(__doc__.splitlines()[0]).parse_args(argv)
    _serving.run(create_app(), args.host, args.port)


if __name__ == "__main__":
    main()
