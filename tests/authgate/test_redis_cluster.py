"""The gateway's cluster connections on a real cluster: routing by slot, MOVED, ASK, a lost node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ResponseError

from authgate.redis_cluster import ClusterPipe
from authgate.redis_pipe import Unavailable
from catena.embedded import LocalCluster, LocalRedis, free_cluster_ports
from catena.redis import target
from catena.redis_keys import key_slot

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    servers = LocalCluster(tmp_path / "cluster", 0, primaries=3, replicas=0, ports=free_cluster_ports(3))
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
async def pipe(cluster: LocalCluster) -> AsyncIterator[ClusterPipe]:
    # Only one node named: the others are found from the slot map.
    connected = ClusterPipe(target("cluster", cluster.nodes[0].url), deadline=1.0)
    await connected.check_topology()
    assert await connected.wait_connected()
    yield connected
    connected.close()


def owner(cluster: LocalCluster, key: str) -> LocalRedis:
    slot = key_slot(key)
    return next(n for n in cluster.nodes if any(lo <= slot <= hi for lo, hi in cluster.slots_of(n)))


def run(node: LocalRedis, *command: Any) -> Any:
    client = node.client()
    try:
        return client.execute_command(*command)
    finally:
        client.close()


async def test_commands_reach_the_primary_of_their_slot(cluster: LocalCluster, pipe: ClusterPipe) -> None:
    keys = [f"k{{{n}}}" for n in range(60)]
    replies = await pipe.run([(key_slot(k), ("SET", k, k)) for k in keys])
    assert replies == [b"OK"] * len(keys)
    assert {owner(cluster, k).port for k in keys} == {n.port for n in cluster.nodes}
    for key in keys:
        assert run(owner(cluster, key), "GET", key) == key.encode()
    assert pipe.probe_slots() == [0, 5461, 10922]


async def migrate(cluster: LocalCluster, key: str, to: LocalRedis, finish: bool) -> None:
    """Move ``key``'s slot (and the key) to ``to``; with ``finish`` the move completes."""
    source = owner(cluster, key)
    slot = key_slot(key)
    source_id, target_id = run(source, "CLUSTER", "MYID").decode(), run(to, "CLUSTER", "MYID").decode()
    run(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    run(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    run(source, "MIGRATE", to.host, to.port, "", 0, 5000, "KEYS", key)
    if finish:
        for node in cluster.nodes:
            run(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        await asyncio.sleep(0.2)


async def test_a_moved_slot_is_followed(cluster: LocalCluster, pipe: ClusterPipe) -> None:
    key = "moving{42}"
    assert await pipe.run([(key_slot(key), ("SET", key, "v1"))]) == [b"OK"]
    destination = next(n for n in cluster.nodes if n is not owner(cluster, key))
    await migrate(cluster, key, destination, finish=True)
    # The pipe's slot map still names the old primary: MOVED, then the new one answers.
    assert await pipe.run([(key_slot(key), ("GET", key))]) == [b"v1"]
    assert pipe.slots[key_slot(key)] is pipe.nodes[destination.address]


async def test_a_key_being_migrated_is_asked_for_at_its_new_node(
    cluster: LocalCluster, pipe: ClusterPipe
) -> None:
    key = "halfway{7}"
    assert await pipe.run([(key_slot(key), ("SET", key, "v2"))]) == [b"OK"]
    source = owner(cluster, key)
    destination = next(n for n in cluster.nodes if n is not source)
    await migrate(cluster, key, destination, finish=False)
    # The slot is still the source's; the key is already at the destination: ASK.
    assert await pipe.run([(key_slot(key), ("GET", key))]) == [b"v2"]
    assert pipe.slots[key_slot(key)] is pipe.nodes[source.address]


async def test_a_lost_primary_fails_only_its_slots_and_a_wrong_command_stays_an_error(
    cluster: LocalCluster, pipe: ClusterPipe
) -> None:
    lost, kept = "lost{1}", "kept{3}"
    while owner(cluster, kept) is owner(cluster, lost):
        kept += "x"
    owner(cluster, lost).kill()
    lost_reply, kept_reply = await pipe.run(
        [(key_slot(lost), ("GET", lost)), (key_slot(kept), ("SET", kept, 1))]
    )
    assert isinstance(lost_reply, ConnectionError | Unavailable) or "connection" in str(lost_reply).lower()
    assert kept_reply == b"OK"
    (wrong,) = await pipe.run([(key_slot(kept), ("INCR", kept, "too", "many"))])
    assert isinstance(wrong, ResponseError)
