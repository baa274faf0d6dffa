"""Who may call ``/auth`` and ``/events``, and which session an event may change (issue 15 item 2).

Attacks sent for real to real gateway processes: a caller outside
``CATENA_AUTH_ALLOWED_NETS`` without the secret; a ``play_closed`` for another
viewer's session id carrying a token of another portal (to the gateway that
admitted it, and to one that has not written its row yet); a ``play_opened`` with
nothing but a victim's ``user_id``.
"""

from __future__ import annotations

import ipaddress
import re

import asyncpg
import msgspec
import pytest

from authgate.trust import Trust
from catena.settings import AuthgateSettings, SettingsError, load, parse_networks

from .conftest import MODES, Gateway, Launcher, Portal, Sub, World, eventually

pytestmark = pytest.mark.slow
REDIS_MODES = MODES
SECRET = "gateway-secret-for-tests-0123456789"


# ---------------------------------------------------------------- the rules, without servers


def test_allowed_networks_hold_ipv4_ipv6_and_mapped_addresses() -> None:
    trust = Trust(parse_networks("127.0.0.0/8, ::1/128, 10.20.0.0/16, 2001:db8::/32"), "")
    assert trust.allows_peer(("127.0.0.1", 5000))
    assert trust.allows_peer(("10.20.3.4", 5000))
    assert trust.allows_peer(("::1", 5000, 0, 0))
    assert trust.allows_peer(("2001:db8::7", 5000, 0, 0))
    assert trust.allows_peer(("::ffff:10.20.0.9", 5000, 0, 0))  # a dual-stack socket's IPv4 client
    assert not trust.allows_peer(("10.21.0.1", 5000))
    assert not trust.allows_peer(("192.168.1.1", 5000))
    assert not trust.allows_peer(("2001:db9::1", 5000, 0, 0))
    assert not trust.allows_peer(None)
    assert not Trust(parse_networks("none"), "").allows_peer(("127.0.0.1", 1))


def test_the_default_allows_loopback_only() -> None:
    settings = load(AuthgateSettings, {})
    nets = parse_networks(settings.auth_allowed_nets)
    assert nets == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert settings.auth_secret == ""


def test_the_secret_is_compared_whole() -> None:
    trust = Trust((), SECRET)
    assert trust.carries_secret(SECRET.encode())
    assert not trust.carries_secret(SECRET.encode()[:-1])
    assert not trust.carries_secret(b"")
    assert not trust.carries_secret(None)
    assert not Trust((), "").carries_secret(b"")  # no secret configured: nothing matches


@pytest.mark.parametrize(
    ("name", "value"),
    [("CATENA_AUTH_ALLOWED_NETS", "10.0.0.0/33"), ("CATENA_AUTH_ALLOWED_NETS", "localhost"),
     ("CATENA_AUTH_SECRET", "short"), ("CATENA_AUTH_SECRET", "has spaces in it, 0123456789")],
)  # fmt: skip
def test_bad_settings_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(name.removeprefix("CATENA_").lower()) + "|" + name):
        load(AuthgateSettings, {name: value})


# ---------------------------------------------------------------- callers


@pytest.fixture
async def scene(world: World) -> tuple[Portal, Sub]:
    portal = await world.portal(maxSessions=5)
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    return portal, await world.subscriber(portal, ["basic"])


@pytest.fixture(scope="module")
async def guarded(launcher: Launcher) -> Gateway:
    """A gateway that trusts no network: the tests' loopback address is a stranger's."""
    return await launcher.start(auth_allowed_nets="none", auth_secret=SECRET)


async def metric(gateway: Gateway, name: str) -> int:
    _, _, body = await gateway.request("GET", "/metrics")
    return sum(int(v) for v in re.findall(rb"^" + name.encode() + rb"\{[^}]*\} (\d+)", body, re.M))


