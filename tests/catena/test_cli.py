from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import msgspec

from catena import ids


def catena(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CATENA_DATABASE_URL=database_url)
    return subprocess.run(
        [sys.executable, "-m", "catena", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_portal_create_prints_credentials_that_work(database_url: str, pool: asyncpg.Pool) -> None:
    result = catena(
        database_url,
        "portal",
        "create",
        "--name",
        "my-iptv",
        "--domain",
        "myiptv.com",
        "--owner-email",
        "Boss@MyIPTV.com",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    created = msgspec.json.decode(result.stdout)
    portal_id = ids.decode(created["portalId"])
    row = await pool.fetchrow("SELECT name, domain, api_key, owner_id FROM portals WHERE id = $1", portal_id)
    assert (row["name"], row["domain"], row["api_key"]) == ("my-iptv", "myiptv.com", created["apiKey"])
    assert ids.encode(row["owner_id"]) == created["ownerId"]
    assert created["ownerEmail"] == "boss@myiptv.com" and len(created["ownerPassword"]) >= 12


async def test_duplicate_name_is_a_clear_error(database_url: str, pool: asyncpg.Pool) -> None:
    args = ("portal", "create", "--name", "twice", "--domain", "one.tv", "--owner-email", "a@one.tv")
    assert catena(database_url, *args).returncode == 0
    again = catena(
        database_url, "portal", "create", "--name", "twice", "--domain", "two.tv", "--owner-email", "b@two.tv"
    )
    assert again.returncode != 0
    assert "a portal with this name already exists" in again.stderr
    assert "Traceback" not in again.stderr
    assert await pool.fetchval("SELECT count(*) FROM portals") == 1


async def test_bad_input_is_refused(database_url: str, pool: asyncpg.Pool) -> None:
    bad_email = catena(
        database_url,
        "portal",
        "create",
        "--name",
        "ok-name",
        "--domain",
        "x.tv",
        "--owner-email",
        "not-an-email",
    )
    assert bad_email.returncode != 0 and "not an email address" in bad_email.stderr
    weak = catena(
        database_url,
        "portal",
        "create",
        "--name",
        "ok-name",
        "--domain",
        "x.tv",
        "--owner-email",
        "a@x.tv",
        "--owner-password",
        "weak",
    )
    assert weak.returncode != 0 and "password" in weak.stderr
    assert await pool.fetchval("SELECT count(*) FROM portals") == 0


def test_migrate_reports_up_to_date(database_url: str) -> None:
    result = catena(database_url, "migrate")
    assert result.returncode == 0 and "database is up to date (0 applied now)" in result.stdout


def test_bad_setting_is_reported_by_name(database_url: str) -> None:
    env = dict(os.environ, CATENA_DATABASE_URL=database_url, CATENA_LOG_LEVEL="loud")
    result = subprocess.run(
        [sys.executable, "-m", "catena", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "CATENA_LOG_LEVEL" in result.stderr
