"""The five servers the harness measures and how each one is started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .infra import Server, ServerFailed

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    label: str
    offset: int  # port = base port + offset
    # Whether answers are checked against the plan (the constant servers say 200 to all).
    checks_answers: bool = False
    # Whether it counts sessions, i.e. whether "session_limit" denials are expected.
    counts_sessions: bool = False


TARGETS = (
    Target("a", "nginx return 200", 0),
    Target("b", "aiohttp+uvloop hello", 1),
    Target("c", "naive aiohttp+SQL", 2, checks_answers=True),
    Target("d", "authgate", 3, checks_answers=True, counts_sessions=True),
    Target("e", "bare uvloop+httptools", 4),
    # authgate again, its Redis a 3-primary Redis Cluster (docs/scaling.md).
    Target("f", "authgate on Redis Cluster", 5, checks_answers=True, counts_sessions=True),
    # (f) with redis-py's cluster client instead of the gateway's own connections
    # (CATENA_AUTH_REDIS_CLIENT=redis-py): what keeping the pipes is worth.
    Target("g", "authgate cluster redis-py", 6, checks_answers=True, counts_sessions=True),
)
# The targets that are the gateway (scraped for Redis commands per request), and
# those on the run's Redis Cluster.
GATEWAYS = ("d", "f", "g")
ON_CLUSTER = ("f", "g")
BY_KEY = {t.key: t for t in TARGETS}


@dataclass(frozen=True, slots=True)
class Setup:
    """What every server needs to know: where to write, which core, which backends."""

    workdir: Path
    base_port: int
    cpu: int | None
    # CATENA_* variables for the naive backend and authgate (database, Redis, secrets).
    env: dict[str, str]
    authgate_python: str = sys.executable
    authgate_workers: int = 1
    # The same for authgate on the run's Redis Cluster (target f).
    cluster_env: dict[str, str] | None = None

    def port(self, target: Target) -> int:
        return self.base_port + target.offset


def server(target: Target, setup: Setup) -> Server:
    """The (not yet started) server process for ``target``."""
    port = setup.port(target)
    log = setup.workdir / f"{target.key}-{target.label.split()[0]}.log"
    if target.key == "a":
        return Server(target.label, _nginx_argv(setup.workdir, port), port, log, cpu=setup.cpu)
    if target.key in GATEWAYS:
        env = setup.cluster_env if target.key in ON_CLUSTER and setup.cluster_env else setup.env
        if target.key == "g":
            env = {**env, "CATENA_AUTH_REDIS_CLIENT": "redis-py"}
        return authgate(setup.authgate_python, port, setup.authgate_workers, env, log, cpu=setup.cpu)
    module = {"b": "hello_aiohttp", "c": "naive_backend", "e": "bare_protocol"}[target.key]
    argv = [sys.executable, "-m", f"benchmarks.auth_harness.{module}", "--port", str(port)]
    return Server(target.label, argv, port, log, cpu=setup.cpu, env=setup.env, cwd=ROOT)


def authgate(
    python: str,
    port: int,
    workers: int,
    env: dict[str, str],
    log: Path,
    *,
    cpu: int | None = None,
    host: str = "127.0.0.1",
) -> Server:
    """``python -m authgate --workers N`` on ``host:port``, run from the log's directory."""
    argv = [python, "-m", "authgate", "--workers", str(workers)]
    env = {**env, "CATENA_AUTH_HOST": host, "CATENA_AUTH_PORT": str(port)}
    # Started from the work directory so that nothing it writes lands in a source tree.
    return Server(f"authgate {host}:{port}", argv, port, log, cpu=cpu, env=env, cwd=log.parent, host=host)


def migrate(python: str, env: dict[str, str], cwd: Path) -> None:
    """``catena migrate`` with the gateway's interpreter: its checkout may have migrations
    this one lacks (e.g. when ``--authgate-python`` is another checkout's venv)."""
    code = "import sys; from catena.cli import main; main(sys.argv[1:])"
    done = subprocess.run(
        [python, "-c", code, "migrate"],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise ServerFailed(f"catena migrate with {python} failed:\n{done.stdout}{done.stderr}")


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/nginx-tmp/body;
    proxy_temp_path {dir}/nginx-tmp/proxy;
    fastcgi_temp_path {dir}/nginx-tmp/fastcgi;
    uwsgi_temp_path {dir}/nginx-tmp/uwsgi;
    scgi_temp_path {dir}/nginx-tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def _nginx_argv(workdir: Path, port: int) -> list[str]:
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (make bench-auth installs nginx-light)")
    (workdir / "nginx-tmp").mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port))
    return [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "nginx-error.log")]
