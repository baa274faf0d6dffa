"""docs/api.md is the OpenAPI document rendered: it fails here when an endpoint changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin_api import apidoc


def test_the_api_reference_is_current() -> None:
    current = apidoc.PAGE.read_text()
    assert apidoc.MARKER in current
    assert apidoc.page(current, apidoc.document()) == current, "docs/api.md is stale: run `make api-doc`"


def test_every_operation_and_schema_is_on_the_page() -> None:
    document = apidoc.document()
    text = apidoc.PAGE.read_text()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert f"### `{method.upper()} {path}`" in text and f"`{operation['operationId']}`" in text
    for name in document["components"]["schemas"]:
        assert f"\n### {name}\n" in text


def test_the_check_mode_exits_non_zero_when_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "api.md"
    page.write_text(apidoc.PAGE.read_text().replace("### ErrorBody", "### Stale"))
    monkeypatch.setattr(apidoc, "PAGE", page)
    with pytest.raises(SystemExit, match="stale"):
        apidoc.main(["--check"])
    apidoc.main([])
    apidoc.main(["--check"])
