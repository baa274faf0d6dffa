"""HTML forms in, the API's request Structs out; the actions' errors back beside their fields.

A form's fields carry the API's field names (``name``, ``title``, ``epgSourceName``
…), so the field an action's error names is the field the page marks.  Values are
checked by converting them into the same Struct the JSON endpoint decodes, with the
same readable pattern messages: one set of rules.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from catena.errors import CatenaError, from_validation

from .._patterns import described_patterns, explain
from .i18n import N_
from .i18n import gettext as _

T = TypeVar("T")


@dataclass
class FormErrors:
    """What went wrong with a submitted form: per field, and for the whole form."""

    fields: dict[str, str] = field(default_factory=dict)
    form: str = ""

    def __bool__(self) -> bool:
        return bool(self.fields or self.form)


def decode(struct_type: type[T], values: Mapping[str, Any]) -> T:
    """``values`` as ``struct_type``; a 400 naming the field, worded as the API words it."""
    try:
        return msgspec.convert(dict(values), struct_type)
    except msgspec.ValidationError as exc:
        raise invalid(exc, struct_type) from None


def invalid(exc: msgspec.ValidationError, struct_type: type) -> CatenaError:
    """msgspec's complaint about a ``struct_type`` value as the API's 400 naming the field."""
    error = from_validation(exc)
    error.message = explain(error.message, _patterns(struct_type))
    return error


@functools.cache
def _patterns(struct_type: type) -> dict[str, str]:
    return described_patterns(struct_type)


def errors(error: CatenaError, fields: Iterable[str]) -> FormErrors:
    """``error`` beside the field it names when the form has that field, else above the form."""
    message = message_of(error)
    if error.field is not None and error.field in set(fields):
        return FormErrors(fields={error.field: message})
    return FormErrors(form=message)


# Codes whose API message the console says in the interface's language; every
# other error shows the API's own message (it names the field and the rule).
_OWN_WORDS = {
    "invalid_credentials": N_("Wrong email or password."),
    "too_many_requests": N_("Too many failed sign-ins; try again later."),
    "name_taken": N_("Name must be unique"),
    "phone_taken": N_("A subscriber with this phone number already exists"),
}


def message_of(error: CatenaError) -> str:
    own = _OWN_WORDS.get(error.code)
    return _(own) if own else error.message


def optional(value: str) -> str | None:
    """A text field left empty means 'none'."""
    value = value.strip()
    return value or None


def optional_int(value: str) -> int | str | None:
    """A number field: empty is 'none', digits a number; anything else goes to the
    action as typed, whose Struct refuses it naming the field."""
    value = value.strip()
    if not value:
        return None
    return int(value) if value.isdigit() and len(value) < 10 else value


def image_data_uri(upload: Any) -> str | None:
    """An uploaded file as the ``data:`` URI the API takes (``None`` when no file was chosen).

    The declared type is the browser's guess; the action checks the bytes themselves.
    """
    if not isinstance(upload, web.FileField):
        return None
    data = upload.file.read()
    if not data and not upload.filename:
        return None
    media = upload.content_type if upload.content_type in ("image/png", "image/jpeg") else "image/png"
    return f"data:{media};base64," + base64.b64encode(data).decode("ascii")
