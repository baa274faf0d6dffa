"""``make loadtest LOADTEST_ARGS="--hosts 2"``: two hosts' worth of services on one machine.

Each "host" is a loopback address of its own (127.0.0.2, 127.0.0.3) running an
``authgate`` (its own spool directory), an ``admin_api`` and an ``epg_worker``,
all on one PostgreSQL and one Redis Cluster (3 primaries, 3 replicas, started for
the run).  While locust's viewers zap through both gateways, this module:

* revokes subscribers through the two admin APIs in turn (``POST
  /subscribers/{id}/disable``) and measures, from each API answer, how long until
  *both* gateways deny that subscriber's playing session (the promise: 1 s);
* serves a small XMLTV guide, creates EPG sources through both admin APIs and asks
  both, again and again, to update them: afterwards every ``epg_update`` job must
  have run exactly once (one ``epg_fetches`` row per job, whichever worker ran it).

``loadtests.run`` then checks ``play_sessions`` as for one host (nobody above the
limit at any moment, every admitted session recorded) and that each Flussonic
session id has exactly one row.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

from benchmarks.auth_harness import dataset, infra, targets
from catena import ids

HOSTS = ("127.0.0.2", "127.0.0.3")
API = "/tv-management/api/v1"
REVOKE_PROMISE = 1.0
EPG_SOURCES = 4

XMLTV = """<?xml version="1.0" encoding="UTF-8"?>
<tv generator-info-name="catena-loadtest">
  <channel id="one"><display-name>One</display-name></channel>
  <channel id="two"><display-name>Two</display-name></channel>
{programmes}
</tv>
"""


@dataclass
class Host:
    address: str
    gateway: infra.Server
    admin: infra.Server
    epg: infra.Server

    @property
    def gateway_url(self) -> str:
        return f"http://{self.address}:{self.gateway.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.address}:{self.admin.port}"

    def servers(self) -> list[infra.Server]:
        return [self.gateway, self.admin, self.epg]


@dataclass
class Findings:
    revocations: list[tuple[str, float]] = field(default_factory=list)  # (subscriber, seconds)
    jobs: int = 0
    fetches: int = 0
    jobs_not_run_once: list[str] = field(default_factory=list)
    rows: int = 0
    sessions: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        late = [s for _, s in self.revocations if s > REVOKE_PROMISE]
        return (
            not late
            and bool(self.revocations)
            and self.jobs > 0
            and not self.jobs_not_run_once
            and self.rows == self.sessions
            and not self.errors
        )

    def summary(self) -> str:
        slowest = max((s for _, s in self.revocations), default=0.0)
        lines = [
            f"revocations: {len(self.revocations)}, each denied at both gateways within "
            f"{slowest:.3f} s of the API's answer (promise {REVOKE_PROMISE:.0f} s)",
            f"EPG jobs: {self.jobs}, fetches: {self.fetches}, jobs not run exactly once: "
            f"{len(self.jobs_not_run_once)}",
            f"play sessions: {self.rows:,} rows for {self.sessions:,} Flussonic session ids",
        ]
        lines += [f"    {line}" for line in self.jobs_not_run_once[:10] + self.errors[:10]]
        return "\n".join(lines)


def start_hosts(python: str, env_for: object, base_port: int, workdir: Path) -> list[Host]:
    """Start the services of both hosts; ``env_for(path)`` gives a service's ``CATENA_*``."""
    hosts: list[Host] = []
    try:
        for number, address in enumerate(HOSTS):
            hosts.append(_start_host(python, env_for, base_port, workdir / f"host{number + 2}", address))
    except infra.ServerFailed:
        stop_hosts(hosts)
        raise
    return hosts


