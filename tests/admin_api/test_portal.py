from __future__ import annotations

from typing import Any

from tests.conftest import Api


async def test_get_portal_as_api_key(api: Api, portal: Any) -> None:
    status, body = await api.get("/portal")
    assert status == 200
    assert body["portalId"] == portal.portalId
    assert body["name"] == portal.name
    assert body["apiKey"] == portal.apiKey
    assert body["ownerId"] == portal.ownerId
    assert body["freePackages"] == []
    assert body["flags"] == {"canManage": True, "canManageSubscribers": True, "canManageContent": True}
    assert body["settings"]["maxSessions"] == 2


async def test_missing_and_unknown_token(api: Api) -> None:
    status, body = await api.as_(None).get("/portal")
    assert status == 401 and body["error"] == "missing_token"
    status, body = await api.as_("nope").get("/portal")
    assert status == 401 and "message" in body
