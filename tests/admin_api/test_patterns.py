from __future__ import annotations

from typing import Any

import msgspec

from admin_api._patterns import described_patterns
from admin_api.app import apis
from tests.conftest import Api


async def test_pattern_errors_read_as_their_description(api: Api) -> None:
    status, body = await api.post("/channels", {"name": "спорт", "title": "x"})
    assert status == 400 and body["field"] == "name"
    assert "regex" not in body["message"]
    assert "2-20 characters from a-z, A-Z, 0-9, '_' and '-'" in body["message"]
    status, body = await api.post("/subscribers", {"name": "X", "phoneCountryCode": "7", "phone": "91612a"})
    assert status == 400 and body["field"] == "phone" and "digits only" in body["message"]
    status, body = await api.post("/managers", {"email": "nope", "name": "N", "password": "Secure-Pass-123"})
    assert status == 400 and body["field"] == "email" and "an email address" in body["message"]


def _patterns_in(schema: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(schema, dict):
        if isinstance(schema.get("pattern"), str):
            found.add(schema["pattern"])
        for value in schema.values():
            found |= _patterns_in(value)
    elif isinstance(schema, (list, tuple)):
        for value in schema:
            found |= _patterns_in(value)
    return found


def test_every_request_pattern_has_a_description() -> None:
    """A 400 for a string that misses its pattern reads as text, never as the regex."""
    missing = []
    for api in apis():
        for endpoint in api.endpoints:
            kinds = [k for k in (endpoint.body, endpoint.query) if k is not None]
            if not kinds:
                continue
            described = described_patterns(*kinds)
            for pattern in _patterns_in(msgspec.json.schema_components(kinds)):
                if pattern not in described:
                    missing.append((endpoint.path, pattern))
    assert not missing


async def test_more_pattern_errors_read_as_text(api: Api) -> None:
    checks = [
        ("/subscribers", {"name": " ", "phoneCountryCode": "7", "phone": "916"}, "name", "not only spaces"),
        ("/packages", {"name": "pk1", "description": "a\u0000b"}, "description", "NUL"),
        ("/epg-sources", {"name": "e1", "url": "http://a b/x.xml"}, "url", "without spaces"),
    ]
    for path, body, field, text in checks:
        status, answer = await api.post(path, body)
        assert status == 400 and answer["field"] == field and text in answer["message"], answer
        assert "regex" not in answer["message"]
    gateway = {"type": "http", "url": "https://sms.example.com/{code}", "headers": {"X": "a\nb"}}
    status, answer = await api.put("/portal", {"settings": {"smsGateway": gateway}})
    assert status == 400 and answer["field"] == "settings.smsGateway.headers", answer
    assert "one line of text" in answer["message"]
    gateway["headers"] = {"Bad Header": "v"}
    status, answer = await api.put("/portal", {"settings": {"smsGateway": gateway}})
    assert status == 400 and answer["field"] == "settings.smsGateway.headers", answer
    assert "an HTTP header name" in answer["message"]
