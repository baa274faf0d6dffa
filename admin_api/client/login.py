"""Subscriber sign-in by phone and SMS code (docs/api.md, manual §4.1.3, §6.1.3).

``POST /login/sms`` answers the same whether or not the phone belongs to a
subscriber: a code row is stored either way (so cooldown, attempts and expiry
behave identically), but an SMS goes out only to a subscriber's phone, or to any
phone on a portal with ``autoCreateSubscribers``.  ``POST /login/verify`` turns a
matching code into the subscriber's playback token, creating the subscriber first
on such a portal.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import asyncpg
from msgspec import Meta

from catena import entitlements, ids, operations, outbound
from catena.errors import Forbidden, ServiceUnavailable, TooManyRequests, Unauthorized
from catena.portals import Branding

from .. import keys
from ..limiter import LIMITER
from ..routing import Api, Call
from ..schema import Request, Response, TextId, text_id
from . import PREFIX, TAG, codes
from .forwarded import client_ip
from .portal import ClientPortal, resolve
from .sms import GatewayMisconfigured, SmsSendFailed, gateway_for
from .throttle import Throttles

api = Api(TAG, prefix=PREFIX)
log = logging.getLogger("admin_api.client.login")

CountryCode = Annotated[str, Meta(pattern=r"^[0-9]{1,4}$", description="digits only, e.g. 7")]
PhoneNumber = Annotated[
    str, Meta(pattern=r"^[0-9]{3,20}$", description="digits only, without the country code")
]
Code = Annotated[str, Meta(pattern=r"^[0-9]{4}$", description="the 4 digits from the SMS")]
ACTOR = "client"


class SmsRequest(Request):
    phoneCountryCode: CountryCode
    phone: PhoneNumber
    portalId: str | None = None


class SmsSent(Response):
    """The same answer whether or not the phone belongs to a subscriber."""

    status: str
    codeLength: int
    # Seconds the code stays valid, and until a new one may be asked for.
    expiresIn: int
    resendIn: int


class VerifyRequest(Request):
    phoneCountryCode: CountryCode
    phone: PhoneNumber
    code: Code
    portalId: str | None = None


class SignedIn(Response):
    subscriberId: TextId
    portalId: TextId
    name: str
    playback_token: str
    branding: Branding


class CooldownActive(TooManyRequests):
    code = "sms_cooldown"


class AttemptsExhausted(TooManyRequests):
    code = "too_many_attempts"


class SignIn:
    """What both sign-in steps need: settings, the code hasher, the throttles."""

    def __init__(self, call: Call[Any, Any]) -> None:
        self.settings = call.settings
        self.hasher = codes.CodeHasher(self.settings.token_secrets)
        self.limiter = call.request.app[LIMITER]
        self.throttles = Throttles(self.limiter, self.settings, client_ip(call.request))


async def _addressed(
    conn: asyncpg.Connection, call: Call[Any, Any], body: SmsRequest | VerifyRequest
) -> tuple[ClientPortal, codes.Phone]:
    """The portal the app talks to, and the phone within it."""
    portal = await resolve(conn, call, body.portalId)
    return portal, codes.Phone(portal.id, body.phoneCountryCode, body.phone)


_SUBSCRIBER = """
SELECT id, name, disabled, token_version FROM subscribers
WHERE portal_id = $1 AND phone_country_code = $2 AND phone = $3
"""


@api.post(
    "/login/sms",
    response=SmsSent,
    produces={
        429: ("Throttled or inside the resend cooldown (Retry-After)", "application/json"),
        503: ("The SMS could not be sent", "application/json"),
    },
)
async def client_request_code(call: Call[SmsRequest, None]) -> SmsSent:
    """Send a 4-digit sign-in code by SMS (the same answer for unknown phones)."""
    body: SmsRequest = call.body
    sign_in = SignIn(call)
    async with call.db.acquire() as conn:
        portal, phone = await _addressed(conn, call, body)
        # Counted before the code is made; the address's count keeps refused requests too.
        await sign_in.limiter.take(sign_in.throttles.code_requests())
        code = codes.new_code()
        code_hash = await _issue(conn, sign_in, phone, code)
        receives = await _may_receive(conn, portal, phone)
    # No database connection is held while the SMS provider takes its time.
    if receives:
        await _send(call, portal, phone, code, code_hash)
    settings = sign_in.settings
    return SmsSent(
        status="sent",
        codeLength=codes.CODE_DIGITS,
        expiresIn=int(settings.client_code_ttl),
        resendIn=int(settings.client_code_cooldown),
    )


async def _issue(conn: asyncpg.Connection, sign_in: SignIn, phone: codes.Phone, code: str) -> bytes:
    """Store the phone's new code; a request the cooldown refuses does not count for the phone."""
    settings = sign_in.settings
    cooldown = settings.client_code_cooldown
    per_phone = await sign_in.limiter.take(sign_in.throttles.codes_for(phone.portal_id, phone.digits))
    code_hash = await codes.issue(conn, sign_in.hasher, phone, code, settings.client_code_ttl, cooldown)
    if code_hash is None:
        await sign_in.limiter.give_back(per_phone)
        left = await codes.cooldown_left(conn, phone, cooldown)
        raise CooldownActive(f"a code was sent moments ago; ask again in {left} s", retry_after=left)
    return code_hash


async def _may_receive(conn: asyncpg.Connection, portal: ClientPortal, phone: codes.Phone) -> bool:
    if portal.settings.autoCreateSubscribers:
        return True
    return await conn.fetchrow(_SUBSCRIBER, *phone.key()) is not None


