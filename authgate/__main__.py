"""``python -m authgate [--workers N]``: the authorization gateway.

With one worker the process serves by itself.  With more, it forks N workers that
each listen on the same port (``SO_REUSEPORT``: the kernel spreads connections),
restarts a worker that dies, and passes SIGTERM / SIGINT on to all of them; each
worker then stops accepting, answers what it has, flushes its sessions and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time

import uvloop

from catena import logs
from catena import redis as catena_redis
from catena.safety import load_for_service
from catena.settings import AuthgateSettings, SettingsError

from .worker import serve

log = logging.getLogger("authgate")

EXIT_CANNOT_LISTEN = 3
GC_THRESHOLDS = (100_000, 50, 1000)
RESTART_DELAY_MAX = 10.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="authgate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes on one port (default CATENA_AUTH_WORKERS, 1)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_for_service(AuthgateSettings)
    except SettingsError as exc:
        sys.exit(f"authgate: {exc}")
    workers = args.workers if args.workers is not None else settings.auth_workers
    if workers < 1:
        sys.exit(f"authgate: --workers: expected at least 1, got {workers}")
    logs.setup("authgate", settings.log_level)
    try:
        asyncio.run(catena_redis.check_at_start(settings, "authgate"))
    except catena_redis.RedisSettingsError as exc:
        sys.exit(f"authgate: {exc}")
    if not _can_listen(settings):
        sys.exit(f"authgate: cannot listen on {settings.auth_host}:{settings.auth_port}")
    if workers == 1:
        sys.exit(run_worker(settings, 0))
    sys.exit(supervise(settings, workers))


def run_worker(settings: AuthgateSettings, index: int) -> int:
    """Serve until SIGTERM or SIGINT; the exit code."""
    uvloop.install()
    # A worker holds hundreds of thousands of long-lived objects (sessions, entries)
    # and makes a few per check.  With the default thresholds the cyclic collector
    # walks them all often enough to put pauses of 100 ms and more into p99; collect
    # the young generation every 100,000 allocations and the old one rarely.
    gc.set_threshold(*GC_THRESHOLDS)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, index, stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        log.error("cannot listen", extra={"error": str(exc)})
        return EXIT_CANNOT_LISTEN
    return 0


def supervise(settings: AuthgateSettings, count: int) -> int:
    """Fork ``count`` workers, keep them running, stop them on SIGTERM / SIGINT."""
    children: dict[int, tuple[int, float]] = {}  # pid → (worker index, started at)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            _kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        _spawn(settings, index, children)
    failures = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index, started = children.pop(pid, (-1, 0.0))
        if stopping or index < 0:
            continue
        code = os.waitstatus_to_exitcode(status)
        if code == EXIT_CANNOT_LISTEN:
            log.error("a worker cannot listen; stopping", extra={"worker": index})
            stop(signal.SIGTERM, None)
            return 1
        failures = failures + 1 if time.monotonic() - started < 30 else 0
        delay = min(RESTART_DELAY_MAX, 0.25 * 2**failures)
        log.error("worker exited; restarting", extra={"worker": index, "code": code, "delay": delay})
        time.sleep(delay)
        if not stopping:
            _spawn(settings, index, children)
    return 0


def _spawn(settings: AuthgateSettings, index: int, children: dict[int, tuple[int, float]]) -> None:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        code = 1
        try:
            code = run_worker(settings, index)
        except BaseException:
            log.exception("worker crashed", extra={"worker": index})
        finally:
            logging.shutdown()
            os._exit(code)
    children[pid] = (index, time.monotonic())


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _can_listen(settings: AuthgateSettings) -> bool:
    """Whether the address can be bound (checked once, before forking workers)."""
    try:
        infos = socket.getaddrinfo(settings.auth_host, settings.auth_port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind(address)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    main()