def _start_host(python: str, env_for: object, base_port: int, directory: Path, address: str) -> Host:
    directory.mkdir(parents=True)
    env: dict[str, str] = env_for(directory)  # type: ignore[operator]
    env.update(
        CATENA_ADMIN_HOST=address,
        CATENA_ADMIN_PORT=str(base_port + 2),
        CATENA_EPG_HOST=address,
        CATENA_EPG_PORT=str(base_port + 3),
        CATENA_EPG_POLL_INTERVAL="0.5",
        # The guide the EPG workers fetch is served on loopback (catena.outbound).
        CATENA_OUTBOUND_ALLOW="127.0.0.0/8",
    )
    gateway = targets.authgate(python, base_port, 1, env, directory / "authgate.log", host=address)
    admin = infra.Server(
        f"admin_api {address}",
        [python, "-m", "admin_api"],
        base_port + 2,
        directory / "admin_api.log",
        env=env,
        cwd=directory,
        host=address,
    )
    epg = infra.Server(
        f"epg_worker {address}",
        [python, "-m", "epg_worker"],
        base_port + 3,
        directory / "epg_worker.log",
        env=env,
        cwd=directory,
        host=address,
    )
    host = Host(address, gateway, admin, epg)
    for server in host.servers():
        server.start()
    return host


def stop_hosts(hosts: list[Host]) -> list[int | None]:
    """SIGTERM every service (gateways flush their sessions); their exit codes."""
    return [server.stop() for host in hosts for server in host.servers()]


# ---------------------------------------------------------------- during the run


@dataclass
class Probe:
    """A subscriber kept playing at both gateways until it is revoked."""

    subscriber: int
    token: str
    channel: str


def probes(data: dataset.DataSet, skip: int, count: int) -> list[Probe]:
    """Token holders locust does not play (after the first ``skip``), for revocations."""
    holders = sorted(data.holders(), key=lambda s: (s.max_sessions != 1, s.index))[skip:]
    names = [name for _, name in data.channels]
    chosen = [s for s in holders if data.entitled(s) and (s.max_sessions or 2) >= 2][:count]
    return [Probe(s.id, s.token or "", names[min(data.entitled(s))]) for s in chosen]


async def watch(
    hosts: list[Host], database_url: str, portal_id: int, checks: list[Probe], seconds: float
) -> Findings:
    """Revoke and update EPG sources through both hosts for ``seconds``."""
    findings = Findings()
    conn = await asyncpg.connect(database_url)
    api_key = await conn.fetchval("SELECT api_key FROM portals WHERE id = $1", portal_id)
    await conn.close()
    guide = await _serve_guide()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        try:
            sources = await _create_sources(http, hosts, api_key, guide)
            every = seconds / (len(checks) + 1)
            await asyncio.gather(
                _revoke_in_turn(http, hosts, api_key, checks, every, findings),
                _update_in_turn(http, hosts, api_key, sources, seconds, findings),
            )
        finally:
            await guide.cleanup()
    return findings