async def _send(
    call: Call[Any, Any], portal: ClientPortal, phone: codes.Phone, code: str, code_hash: bytes
) -> None:
    try:
        policy = outbound.policy(call.settings.outbound_allow)
        await gateway_for(text_id(portal.id), portal.settings.smsGateway, policy).send(phone.digits, code)
    except (SmsSendFailed, GatewayMisconfigured) as exc:
        async with call.db.acquire() as conn:
            await codes.withdraw(conn, phone, code_hash)
        log.error(
            "sms not sent",
            extra={
                "portalId": text_id(portal.id),
                "phone": phone.digits,
                "reason": str(exc),
                "problem": type(exc).__name__,
            },
        )
        raise ServiceUnavailable(
            "the SMS with your code could not be sent; try again in a minute", code="sms_send_failed"
        ) from None


@api.post(
    "/login/verify",
    response=SignedIn,
    produces={
        401: ("The code does not match or has expired", "application/json"),
        429: ("Too many wrong codes (ask for a new code) or throttled", "application/json"),
    },
)
async def client_verify_code(call: Call[VerifyRequest, None]) -> SignedIn:
    """Exchange the SMS code for the subscriber's playback token."""
    body: VerifyRequest = call.body
    sign_in = SignIn(call)
    async with call.db.acquire() as conn:
        portal, phone = await _addressed(conn, call, body)
        row = await _signed_in(conn, sign_in, portal, phone, body.code)
    if row["disabled"]:
        raise Forbidden("this account is disabled; contact your TV operator", code="subscriber_disabled")
    token = call.request.app[keys.TOKENS].sign(row["id"], portal.id, row["token_version"])
    return SignedIn(
        subscriberId=text_id(row["id"]),
        portalId=text_id(portal.id),
        name=row["name"],
        playback_token=token,
        branding=portal.branding,
    )


async def _signed_in(
    conn: asyncpg.Connection, sign_in: SignIn, portal: ClientPortal, phone: codes.Phone, code: str
) -> asyncpg.Record:
    """The subscriber the code signs in; the try is counted before the code is checked."""
    checks = await sign_in.limiter.take(sign_in.throttles.code_checks())
    try:
        code_hash = await _check_code(conn, sign_in, phone, code)
        async with conn.transaction():
            row = await _claim(conn, portal, phone, code_hash)
    except (Unauthorized, TooManyRequests):
        raise  # a wrong, expired or exhausted code: the try stays counted
    except Exception:
        await sign_in.limiter.give_back(checks)  # no answer about the code (database down)
        raise
    await sign_in.limiter.give_back(checks)
    return row


def _mismatch() -> Unauthorized:
    return Unauthorized("sms code doesn't match", field="code", code="wrong_sms_code")


async def _check_code(conn: asyncpg.Connection, sign_in: SignIn, phone: codes.Phone, code: str) -> bytes:
    """The matching code's hash; 401 / 429 for every way it can fail."""
    attempt = await codes.attempt(conn, sign_in.hasher, phone, code)
    if attempt is None:
        raise _mismatch()
    if attempt.expired:
        raise Unauthorized("sms code expired; ask for a new one", field="code", code="sms_code_expired")
    if attempt.number > sign_in.settings.client_code_attempts:
        raise AttemptsExhausted(
            "too many wrong codes; ask for a new one", retry_after=int(sign_in.settings.client_code_cooldown)
        )
    if not attempt.matches:
        raise _mismatch()
    return attempt.code_hash


async def _claim(
    conn: asyncpg.Connection, portal: ClientPortal, phone: codes.Phone, code_hash: bytes
) -> asyncpg.Record:
    """Use up the code and return the subscriber, created now on an auto-create portal."""
    if not await codes.consume(conn, phone, code_hash):
        raise _mismatch()
    row = await conn.fetchrow(_SUBSCRIBER, *phone.key())
    if row is None and portal.settings.autoCreateSubscribers:
        row = await _auto_create(conn, portal.id, phone)
    if row is None:
        # Only a guessed code of a phone that was never sent one gets here.
        raise _mismatch()
    if not row["disabled"]:
        await conn.execute(_SIGNED_IN, row["id"])
    return row


# A sign-in is activity (the Management API's lastActivityAt); a refused one is not.
_SIGNED_IN = "UPDATE subscribers SET last_activity_at = greatest(last_activity_at, now()) WHERE id = $1"
_AUTO_CREATE = """
INSERT INTO subscribers (id, portal_id, name, phone_country_code, phone)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (portal_id, phone_country_code, phone) DO NOTHING
RETURNING id, name, disabled, token_version
"""


async def _auto_create(conn: asyncpg.Connection, portal_id: int, phone: codes.Phone) -> asyncpg.Record:
    name = f"+{phone.country_code} {phone.number}"
    row = await conn.fetchrow(_AUTO_CREATE, ids.new_id(), portal_id, name, *phone.key()[1:])
    if row is None:
        # Created a moment ago by billing or a parallel sign-in: use that one.
        return await conn.fetchrow(_SUBSCRIBER, *phone.key())
    payload = {"name": name, "phoneCountryCode": phone.country_code, "phone": phone.number}
    await operations.record(
        conn, portal_id, "autoCreateSubscriber", ACTOR, subscriber_id=row["id"], payload=payload
    )
    await entitlements.changed(conn, portal_id, "subscriber", [row["id"]])
    return row
