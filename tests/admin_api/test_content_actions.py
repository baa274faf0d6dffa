"""The content actions called directly, as the console calls them: the rule lives in the action.

A manager without ``isContentAdmin`` is refused by every write action itself (not
only by the JSON endpoint's decorator), and nothing changes; the reads answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from admin_api import channels, epg_sources, free_packages, keys, packages
from admin_api._content import NamedPageQuery
from admin_api.principal import Principal
from admin_api.schema import PageQuery
from admin_api.services import Services
from catena import ids
from catena.errors import Forbidden, NotFound
from tests.admin_api.content_support import operations_of, portal_id
from tests.conftest import Api


@pytest.fixture
def services(client: Any) -> Services:
    services: Services = client.server.app[keys.SERVICES]
    return services


def principal(portal: Any, *, content: bool) -> Principal:
    return Principal(portal_id(portal), 1, "someone@example.com", False, False, content, False)


async def made(api: Api) -> dict[str, Any]:
    _, channel = await api.post("/channels", {"name": "sport1", "title": "Спорт", "number": 1})
    _, package = await api.post("/packages", {"name": "premium"})
    _, source = await api.post("/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/x.xml"})
    return {
        "channel": ids.decode(channel["channelId"]),
        "package": ids.decode(package["packageId"]),
        "source": ids.decode(source["epgSourceId"]),
        "link": packages.ChannelPackageLink(channelId=channel["channelId"], packageId=package["packageId"]),
    }


def writes(s: Services, who: Principal, m: dict[str, Any]) -> list[Callable[[], Awaitable[Any]]]:
    return [
        lambda: channels.create_channel(s, who, channels.ChannelCreate(name="news", title="Новости")),
        lambda: channels.update_channel(s, who, m["channel"], channels.ChannelUpdate(number=2)),
        lambda: channels.delete_channel(s, who, m["channel"]),
        lambda: packages.create_package(s, who, packages.PackageCreate(name="basic")),
        lambda: packages.update_package(s, who, m["package"], packages.PackageUpdate(description="x")),
        lambda: packages.delete_package(s, who, m["package"], packages.DeleteQuery(force=True)),
        lambda: packages.link_channel(s, who, m["link"]),
        lambda: packages.unlink_channel(s, who, m["link"]),
        lambda: free_packages.add_free_package(s, who, m["package"]),
        lambda: free_packages.remove_free_package(s, who, m["package"]),
        lambda: epg_sources.create_source(
            s, who, epg_sources.EpgSourceCreate(name="other", url="https://epg.example.com/y.xml")
        ),
        lambda: epg_sources.update_source(s, who, m["source"], epg_sources.EpgSourceUpdate(period=2)),
        lambda: epg_sources.delete_source(s, who, m["source"]),
        lambda: epg_sources.update_now(s, who, m["source"]),
    ]


async def test_every_write_action_checks_the_permission_itself(
    api: Api, services: Services, pool: asyncpg.Pool, portal: Any
) -> None:
    m = await made(api)
    before = await operations_of(pool, portal)
    reader = principal(portal, content=False)
    for write in writes(services, reader, m):
        with pytest.raises(Forbidden):
            await write()
    assert await operations_of(pool, portal) == before
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0


async def test_reads_and_writes_for_a_content_manager(api: Api, services: Services, portal: Any) -> None:
    m = await made(api)
    editor = principal(portal, content=True)
    page = await channels.list_channels(services, editor, NamedPageQuery(q="СПОРТ"))
    assert [c.name for c in page.channels] == ["sport1"]
    await packages.link_channel(services, editor, m["link"])
    package = await packages.get_package(services, editor, m["package"])
    assert (package.channelCount, package.subscriberCount, package.free) == (1, 0, False)
    guide = await epg_sources.list_guide_channels(services, editor, m["source"], PageQuery())
    assert guide.channels == [], "never imported"


async def test_actions_keep_to_the_actors_portal(api: Api, services: Services, make_portal: Any) -> None:
    m = await made(api)
    stranger = principal(await make_portal(), content=True)
    for read in (
        lambda: channels.get_channel(services, stranger, m["channel"]),
        lambda: packages.get_package(services, stranger, m["package"]),
        lambda: epg_sources.list_guide_channels(services, stranger, m["source"], PageQuery()),
    ):
        with pytest.raises(NotFound):
            await read()
    with pytest.raises(NotFound):
        await channels.update_channel(services, stranger, m["channel"], channels.ChannelUpdate(number=9))
    assert (await api.get(f"/channels/{ids.encode(m['channel'])}"))[1]["number"] == 1
