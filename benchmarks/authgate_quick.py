"""A quick wrk comparison: authgate against an aiohttp hello world and a bare uvloop server.

This is the gateway engineer's spot check, not the side-by-side harness (that is
``make bench-auth``).  It seeds a database (``--subscribers`` subscribers, 500
channels, 50 packages), starts the three servers on ports 8130-8132 pinned to one
core, and drives each with ``wrk -t1 -c64`` pinned to the other, with requests
pre-generated in wrk's ``init``, and reports each server's CPU time per request
next to wrk's figures (on a shared machine the CPU time is the steadier number):

* ``hot``: ``update_session`` of sessions already open (the 70 % case);
* ``mix``: 70 % such updates, 25 % ``new_session`` with fresh session ids,
  5 % denials (channel not in packages, bad token).

Run: ``.venv/bin/python benchmarks/authgate_quick.py`` with ``CATENA_DATABASE_URL``
naming a database this may fill (created with ``createdb``) and ``CATENA_REDIS_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from catena import db, entitlements, ids, migrations
from catena.tokens import TokenCodec

SECRETS = "bench:benchmark-secret-0123456789abcdef"
CORE_SERVER, CORE_WRK = "0", "1"
PORTS = {"authgate": 8130, "aiohttp": 8131, "bare": 8132}

HELLO = """
import uvloop
from aiohttp import web
async def hello(request):
    return web.Response(text="ok")
app = web.Application()
app.router.add_get("/auth", hello)
uvloop.install()
web.run_app(app, host="127.0.0.1", port={port}, access_log=None, print=None)
"""

BARE = """
import asyncio, uvloop, httptools
RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok"
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        self.p = httptools.HttpRequestParser(self)
    def data_received(self, data):
        self.p.feed_data(data)
    def on_message_complete(self):
        self.t.write(RESPONSE)
async def main():
    server = await asyncio.get_running_loop().create_server(P, "127.0.0.1", {port})
    await server.serve_forever()
