"""Run wrk with the pool script and read its one-line JSON result."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import msgspec

SCRIPT = Path(__file__).resolve().parent / "pool.lua"
_MARK = "HARNESS-RESULT "


class WrkResult(msgspec.Struct, frozen=True):
    requests: int
    duration_us: int
    bytes: int
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    non_2xx: int
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts


@dataclass(frozen=True, slots=True)
class Load:
    """How wrk drives a server: from which core, with how many connections, how long."""

    cpu: int | None
    connections: int = 64
    threads: int = 1
    duration: float = 10.0
    timeout: float = 2.0

    def command(self, port: int, pool: Path, duration: float) -> list[str]:
        pin = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        return [
            *pin,
            "wrk",
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{duration:g}s",
            f"--timeout={self.timeout:g}s",
            "-s",
            str(SCRIPT),
            f"http://127.0.0.1:{port}/",
            "--",
            str(pool),
        ]


def run(load: Load, port: int, pool: Path, duration: float | None = None) -> WrkResult:
    """Drive ``port`` with the requests in ``pool`` for ``duration`` (default ``load.duration``)."""
    seconds = load.duration if duration is None else duration
    try:
        done = subprocess.run(
            load.command(port, pool, seconds),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk did not finish within {seconds + 60:g} s") from None
    return parse(done.stdout, done.stderr)


def parse(stdout: str, stderr: str = "") -> WrkResult:
    """The result line of ``pool.lua``'s ``done()``; an error naming wrk's output if absent."""
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            return msgspec.json.decode(line[len(_MARK) :], type=WrkResult)
    raise RuntimeError(f"wrk gave no result; it printed:\n{stdout[-2000:]}{stderr[-2000:]}")
