"""``catena up`` end to end: the real command, embedded servers, all three services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from catena.testing import free_port

pytestmark = pytest.mark.slow


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"X-Auth-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, msgspec.json.decode(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start(var: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATENA_")}
    env |= {
        "CATENA_ADMIN_PORT": str(free_port()),
        "CATENA_AUTH_PORT": str(free_port()),
        "CATENA_EPG_PORT": str(free_port()),
        "CATENA_AUTH_WORKERS": "1",
    }
    var.mkdir(parents=True, exist_ok=True)
    (var / "up.json").unlink(missing_ok=True)
    # A file, not a pipe: nobody reads a pipe while the test waits, and a full
    # pipe would block the supervisor.
    with (var.parent / "up.out").open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "catena", "up", "--var-dir", str(var)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_for_up(var: Path, process: subprocess.Popen[bytes], timeout: float = 150) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (var / "up.json").exists():
            return dict(msgspec.json.decode((var / "up.json").read_bytes()))
        if process.poll() is not None:
            output = (var.parent / "up.out").read_text(errors="replace")
            pytest.fail(f"catena up exited with {process.returncode}:\n{output[-4000:]}")
        time.sleep(0.3)
    process.kill()
    pytest.fail("catena up did not write up.json in time")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def embedded_processes(var: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(var) in cmdline and ("postgres" in cmdline or "redis-server" in cmdline):
            found.append(proc)
    return found


def test_up_from_empty_var_then_again(tmp_path: Path) -> None:
    var = tmp_path / "var"
    process = start(var)
    try:
        info = wait_for_up(var, process)
        assert set(info) >= {"adminUrl", "authUrl", "portalId", "apiKey", "ownerEmail", "ownerPassword"}
        # The gateway's secret, made once, printed with the Flussonic lines that carry it.
        assert info["authSecret"] == (var / "auth-secret").read_text().strip()
        line = f"/events?catena_secret={info['authSecret']}; only event=play_*;"
        assert until(lambda: line in (var.parent / "up.out").read_text(errors="replace"), timeout=10)
        status, portal = get(info["adminUrl"] + "/tv-management/api/v1/portal", info["apiKey"])
        assert status == 200 and portal["portalId"] == info["portalId"] and portal["name"] == "demo"
        for url in (info["adminUrl"], info["authUrl"], info["epgWorkerUrl"]):
            status, health = get(url + "/health")
            assert status == 200 and health["postgres"] == "up" and health["redis"] == "up", url
        restarted = kill_admin_api_and_wait(process, info, var)
        assert restarted
    finally:
        stop(process)
    assert embedded_processes(var) == []
    first = info

    process = start(var)
    try:
        info = wait_for_up(var, process)
        assert (info["portalId"], info["apiKey"], info["ownerPassword"], info["authSecret"]) == (
            first["portalId"],
            first["apiKey"],
            first["ownerPassword"],
            first["authSecret"],
        )
        assert get(info["adminUrl"] + "/tv-management/api/v1/portal", info["apiKey"])[0] == 200
    finally:
        stop(process)


def kill_admin_api_and_wait(process: subprocess.Popen[bytes], info: dict[str, Any], var: Path) -> bool:
    """Kill the admin_api child; ``catena up`` must log it and bring it back."""
    children = psutil.Process(process.pid).children()
    (admin,) = [c for c in children if "admin_api" in " ".join(c.cmdline())]
    admin.kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(info["adminUrl"] + "/health")[0] == 200 and not admin.is_running():
                supervisor_log = (var.parent / "up.out").read_text(errors="replace")
                return "child exited; restarting" in supervisor_log
        except OSError:
            pass
        time.sleep(0.3)
    return False


def post(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url, data=msgspec.json.encode(body), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def healthy(url: str) -> dict[str, Any] | None:
    try:
        status, body = get(url + "/health")
    except OSError:
        return None
    return body if status == 200 and isinstance(body, dict) else None


def until(check: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    return None


def login_counters(redis_url: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return list(client.scan_iter(match="*login-fail*"))
    finally:
        client.close()


def test_killed_embedded_servers_are_restarted_and_the_services_recover(tmp_path: Path) -> None:
    """kill -9 the embedded Redis, then PostgreSQL: ``catena up`` brings them back, the
    gateway leaves degraded mode and the sign-in throttles count in Redis again."""
    var = tmp_path / "var"
    process = start(var)
    try:
        info = wait_for_up(var, process)
        admin, auth = info["adminUrl"], info["authUrl"]
        redis_pid = int((var / "redis" / "redis.pid").read_text())
        psutil.Process(redis_pid).kill()
        assert until(lambda: (healthy(auth) or {}).get("redis") == "down" or not psutil.pid_exists(redis_pid))
        back = until(lambda: (healthy(auth) or {}).get("status") == "ok" and healthy(admin))
        assert back, f"the gateway stayed degraded: {get(auth + '/health')}"
        assert int((var / "redis" / "redis.pid").read_text()) != redis_pid
        wrong = {"email": info["ownerEmail"], "password": "Wrong-Pass-1!"}
        assert post(admin + "/tv-management/api/v1/login", wrong) == 401
        assert login_counters(info["redisUrl"]), "the login throttle did not count in Redis"

        postmaster = int((var / "pg" / "postmaster.pid").read_text().split()[0])
        psutil.Process(postmaster).kill()
        portal = admin + "/tv-management/api/v1/portal"
        recovered = until(
            lambda: get(portal, info["apiKey"])[0] == 200 and (healthy(auth) or {}).get("status") == "ok"
        )
        assert recovered, f"no recovery after PostgreSQL was killed: {get(auth + '/health')}"
        assert int((var / "pg" / "postmaster.pid").read_text().split()[0]) != postmaster
        supervisor_log = (var.parent / "up.out").read_text(errors="replace")
        assert "embedded server exited; restarting" in supervisor_log
        assert '"server": "redis"' in supervisor_log or '"server":"redis"' in supervisor_log
    finally:
        stop(process)
    assert embedded_processes(var) == []
