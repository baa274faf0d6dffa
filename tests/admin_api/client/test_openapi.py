"""The client API in the OpenAPI document: its own tag, bearer security, schemas."""

from __future__ import annotations

from tests.conftest import Api


async def test_client_endpoints_are_documented(api: Api) -> None:
    status, doc = await api.as_(None).get("/openapi.json")
    assert status == 200
    client = {
        (method.upper(), path): op
        for path, ops in doc["paths"].items()
        if path.startswith("/client/api/v1/")
        for method, op in ops.items()
    }
    assert set(client) == {
        ("GET", "/client/api/v1/portal"),
        ("POST", "/client/api/v1/login/sms"),
        ("POST", "/client/api/v1/login/verify"),
        ("GET", "/client/api/v1/channels"),
        ("GET", "/client/api/v1/channels/{name}/programs"),
        ("GET", "/client/api/v1/channels/{name}/logo"),
        ("GET", "/client/api/v1/playlist.m3u8"),
        ("GET", "/client/api/v1/epg.xml"),
    }
    assert {op["tags"][0] for op in client.values()} == {"Client API"}
    assert client[("GET", "/client/api/v1/channels")]["security"] == [{"playbackToken": []}]
    assert client[("POST", "/client/api/v1/login/sms")]["security"] == []
    assert doc["components"]["securitySchemes"]["playbackToken"] == {"type": "http", "scheme": "bearer"}
    verify = client[("POST", "/client/api/v1/login/verify")]
    body_ref = verify["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(doc["components"]["schemas"][body_ref]["required"]) == {"phoneCountryCode", "phone", "code"}
    assert {"401", "429"} <= set(verify["responses"])
    channel = doc["components"]["schemas"]["ChannelOut"]["properties"]
    assert {"playbackUrl", "logo", "current", "next"} <= set(channel)
    params = {p["name"] for p in client[("GET", "/client/api/v1/epg.xml")]["parameters"]}
    assert params == {"days", "pastDays"}


async def test_client_operation_ids_do_not_clash_with_management_ones(api: Api) -> None:
    _, doc = await api.as_(None).get("/openapi.json")
    operation_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    client_ids = [
        op["operationId"]
        for path, ops in doc["paths"].items()
        if path.startswith("/client/")
        for op in ops.values()
    ]
    assert all(name.startswith("client_") for name in client_ids)
    assert len(operation_ids) == len(set(operation_ids))
