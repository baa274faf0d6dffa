"""Portal settings (manual §2.1): branding, settings, the API key, free packages, webhooks.

One page shows the portal; each part has its own form, posted to its own path and
handed to the action its JSON endpoint calls (``portal.update_portal``,
``portal.reset_api_key``, ``free_packages.add_free_package`` …).  What a manager
may see comes from the actions too: the API key is in the portal object only for
the owner and isAdmin managers, and ``webhooks.list_webhooks`` refuses the others.
A refused or invalid form comes back with the error beside the field it names
(``settings.maxSessions``, ``branding.logo``, ``url`` …).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

import msgspec
from aiohttp import web

from catena import ids
from catena.errors import CatenaError, Forbidden, NotFound
from catena.portals import PortalSettings

from .. import _logos, free_packages, packages, webhooks
from .. import portal as portal_actions
from .._content import NamedPageQuery
from ..packages import Package
from ..portal import PortalOut, PortalUpdate
from ..schema import PageQuery
from ..webhooks import WebhookCreate, WebhookList
from . import forms
from .i18n import gettext as _
from .pages import Page, Pages

pages = Pages(section="/portal")

# How many packages the "Add package" list offers, and webhooks the page lists.
PACKAGE_CHOICES = 500
WEBHOOKS_SHOWN = 100
GATEWAY = "settings.smsGateway"
GATEWAY_FIELDS = ("url", "method", "headers", "body", "contentType", "timeout", "retries", "retryDelay")
FIELDS = {
    "branding": ("branding.title", "branding.description", "branding.logo"),
    "settings": (
        "settings.maxSessions",
        "settings.sessionLimitPolicy",
        "settings.authDuration",
        "settings.archiveDays",
        "settings.playbackUrlTemplate",
        "settings.autoCreateSubscribers",
        GATEWAY,
        f"{GATEWAY}.type",
        *(f"{GATEWAY}.{name}" for name in GATEWAY_FIELDS),
    ),
    "free": ("packageId",),
    "webhooks": ("url",),
}
_INTEGER = re.compile(r"^-?[0-9]{1,12}$")
_DATA_URI = re.compile(r"^data:(image/(?:png|jpeg|webp|svg\+xml));base64,")


@pages.get("/portal")
async def portal_page(page: Page) -> web.StreamResponse:
    return await _render(page)


@pages.post("/portal/branding", max_body=_logos.MAX_REQUEST_BYTES)
async def save_branding(page: Page) -> web.StreamResponse:
    changes: dict[str, Any] = {
        "title": page.value("branding.title").strip(),
        "description": page.value("branding.description").strip(),
    }
    upload = forms.image_data_uri(page.form.get("branding.logo"))
    if upload is not None:
        changes["logo"] = upload
    elif page.value("removeLogo"):
        changes["logo"] = None
    try:
        patch = forms.decode(PortalUpdate, {"branding": changes})
        await portal_actions.update_portal(page.services, page.principal, patch)
    except CatenaError as exc:
        return await _render(page, exc, part="branding", values=changes)
    return page.redirect("/portal", notice=_("Branding saved"))


@pages.post("/portal/settings")
async def save_settings(page: Page) -> web.StreamResponse:
    current = await portal_actions.get_portal(page.services, page.principal)
    sent = _settings_sent(page)
    try:
        patch = forms.decode(PortalUpdate, {"settings": _changed(sent, current.settings)})
        await portal_actions.update_portal(page.services, page.principal, patch)
    except CatenaError as exc:
        return await _render(page, exc, part="settings", values=_settings_values(sent))
    return page.redirect("/portal", notice=_("Settings saved"))


@pages.get("/portal/logo")
async def portal_logo(page: Page) -> web.StreamResponse:
    """The portal's logo when it is stored in the portal (a ``data:`` URI)."""
    portal = await portal_actions.get_portal(page.services, page.principal)
    image = _stored_logo(portal.branding.logo)
    if image is None:
        raise NotFound(_("The portal has no stored logo."), code="not_found")
    content_type, data = image
    return _logos.serve(page.request, content_type, data, hashlib.sha256(data).hexdigest()[:32])


@pages.get("/portal/api-key")
async def api_key_confirm(page: Page) -> web.StreamResponse:
    return page.render("portal/api_key.html", section="portal")


@pages.post("/portal/api-key")
async def api_key_regenerate(page: Page) -> web.StreamResponse:
    await portal_actions.reset_api_key(page.services, page.principal)
    notice = _("A new API key was issued. The old key stopped working: put the new one in every integration.")
    return page.redirect("/portal#api-key", notice=notice)


