from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from admin_api.app import apis


async def test_document_is_valid_and_lists_every_route(client: Any) -> None:
    async with client.get("/tv-management/api/v1/openapi.json") as resp:
        assert resp.status == 200
        document = await resp.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    declared = {(e.method.lower(), e.path) for a in apis() for e in a.endpoints}
    listed = {(method, path) for path, item in document["paths"].items() for method in item}
    assert declared == listed
    schemas = document["components"]["schemas"]
    assert "PortalOut" in schemas and "ManagerCreate" in schemas and "ErrorBody" in schemas


async def test_request_schema_carries_the_constraints(client: Any) -> None:
    async with client.get("/tv-management/api/v1/openapi.json") as resp:
        document = await resp.json()
    create = document["components"]["schemas"]["ManagerCreate"]
    assert set(create["required"]) == {"email", "name", "password"}
    assert create["properties"]["name"]["maxLength"] == 200
    post = document["paths"]["/tv-management/api/v1/managers"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("ManagerCreate")
    assert post["security"] == [{"authToken": []}]
    login = document["paths"]["/tv-management/api/v1/login"]["post"]
    assert login["security"] == []
