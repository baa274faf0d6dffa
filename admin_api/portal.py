"""``/portal``: the caller's portal, its branding and settings, its API key (docs/api.md)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from msgspec import UNSET, Meta, UnsetType

from catena import entitlements, operations, outbound
from catena.errors import InvalidInput
from catena.portals import Branding, PortalSettings, load_branding, load_settings, new_api_key

from .auth import authenticate_manager
from .client.sms import HTTP_URL, HttpGatewayConfig, SmsGatewayConfig
from .principal import Principal
from .routing import Api, Call
from .schema import Request, Response, TextId, Timestamp, iso, text_id
from .services import Services

api = Api("Portal", auth=authenticate_manager)

_LOGO_RE = re.compile(r"^(https?://|data:image/(png|jpeg|svg\+xml|webp);base64,)", re.I)


class Flags(Response):
    canManage: bool
    canManageSubscribers: bool
    canManageContent: bool


class PortalOut(Response):
    portalId: TextId
    name: str
    domain: str
    ownerId: TextId | None
    branding: Branding
    freePackages: list[TextId]
    settings: PortalSettings
    createdAt: Timestamp
    updatedAt: Timestamp
    flags: Flags
    apiKey: str | UnsetType = UNSET


class BrandingPatch(Request):
    logo: Annotated[str, Meta(max_length=1500000)] | UnsetType | None = UNSET
    title: Annotated[str, Meta(max_length=200)] | UnsetType = UNSET
    description: Annotated[str, Meta(max_length=2000)] | UnsetType = UNSET


class SettingsPatch(Request):
    autoCreateSubscribers: bool | UnsetType = UNSET
    maxSessions: Annotated[int, Meta(ge=1, le=1000)] | UnsetType = UNSET
    sessionLimitPolicy: Literal["deny_new", "evict_oldest"] | UnsetType = UNSET
    authDuration: Annotated[int, Meta(ge=10, le=86400)] | UnsetType = UNSET
    archiveDays: Annotated[int, Meta(ge=0, le=3650)] | UnsetType = UNSET
    playbackUrlTemplate: (
        Annotated[str, Meta(pattern=r"^https?://\S+$", max_length=500, description=HTTP_URL)] | UnsetType
    ) = UNSET
    smsGateway: SmsGatewayConfig | UnsetType | None = UNSET


class PortalUpdate(Request):
    """Fields absent from the body keep their value; immutable fields may be echoed unchanged."""

    portalId: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    domain: str | UnsetType = UNSET
    ownerId: str | UnsetType = UNSET
    branding: BrandingPatch | UnsetType = UNSET
    settings: SettingsPatch | UnsetType = UNSET


_SELECT = """
SELECT p.*, coalesce(array(SELECT package_id FROM portal_free_packages f
                          WHERE f.portal_id = p.id ORDER BY f.created_at, f.package_id),
                     '{}') AS free_packages
FROM portals p WHERE p.id = $1
"""
_SELECT_FOR_UPDATE = "SELECT * FROM portals WHERE id = $1 FOR UPDATE"
_UPDATE = """
UPDATE portals SET branding = $2, settings = $3, updated_at = now() WHERE id = $1
"""
_RESET_KEY = "UPDATE portals SET api_key = $2, updated_at = now() WHERE id = $1"


def portal_out(row: asyncpg.Record, caller: Principal) -> PortalOut:
    """The portal object as ``caller`` may see it (secrets for admins only)."""
    settings = load_settings(row["settings"])
    if settings.smsGateway and not caller.can("admin"):
        # The provider's URL and headers carry its credentials: admins only.
        settings.smsGateway = {"type": settings.smsGateway.get("type", "log")}
    return PortalOut(
        portalId=text_id(row["id"]),
        name=row["name"],
        domain=row["domain"],
        ownerId=text_id(row["owner_id"]) if row["owner_id"] is not None else None,
        apiKey=row["api_key"] if caller.can("admin") else UNSET,
        branding=load_branding(row["branding"]),
        freePackages=[text_id(p) for p in row["free_packages"]],
        settings=settings,
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
        flags=Flags(
            canManage=caller.can("admin"),
            canManageSubscribers=caller.can("subscriber"),
            canManageContent=caller.can("content"),
        ),
    )


async def load_portal(conn: asyncpg.Connection, caller: Principal) -> PortalOut:
    row = await conn.fetchrow(_SELECT, caller.portal_id)
    return portal_out(row, caller)


# Actions: what the JSON handlers below and the console call.


async def get_portal(services: Services, actor: Principal) -> PortalOut:
    """The caller's portal."""
    async with services.db.acquire() as conn:
        return await load_portal(conn, actor)