@pages.post("/portal/free-packages")
async def free_package_add(page: Page) -> web.StreamResponse:
    try:
        package_id = _package_id(page.value("packageId"))
        await free_packages.add_free_package(page.services, page.principal, package_id)
        package = await packages.get_package(page.services, page.principal, package_id)
    except CatenaError as exc:
        return await _render(page, exc, part="free", values={"packageId": page.value("packageId")})
    return page.redirect("/portal#free-packages", notice=_("Package %(name)s is free now", name=package.name))


@pages.get("/portal/free-packages/{id}/remove")
async def free_package_remove_confirm(page: Page) -> web.StreamResponse:
    package = await packages.get_package(page.services, page.principal, page.path_id())
    return page.render("portal/free_remove.html", package=package)


@pages.post("/portal/free-packages/{id}/remove")
async def free_package_remove(page: Page) -> web.StreamResponse:
    package = await packages.get_package(page.services, page.principal, page.path_id())
    await free_packages.remove_free_package(page.services, page.principal, page.path_id())
    notice = _("Package %(name)s is no longer free", name=package.name)
    return page.redirect("/portal#free-packages", notice=notice)


@pages.post("/portal/webhooks")
async def webhook_create(page: Page) -> web.StreamResponse:
    url = page.value("url").strip()
    try:
        body = forms.decode(WebhookCreate, {"url": url})
        webhook = await webhooks.create_webhook(page.services, page.principal, body)
    except CatenaError as exc:
        return await _render(page, exc, part="webhooks", values={"url": url})
    # The secret exists in this answer only: the page shows it once.
    return page.render("portal/webhook_created.html", webhook=webhook, section="portal")


@pages.post("/portal/webhooks/{id}/retry")
async def webhook_retry(page: Page) -> web.StreamResponse:
    webhook = await webhooks.retry_webhook(page.services, page.principal, page.path_id())
    return page.redirect("/portal#webhooks", notice=_("Delivery to %(url)s is tried now", url=webhook.url))


@pages.get("/portal/webhooks/{id}/delete")
async def webhook_delete_confirm(page: Page) -> web.StreamResponse:
    webhook = await webhooks.get_webhook(page.services, page.principal, page.path_id())
    return page.render("portal/webhook_delete.html", webhook=webhook, section="portal")


@pages.post("/portal/webhooks/{id}/delete")
async def webhook_delete(page: Page) -> web.StreamResponse:
    webhook = await webhooks.get_webhook(page.services, page.principal, page.path_id())
    await webhooks.delete_webhook(page.services, page.principal, page.path_id())
    return page.redirect("/portal#webhooks", notice=_("Webhook %(url)s deleted", url=webhook.url))


async def _render(
    page: Page, error: CatenaError | None = None, *, part: str = "", values: dict[str, Any] | None = None
) -> web.Response:
    """The portal page; after a failed form, that form with what was sent and the error."""
    portal = await portal_actions.get_portal(page.services, page.principal)
    errors = {name: forms.FormErrors() for name in FIELDS}
    if error is not None:
        errors[part] = forms.errors(error, FIELDS[part])
    shown = {
        "branding": {"title": portal.branding.title, "description": portal.branding.description},
        "settings": _settings_values(_settings_of(portal.settings)),
        "free": {},
        "webhooks": {},
    }
    if values is not None:
        shown[part] = {**shown[part], **values}
    choices, more_choices = await _package_choices(page)
    return page.render(
        "portal/page.html",
        status=error.status if error is not None else 200,
        portal=portal,
        api_key=portal.apiKey if isinstance(portal.apiKey, str) else None,
        logo=_logo_view(portal.branding.logo),
        free=await _free_packages(page, portal),
        choices=choices,
        more_choices=more_choices,
        webhooks=await _webhooks(page),
        errors=errors,
        values=shown,
    )


async def _free_packages(page: Page, portal: PortalOut) -> list[Package]:
    """The portal's free packages (a handful), with their names."""
    found = []
    for text_id in portal.freePackages:
        package_id = ids.decode(text_id)
        if package_id is not None:
            found.append(await packages.get_package(page.services, page.principal, package_id))
    return found


