from __future__ import annotations

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
