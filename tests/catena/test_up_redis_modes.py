"""``catena up`` on a Redis Cluster: what ``CATENA_REDIS_MODE=cluster CATENA_REDIS_URL=… make up`` does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest

from catena.embedded import LocalCluster
from catena.testing import free_port

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
            return response.status, msgspec.json.decode(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def up(var: Path, **redis: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATENA_")}
    env |= {
        "CATENA_ADMIN_PORT": str(free_port()),
        "CATENA_AUTH_PORT": str(free_port()),
        "CATENA_EPG_PORT": str(free_port()),
        "CATENA_AUTH_WORKERS": "1",
    }
    env |= {f"CATENA_REDIS_{k.upper()}": v for k, v in redis.items()}
    var.mkdir(parents=True, exist_ok=True)
    with (var.parent / "up.out").open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "catena", "up", "--var-dir", str(var)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def test_up_runs_everything_on_a_redis_cluster(tmp_path: Path, redis_cluster: LocalCluster) -> None:
    var = tmp_path / "var"
    process = up(var, mode="cluster", url=redis_cluster.nodes[0].url)
    try:
        deadline = time.monotonic() + 150
        while not (var / "up.json").exists():
            assert process.poll() is None, (tmp_path / "up.out").read_text()[-4000:]
            assert time.monotonic() < deadline, "catena up did not come up"
            time.sleep(0.3)
        info = msgspec.json.decode((var / "up.json").read_bytes())
        assert info["redisMode"] == "cluster" and "Redis Cluster" in info["redis"]
        for url in (info["adminUrl"], info["authUrl"], info["epgWorkerUrl"]):
            status, health = get(url + "/health")
            assert status == 200 and health["redis"] == "up" and health["postgres"] == "up", (url, health)
        # PostgreSQL is still the embedded one; Redis is not started at all.
        assert (var / "pg").exists() and not (var / "redis").exists()
        query = {
            "name": "demo1",
            "session_id": "up-cluster-1",
            "token": info["demoPlaybackToken"],
            "request_type": "new_session",
        }
        status, _ = get(info["authUrl"] + "/auth?" + urllib.parse.urlencode(query))
        assert status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def test_up_refuses_a_wrong_mode_naming_the_variable(tmp_path: Path) -> None:
    process = up(tmp_path / "var", mode="clustr")
    assert process.wait(timeout=120) != 0
    output = (tmp_path / "up.out").read_text()
    assert "CATENA_REDIS_MODE: expected one of single, cluster, sentinel, got 'clustr'" in output
    assert "Traceback" not in output


def test_up_refuses_a_cluster_without_nodes(tmp_path: Path) -> None:
    process = up(tmp_path / "var", mode="cluster")
    assert process.wait(timeout=120) != 0
    assert "CATENA_REDIS_MODE=cluster needs CATENA_REDIS_URL" in (tmp_path / "up.out").read_text()
    # Refused before anything started: no embedded PostgreSQL is left running.
    assert not (tmp_path / "var" / "pg").exists()
