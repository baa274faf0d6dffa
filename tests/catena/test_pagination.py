"""Cursors are tamper-evident positions that every process of a deployment accepts."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from catena.errors import InvalidInput
from catena.pagination import Cursors

OLD = "old:" + "o" * 32
NEW = "new:" + "n" * 32


def refused(cursors: Cursors, cursor: str, tag: str = "channels") -> bool:
    with pytest.raises(InvalidInput) as caught:
        cursors.decode(tag, cursor, (int,))
    return caught.value.field == "cursor" and caught.value.status == 400


def test_another_process_with_the_same_secrets_continues_the_list() -> None:
    cursor = Cursors(OLD).encode("channels", (42,))
    assert Cursors(OLD).decode("channels", cursor, (int,)) == (42,)


def test_no_cursor_is_the_first_page() -> None:
    assert Cursors(OLD).decode("channels", None, (int,)) is None
    assert Cursors(OLD).decode("channels", "", (int,)) is None


def test_a_well_formed_but_unsigned_position_is_refused() -> None:
    unsigned = base64.urlsafe_b64encode(b'["channels",1]').decode().rstrip("=")
    assert refused(Cursors(OLD), unsigned)


def test_every_truncation_and_every_changed_character_is_refused() -> None:
    cursors = Cursors(OLD)
    cursor = cursors.encode("channels", (42,))
    for end in range(1, len(cursor)):
        assert refused(cursors, cursor[:end]), end
    for at in range(len(cursor)):
        changed = "A" if cursor[at] != "A" else "B"
        assert refused(cursors, cursor[:at] + changed + cursor[at + 1 :]), at


def test_a_cursor_of_another_list_is_refused() -> None:
    cursors = Cursors(OLD)
    assert refused(cursors, cursors.encode("packages", (42,)))


def test_rotation_keeps_cursors_while_their_secret_is_configured() -> None:
    made_before = Cursors(OLD).encode("channels", (7,))
    rotated = Cursors(f"{NEW},{OLD}")
    assert rotated.decode("channels", made_before, (int,)) == (7,)
    # New cursors are signed with the first secret, so they outlive the old one.
    made_after = rotated.encode("channels", (8,))
    assert Cursors(NEW).decode("channels", made_after, (int,)) == (8,)
    # With the old secret removed, its cursors are refused; the client starts over.
    assert refused(Cursors(NEW), made_before)


def test_cursor_keys_are_not_the_token_secrets() -> None:
    # A cursor signed directly with the token secret (no derivation) is not ours.
    raw = b'["channels",1]'
    tag = hmac.new(b"o" * 32, raw, hashlib.sha256).digest()[:16]
    forged = base64.urlsafe_b64encode(tag + raw).decode().rstrip("=")
    assert refused(Cursors(OLD), forged)
