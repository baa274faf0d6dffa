"""Readable 400s for strings that miss their pattern.

msgspec reports ``Expected `str` matching regex '^[0-9]{1,20}$'``; a billing
integrator should read "digits only" instead.  Every ``Meta(pattern=...,
description=...)`` reachable from an endpoint's body or query Struct lends its
description to the message, so a type documents itself once, for OpenAPI and for
errors alike.
"""

from __future__ import annotations

from typing import Any

import msgspec.inspect as mi


def described_patterns(*types: type | None) -> dict[str, str]:
    """``{pattern: description}`` for every described pattern inside ``types``."""
    found: dict[str, str] = {}
    for kind in types:
        if kind is not None:
            _walk(mi.type_info(kind), None, found, set())
    return found


def _walk(info: Any, description: str | None, found: dict[str, str], seen: set[int]) -> None:
    if isinstance(info, mi.Metadata):
        text = (info.extra_json_schema or {}).get("description")
        _walk(info.type, text or description, found, seen)
    elif isinstance(info, mi.StrType):
        if info.pattern and description:
            found.setdefault(info.pattern, description)
    elif isinstance(info, mi.StructType):
        if id(info.cls) in seen:
            return
        seen.add(id(info.cls))
        for field in info.fields:
            _walk(field.type, None, found, seen)
    elif isinstance(info, mi.UnionType):
        for option in info.types:
            _walk(option, description, found, seen)
    elif isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        _walk(info.item_type, None, found, seen)
    elif isinstance(info, mi.DictType):
        _walk(info.key_type, None, found, seen)
        _walk(info.value_type, None, found, seen)


def explain(message: str, patterns: dict[str, str]) -> str:
    """``message`` with a described regex replaced by its description."""
    for pattern, description in patterns.items():
        quoted = f"`str` matching regex {pattern!r}"
        if quoted in message:
            return message.replace(quoted, f"{description}")
    return message
