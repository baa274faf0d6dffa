"""docs/map.md is generated from the route tables: it fails here when a route moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin_api import routemap


def test_the_route_map_is_current() -> None:
    current = routemap.PAGE.read_text()
    assert routemap.MARKER in current
    assert routemap.page(current) == current, "docs/map.md is stale: run `make map`"


def test_every_admin_and_gateway_route_is_on_the_page() -> None:
    text = routemap.PAGE.read_text()
    routes = routemap.admin_routes() + routemap.gateway_routes()
    assert {("GET", "/auth"), ("POST", "/events")} <= {(r.method, r.path) for r in routes}
    for route in routes:
        assert f"| {route.method} | `{route.path}` | `{route.module}` | `{route.function}` |" in text


def test_the_gateway_routes_are_read_from_its_branches(tmp_path: Path) -> None:
    server = tmp_path / "server.py"
    server.write_text(
        "class App:\n    pass\n\n"
        "class Conn:\n"
        "    def __init__(self, app: App) -> None:\n        self.app = app\n\n"
        "    def _route(self, method, url):\n"
        "        path, _, query = url.partition(b'?')\n"
        "        if path == b'/a':\n"
        "            if method == b'GET':\n                return self._respond(self.app.answer())\n"
        "        elif path == b'/b':\n"
        "            if method == b'POST':\n                return self._b(query)\n"
        "            if method == b'PUT':\n                return self._b(query)\n"
    )
    routes = routemap.gateway_routes(server, root=tmp_path)
    assert [(r.method, r.path, r.function) for r in routes] == [
        ("GET", "/a", "App.answer"),
        ("POST", "/b", "Conn._b"),
        ("PUT", "/b", "Conn._b"),
    ]


def test_the_check_mode_exits_non_zero_when_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "map.md"
    page.write_text(routemap.PAGE.read_text().replace("| GET | `/auth` |", "| GET | `/stale` |"))
    monkeypatch.setattr(routemap, "PAGE", page)
    with pytest.raises(SystemExit, match="stale"):
        routemap.main(["--check"])
    routemap.main([])
    routemap.main(["--check"])
