"""The wheel, installed the way an operator installs it, runs without the source tree.

The test builds the wheel from the working tree (offline, with the build backend
the dev lock pins), installs it into a fresh virtualenv from the production lock
(``pip install --require-hashes -r requirements.lock``, then the wheel without
dependencies: what the Dockerfile does), and from a directory outside the
repository runs ``catena --help``, ``catena migrate`` against a scratch database
and the admin API against it.  PyPI must be reachable (pip's cache makes repeated
runs quick).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from catena import migrations, testing
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
PACKAGES = ("catena", "admin_api", "authgate", "epg_worker")


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def tracked_files() -> list[str]:
    listing = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=ROOT)
    return [name for name in listing.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the working tree (no build/ or egg-info left here)."""
    source = tmp_path_factory.mktemp("source")
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((ROOT / name).read_bytes())
    out = tmp_path_factory.mktemp("dist")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        out,
        source,
        cwd=source,
    )
    (built,) = out.glob("catena-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the production lock and the wheel, nothing else."""
    home = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", home, cwd=home)
    pip = home / "bin" / "pip"
    run(pip, "install", "--quiet", "--require-hashes", "-r", ROOT / "requirements.lock", cwd=home)
    run(pip, "install", "--quiet", "--no-deps", wheel, cwd=home)
    run(pip, "check", cwd=home)
    return home


@pytest.fixture
async def scratch_database(server_database_url: str) -> AsyncIterator[str]:
    async with testing.scratch_database(server_database_url, "catena_wheel_") as url:
        yield url


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory with no Catena source in it."""
    return tmp_path


def env_for(**catena: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CATENA_", "PYTHON", "VIRTUAL_ENV"))}
    return clean | {f"CATENA_{k.upper()}": v for k, v in catena.items()}


def test_the_wheel_carries_the_migrations_and_every_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sql = {f"catena/migrations/{m.label}.sql" for m in migrations.discover()}
    assert sql <= names
    data = {
        n for n in tracked_files() if n.startswith(tuple(p + "/" for p in PACKAGES)) and not n.endswith(".py")
    }
    assert data - names == set(), "add these to [tool.setuptools.package-data] in pyproject.toml"
    assert not {n for n in names if n.startswith(("tests/", "benchmarks/", "loadtests/"))}


def test_the_installed_wheel_migrates_and_serves(
    venv: Path, scratch_database: str, outside: Path, redis_url: str
) -> None:
    bin_ = venv / "bin"
    located = run(bin_ / "python", "-c", "import catena.migrations as m; print(m.__file__)", cwd=outside)
    assert located.startswith(str(venv)), located
    assert "migrate" in run(bin_ / "catena", "--help", cwd=outside, env=env_for())
    out = run(bin_ / "catena", "migrate", cwd=outside, env=env_for(database_url=scratch_database))
    applied = [line.split()[1] for line in out.splitlines() if line.startswith("applied ")]
    assert applied == [m.label for m in migrations.discover()], out
    assert "up to date (0 applied now)" in run(
        bin_ / "catena", "migrate", cwd=outside, env=env_for(database_url=scratch_database)
    )
    serve_admin_api(bin_, outside, scratch_database, redis_url)


def serve_admin_api(bin_: Path, cwd: Path, database_url: str, redis_url: str) -> None:
    port = testing.free_port()
    secret = run(bin_ / "catena", "secret", "new", cwd=cwd, env=env_for()).strip()
    env = env_for(database_url=database_url, redis_url=redis_url, token_secrets=secret, admin_port=str(port))
    log = cwd / "admin_api.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([bin_ / "admin-api"], cwd=cwd, env=env, stderr=sink)
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    assert answer.status == 200
                    return
            except OSError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.1)
        pytest.fail("the installed admin API never answered /health")
    finally:
        process.terminate()
        process.wait(20)


def test_production_install_has_no_embedded_servers(venv: Path, outside: Path) -> None:
    result = subprocess.run(
        [venv / "bin" / "catena", "up", "--var-dir", outside / "var"],
        cwd=outside, env=env_for(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert "install 'catena[embedded]'" in result.stderr and "Traceback" not in result.stderr
    unsafe = subprocess.run(
        [venv / "bin" / "authgate"], cwd=outside, env=env_for(), capture_output=True, text=True
    )
    assert unsafe.returncode == 1 and "catena secret new" in unsafe.stderr
