from __future__ import annotations

import asyncpg
import pytest

from benchmarks.auth_harness import dataset
from catena import ids
from catena.tokens import TokenCodec, TokenError


def test_full_data_set_has_the_stated_counts(full_data: dataset.DataSet, codec: TokenCodec) -> None:
    assert len(full_data.subscribers) == 100_000
    assert len(full_data.channels) == 500
    assert len(full_data.packages) == 50
    assert len(full_data.holders()) == 20_000
    assert len({s.id for s in full_data.subscribers}) == 100_000
    assert len({s.phone for s in full_data.subscribers}) == 100_000
    assert len({name for _, name in full_data.channels}) == 500


def test_tokens_verify_and_name_their_subscriber(full_data: dataset.DataSet, codec: TokenCodec) -> None:
    for subscriber in full_data.holders()[::997]:
        assert subscriber.token is not None
        claims = codec.verify(subscriber.token)
        assert (claims.subscriber_id, claims.portal_id, claims.version) == (
            subscriber.id,
            full_data.portal_id,
            1,
        )
    other = TokenCodec("other:" + "y" * 32)
    holder = full_data.holders()[0]
    assert holder.token is not None
    with pytest.raises(TokenError):
        other.verify(holder.token)


def test_limits_and_entitlements(full_data: dataset.DataSet) -> None:
    limits = [s.max_sessions for s in full_data.subscribers]
    assert limits.count(1) == 100_000 // dataset.SINGLE_SCREEN_EVERY
    assert limits.count(dataset.FAMILY_SCREENS) == 100_000 // dataset.SINGLE_SCREEN_EVERY
    assert not any(s.disabled for s in full_data.holders())
    assert any(s.disabled for s in full_data.subscribers)
    free = set(full_data.free_packages)
    for subscriber in full_data.subscribers[:2000]:
        assert 1 <= len(subscriber.packages) <= 3
        assert not free & set(subscriber.packages)
        entitled = full_data.entitled(subscriber)
        # Some channels are always out of reach, so a denial can be asked for.
        assert 0 < len(entitled) < len(full_data.channels)


def test_same_seed_same_data(codec: TokenCodec) -> None:
    spec = dataset.Spec(subscribers=200, channels=30, packages=5, tokens=50)
    one, two = (dataset.generate(spec, 42, codec) for _ in range(2))
    # Ids are new each time; which package (by position) each subscriber holds is not.
    assert _package_positions(one) == _package_positions(two)
    assert list(one.package_channels.values()) == list(two.package_channels.values())
    assert [s.max_sessions for s in one.subscribers] == [s.max_sessions for s in two.subscribers]


def _package_positions(data: dataset.DataSet) -> list[tuple[int, ...]]:
    position = {package_id: i for i, (package_id, _) in enumerate(data.packages)}
    return [tuple(position[p] for p in s.packages) for s in data.subscribers]


def test_spec_refuses_impossible_sizes() -> None:
    for bad in ({"tokens": 0}, {"tokens": 101, "subscribers": 100}, {"free_packages": 50}):
        with pytest.raises(ValueError):
            dataset.Spec(**bad)  # type: ignore[arg-type]


async def test_load_writes_every_row(pool: asyncpg.Pool, codec: TokenCodec) -> None:
    async with pool.acquire() as conn:
        portal_id = await dataset.create_portal(conn, "bench-load")
        data = dataset.generate(dataset.Spec(), portal_id, codec)
        await dataset.load(conn, data)
        counts = await conn.fetchrow(_COUNTS, portal_id)
        dangling = await conn.fetchval(_DANGLING)
        replication_role = await conn.fetchval("SHOW session_replication_role")
    assert counts["subscribers"] == 100_000
    assert counts["channels"] == 500
    assert counts["packages"] == 50
    assert counts["free"] == 1
    assert counts["links"] == sum(len(c) for c in data.package_channels.values())
    assert counts["subscriptions"] == sum(len(s.packages) for s in data.subscribers)
    assert counts["single"] == 2000
    assert dangling == 0
    # The connection is left as it was found: foreign keys checked again.
    assert replication_role == "origin"
    assert ids.decode(ids.encode(portal_id)) == portal_id


_COUNTS = """
SELECT (SELECT count(*) FROM subscribers WHERE portal_id = $1) AS subscribers,
       (SELECT count(*) FROM subscribers WHERE portal_id = $1 AND max_sessions = 1) AS single,
       (SELECT count(*) FROM channels WHERE portal_id = $1) AS channels,
       (SELECT count(*) FROM packages WHERE portal_id = $1) AS packages,
       (SELECT count(*) FROM portal_free_packages WHERE portal_id = $1) AS free,
       (SELECT count(*) FROM channel_packages WHERE portal_id = $1) AS links,
       (SELECT count(*) FROM subscriptions WHERE portal_id = $1) AS subscriptions
"""
# Rows whose references point nowhere (loading skips the per-row foreign-key checks).
_DANGLING = """
SELECT (SELECT count(*) FROM subscriptions s LEFT JOIN subscribers u ON u.id = s.subscriber_id
        LEFT JOIN packages p ON p.id = s.package_id WHERE u.id IS NULL OR p.id IS NULL)
     + (SELECT count(*) FROM channel_packages l LEFT JOIN channels c ON c.id = l.channel_id
        LEFT JOIN packages p ON p.id = l.package_id WHERE c.id IS NULL OR p.id IS NULL)
     + (SELECT count(*) FROM subscribers u LEFT JOIN portals p ON p.id = u.portal_id
        WHERE p.id IS NULL)
"""
