"""The OpenAPI 3.1 document, generated from the declared endpoints and their Structs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from catena import __version__
from catena.errors import ErrorBody

from .routing import Endpoint

REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)}")
_ERRORS = {
    400: "Invalid input: the message names the field",
    401: "Missing, unknown or expired X-Auth-Token",
    403: "Authenticated, but not permitted",
    404: "Not found (also another portal's ids)",
    409: "Conflict: a duplicate, or a reference blocks the change",
}


def build(endpoints: Iterable[Endpoint], *, title: str = "Catena Management API") -> dict[str, Any]:
    endpoints = list(endpoints)
    types = _types(endpoints)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "authToken": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "managerSession": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Auth-Token",
                    "description": "a manager session from POST /login (not the portal's API key)",
                },
                "playbackToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _types(endpoints: list[Endpoint]) -> list[Any]:
    types: list[Any] = [ErrorBody]
    for endpoint in endpoints:
        for kind in (endpoint.body, endpoint.response):
            if kind is not None and kind not in types:
                types.append(kind)
    return types


def _operation(endpoint: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [endpoint.tag],
        "summary": endpoint.summary,
        "operationId": endpoint.operation_id,
        "parameters": _path_params(endpoint.path) + _query_params(endpoint.query) + _format_param(endpoint),
        "responses": _responses(endpoint, refs),
    }
    if endpoint.description:
        op["description"] = endpoint.description
    if endpoint.body is not None:
        op["requestBody"] = {
            "required": not endpoint.optional_body,
            "content": {"application/json": {"schema": refs[endpoint.body]}},
        }
    if endpoint.auth is None:
        op["security"] = []
    else:
        scheme = getattr(endpoint.auth, "openapi_scheme", "authToken")
        op["security"] = [{scheme: []}]
    return op


def _responses(endpoint: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    if endpoint.response is not None:
        ok: dict[str, Any] = {
            "description": "OK",
            "content": {"application/json": {"schema": refs[endpoint.response]}},
        }
    else:
        ok = {"description": "Done", "content": {"application/json": {"schema": {"type": "object"}}}}
    if endpoint.csv:
        ok["content"]["text/csv"] = {
            "schema": {"type": "string", "description": "RFC 4180 CSV, header row first"}
        }
    responses: dict[str, Any] = {str(endpoint.status): ok}
    for status, (description, media) in endpoint.produces.items():
        responses[str(status)] = {"description": description, "content": {media: {}}}
    error = {"application/json": {"schema": refs[ErrorBody]}}
    for status, description in _ERRORS.items():
        if status == 401 and endpoint.auth is None:
            continue
        responses.setdefault(str(status), {"description": description, "content": error})
    return responses


def _format_param(endpoint: Endpoint) -> list[dict[str, Any]]:
    if not endpoint.csv:
        return []
    return [
        {
            "name": "format",
            "in": "query",
            "required": False,
            "description": "csv: every matching row as CSV (as Accept: text/csv); json: one page (default)",
            "schema": {"enum": ["json", "csv"], "type": "string"},
        }
    ]


def _path_params(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]


def _query_params(query: type | None) -> list[dict[str, Any]]:
    if query is None:
        return []
    _, components = msgspec.json.schema_components([query], ref_template=REF)
    struct_schema = components[query.__name__]
    required = set(struct_schema.get("required", []))
    params = []
    for name, prop in struct_schema.get("properties", {}).items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if _is_array(prop):
            param["explode"] = True
        params.append(param)
    return params


def _is_array(prop: dict[str, Any]) -> bool:
    options = prop.get("anyOf", [prop])
    return any(option.get("type") == "array" for option in options)