async def _package_choices(page: Page) -> tuple[list[Package], int]:
    """Packages that could become free (for a manager who may make them so), and
    how many the list looked at when the portal has more (else 0)."""
    if not page.can("content"):
        return [], 0
    query = NamedPageQuery(limit=PACKAGE_CHOICES)
    listed = await packages.list_packages(page.services, page.principal, query)
    return [p for p in listed.packages if not p.free], PACKAGE_CHOICES if listed.next else 0


async def _webhooks(page: Page) -> WebhookList | None:
    """The portal's webhooks; ``None`` when the action does not let this manager read them."""
    try:
        return await webhooks.list_webhooks(page.services, page.principal, PageQuery(limit=WEBHOOKS_SHOWN))
    except Forbidden:
        return None


def _package_id(value: str) -> int:
    package_id = ids.decode(value) if value else None
    if package_id is None:
        raise NotFound(_("Choose a package."), field="packageId", code="not_found")
    return package_id


def _settings_sent(page: Page) -> dict[str, Any]:
    """The settings form as the API's ``settings`` object (numbers as numbers when they are)."""
    return {
        "autoCreateSubscribers": bool(page.value("settings.autoCreateSubscribers")),
        "maxSessions": _integer(page.value("settings.maxSessions")),
        "sessionLimitPolicy": page.value("settings.sessionLimitPolicy"),
        "authDuration": _integer(page.value("settings.authDuration")),
        "archiveDays": _integer(page.value("settings.archiveDays")),
        "playbackUrlTemplate": page.value("settings.playbackUrlTemplate").strip(),
        "smsGateway": _gateway_sent(page),
    }


def _gateway_sent(page: Page) -> dict[str, Any]:
    def value(name: str) -> str:
        return page.value(f"{GATEWAY}.{name}")

    if value("type") != "http":
        return {"type": value("type") or "log"}
    sent = {
        "type": "http",
        "url": value("url").strip(),
        "method": value("method"),
        "headers": _headers(value("headers")),
        "body": value("body"),
        "contentType": value("contentType").strip(),
        "timeout": _decimal(value("timeout")),
        "retries": _integer(value("retries")),
        "retryDelay": _decimal(value("retryDelay")),
    }
    # A field left empty takes the gateway's default.
    return {k: v for k, v in sent.items() if v != "" or k in ("url", "body")}


def _headers(text: str) -> dict[str, str] | str:
    """``Name: value`` lines as a mapping; text that is not such lines is sent as it is (a 400)."""
    headers = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon:
            return text
        headers[name.strip()] = value.strip()
    return headers


def _changed(sent: dict[str, Any], current: PortalSettings) -> dict[str, Any]:
    """Only the settings the form changed, so that the operations log names just those."""
    stored = _settings_of(current)
    return {name: value for name, value in sent.items() if value != stored.get(name)}


def _settings_of(settings: PortalSettings) -> dict[str, Any]:
    stored: dict[str, Any] = msgspec.to_builtins(settings)
    stored["smsGateway"] = stored.get("smsGateway") or {"type": "log"}
    return stored


def _settings_values(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as the form's fields (``settings.maxSessions`` …)."""
    values = {f"settings.{k}": v for k, v in settings.items() if k != "smsGateway"}
    gateway = settings.get("smsGateway") or {"type": "log"}
    values[f"{GATEWAY}.type"] = gateway.get("type", "log")
    for name in GATEWAY_FIELDS:
        values[f"{GATEWAY}.{name}"] = gateway.get(name, "")
    headers = gateway.get("headers")
    if isinstance(headers, dict):
        values[f"{GATEWAY}.headers"] = "\n".join(f"{k}: {v}" for k, v in headers.items())
    return values


def _integer(value: str) -> int | str:
    value = value.strip()
    return int(value) if _INTEGER.match(value) else value


def _decimal(value: str) -> float | str:
    try:
        return float(value.strip())
    except ValueError:
        return value


def _stored_logo(logo: str | None) -> tuple[str, bytes] | None:
    """``(content type, bytes)`` of a logo kept as a ``data:`` URI; ``None`` for none or a URL."""
    match = _DATA_URI.match(logo or "")
    if match is None or logo is None:
        return None
    try:
        return match.group(1), base64.b64decode(logo[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        return None


def _logo_view(logo: str | None) -> dict[str, str] | None:
    """How the page shows the logo: the stored image, or the link to one elsewhere."""
    if not logo:
        return None
    if _stored_logo(logo) is not None:
        return {"src": "/portal/logo", "url": ""}
    return {"src": "", "url": logo if logo.startswith(("http://", "https://")) else ""}
