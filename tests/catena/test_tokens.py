"""Playback tokens: TokenCodec.sign makes exactly what PyJWT makes, and both verify."""

from __future__ import annotations

import random

import jwt
import pytest

from catena import ids
from catena.tokens import TokenCodec, TokenError

SECRET = "k" * 40


@pytest.mark.parametrize("kid", ["main", "2024-10", "ключ", 'a"b\\c'])
def test_sign_is_byte_for_byte_what_pyjwt_makes(kid: str) -> None:
    codec = TokenCodec([(kid, SECRET.encode()), ("old", b"o" * 40)])
    rnd = random.Random(kid)
    for _ in range(200):
        subscriber, portal, version = rnd.getrandbits(63), rnd.getrandbits(63), rnd.randint(1, 10**9)
        claims = {"sub": ids.encode(subscriber), "prt": ids.encode(portal), "ver": version}
        expected = jwt.encode(claims, SECRET.encode(), algorithm="HS256", headers={"kid": kid})
        token = codec.sign(subscriber, portal, version)
        assert token == expected
        verified = codec.verify(token)
        assert (verified.subscriber_id, verified.portal_id, verified.version) == (subscriber, portal, version)


def test_a_token_of_another_secret_is_refused() -> None:
    token = TokenCodec([("main", b"x" * 40)]).sign(1, 2, 3)
    with pytest.raises(TokenError):
        TokenCodec([("main", b"y" * 40)]).verify(token)
