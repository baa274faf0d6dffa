from __future__ import annotations

from tests.conftest import Api

ENDPOINTS = [
    ("get", "/subscribers"),
    ("post", "/subscribers"),
    ("get", "/subscribers/{id}"),
    ("put", "/subscribers/{id}"),
    ("delete", "/subscribers/{id}"),
    ("post", "/subscribers/{id}/disable"),
    ("post", "/subscribers/{id}/enable"),
    ("post", "/subscribers/{id}/reset_playback_token"),
    ("post", "/packages-subscribers"),
    ("delete", "/packages-subscribers"),
    ("get", "/operations"),
    ("get", "/operations/{id}"),
    ("get", "/play-sessions"),
    ("get", "/webhooks"),
    ("post", "/webhooks"),
    ("get", "/webhooks/{id}"),
    ("delete", "/webhooks/{id}"),
    ("post", "/webhooks/{id}/retry"),
]


async def test_every_endpoint_is_documented(api: Api) -> None:
    status, doc = await api.as_(None).get("/openapi.json")
    assert status == 200
    for method, path in ENDPOINTS:
        operation = doc["paths"]["/tv-management/api/v1" + path][method]
        assert operation["summary"] and operation["security"] == [{"authToken": []}], (method, path)
    schemas = doc["components"]["schemas"]
    for name in ("SubscriberOut", "SubscriberCreate", "SubscriptionRequest", "OperationOut", "SessionOut",
                 "WebhookOut", "WebhookCreate"):  # fmt: skip
        assert name in schemas, name
    assert "playback_token" in schemas["SubscriberOut"]["required"]
    params = {p["name"]: p for p in doc["paths"]["/tv-management/api/v1/operations"]["get"]["parameters"]}
    assert set(params) >= {
        "subscriberId",
        "packageId",
        "type",
        "created_at_gte",
        "created_at_lt",
        "cursor",
        "limit",
    }
    assert "createPackageSubscriber" in str(params["type"]["schema"])
    disable = doc["paths"]["/tv-management/api/v1/subscribers/{id}/disable"]["post"]
    assert disable["requestBody"]["required"] is False
    sessions = doc["paths"]["/tv-management/api/v1/play-sessions"]["get"]["parameters"]
    assert {p["name"] for p in sessions} >= {
        "subscriberId",
        "channelId",
        "active",
        "opened_at_gte",
        "opened_at_lt",
    }
