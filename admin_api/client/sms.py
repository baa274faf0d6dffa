"""SMS gateways: how a sign-in code reaches the subscriber's phone.

A portal chooses its gateway in ``settings.smsGateway`` (docs/api.md):

- ``null`` or ``{"type": "log"}`` — the code is written to the service log as a JSON
  line (development, ``catena up``);
- ``{"type": "http", "url": ..., ...}`` — one HTTP request per code to the
  operator's SMS provider, built from a template in which ``{phone}`` (country code
  and number, digits only) and ``{code}`` are replaced, retried on network errors,
  timeouts, ``429`` and ``5xx``.

A gateway raises :class:`SmsSendFailed` when the code did not go out; the caller
turns that into an error for the app, and the operator finds the reason in the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal, Protocol

import aiohttp
import msgspec
from msgspec import Meta

log = logging.getLogger("admin_api.client.sms")

HTTP_URL = "an http:// or https:// URL without spaces"
HeaderName = Annotated[
    str,
    Meta(
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$",
        description="an HTTP header name (1-100 letters, digits or !#$%&'*+.^_`|~-)",
    ),
]
HeaderValue = Annotated[str, Meta(pattern=r"^[^\r\n]*$", max_length=4000, description="one line of text")]


class LogGatewayConfig(msgspec.Struct, tag="log", tag_field="type", kw_only=True, forbid_unknown_fields=True):
    """Write codes to the admin_api log instead of sending them (development only)."""


class HttpGatewayConfig(
    msgspec.Struct, tag="http", tag_field="type", kw_only=True, forbid_unknown_fields=True
):
    """One HTTP request per code; ``{phone}`` and ``{code}`` are replaced in url and body."""

    url: Annotated[str, Meta(pattern=r"^https?://[^\s]+$", max_length=2000, description=HTTP_URL)]
    method: Literal["GET", "POST", "PUT"] = "POST"
    headers: dict[HeaderName, HeaderValue] = msgspec.field(default_factory=dict)
    body: Annotated[str, Meta(max_length=10000)] = ""
    contentType: Annotated[
        str, Meta(pattern=r"^[^\r\n]{1,200}$", description="a content type of 1-200 characters on one line")
    ] = "application/json"
    # Seconds for one attempt, connection included.
    timeout: Annotated[float, Meta(gt=0, le=60)] = 5.0
    # Further attempts after a network error, a timeout, a 429 or a 5xx answer.
    retries: Annotated[int, Meta(ge=0, le=5)] = 2
    # Seconds before the first retry; doubled for each next one.
    retryDelay: Annotated[float, Meta(ge=0, le=30)] = 0.5


SmsGatewayConfig = LogGatewayConfig | HttpGatewayConfig


class SmsSendFailed(Exception):
    """The code did not reach the SMS provider."""


class SmsGateway(Protocol):
    async def send(self, phone: str, code: str) -> None: ...


class LogGateway:
    def __init__(self, portal_id: str) -> None:
        self.portal_id = portal_id

    async def send(self, phone: str, code: str) -> None:
        log.info("sms code (log gateway)", extra={"portalId": self.portal_id, "phone": phone, "code": code})


class HttpGateway:
    def __init__(self, portal_id: str, config: HttpGatewayConfig) -> None:
        self.portal_id = portal_id
        self.config = config

    async def send(self, phone: str, code: str) -> None:
        delay = self.config.retryDelay
        for attempt in range(self.config.retries + 1):
            reason, retryable = await self._attempt(phone, code)
            if reason is None:
                return
            self._log_failure(phone, attempt, reason)
            if not retryable or attempt == self.config.retries:
                break
            await asyncio.sleep(delay)
            delay *= 2
        raise SmsSendFailed(reason)

    async def _attempt(self, phone: str, code: str) -> tuple[str | None, bool]:
        """``(None, _)`` when the provider took the message, else ``(reason, retryable)``."""
        config = self.config
        fill = {"{phone}": phone, "{code}": code}
        headers = {"Content-Type": config.contentType, **config.headers}
        timeout = aiohttp.ClientTimeout(total=config.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(
                    config.method,
                    _fill(config.url, fill),
                    headers=headers,
                    data=_fill(config.body, fill).encode() if config.body else None,
                ) as response,
            ):
                text = (await response.text(errors="replace"))[:200]
        except TimeoutError:
            return f"no answer within {config.timeout:g} s", True
        except (aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}", True
        if response.status < 300:
            return None, False
        return f"HTTP {response.status}: {text}", response.status == 429 or response.status >= 500

    def _log_failure(self, phone: str, attempt: int, reason: str) -> None:
        log.warning(
            "sms gateway attempt failed",
            extra={
                "portalId": self.portal_id,
                "phone": phone,
                "attempt": attempt + 1,
                "url": self.config.url,
                "reason": reason,
            },
        )


def _fill(template: str, values: dict[str, str]) -> str:
    # Plain replacement, not str.format: JSON bodies are full of braces.
    for name, value in values.items():
        template = template.replace(name, value)
    return template


class GatewayMisconfigured(Exception):
    """The portal's stored ``smsGateway`` is not a valid configuration."""


def gateway_for(portal_id: str, raw: dict[str, Any] | None) -> SmsGateway:
    """The gateway a portal's ``settings.smsGateway`` describes (``None`` → log)."""
    if raw is None:
        return LogGateway(portal_id)
    try:
        config = msgspec.convert(raw, SmsGatewayConfig)
    except msgspec.ValidationError as exc:
        raise GatewayMisconfigured(str(exc)) from None
    if isinstance(config, HttpGatewayConfig):
        return HttpGateway(portal_id, config)
    return LogGateway(portal_id)