uvloop.install()
asyncio.run(main())
"""

WRK_SCRIPT = """
local requests = {}
init = function(args)
  for line in io.lines(os.getenv("WRK_PATHS")) do
    requests[#requests + 1] = wrk.format("GET", line)
  end
end
local i = 0
request = function()
  i = i % #requests + 1
  return requests[i]
end
"""


async def seed(url: str, subscribers: int) -> list[tuple[int, str, list[str]]]:
    """Portal, channels, packages, subscribers; returns (id, token, watchable channels)."""
    conn = await db.connect(url)
    await migrations.apply(conn)
    await ids.claim_node(conn)
    portal = ids.new_id()
    await conn.execute(
        "INSERT INTO portals (id, name, domain, api_key, settings) VALUES ($1, $2, '', $3, $4)",
        portal,
        f"bench-{portal}",
        secrets.token_hex(8),
        {"maxSessions": 1000},
    )
    packages = [ids.new_id() for _ in range(50)]
    channels = [(ids.new_id(), f"ch{i}") for i in range(500)]
    await conn.copy_records_to_table(
        "packages",
        columns=["id", "portal_id", "name"],
        records=[(p, portal, f"pk{i}") for i, p in enumerate(packages)],
    )
    await conn.copy_records_to_table(
        "channels",
        columns=["id", "portal_id", "name", "title"],
        records=[(c, portal, n, n) for c, n in channels],
    )
    links = [(packages[i % 50], c, portal) for i, (c, _) in enumerate(channels)]
    await conn.copy_records_to_table(
        "channel_packages", columns=["package_id", "channel_id", "portal_id"], records=links
    )
    rng = random.Random(5)
    subs, subscriptions, out = [], [], []
    codec = TokenCodec(SECRETS)
    for n in range(subscribers):
        sid = ids.new_id()
        subs.append((sid, portal, "viewer", "7", str(9_000_000_000 + n)))
        mine = rng.sample(range(50), 3)
        subscriptions += [(sid, packages[k], portal) for k in mine]
        names = [name for i, (_, name) in enumerate(channels) if i % 50 in mine]
        out.append((sid, codec.sign(sid, portal, 1), names))
    await conn.copy_records_to_table(
        "subscribers", columns=["id", "portal_id", "name", "phone_country_code", "phone"], records=subs
    )
    await conn.copy_records_to_table(
        "subscriptions", columns=["subscriber_id", "package_id", "portal_id"], records=subscriptions
    )
    async with conn.transaction():
        await entitlements.changed(conn, portal, "portal")
    await conn.close()
    return out


def path(token: str, name: str, session: str, kind: str, n: int) -> str:
    return (
        f"/auth?name={name}&proto=hls&ip=10.1.{n % 250}.{n % 200}&request_type={kind}&request_number={n}"
        f"&session_id={session}&stream_clients=3&total_clients=120&token={token}&duration={n}"
        f"&bytes={n * 1000}&user_agent=VLC%2F3.0.16"
    )


def scenarios(viewers: list[tuple[int, str, list[str]]]) -> tuple[list[str], list[str], list[str]]:
    """(warm-up: open every session, hot: updates only, mix: 70/25/5)."""
    rng = random.Random(7)
    opened = [(token, names[0], f"s{sid}") for sid, token, names in viewers]
    warm = [path(t, n, s, "new_session", 1) for t, n, s in opened]
    hot = [
        path(t, n, s, "update_session", i)
        for i, (t, n, s) in enumerate(rng.choice(opened) for _ in range(100_000))
    ]
    mix = []
    for i in range(200_000):
        token, name, session = rng.choice(opened)
        roll = rng.random()
        if roll < 0.70:
            mix.append(path(token, name, session, "update_session", i))
        elif roll < 0.95:
            mix.append(path(token, name, f"new-{i}-{secrets.token_hex(4)}", "new_session", i))
        elif roll < 0.975:
            mix.append(path(token, "ch1" if name != "ch1" else "ch2", f"deny-{i}", "new_session", i))
        else:
            mix.append(path("not-a-token", name, f"bad-{i}", "new_session", i))
    return warm, hot, mix


def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # taskset execs the server: the child's pid is the server's (for its CPU time).
    return subprocess.Popen(
        ["taskset", "-c", CORE_SERVER, *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def open_sessions(port: int, paths: list[str]) -> int:
    """Send each path once (64 at a time): every viewer's session is then open and counted."""
    allowed = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def one(target: str) -> int:
            async with http.get(f"http://127.0.0.1:{port}{target}") as response:
                await response.read()
                return int(response.status == 200)

        for start in range(0, len(paths), 512):
            allowed += sum(await asyncio.gather(*(one(p) for p in paths[start : start + 512])))
    return allowed


async def wait_up(port: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as response:
                    await response.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


def wrk(port: int, paths: list[str], seconds: int, work: Path) -> str:
    listing = work / f"paths-{port}-{len(paths)}.txt"
    listing.write_text("\n".join(paths) + "\n")
    script = work / "requests.lua"
    script.write_text(WRK_SCRIPT)
    result = subprocess.run(
        [
            "taskset",
            "-c",
            CORE_WRK,
            "wrk",
            "-t1",
            "-c64",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        env={**os.environ, "WRK_PATHS": str(listing)},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(label: str, pid: int, port: int, paths: list[str], seconds: int, work: Path) -> str:
    """wrk's rate and latency, and the server's CPU time per request (robust on a busy machine)."""
    before = cpu_seconds(pid)
    output = wrk(port, paths, seconds, work)
    used = cpu_seconds(pid) - before
    lines = output.splitlines()
    rate = next(line.split()[1] for line in lines if line.startswith("Requests/sec"))
    done = next(int(line.split()[0]) for line in lines if " requests in " in line)
    p50 = next(line.split()[1] for line in lines if line.strip().startswith("50%"))
    p99 = next(line.split()[1] for line in lines if line.strip().startswith("99%"))
    non2xx = next((line.split()[-1] for line in lines if "Non-2xx" in line), "0")
    return (
        f"{label:26s} {float(rate):>9,.0f} req/s  p50 {p50:>8}  p99 {p99:>8}  "
        f"CPU {used / done * 1e6:6.1f} us/req  non-2xx {non2xx}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    url = os.environ["CATENA_DATABASE_URL"]
    viewers = await seed(url, args.subscribers)
    warm, hot, mix = scenarios(viewers)
    work = Path(tempfile.mkdtemp(prefix="authgate-quick-"))
    env = {
        **os.environ,
        "CATENA_TOKEN_SECRETS": SECRETS,
        "CATENA_AUTH_PORT": str(PORTS["authgate"]),
        "CATENA_REDIS_PREFIX": f"quick-{secrets.token_hex(3)}",
        "CATENA_VAR_DIR": str(work),
        "CATENA_LOG_LEVEL": "warning",
    }
    processes = [
        start([sys.executable, "-c", HELLO.format(port=PORTS["aiohttp"])]),
        start([sys.executable, "-c", BARE.format(port=PORTS["bare"])]),
        start([sys.executable, "-m", "authgate", "--workers", "1"], env),
    ]
    try:
        await wait_up(PORTS["authgate"])
        started = time.monotonic()
        opened = await open_sessions(PORTS["authgate"], warm)
        print(f"{opened} sessions opened in {time.monotonic() - started:.1f} s", flush=True)
        hello, bare, gate = (p.pid for p in processes)
        lines = [
            measure("aiohttp hello world", hello, PORTS["aiohttp"], hot, args.seconds, work),
            measure("bare uvloop + httptools", bare, PORTS["bare"], hot, args.seconds, work),
            measure("authgate, updates only", gate, PORTS["authgate"], hot, args.seconds, work),
            measure("authgate, 70/25/5 mix", gate, PORTS["authgate"], mix, args.seconds, work),
        ]
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
