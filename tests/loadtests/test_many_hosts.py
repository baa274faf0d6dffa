"""Two hosts on one PostgreSQL and one Redis Cluster, for real: a bounded locust run (issue 13 item 5).

``python -m loadtests.run --hosts 2`` starts, on 127.0.0.2 and 127.0.0.3 each, a gateway
(its own spool), an admin API and an EPG worker, on a Redis Cluster of 3 primaries and
3 replicas; locust's viewers zap through both gateways while subscribers are revoked
through both admin APIs and EPG updates are asked of both.  It exits 0 only when no
subscriber was above its limit at any moment, every revocation was denied at both
gateways within a second, every EPG job ran exactly once, and every play session was
recorded once.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _free_on_both(port: int) -> bool:
    for host in ("127.0.0.2", "127.0.0.3"):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def base_port() -> int:
    """A port P with P, P+2 and P+3 free on both loopback hosts."""
    while True:
        port = random.randint(30000, 32000)
        if all(_free_on_both(port + offset) for offset in (0, 2, 3)):
            return port


def test_two_hosts_keep_every_promise(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "loadtests.run",
        "--hosts",
        "2",
        "--users",
        "40",
        "--subscribers",
        "20",
        "--spawn-rate",
        "20",
        "--duration",
        "25",
        "--revocations",
        "4",
        "--base-port",
        str(base_port()),
        "--workdir",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    output = done.stdout + done.stderr
    print(done.stdout[-3000:])
    assert done.returncode == 0, output[-6000:]
    assert "subscribers over their limit at any moment: 0" in output
    assert "admitted sessions without a row: 0" in output
    assert "jobs not run exactly once: 0" in output
    assert "many hosts: OK" in output