async def test_a_stranger_without_the_secret_is_refused(
    guarded: Gateway, scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    _, sub = scene
    refused_auth = await metric(guarded, "authgate_untrusted_auth_total")
    refused_events = await metric(guarded, "authgate_untrusted_events_total")

    answer = await guarded.auth(sub, "sport", session="stranger-1")
    assert answer.status == 403 and answer.reason == "untrusted", answer
    assert "CATENA_AUTH_ALLOWED_NETS" in answer.json["message"]
    assert int(answer.headers["X-AuthDuration"]) > 0  # a deny Flussonic caches
    status, _, raw = await guarded.request("POST", "/auth", data=msgspec.json.encode({"name": "sport"}))
    assert status == 403 and msgspec.json.decode(raw)["error"] == "untrusted"
    wrong = await guarded.auth(sub, "sport", session="stranger-2", catena_secret=SECRET[:-1] + "x")
    assert wrong.status == 403 and wrong.reason == "untrusted"

    event = {"event": "play_opened", "id": "stranger-3", "media": "sport", "token": sub.token}
    answer = await guarded.events([event])
    assert answer.status == 403 and answer.reason == "untrusted", answer
    status, _, _ = await guarded.request(
        "POST", "/events", data=msgspec.json.encode([event]), headers={"X-Catena-Secret": "nope-" * 5}
    )
    assert status == 403

    assert await metric(guarded, "authgate_untrusted_auth_total") == refused_auth + 3
    assert await metric(guarded, "authgate_untrusted_events_total") == refused_events + 2
    # Nothing was admitted or recorded for the refused requests.
    await guarded.auth(sub, "sport", session="flush-marker", catena_secret=SECRET)
    await eventually(
        lambda: pool.fetchval("SELECT count(*) FROM play_sessions WHERE flussonic_id = 'flush-marker'")
    )
    assert await pool.fetchval("SELECT count(*) FROM play_sessions WHERE flussonic_id LIKE 'stranger-%'") == 0


async def test_the_secret_in_the_query_or_a_header_is_trusted(
    guarded: Gateway, scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    _, sub = scene
    answer = await guarded.auth(sub, "sport", session="vouched-1", catena_secret=SECRET)
    assert answer.status == 200 and answer.headers["X-UserId"] == sub.text_id
    # The same kept-alive connection without the secret: every request must carry it
    # (a proxy may carry several clients' requests on one connection).
    again = await guarded.auth(sub, "sport", session="vouched-1", request_type="update_session")
    assert again.status == 403 and again.reason == "untrusted"
    closed = {"event": "play_closed", "id": "vouched-1", "token": sub.token, "bytes": 7}
    status, _, raw = await guarded.request(
        "POST", f"/events?catena_secret={SECRET}", data=msgspec.json.encode([closed])
    )
    assert status == 200 and msgspec.json.decode(raw)["accepted"] == 1
    await guarded.stop_session()
    status, _, _ = await guarded.request(
        "GET",
        "/auth",
        params={"name": "sport", "session_id": "vouched-2", "token": sub.token},
        headers={"X-Catena-Secret": SECRET},
    )
    assert status == 200
    row = await eventually(
        lambda: pool.fetchrow("SELECT * FROM play_sessions WHERE flussonic_id = 'vouched-1' AND NOT active")
    )
    assert row is not None and row["bytes"] == 7


async def test_loopback_is_trusted_by_default(gateways: list[Gateway], scene: tuple[Portal, Sub]) -> None:
    _, sub = scene
    assert (await gateways[0].auth(sub, "sport", session="local-1")).status == 200
    event = {"event": "play_closed", "id": "local-1", "token": sub.token}
    assert (await gateways[0].events(event)).json["accepted"] == 1


@pytest.mark.parametrize(("allowed", "status"), [("::1/128", 200), ("127.0.0.0/8", 403)])
async def test_an_ipv6_peer_is_judged_by_the_ipv6_networks(
    launcher: Launcher, scene: tuple[Portal, Sub], allowed: str, status: int
) -> None:
    env = launcher.env(auth_host="::1", auth_allowed_nets=allowed)
    gateway = Gateway(env, 1, launcher.tmp / f"authgate-{env['CATENA_AUTH_PORT']}.log")
    gateway.url = f"http://[::1]:{gateway.port}"
    gateway.start()
    launcher.started.append(gateway)
    try:
        await gateway.ready()
        answer = await gateway.auth(scene[1], "sport", session=f"v6-{status}")
        assert answer.status == status, answer
        assert status == 200 or answer.reason == "untrusted"
    finally:
        await gateway.stop()


# ---------------------------------------------------------------- whose session an event changes


@pytest.fixture
async def two_portals(world: World) -> tuple[Portal, Sub, Sub, Sub]:
    """A victim (limit 1), another subscriber of its portal, and an intruder of another portal."""
    portal = await world.portal(maxSessions=1)
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    victim = await world.subscriber(portal, ["basic"])
    neighbour = await world.subscriber(portal, ["basic"])
    other = await world.portal(maxSessions=5)
    await world.package(other, "basic")
    await world.channel(other, "sport", ["basic"])
    intruder = await world.subscriber(other, ["basic"])
    return portal, victim, neighbour, intruder


@pytest.fixture(scope="module")
async def slow_writer(launcher: Launcher) -> Gateway:
    """A gateway that writes its rows only every 30 s: its sessions have none yet."""
    return await launcher.start(auth_flush_interval=30)


async def test_another_portals_token_cannot_close_a_session_or_free_its_slot(
    gateways: list[Gateway],
    slow_writer: Gateway,
    two_portals: tuple[Portal, Sub, Sub, Sub],
    pool: asyncpg.Pool,
) -> None:
    portal, victim, neighbour, intruder = two_portals
    foreign_before = sum([await metric(g, "authgate_events_foreign_total") for g in gateways])
    # Admitted at one gateway (row written) and at the slow writer (no row yet).
    assert (await gateways[0].auth(victim, "sport", session="victim-1")).status == 200
    await eventually(
        lambda: pool.fetchval("SELECT count(*) FROM play_sessions WHERE flussonic_id = 'victim-1'")
    )
    assert (await slow_writer.auth(neighbour, "sport", session="victim-2")).status == 200

    attacks = [
        (gateways[0], {"event": "play_closed", "id": "victim-1", "token": intruder.token, "bytes": 5}),
        (gateways[1], {"event": "play_closed", "id": "victim-1", "token": intruder.token, "bytes": 5}),
        (gateways[1], {"event": "play_closed", "id": "victim-1", "user_id": neighbour.text_id}),
        (gateways[0], {"event": "play_closed", "id": "victim-2", "token": intruder.token, "media": "sport"}),
        (gateways[1], {"event": "play_opened", "id": "victim-2", "token": intruder.token, "media": "sport"}),
    ]
    for gateway, event in attacks:
        answer = await gateway.events([event])
        assert answer.status == 200 and answer.json["rejected"] == 1, (event, answer)
    assert sum([await metric(g, "authgate_events_foreign_total") for g in gateways]) == foreign_before + 3

    # No slot freed: the victim's second device is still refused for the limit.
    second = await gateways[1].auth(victim, "sport", session="victim-3")
    assert second.status == 403 and second.reason == "session_limit"
    # No row closed or re-attributed; the slow writer's session keeps its portal.
    await slow_writer.stop()
    owned = await pool.fetchrow("SELECT * FROM play_sessions WHERE flussonic_id = 'victim-1'")
    assert owned["active"] and owned["bytes"] == 0 and owned["subscriber_id"] == victim.id
    later = await pool.fetchrow("SELECT * FROM play_sessions WHERE flussonic_id = 'victim-2'")
    assert later is not None and later["portal_id"] == portal.id and later["subscriber_id"] == neighbour.id
    assert (
        await pool.fetchval("SELECT portal_id FROM play_session_ids WHERE flussonic_id = 'victim-2'")
        == portal.id
    )


async def test_a_user_id_alone_does_not_make_a_session(
    gateways: list[Gateway], two_portals: tuple[Portal, Sub, Sub, Sub], pool: asyncpg.Pool
) -> None:
    _, victim, _, _ = two_portals
    made_up = {"event": "play_opened", "id": "made-up-1", "user_id": victim.text_id, "media": "sport"}
    answer = await gateways[0].events([made_up, {**made_up, "event": "play_updated", "bytes": 9}])
    assert answer.json["rejected"] == 2 and answer.json["accepted"] == 0
    # The victim's own session, by user_id alone, is changed: it was admitted for it.
    assert (await gateways[0].auth(victim, "sport", session="real-1")).status == 200
    own = {"event": "play_updated", "id": "real-1", "user_id": victim.text_id, "bytes": 11}
    assert (await gateways[1].events([own])).json["accepted"] == 1
    await eventually(
        lambda: pool.fetchval(
            "SELECT count(*) FROM play_sessions WHERE flussonic_id = 'real-1' AND bytes = 11"
        )
    )
    assert await pool.fetchval("SELECT count(*) FROM play_sessions WHERE flussonic_id = 'made-up-1'") == 0