async def update_portal(services: Services, actor: Principal, patch: PortalUpdate) -> PortalOut:
    """Update branding and settings; name, domain, ownerId and portalId are immutable."""
    actor.require("admin")
    _check_gateway_url(patch, services.settings.outbound_allow)
    async with services.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_SELECT_FOR_UPDATE, actor.portal_id)
        _check_immutable(patch, row)
        branding = _merge(load_branding(row["branding"]), patch.branding)
        settings = _merge(load_settings(row["settings"]), patch.settings)
        _check_logo(branding)
        await conn.execute(
            _UPDATE, actor.portal_id, msgspec.to_builtins(branding), msgspec.to_builtins(settings)
        )
        changed = _changed_fields(patch)
        if isinstance(patch.settings, SettingsPatch):
            await entitlements.changed(conn, actor.portal_id, "portal")
        await operations.record(
            conn, actor.portal_id, "updatePortal", actor.actor, payload={"fields": changed}
        )
        return await load_portal(conn, actor)


async def reset_api_key(services: Services, actor: Principal) -> PortalOut:
    """Issue a new API key; the old one is refused from the next request on."""
    actor.require("admin")
    async with services.db.acquire() as conn, conn.transaction():
        await conn.execute(_RESET_KEY, actor.portal_id, new_api_key())
        await operations.record(conn, actor.portal_id, "resetApiKey", actor.actor)
        return await load_portal(conn, actor)


# The JSON API: decode, call the action, encode.


@api.get("/portal", response=PortalOut)
async def handle_get_portal(call: Call[None, None]) -> PortalOut:
    """The caller's portal."""
    return await get_portal(call.services, call.caller)


@api.put("/portal", response=PortalOut, permission="admin")
async def handle_put_portal(call: Call[PortalUpdate, None]) -> PortalOut:
    """Update branding and settings; name, domain, ownerId and portalId are immutable."""
    return await update_portal(call.services, call.caller, call.body)


@api.post("/portal/reset_api_key", response=PortalOut, permission="admin")
async def handle_reset_api_key(call: Call[None, None]) -> PortalOut:
    """Issue a new API key; the old one is refused from the next request on."""
    return await reset_api_key(call.services, call.caller)


def _check_gateway_url(patch: PortalUpdate, outbound_allow: str) -> None:
    """A new SMS gateway may not point at an internal address (``catena.outbound``)."""
    if isinstance(patch.settings, SettingsPatch) and isinstance(patch.settings.smsGateway, HttpGatewayConfig):
        url = patch.settings.smsGateway.url.replace("{phone}", "70000000000").replace("{code}", "0000")
        outbound.check_url(outbound.policy(outbound_allow), url, "settings.smsGateway.url")


def _check_immutable(patch: PortalUpdate, row: asyncpg.Record) -> None:
    current = {
        "portalId": text_id(row["id"]),
        "name": row["name"],
        "domain": row["domain"],
        "ownerId": text_id(row["owner_id"]) if row["owner_id"] is not None else None,
    }
    for field, value in current.items():
        sent = getattr(patch, field)
        if sent is not UNSET and sent != value:
            raise InvalidInput(f"{field} cannot be changed through the Management API", field=field)


def _merge(current: Any, patch: Any) -> Any:
    if isinstance(patch, UnsetType):
        return current
    changes = {k: v for k, v in msgspec.structs.asdict(patch).items() if v is not UNSET}
    return msgspec.structs.replace(current, **changes)


def _check_logo(branding: Branding) -> None:
    if branding.logo and not _LOGO_RE.match(branding.logo):
        raise InvalidInput(
            "logo must be an http(s) URL or a data:image/...;base64, URI", field="branding.logo"
        )


def _changed_fields(patch: PortalUpdate) -> list[str]:
    fields = []
    for section in ("branding", "settings"):
        part = getattr(patch, section)
        if not isinstance(part, UnsetType):
            fields += [f"{section}.{k}" for k, v in msgspec.structs.asdict(part).items() if v is not UNSET]
    return fields
