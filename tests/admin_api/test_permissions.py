"""The permission matrix, against every Management API endpoint the app declares.

Reads are open to every manager of the portal; a write needs its flag; the owner
and the API key may do everything (docs/api.md).  A refused call changes nothing.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest

from admin_api.app import apis
from admin_api.auth import authenticate_manager
from admin_api.routing import Endpoint
from tests.conftest import Api

PASSWORD = "Secure-Pass-123"
ABSENT_ID = "AAAAAAAAAAA."  # well-formed, names nothing
FLAGS = {
    "isAdmin": "admin",
    "isContentAdmin": "content",
    "isSubscriberAdmin": "subscriber",
}
FLAG_OF = {permission: flag for flag, permission in FLAGS.items()}


def manager_endpoints() -> list[Endpoint]:
    return [e for a in apis() for e in a.endpoints if e.auth is authenticate_manager]


def concrete(path: str) -> str:
    return re.sub(r"{\w+}", ABSENT_ID, path).removeprefix("/tv-management/api/v1")


async def principals(api: Api, portal: Any) -> dict[str, tuple[str, frozenset[str]]]:
    """name → (X-Auth-Token, the permissions it holds)."""
    made: dict[str, tuple[str, frozenset[str]]] = {}
    everything = frozenset(FLAGS.values())
    made["owner"] = (await session(api, portal.ownerEmail, "Owner-Pass-123"), everything)
    for flag, permission in FLAGS.items():
        email = f"{permission}@matrix.test"
        status, _ = await api.post(
            "/managers", {"email": email, "name": flag, "password": PASSWORD, flag: True}
        )
        assert status == 200
        made[flag] = (await session(api, email, PASSWORD), frozenset({permission}))
    await api.post("/managers", {"email": "analyst@matrix.test", "name": "Analyst", "password": PASSWORD})
    made["analyst"] = (await session(api, "analyst@matrix.test", PASSWORD), frozenset())
    return made


async def session(api: Api, email: str, password: str) -> str:
    status, body = await api.as_(None).post("/login", {"email": email, "password": password})
    assert status == 200, body
    return str(body["portals"][0]["sessionId"])


async def test_matrix_covers_every_manager_endpoint(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    endpoints = manager_endpoints()
    assert len(endpoints) >= 8
    who = await principals(api, portal)
    for endpoint in endpoints:
        path = concrete(endpoint.path)
        body: dict[str, Any] | None = {} if endpoint.body is not None else None
        for name, (token, held) in who.items():
            before = await pool.fetchval("SELECT count(*) FROM operations")
            status, answer = await api.as_(token).call(endpoint.method, path, body)
            label = f"{name} {endpoint.method} {endpoint.path} → {status} {answer!r}"
            if endpoint.permission is not None and endpoint.permission not in held:
                assert status == 403, label
                assert answer["error"] == "permission_denied", label
                what = "reading this" if endpoint.method == "GET" else "this change"
                flag = FLAG_OF[endpoint.permission]
                assert answer["message"] == f"{what} needs the {flag} permission", label
                assert await pool.fetchval("SELECT count(*) FROM operations") == before, label
            else:
                assert status not in (401, 403) and status < 500, label


async def test_api_key_may_do_everything(api: Api, pool: asyncpg.Pool) -> None:
    for endpoint in manager_endpoints():
        if endpoint.path.endswith("reset_api_key"):
            continue
        body: dict[str, Any] | None = {} if endpoint.body is not None else None
        status, answer = await api.call(endpoint.method, concrete(endpoint.path), body)
        assert status not in (401, 403) and status < 500, (endpoint.path, status, answer)


@pytest.mark.parametrize("flag", [None, "isContentAdmin", "isSubscriberAdmin"])
async def test_api_key_hidden_from_non_admins(api: Api, flag: str | None) -> None:
    flags = {flag: True} if flag else {}
    await api.post("/managers", {"email": "m@x.co", "name": "M", "password": PASSWORD, **flags})
    token = await session(api, "m@x.co", PASSWORD)
    status, body = await api.as_(token).get("/portal")
    assert status == 200 and "apiKey" not in body
    assert body["flags"]["canManage"] is False
    assert body["flags"]["canManageContent"] is (flag == "isContentAdmin")
    assert body["flags"]["canManageSubscribers"] is (flag == "isSubscriberAdmin")


async def test_admin_sees_api_key_and_may_reset_it(api: Api, portal: Any) -> None:
    await api.post("/managers", {"email": "a@x.co", "name": "A", "password": PASSWORD, "isAdmin": True})
    token = await session(api, "a@x.co", PASSWORD)
    status, body = await api.as_(token).get("/portal")
    assert status == 200 and body["apiKey"] == portal.apiKey
    status, body = await api.as_(token).post("/portal/reset_api_key")
    assert status == 200 and body["apiKey"] != portal.apiKey


async def test_sms_provider_credentials_only_for_admins(api: Api) -> None:
    gateway = {
        "type": "http",
        "url": "https://sms.example.com/send?key=SECRET1",
        "headers": {"Authorization": "Bearer SECRET2"},
    }
    status, body = await api.put("/portal", {"settings": {"smsGateway": gateway}})
    assert status == 200 and body["settings"]["smsGateway"]["headers"] == gateway["headers"]
    await api.post(
        "/managers", {"email": "c@x.co", "name": "C", "password": PASSWORD, "isContentAdmin": True}
    )
    token = await session(api, "c@x.co", PASSWORD)
    status, body = await api.as_(token).get("/portal")
    assert status == 200 and body["settings"]["smsGateway"] == {"type": "http"}
    assert "SECRET" not in str(body)
