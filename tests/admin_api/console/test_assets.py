"""Vendored files are what their manifests say; templates keep to the Content-Security-Policy."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

MANIFESTS = [ROOT / "admin_api" / "static" / "vendor", Path(__file__).resolve().parent / "vendor"]
TEMPLATES = ROOT / "admin_api" / "templates"


@pytest.mark.parametrize("folder", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_vendored_files_match_their_manifest(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = set()
    for package in manifest["packages"]:
        assert package["version"] and package["license"] and package["integrity"].startswith("sha512-")
        for name, entry in package["files"].items():
            listed.add(name)
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            assert digest == entry["sha256"], (
                f"{name} is not the file of {package['name']}@{package['version']}"
            )
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert present - {"manifest.json"} == listed, "every vendored file is in the manifest and no other"


def _templates() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.html"))


@pytest.mark.parametrize("template", _templates(), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_templates_hold_no_inline_script_or_style(template: Path) -> None:
    text = template.read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), "inline <script>"
    assert "<style" not in text, "inline <style>"
    assert not re.search(r"\sstyle=", text), "style attribute"
    assert not re.search(r"\son[a-z]+=", text), "inline event handler"
    assert "javascript:" not in text
    assert not re.search(r"\shx-on", text), "hx-on runs inline script"
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "assets load from this site only"
