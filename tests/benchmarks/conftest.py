"""Fixtures for the harness's tests: data sets and the harness's own server processes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.auth_harness import dataset
from benchmarks.auth_harness.infra import Server
from catena import ids
from catena.testing import free_port
from catena.tokens import TokenCodec

SECRETS = "bench:" + "x" * 32
ROOT = Path(__file__).resolve().parents[2]
# A data set small enough to load in a blink, with every kind of subscriber in it.
SMALL = dataset.Spec(subscribers=600, channels=40, packages=6, tokens=300)


@pytest.fixture(scope="session")
def codec() -> TokenCodec:
    return TokenCodec(SECRETS)


@pytest.fixture(scope="session")
def full_data(codec: TokenCodec) -> dataset.DataSet:
    """The data set of the stated size, in memory (a few seconds: 20,000 tokens are signed)."""
    return dataset.generate(dataset.Spec(), ids.new_id(), codec)


@pytest.fixture
def harness_server(tmp_path: Path) -> Iterator[object]:
    """Start one of the harness's server modules; every one started is stopped after the test."""
    started: list[Server] = []

    def start(module: str, env: dict[str, str] | None = None) -> Server:
        port = free_port()
        argv = [sys.executable, "-m", f"benchmarks.auth_harness.{module}", "--port", str(port)]
        server = Server(module, argv, port, tmp_path / f"{module}.log", env=env, cwd=ROOT)
        started.append(server)
        server.start(timeout=30)
        return server

    yield start
    for server in started:
        server.stop()
