"""Declared endpoints: one table drives the aiohttp routes and the OpenAPI document.

A module declares its endpoints on an :class:`Api`; the handler's annotation
``Call[Body, Query]`` declares the request body and query-string Structs
(``None`` for neither)::

    api = Api("Channels")

    @api.post("/channels", response=Channel, permission="content")
    async def handle_create_channel(call: Call[ChannelCreate, None]) -> Channel:
        return await create_channel(call.services, call.caller, call.body)

An endpoint declared with ``csv=True`` also answers in CSV: the wrapper
negotiates the representation (``?format=csv|json``, else ``Accept``) and sets
``call.csv``; the handler then streams a :class:`admin_api.csv_export.CsvExport`.
CSV asked of any other endpoint is a 406 (see :func:`wants_csv`).

The wrapper authenticates the caller, checks the permission a write needs, decodes
the JSON body into the declared Struct and the query string into the declared
query Struct (400 naming the field on anything wrong), runs the handler and
encodes what it returns with the declared status.  The handler only decodes path
ids and calls the module's typed action, which the console calls too.  Because
the same Structs feed :mod:`admin_api.openapi`, the document cannot drift from the
handlers.  The OpenAPI ``operationId`` is the handler's name without ``handle_``.
"""

from __future__ import annotations

import contextlib
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from catena import ids
from catena.errors import InvalidInput, NotAcceptable, NotFound, UnsupportedMediaType, from_validation
from catena.pagination import Cursors
from catena.settings import AdminSettings

from . import keys
from ._patterns import described_patterns, explain
from .principal import Permission, Principal
from .services import Services

BodyT = TypeVar("BodyT")
QueryT = TypeVar("QueryT")
Authenticator = Callable[["Call[Any, Any]"], Awaitable[None]]
Handler = Callable[["Call[Any, Any]"], Awaitable[Any]]

_EMPTY_OBJECT = b"{}"
_UNIONS = (typing.Union, types.UnionType)


class Call(Generic[BodyT, QueryT]):
    """One request as a handler sees it: the caller, the decoded body and query.

    ``Call[Body, Query]`` in a handler's signature is what the endpoint decodes.
    """

    __slots__ = ("body", "csv", "principal", "query", "request", "subject")

    body: BodyT
    query: QueryT

    def __init__(self, request: web.Request, body: BodyT, query: QueryT) -> None:
        self.request = request
        self.principal: Principal | None = None
        # Whatever a non-manager authenticator identifies (e.g. a subscriber).
        self.subject: Any = None
        self.body = body
        self.query = query
        # The client asked for CSV and the endpoint has it (endpoints declared csv=True).
        self.csv = False

    @property
    def services(self) -> Services:
        """What the module's actions take: pool, Redis, settings, cursors, tokens."""
        return self.request.app[keys.SERVICES]

    @property
    def db(self) -> asyncpg.Pool:
        return self.request.app[keys.DB]

    @property
    def redis(self) -> aioredis.Redis:
        return self.request.app[keys.REDIS]

    @property
    def settings(self) -> AdminSettings:
        return self.request.app[keys.SETTINGS]

    @property
    def cursors(self) -> Cursors:
        """Makes and checks list cursors (``catena.pagination``)."""
        return self.request.app[keys.CURSORS]

    @property
    def caller(self) -> Principal:
        """The authenticated manager or API key (endpoints with manager auth only)."""
        assert self.principal is not None
        return self.principal

    @property
    def portal_id(self) -> int:
        return self.caller.portal_id

    def path_id(self, name: str = "id") -> int:
        """The id in the path segment ``name``; one that does not decode names nothing (404)."""
        value = ids.decode(self.request.match_info[name])
        if value is None:
            raise NotFound(f"no such {name}", field=name)
        return value


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    tag: str
    summary: str
    body: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    permission: Permission | None = None
    auth: Authenticator | None = None
    # Extra responses for the OpenAPI document: status → (description, media type).
    produces: dict[int, tuple[str, str]] = field(default_factory=dict)
    description: str = ""
    # The body may be left out entirely; it then decodes as ``{}``.
    optional_body: bool = False
    # Largest request body this endpoint reads, when it needs more than the
    # application's client_max_size (e.g. inline images, so that an oversized one
    # gets a 400 naming its field instead of a bare 413).
    max_body: int | None = None
    # The endpoint also answers text/csv (?format=csv or Accept); see wants_csv.
    csv: bool = False

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.removeprefix("handle_")


