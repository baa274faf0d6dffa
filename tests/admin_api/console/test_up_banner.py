"""`make up` tells a new user where the console is and how to sign in."""

from __future__ import annotations

from pathlib import Path

import pytest

from catena import up


def test_the_banner_prints_the_console_url_and_its_sign_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = up.UpInfo(
        portalId="pK19SW3AAAE.",
        apiKey="key",
        ownerEmail="owner@demo.localhost",
        ownerPassword="s3cret-pass",
        demoSubscriberId="sK19SW3AAAE.",
        demoSubscriberPhone="79000000001",
        demoPlaybackToken="token",
        adminUrl="http://127.0.0.1:8080",
        authUrl="http://127.0.0.1:8081",
        epgWorkerUrl="http://127.0.0.1:8082",
        databaseUrl="postgresql://x",
        redisUrl="redis://x",
    )
    up._announce(info, tmp_path)
    lines = capsys.readouterr().out.splitlines()
    console = [line for line in lines if "Web console" in line]
    assert console == [
        "  Web console     http://127.0.0.1:8080/  (sign in: owner@demo.localhost / s3cret-pass)"
    ]
