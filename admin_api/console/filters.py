"""Filter forms of the list pages: the query string in, the API's query Struct out.

Filter fields have short names of their own (``subscriber``, ``from`` …) because a
time is typed as a ``datetime-local`` value (``2024-10-16T14:30``, UTC once
console.js has converted it from the browser's zone), not as the API's form.  An
error the action raises names the API's field; :func:`errors` puts it beside the
filter that sent it.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from datetime import datetime

from catena.errors import CatenaError

from ..operations import parse_instant
from . import forms
from .pages import Page


def text(page: Page, name: str) -> str:
    """A filter's value from the query string, '' when absent."""
    return page.request.query.get(name, "").strip()


def listed(page: Page, name: str) -> list[str] | None:
    """A filter the API takes as a list (one value here); ``None`` when empty."""
    value = text(page, name)
    return [value] if value else None


def instant(page: Page, name: str) -> datetime | None:
    """A ``datetime-local`` filter read as UTC; a 400 naming the filter when it is not a time."""
    value = text(page, name)
    return parse_instant(value, name) if value else None


def values(page: Page, names: tuple[str, ...]) -> dict[str, str]:
    """The filters as sent, to fill the form again."""
    return {name: text(page, name) for name in names}


def export_url(page: Page, path: str, names: tuple[str, ...]) -> str:
    """``path`` with this page's filters and no cursor: an export is everything that matches."""
    sent = {name: value for name, value in values(page, names).items() if value}
    return path + ("?" + urllib.parse.urlencode(sent) if sent else "")


def errors(error: CatenaError, api_to_filter: Mapping[str, str]) -> forms.FormErrors:
    """``error`` beside the filter whose API field it names, else above the list."""
    if error.field is not None and error.field in api_to_filter:
        error.field = api_to_filter[error.field]
    return forms.errors(error, api_to_filter.values())