class Api:
    """The endpoints of one module, under one OpenAPI tag."""

    def __init__(self, tag: str, *, auth: Authenticator | None = None, prefix: str = "") -> None:
        self.tag = tag
        self.auth = auth
        self.prefix = prefix
        self.endpoints: list[Endpoint] = []

    def route(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            options.setdefault("auth", self.auth)
            options.setdefault("summary", (handler.__doc__ or handler.__name__).strip().split("\n")[0])
            declared = call_types(handler)
            if declared is not None:
                options["body"], options["query"] = declared
            self.endpoints.append(Endpoint(method, self.prefix + path, handler, tag=self.tag, **options))
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        options.setdefault("status", 201)
        return self.route("DELETE", path, **options)

    def add_to(self, app: web.Application) -> None:
        for endpoint in self.endpoints:
            app.router.add_route(endpoint.method, endpoint.path, _wrap(endpoint))


def call_types(handler: Handler) -> tuple[type | None, type | None] | None:
    """The (body, query) types of a handler annotated ``call: Call[Body, Query]``.

    ``None`` for a handler annotated with a bare ``Call`` (its endpoint declares
    ``body=``/``query=`` itself).
    """
    hints = typing.get_type_hints(handler)
    annotation = next(iter(hints.values()))
    if typing.get_origin(annotation) is not Call:
        return None
    body, query = typing.get_args(annotation)
    return (None if body is type(None) else body), (None if query is type(None) else query)


def _wrap(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    body_decoder: msgspec.json.Decoder[Any] | None = (
        msgspec.json.Decoder(endpoint.body) if endpoint.body is not None else None
    )
    query_lists = _list_fields(endpoint.query) if endpoint.query is not None else frozenset()
    patterns = described_patterns(endpoint.body, endpoint.query)

    async def handle(request: web.Request) -> web.StreamResponse:
        call: Call[Any, Any] = Call(request, None, None)
        if endpoint.auth is not None:
            await endpoint.auth(call)
        if endpoint.permission is not None:
            call.caller.require(endpoint.permission, reading=endpoint.method == "GET")
        call.csv = wants_csv(request, offered=endpoint.csv)
        if endpoint.query is not None:
            call.query = decode_query(request, endpoint.query, query_lists)
        if body_decoder is not None:
            raw = await read_json(request, optional=endpoint.optional_body, max_body=endpoint.max_body)
            call.body = decode_body(body_decoder, raw or _EMPTY_OBJECT)
        result = await endpoint.handler(call)
        response = respond(result, endpoint.status)
        if endpoint.csv:
            response.headers["Vary"] = "Accept"
        return response

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handle(request)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            error = from_validation(exc)
            error.message = explain(error.message, patterns)
            raise error from None

    guarded.__name__ = endpoint.operation_id
    return guarded


async def read_json(request: web.Request, *, optional: bool = False, max_body: int | None = None) -> bytes:
    """The raw body of a JSON request: 415 for another media type, 400 when empty (unless optional)."""
    if max_body is not None and max_body > request.client_max_size:
        request = request.clone(client_max_size=max_body)
    raw = await request.read()
    if optional and not raw.strip():
        return b""  # whatever Content-Type a client sends with no body at all
    media = request.content_type if request.headers.get("Content-Type") else "application/json"
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"expected Content-Type: application/json, got {media}")
    if not raw.strip():
        raise InvalidInput("the request body must be a JSON object", code="malformed_json")
    return raw


def decode_body(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    """The body as the endpoint's Struct; malformed JSON is reported as such, whatever it holds."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        # msgspec checks each value as it parses it, so a bad value ahead of a syntax
        # error (a truncated body, bytes after the object) would be reported instead
        # of the syntax error.  Parsing without a type raises DecodeError for those.
        # Nesting too deep to parse untyped leaves the value's error standing.
        with contextlib.suppress(RecursionError):
            msgspec.json.decode(raw)
        raise exc


def respond(result: Any, status: int) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    body = _EMPTY_OBJECT if result is None else msgspec.json.encode(result)
    return web.Response(body=body, status=status, content_type="application/json")


FORMATS = ("json", "csv")
_CSV, _JSON = ("text", "csv"), ("application", "json")


def wants_csv(request: web.Request, *, offered: bool) -> bool:
    """Whether to answer in CSV; 406 when only CSV is acceptable and the endpoint has none.

    ``?format=csv|json`` decides when present.  Otherwise ``Accept``: an endpoint with
    CSV answers it when the client prefers ``text/csv`` to JSON by q-value (ties go
    to JSON); any other endpoint refuses an ``Accept`` naming nothing but
    ``text/csv``, and answers as always to every other list, so ``Accept: text/csv,
    application/json`` gets JSON.
    """
    chosen = request.query.getall("format", [None])[-1]
    if chosen is not None:
        if chosen == "csv" and not offered:
            raise NotAcceptable("this endpoint has no CSV form; it answers in JSON", field="format")
        if offered and chosen not in FORMATS:
            raise InvalidInput(f"format must be json or csv, got {chosen!r}", field="format")
        return chosen == "csv"
    ranges = _accept_ranges(request.headers.getall("Accept", []))
    if offered:
        return _quality(ranges, _CSV) > _quality(ranges, _JSON)
    if ranges and all(kind == _CSV for kind, q in ranges if q > 0) and _quality(ranges, _CSV) > 0:
        raise NotAcceptable("this endpoint has no CSV form; accept application/json", field="Accept")
    return False


def _accept_ranges(headers: list[str]) -> list[tuple[tuple[str, str], float]]:
    """``Accept`` as (type, subtype) ranges with their q-values; unreadable entries are skipped."""
    ranges = []
    for entry in ",".join(headers).split(","):
        media, *params = entry.split(";")
        kind, slash, subtype = media.strip().lower().partition("/")
        if not slash or not kind or not subtype:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = -1.0
        if q >= 0:
            ranges.append(((kind, subtype.strip()), q))
    return ranges


def _quality(ranges: list[tuple[tuple[str, str], float]], media: tuple[str, str]) -> float:
    """The q-value of ``media`` under the most specific range that covers it (0 if none)."""
    best, quality = -1, 0.0
    for (kind, subtype), q in ranges:
        if (kind, subtype) == media:
            specificity = 2
        elif kind == media[0] and subtype == "*":
            specificity = 1
        elif (kind, subtype) == ("*", "*"):
            specificity = 0
        else:
            continue
        if specificity > best:
            best, quality = specificity, q
    return quality


def decode_query(request: web.Request, query_type: type, lists: frozenset[str]) -> Any:
    raw: dict[str, Any] = {}
    for name in query_type.__struct_fields__:  # type: ignore[attr-defined]
        if name in lists:
            values = request.query.getall(name, [])
            if values:
                raw[name] = values
        elif name in request.query:
            raw[name] = request.query.getall(name)[-1]
    return msgspec.convert(raw, query_type, strict=False)


def _list_fields(struct: type) -> frozenset[str]:
    names = set()
    for info in msgspec.structs.fields(struct):
        kind = info.type
        while typing.get_origin(kind) is typing.Annotated:
            kind = typing.get_args(kind)[0]
        options = typing.get_args(kind) if typing.get_origin(kind) in _UNIONS else (kind,)
        if any(typing.get_origin(option) is list for option in options):
            names.add(info.name)
    return frozenset(names)
