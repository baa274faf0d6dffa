"""Render every error as JSON once, and never let a client see a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import asyncpg
import msgspec
from aiohttp import web

from catena import db
from catena.errors import CatenaError, ErrorBody
from catena.service import GuardedRequestHandler, RequestTimeout

from . import keys

log = logging.getLogger("admin_api")

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def render(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _data_error(exc: asyncpg.DataError) -> ErrorBody:
    if isinstance(exc, _UNSTORABLE_TEXT):
        return ErrorBody("invalid_text", "text cannot contain the character U+0000")
    return ErrorBody("invalid_input", f"a value in the request cannot be stored: {exc}")


_UNSTORABLE_TEXT = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except CatenaError as exc:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        response = render(exc.status, exc.body(), headers)
        if isinstance(exc, RequestTimeout):
            response.force_close()  # the rest of the body is not worth waiting for
        return response
    except ConnectionError as exc:
        if not _client_gone(request):
            return _database_unavailable(request, exc)
        # Nobody is left to answer; aiohttp drops the connection.
        log.debug("client disconnected", extra={"path": request.path, "remote": request.remote})
        return web.Response(status=499)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return render(exc.status, ErrorBody(code, message or exc.reason))
    except db.UNAVAILABLE as exc:
        return _database_unavailable(request, exc)
    except asyncpg.DataError as exc:
        # SQLSTATE class 22: a value the client sent that PostgreSQL cannot store
        # and no declared type screened.  The transaction rolled back.
        log.warning("value refused by PostgreSQL: %s", exc, extra={"path": request.path})
        return render(400, _data_error(exc))
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return render(500, ErrorBody("internal_error", "internal error; see the server log"))


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


# Seconds a client is told to wait when PostgreSQL is down or does not answer.
DATABASE_RETRY_AFTER = 5


def _database_unavailable(request: web.Request, exc: BaseException) -> web.Response:
    # One warning per outage (catena.db.Outage), not one per request.
    pool = request.app.get(keys.DB)
    if isinstance(pool, db.Pool):
        pool.outage.failed(exc)
    body = ErrorBody(
        "database_unavailable",
        "the database is unavailable or not answering in time; try again in a few seconds",
    )
    return render(503, body, {"Retry-After": str(DATABASE_RETRY_AFTER)})


class JsonErrorRequestHandler(GuardedRequestHandler):
    """aiohttp's connection handler, answering requests it cannot parse in our JSON.

    aiohttp refuses a request it cannot parse (two Content-Type or Content-Length
    headers, a header too long, bytes that are not HTTP) before any middleware runs,
    with plain text and an error-level traceback.  It offers no hook for that answer
    (aio-libs/aiohttp#3287), so this overrides the method that builds it; the
    service serves through ``catena.service.AppRunner`` to use it.
    """

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response went out already; aiohttp drops the connection.
            return super().handle_error(request, status, exc, message)
        if status >= 500:
            # Only a fault of ours gets here (the error middleware answers the rest).
            log.error("error outside the middleware", exc_info=exc)
            body = ErrorBody("internal_error", "internal error; see the server log")
        else:
            # The client's mistake, answered in full: one line, no traceback.
            text = message or HTTPStatus(status).phrase
            log.info("malformed HTTP request refused: %s", text, extra={"remote": request.remote})
            body = ErrorBody(_HTTP_CODES.get(status, "http_error"), f"malformed HTTP request: {text}")
        response = render(status, body)
        response.force_close()
        return response
