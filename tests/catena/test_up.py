"""``catena up`` end to end: the real command, embedded servers, all three services."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        assert (info["portalId"], info["apiKey"], info["ownerPassword"]) == (
            first["portalId"],
            first["apiKey"],
            first["ownerPassword"],
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
