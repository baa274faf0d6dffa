from __future__ import annotations

from typing import Annotated

import msgspec
import pytest
from msgspec import Meta

from catena.errors import from_validation


class _Gateway(msgspec.Struct, forbid_unknown_fields=True):
    headers: dict[Annotated[str, Meta(pattern=r"^[A-Za-z-]+$")], Annotated[str, Meta(max_length=3)]] = {}
    tags: list[Annotated[str, Meta(max_length=3)]] = []


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    gateway: _Gateway


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"gateway": {"headers": {"X-A": "long value"}}}', "gateway.headers"),  # a bad mapping value
        (b'{"gateway": {"headers": {"Bad Name": "v"}}}', "gateway.headers"),  # a bad mapping key
        (b'{"gateway": {"tags": ["ok", "too long"]}}', "gateway.tags[1]"),
        (b'{"gateway": {"colour": 1}}', "gateway.colour"),
        (b"{}", "gateway"),
    ],
)
def test_validation_errors_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(body, type=_Body)
    assert from_validation(caught.value).field == field
