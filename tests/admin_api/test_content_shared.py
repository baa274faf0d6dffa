from __future__ import annotations

import pytest

from tests.conftest import CURSORS, Api

CONTENT_ENDPOINTS = {
    ("get", "/channels"),
    ("post", "/channels"),
    ("get", "/channels/{id}"),
    ("put", "/channels/{id}"),
    ("delete", "/channels/{id}"),
    ("get", "/channels/{id}/logo"),
    ("get", "/packages"),
    ("post", "/packages"),
    ("get", "/packages/{id}"),
    ("put", "/packages/{id}"),
    ("delete", "/packages/{id}"),
    ("post", "/channels-packages"),
    ("delete", "/channels-packages"),
    ("post", "/portal/free-packages/{packageId}"),
    ("delete", "/portal/free-packages/{packageId}"),
    ("get", "/epg-sources"),
    ("post", "/epg-sources"),
    ("get", "/epg-sources/{id}"),
    ("put", "/epg-sources/{id}"),
    ("delete", "/epg-sources/{id}"),
    ("post", "/epg-sources/{id}/update"),
    ("get", "/epg-sources/{id}/programs"),
    ("get", "/epg-fetches"),
}


async def test_every_content_endpoint_is_documented(api: Api) -> None:
    status, document = await api.get("/openapi.json")
    assert status == 200
    base = "/tv-management/api/v1"
    documented = {
        (method, path.removeprefix(base)) for path, item in document["paths"].items() for method in item
    }
    assert CONTENT_ENDPOINTS <= documented
    schemas = document["components"]["schemas"]
    for name in ("Channel", "Package", "ChannelPackageLink", "EpgSource", "EpgFetch", "EpgProgram", "EpgJob"):
        assert name in schemas
    assert "packages" in schemas["Channel"]["properties"]
    assert schemas["ChannelCreate"]["properties"]["name"]["pattern"].startswith("^[a-zA-Z0-9_-]{2,20}")
    programs = document["paths"][base + "/epg-sources/{id}/programs"]["get"]
    assert {p["name"] for p in programs["parameters"]} >= {"id", "date", "epgChannelName", "cursor", "limit"}
    logo = document["paths"][base + "/channels/{id}/logo"]["get"]["responses"]
    assert "image/*" in logo["200"]["content"] and "304" in logo


async def test_a_missing_field_is_named(api: Api) -> None:
    status, body = await api.post("/packages", {"description": "no name"})
    assert status == 400 and body["field"] == "name" and "missing" in body["message"]


@pytest.mark.parametrize("path", ["/channels", "/packages", "/epg-sources", "/epg-fetches"])
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("cursor=forged", "cursor"),
        (f"cursor={CURSORS.encode('managers', (1,))}", "cursor"),
    ],
)
async def test_every_content_list_refuses_bad_paging(api: Api, path: str, query: str, field: str) -> None:
    status, body = await api.get(f"{path}?{query}")
    assert status == 400 and body["field"] == field


async def test_schema_names_do_not_collide(api: Api) -> None:
    """Two Structs of one name would turn into module-qualified, unstable component names."""
    document = (await api.get("/openapi.json"))[1]
    assert [name for name in document["components"]["schemas"] if "." in name] == []
