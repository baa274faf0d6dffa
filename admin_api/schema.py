"""Building blocks shared by the request and response Structs of every module."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from catena import ids

# Names of channels and packages (docs/api.md).  msgspec matches with re.search,
# where "$" also matches before a final newline; the lookahead refuses "sport1\n".
Name = Annotated[
    str,
    Meta(
        pattern=r"^[a-zA-Z0-9_-]{2,20}(?!\n)$",
        description="a name of 2-20 characters from a-z, A-Z, 0-9, '_' and '-'",
    ),
]
Email = Annotated[
    str,
    Meta(
        pattern=r"^[^@\s\x00]{1,64}@[^@\s\x00]+\.[^@\s\x00]+(?!\n)$",
        max_length=254,
        description="an email address",
    ),
]
# PostgreSQL text cannot hold U+0000, which JSON can carry ("\u0000").
NO_NUL = r"^[^\x00]*$"
NO_NUL_TEXT = "text without the NUL character (U+0000)"
Text200 = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL, description=NO_NUL_TEXT)]
TextId = Annotated[str, Meta(min_length=12, max_length=12, examples=["pK19SW3AAAE."])]
Timestamp = Annotated[str, Meta(examples=["2024-10-16T14:30:00Z"])]


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: unknown fields are a 400."""


class Response(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of every response body: fields left UNSET are omitted."""


class PageQuery(msgspec.Struct, kw_only=True):
    """The query string of a plain list endpoint."""

    cursor: str | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


def iso(value: datetime) -> str:
    """A timestamp as the API writes it: ISO 8601 in UTC, whole seconds, ``Z``."""
    if value.utcoffset():
        value = value.astimezone(UTC)
    # isoformat is C code and about twice as fast as strftime; lists call this a lot.
    return value.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def opt_iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def text_id(value: int) -> str:
    return ids.encode(value)


def opt_text_id(value: int | None) -> str | None:
    return None if value is None else ids.encode(value)