async def _serve_guide() -> web.AppRunner:
    now = int(time.time()) // 3600 * 3600
    programmes = "\n".join(
        f'  <programme start="{time.strftime("%Y%m%d%H%M%S +0000", time.gmtime(now + h * 3600))}" '
        f'channel="{channel}"><title>Hour {h}</title></programme>'
        for channel in ("one", "two")
        for h in range(12)
    )
    app = web.Application()
    body = XMLTV.format(programmes=programmes).encode()

    async def guide(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/xml")

    app.router.add_get("/guide.xml", guide)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner


def _guide_url(runner: web.AppRunner) -> str:
    (address,) = runner.addresses
    return f"http://127.0.0.1:{address[1]}/guide.xml"


async def _create_sources(
    http: aiohttp.ClientSession, hosts: list[Host], api_key: str, guide: web.AppRunner
) -> list[str]:
    sources = []
    for number in range(EPG_SOURCES):
        host = hosts[number % len(hosts)]
        body = {"name": f"guide-{number}", "url": _guide_url(guide), "period": 1}
        async with http.post(
            f"{host.admin_url}{API}/epg-sources", json=body, headers={"X-Auth-Token": api_key}
        ) as r:
            created = await r.json()
            assert r.status in (200, 201), created
            sources.append(created["epgSourceId"])
    return sources


async def _update_in_turn(
    http: aiohttp.ClientSession,
    hosts: list[Host],
    api_key: str,
    sources: list[str],
    seconds: float,
    findings: Findings,
) -> None:
    deadline = time.monotonic() + seconds
    turn = 0
    while time.monotonic() < deadline:
        for source in sources:
            host = hosts[turn % len(hosts)]
            turn += 1
            url = f"{host.admin_url}{API}/epg-sources/{source}/update"
            async with http.post(url, headers={"X-Auth-Token": api_key}) as response:
                if response.status >= 300:
                    findings.errors.append(f"update {source} at {host.address}: {response.status}")
        await asyncio.sleep(1.0)


async def _revoke_in_turn(
    http: aiohttp.ClientSession,
    hosts: list[Host],
    api_key: str,
    checks: list[Probe],
    every: float,
    findings: Findings,
) -> None:
    for number, probe in enumerate(checks):
        await asyncio.sleep(every)
        session = f"probe-{probe.subscriber}"
        for host in hosts:  # playing, and known to both gateways
            status, _ = await _auth(http, host, probe, session)
            if status != 200:
                findings.errors.append(
                    f"probe {ids.encode(probe.subscriber)} refused at {host.address}: {status}"
                )
        admin = hosts[number % len(hosts)]
        url = f"{admin.admin_url}{API}/subscribers/{ids.encode(probe.subscriber)}/disable"
        async with http.post(url, headers={"X-Auth-Token": api_key}) as response:
            answered = time.monotonic()
            if response.status != 200:
                findings.errors.append(
                    f"disable at {admin.address}: {response.status} {await response.text()}"
                )
                continue
        waits = await asyncio.gather(*(_until_denied(http, host, probe, session, answered) for host in hosts))
        findings.revocations.append((ids.encode(probe.subscriber), max(waits)))


async def _until_denied(
    http: aiohttp.ClientSession, host: Host, probe: Probe, session: str, since: float
) -> float:
    while True:
        status, reason = await _auth(http, host, probe, session)
        if status == 403 and reason == "subscriber_disabled":
            return time.monotonic() - since
        if time.monotonic() - since > 10:
            return float("inf")
        await asyncio.sleep(0.02)


async def _auth(
    http: aiohttp.ClientSession, host: Host, probe: Probe, session: str
) -> tuple[int, str | None]:
    params = {
        "name": probe.channel,
        "session_id": session,
        "token": probe.token,
        "request_type": "update_session",
        "proto": "hls",
        "ip": "203.0.113.9",
    }
    async with http.get(f"{host.gateway_url}/auth", params=params) as response:
        body = await response.json(content_type=None) if response.status != 200 else {}
        return response.status, body.get("error") if isinstance(body, dict) else None


# ---------------------------------------------------------------- afterwards

_JOBS = """
SELECT j.id, j.state, count(f.id) AS fetches
FROM jobs j LEFT JOIN epg_fetches f ON f.job_id = j.id
WHERE j.kind = 'epg_update' AND j.portal_id = $1
GROUP BY j.id, j.state
"""
_ROWS = """
SELECT count(*) AS rows, count(DISTINCT flussonic_id) AS sessions FROM play_sessions WHERE portal_id = $1
"""


async def settle_and_count(database_url: str, portal_id: int, findings: Findings, wait: float = 30.0) -> None:
    """Wait for the EPG queue to drain, then count jobs, fetches and session rows."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            jobs = await conn.fetch(_JOBS, portal_id)
            if jobs and all(j["state"] in ("done", "failed") for j in jobs):
                break
            await asyncio.sleep(0.5)
        findings.jobs = len(jobs)
        findings.fetches = sum(j["fetches"] for j in jobs)
        findings.jobs_not_run_once = [
            f"job {ids.encode(j['id'])}: {j['state']}, {j['fetches']} fetches"
            for j in jobs
            if j["fetches"] != 1 or j["state"] not in ("done", "failed")
        ]
    finally:
        await conn.close()


async def count_rows(database_url: str, portal_id: int, findings: Findings) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(_ROWS, portal_id)
        findings.rows, findings.sessions = row["rows"], row["sessions"]
    finally:
        await conn.close()
