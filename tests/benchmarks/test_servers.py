"""The servers the harness measures beside authgate answer, and answer correctly."""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from benchmarks.auth_harness import dataset, request_mix, targets, verify, wrk
from benchmarks.auth_harness.infra import Server, ServerFailed
from catena import ids
from catena.testing import free_port
from catena.tokens import TokenCodec
from tests.benchmarks.conftest import SECRETS, SMALL

StartServer = Callable[..., Server]
GET = b"GET /auth?name=ch0001&token=x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def exchange(port: int, data: bytes, expect_responses: int) -> bytes:
    """Send ``data`` on one connection; read until ``expect_responses`` answers or close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1 ") < expect_responses:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


@pytest.mark.parametrize("module", ["hello_aiohttp", "bare_protocol"])
def test_constant_servers_answer_200_with_keep_alive_and_pipelining(
    harness_server: StartServer, module: str
) -> None:
    server = harness_server(module)
    answer = exchange(server.port, GET * 3, 3)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert answer.endswith(b"ok")


def test_bare_server_rejects_garbage_and_closes(harness_server: StartServer) -> None:
    server = harness_server("bare_protocol")
    answer = exchange(server.port, b"\x00\x01 garbage\r\n\r\n", 2)
    assert answer.startswith(b"HTTP/1.1 400 ")
    # It keeps serving other connections.
    assert exchange(server.port, GET, 1).startswith(b"HTTP/1.1 200 OK")


@pytest.mark.skipif(targets.nginx_binary() is None, reason="nginx-light is not installed")
def test_nginx_target_answers_200(tmp_path: Path) -> None:
    setup = targets.Setup(tmp_path, free_port() - 0, None, {})
    server = targets.server(targets.BY_KEY["a"], setup)
    server.start(timeout=20)
    try:
        assert exchange(server.port, GET * 2, 2).count(b"HTTP/1.1 200 OK\r\n") == 2
    finally:
        server.stop()
    assert not (tmp_path / "nginx.pid").exists()


@pytest.fixture
async def small_plan(pool: asyncpg.Pool) -> request_mix.Plan:
    async with pool.acquire() as conn:
        portal_id = await dataset.create_portal(conn, "bench-small")
        data = dataset.generate(SMALL, portal_id, TokenCodec(SECRETS))
        await dataset.load(conn, data)
    return request_mix.build(data, 200)


@pytest.fixture
def naive(harness_server: StartServer, database_url: str, small_plan: request_mix.Plan) -> Server:
    env = {"CATENA_DATABASE_URL": database_url, "CATENA_TOKEN_SECRETS": SECRETS}
    return harness_server("naive_backend", env)


async def test_naive_backend_answers_the_plan(naive: Server, small_plan: request_mix.Plan) -> None:
    answers = await verify.send_all("127.0.0.1", naive.port, [p.raw for p in small_plan.setup])
    answers += await verify.send_all("127.0.0.1", naive.port, [p.raw for p in small_plan.pool])
    # It counts no sessions: a second session of a single-screen subscriber is let in.
    expected = [request_mix.uncounted(p) for p in small_plan.setup + small_plan.pool]
    check = verify.compare(expected, answers)
    assert check.total_wrong == 0, check.answers
    counts = request_mix.mix_counts(200)
    assert check.answers["bad_token"] == {(403, "bad_token"): counts["bad_token"]}
    assert check.answers["channel_not_in_packages"] == {
        (403, "channel_not_in_packages"): counts["channel_not_in_packages"]
    }
    assert check.answers["session_limit"] == {(200, None): counts["session_limit"]}
    assert check.answers["update_session"] == {(200, None): 140}


async def test_naive_backend_sends_flussonic_headers(naive: Server, small_plan: request_mix.Plan) -> None:
    planned = small_plan.setup[0]
    target = planned.raw.split(b" ", 2)[1].decode()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{naive.port}{target}") as resp:
            assert resp.status == 200
            assert resp.headers["X-UserId"] == ids.encode(planned.subscriber_id)
            assert resp.headers["X-AuthDuration"] == "180"
            assert resp.headers["X-Max-Sessions"] == "1"  # single-screen holders come first
        async with session.get(f"http://127.0.0.1:{naive.port}/auth?name=ch0001") as resp:
            assert resp.status == 403 and (await resp.json()) == {"error": "bad_request"}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_cycles_the_pool(
    harness_server: StartServer, small_plan: request_mix.Plan, tmp_path: Path
) -> None:
    pool = request_mix.write_pool(small_plan, tmp_path / "pool.bin")
    server = harness_server("bare_protocol")
    result = wrk.run(wrk.Load(None, connections=8, duration=1.0), server.port, pool)
    # More requests than the pool holds: wrk went round it, and every one was answered.
    assert result.requests > len(small_plan.pool)
    assert result.non_2xx == 0 and result.socket_errors == 0
    assert 0 < result.p50_us <= result.p99_us <= result.max_us


def test_wrk_result_line_is_required() -> None:
    with pytest.raises(RuntimeError, match="no result"):
        wrk.parse("Running 1s test\n", "unable to connect")


def test_migrate_with_the_gateways_interpreter(database_url: str, tmp_path: Path) -> None:
    # Every migration is applied already: a second run is a no-op, and says so.
    targets.migrate(sys.executable, {"CATENA_DATABASE_URL": database_url}, tmp_path)
    unreachable = {"CATENA_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    with pytest.raises(ServerFailed, match="catena migrate"):
        targets.migrate(sys.executable, unreachable, tmp_path)
