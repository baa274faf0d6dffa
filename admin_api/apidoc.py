"""``docs/api.md``: the API reference, generated from the OpenAPI document the admin API serves.

The page's introduction (everything above :data:`MARKER`) is written by hand; the
rest — every endpoint and every schema — is rendered here from ``openapi.json``,
so it cannot drift: ``tests/test_api_doc.py`` fails when it is stale, and
``make api-doc`` (``python -m admin_api.apidoc``) rewrites it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from catena.settings import AdminSettings, load

from . import openapi

PAGE = Path(__file__).resolve().parent.parent / "docs" / "api.md"
MARKER = "<!-- Everything below is generated from openapi.json by `make api-doc`: do not edit it by hand. -->"
_AUTH = {
    "authToken": "`X-Auth-Token`: the portal's API key or a manager session",
    "managerSession": "`X-Auth-Token`: a manager session (not the API key)",
    "playbackToken": "the subscriber's playback token (`Authorization: Bearer`)",
}
_NOTES = (
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minimum", "≥ {}"),
    ("maximum", "≤ {}"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
)


def document() -> dict[str, Any]:
    """The OpenAPI document ``GET /tv-management/api/v1/openapi.json`` serves."""
    from .app import apis, create_app

    create_app(load(AdminSettings, environ={}))  # gives every endpoint its base path
    return openapi.build(endpoint for api in apis() for endpoint in api.endpoints)


def render(doc: dict[str, Any]) -> str:
    """The generated part of the page."""
    lines = [MARKER, "", *_index(doc)]
    for tag, operations in _by_tag(doc).items():
        lines += ["", f"## {tag}"]
        for path, method, operation in operations:
            lines += ["", *_operation(path, method, operation)]
    lines += ["", "## Schemas", "", "Objects the endpoints take and return, by name."]
    for name, schema in sorted(doc["components"]["schemas"].items()):
        lines += ["", *_schema(name, schema)]
    return "\n".join(lines) + "\n"


def _by_tag(doc: dict[str, Any]) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    grouped: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            grouped.setdefault(operation["tags"][0], []).append((path, method.upper(), operation))
    return grouped


def _index(doc: dict[str, Any]) -> Iterator[str]:
    yield "## Endpoints"
    yield ""
    yield "| method | path | what it does |"
    yield "|---|---|---|"
    for tag, operations in _by_tag(doc).items():
        for path, method, operation in operations:
            link = f"[`{path}`](#{_anchor(method, path)})"
            yield f"| `{method}` | {link} | {_cell(operation['summary'])} ({tag}) |"


def _anchor(method: str, path: str) -> str:
    """GitHub's anchor of the heading ``### `METHOD path```."""
    text = f"{method} {path}".lower()
    return "".join(c for c in text.replace(" ", "-") if c.isalnum() or c in "-_")


def _operation(path: str, method: str, operation: dict[str, Any]) -> Iterator[str]:
    yield f"### `{method} {path}`"
    yield ""
    yield operation["summary"]
    if operation.get("description"):
        yield ""
        yield operation["description"]
    yield ""
    yield f"- Operation id: `{operation['operationId']}`"
    schemes = [name for item in operation.get("security", []) for name in item]
    yield f"- Authentication: {', '.join(_AUTH.get(s, s) for s in schemes) or 'none'}"
    body = operation.get("requestBody")
    if body:
        schema = body["content"]["application/json"]["schema"]
        yield f"- Body{'' if body['required'] else ' (optional)'}: {_type(schema)}"
    yield from _responses(operation["responses"])
    yield from _parameters(operation.get("parameters", []))


def _responses(responses: dict[str, Any]) -> Iterator[str]:
    for status, response in responses.items():
        if not status.startswith("2"):
            continue
        content = response.get("content", {})
        media, spec = next(iter(content.items())) if content else ("", {})
        shape = _type(spec["schema"]) if spec.get("schema") else f"`{media}`"
        yield f"- Answer `{status}`: {shape}"
    errors = [status for status in responses if status[0] in "45"]
    if errors:
        yield f"- Errors: {', '.join(f'`{s}`' for s in errors)} (`ErrorBody`)"


def _parameters(parameters: list[dict[str, Any]]) -> Iterator[str]:
    if not parameters:
        return
    yield ""
    yield "| parameter | in | type | required | notes |"
    yield "|---|---|---|---|---|"
    for param in parameters:
        schema = param.get("schema", {})
        required = "yes" if param.get("required") else "no"
        yield f"| `{param['name']}` | {param['in']} | {_type(schema)} | {required} | {_notes(schema)} |"


def _schema(name: str, schema: dict[str, Any]) -> Iterator[str]:
    yield f"### {name}"
    if schema.get("description"):
        yield ""
        yield schema["description"]
    properties = schema.get("properties", {})
    if not properties:
        yield ""
        yield f"Type: {_type(schema)}."
        return
    required = set(schema.get("required", []))
    yield ""
    yield "| field | type | required | notes |"
    yield "|---|---|---|---|"
    for field, spec in properties.items():
        yield f"| `{field}` | {_type(spec)} | {'yes' if field in required else 'no'} | {_notes(spec)} |"


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[`{name}`](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type(option) for option in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and schema["additionalProperties"] is not False:
        return "object"
    return f"`{kind}`" + (f" ({schema['format']})" if "format" in schema else "")


def _notes(schema: dict[str, Any]) -> str:
    spec = schema
    if "anyOf" in schema:
        spec = next((o for o in schema["anyOf"] if o.get("type") != "null"), schema)
    notes = [template.format(spec[key]) for key, template in _NOTES if key in spec]
    if "pattern" in spec:
        notes.append(spec.get("description") or f"matches `{spec['pattern']}`")
    elif spec.get("description"):
        notes.append(spec["description"])
    if "default" in schema:
        notes.append(f"default `{json.dumps(schema['default'], ensure_ascii=False)}`")
    return _cell("; ".join(notes))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def page(current: str, doc: dict[str, Any]) -> str:
    """``current`` with everything from the marker on replaced by a fresh rendering."""
    introduction = current.split(MARKER, 1)[0]
    return introduction + render(doc)


def main(argv: list[str] | None = None) -> None:
    write_or_check(PAGE, page(PAGE.read_text(), document()), "make api-doc", argv)


def write_or_check(target: Path, fresh: str, command: str, argv: list[str] | None = None) -> None:
    """Write a generated page, or with ``--check`` exit non-zero when ``target`` differs."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        if fresh != target.read_text():
            sys.exit(f"{target} is stale: run `{command}`")
        return
    target.write_text(fresh)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
