"""What the gateway itself counts (``GET /metrics``), read around a measured round."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from .infra import ServerFailed

# Checks decided, and commands written to Redis on the gateway's own connections.
_CHECKS = "authgate_checks_total{"
_COMMANDS = "authgate_redis_commands_total{"


def counters(port: int) -> tuple[int, int]:
    """``(checks, Redis commands)`` summed over the gateway's workers."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    checks = commands = 0
    for line in text.splitlines():
        if line.startswith(_CHECKS):
            checks += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith(_COMMANDS):
            commands += int(float(line.rsplit(" ", 1)[1]))
    return checks, commands


def per_thousand(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Redis commands per 1,000 checks between two readings."""
    checks = after[0] - before[0]
    return 1000.0 * (after[1] - before[1]) / checks if checks else 0.0


def wait_redis_ready(port: int, timeout: float = 60.0) -> None:
    """Until the gateway's ``/health`` says Redis is ``up`` (it may first rebuild the session counts)."""
    deadline = time.monotonic() + timeout
    state = "unknown"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                state = json.loads(response.read()).get("redis", "unknown")
        except (urllib.error.URLError, OSError, ValueError):
            state = "no answer"
        if state == "up":
            return
        time.sleep(0.1)
    raise ServerFailed(f"the gateway on port {port} never reported Redis up (last: {state})")
