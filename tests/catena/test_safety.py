"""Services refuse the defaults that are only safe on a laptop; ``catena secret new`` makes a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from catena import safety
from catena.settings import (
    DEVELOPMENT_TOKEN_SECRETS,
    AdminSettings,
    AuthgateSettings,
    EpgSettings,
    SettingsError,
    parse_token_secrets,
)

ROOT = Path(__file__).resolve().parents[2]
SECRET = "t1:a-test-secret-that-is-long-enough-0123456789"
SERVICES = ("admin_api", "authgate", "epg_worker")


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CATENA_")}
    return subprocess.run(
        [sys.executable, *args], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def configured(tmp_path: Path) -> dict[str, str]:
    return {
        "CATENA_DATABASE_URL": "postgresql://catena@db.invalid/catena",
        "CATENA_REDIS_URL": "redis://cache.invalid:6379/0",
        "CATENA_TOKEN_SECRETS": SECRET,
        "CATENA_VAR_DIR": str(tmp_path),
    }


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_with_nothing_configured_refuses_and_says_how(service: str) -> None:
    result = run(["-m", service])
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"{service}: refusing to start with defaults that are only safe on a laptop"
    )
    for variable in ("CATENA_TOKEN_SECRETS", "CATENA_DATABASE_URL", "CATENA_REDIS_URL"):
        assert variable in result.stderr
    assert "catena secret new" in result.stderr
    # The gateway's spool and the EPG downloads need a fixed place; the admin API keeps no files.
    assert ("CATENA_VAR_DIR" in result.stderr) == (service != "admin_api")


@pytest.mark.parametrize("service", SERVICES)
def test_the_development_secret_is_refused_even_beside_a_real_one(service: str, tmp_path: Path) -> None:
    env = configured(tmp_path) | {"CATENA_TOKEN_SECRETS": f"{SECRET},{DEVELOPMENT_TOKEN_SECRETS}"}
    result = run(["-m", service], **env)
    assert result.returncode == 1 and "CATENA_TOKEN_SECRETS holds the development secret" in result.stderr
    assert "CATENA_DATABASE_URL" not in result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_an_unreadable_secrets_variable_stops_the_service(service: str, tmp_path: Path) -> None:
    result = run(["-m", service], **configured(tmp_path) | {"CATENA_TOKEN_SECRETS": "k1:short"})
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"{service}: CATENA_TOKEN_SECRETS: expected 'kid:secret")
    assert "Traceback" not in result.stderr


def test_a_relative_var_dir_is_refused_where_files_are_kept(tmp_path: Path) -> None:
    environ = configured(tmp_path) | {"CATENA_VAR_DIR": "var"}
    for cls in (AuthgateSettings, EpgSettings):
        with pytest.raises(SettingsError, match="CATENA_VAR_DIR is 'var'"):
            safety.load_for_service(cls, environ)
    assert safety.load_for_service(AdminSettings, environ).var_dir == "var"


def test_configured_settings_pass(tmp_path: Path) -> None:
    for cls in (AdminSettings, AuthgateSettings, EpgSettings):
        assert safety.load_for_service(cls, configured(tmp_path)).token_secrets == SECRET


def test_catena_secret_new_prints_a_secret_the_services_accept(tmp_path: Path) -> None:
    made = [run(["-m", "catena", "secret", "new"]).stdout.strip() for _ in range(2)]
    assert made[0] != made[1]
    ((kid, secret),) = parse_token_secrets(made[0])
    assert kid.startswith("k") and len(secret) >= 43
    rotated = f"{made[1]},{made[0]}"
    assert safety.load_for_service(AdminSettings, configured(tmp_path) | {"CATENA_TOKEN_SECRETS": rotated})
    named = run(["-m", "catena", "secret", "new", "--kid", "2026-q4"])
    assert named.returncode == 0 and named.stdout.startswith("2026-q4:")
    bad = run(["-m", "catena", "secret", "new", "--kid", "a,b"])
    assert bad.returncode == 1 and "--kid" in bad.stderr and bad.stdout == ""


@pytest.mark.parametrize("service", SERVICES)
def test_a_misspelt_variable_stops_the_service(service: str, tmp_path: Path) -> None:
    result = run(["-m", service], **configured(tmp_path) | {"CATENA_ADMN_PORT": "9000"})
    assert result.returncode == 1, result
    assert result.stderr.strip() == (
        f"{service}: CATENA_ADMN_PORT: not a Catena setting (misspelt?); see docs/deploy.md"
    )


def test_every_service_knows_the_other_services_variables(tmp_path: Path) -> None:
    # One environment file serves all three services.
    shared = configured(tmp_path) | {
        "CATENA_AUTH_PORT": "9141",
        "CATENA_EPG_PORT": "9142",
        "CATENA_TEST_X": "1",
    }
    for cls in (AdminSettings, AuthgateSettings, EpgSettings):
        safety.load_for_service(cls, shared | {"CATENA_ADMIN_PORT": "9140"})
