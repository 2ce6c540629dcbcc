"""The service's edge to an open port: a body-size limit before parsing, one error shape for
every 4xx, domain errors mapped to their status, and the write token.

Error bodies never repeat the input: FastAPI's default 422 echoes it, so a 20 MB body came
back as 20 MB and a NaN made the error itself unserialisable (a 500).
"""
from __future__ import annotations

import hmac

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.schemas import BadRequest, ErrorBody, OutsideClock

MAX_ERRORS = 10  # listed per response; a list of 1,000 bad events names the first ten
MAX_MESSAGE = 300  # characters per message


def error_body(status: int, items: list[dict]) -> JSONResponse:
    return JSONResponse({"detail": items[:MAX_ERRORS]}, status_code=status)


def error(loc: list, msg: str, kind: str) -> dict:
    return {"loc": [str(p) if not isinstance(p, int) else p for p in loc], "msg": msg[:MAX_MESSAGE], "type": kind}


def documented(*statuses: int) -> dict:
    """The ``responses`` a route lists in the schema, each with the error body's shape."""
    return {status: {"model": ErrorBody, "description": DESCRIPTIONS[status]} for status in statuses}


DESCRIPTIONS = {
    400: "the body is not JSON",
    401: "a write token is set and the request lacks it",
    404: "an item not in the catalogue",
    409: "a time outside the service clock's window",
    413: "the body is larger than serving.max_body_bytes",
    422: "a field breaks the schema or a limit",
    503: "the event log cannot be written: nothing was acknowledged",
}


def install(app: FastAPI, max_body_bytes: int) -> None:
    """Error handlers and the body limit, on ``app``."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        items = [error(e.get("loc", ()), e.get("msg", "invalid"), e.get("type", "invalid")) for e in exc.errors()]
        return error_body(422, items or [error([], "invalid request", "invalid")])

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, list):  # already items (raised by the routes)
            items = exc.detail
        else:
            items = [error([], str(exc.detail), _KINDS.get(exc.status_code, "http_error"))]
        response = error_body(exc.status_code, items)
        response.headers.update(exc.headers or {})
        return response

    app.add_middleware(BodyLimit, limit=max_body_bytes)


_KINDS = {400: "json_invalid", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def as_http(error_: Exception) -> HTTPException:
    """A domain error as its HTTP status: 409 for the clock, 404 for unknown items, else 422."""
    from serving.engine import UnknownItem

    if isinstance(error_, OutsideClock):
        return HTTPException(409, [error(getattr(error_, "loc", []), str(error_), "outside_clock")])
    if isinstance(error_, UnknownItem):
        loc, item = error_.args if len(error_.args) == 2 else ([], error_.args[0])
        return HTTPException(404, [error(loc, f"item_id {item} is not in the catalogue", "unknown_item")])
    return HTTPException(422, [error(getattr(error_, "loc", []), str(error_), "bad_request")])


class raising_http:
    """Domain errors in the block become their 4xx: a bad request never becomes a 500."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, _tb) -> bool:
        from serving.engine import UnknownItem

        if isinstance(exc, (BadRequest, UnknownItem)):
            raise as_http(exc) from exc
        return False


class BodyLimit:
    """413 for a body over ``limit`` bytes, by its Content-Length or, without one, as it
    streams in; a body within it is read here and handed on whole, so nothing larger is ever
    buffered or parsed. The rest of an oversized body is read and dropped (up to ``DRAIN``
    bytes) before the answer: a client that sends it all before reading would otherwise see
    the connection reset instead of its 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(scope, receive, send, drain=length.isdigit() and int(length) <= DRAIN)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                return await self._refuse(scope, receive, send, drain=message.get("more_body", False))
            if not message.get("more_body", False):
                break
        body, handed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal handed
            if handed:
                return await receive()  # later reads wait for the disconnect, as they would
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, drain: bool) -> None:
        dropped = 0
        while drain and dropped <= DRAIN:
            message = await receive()
            dropped += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        response = error_body(413, [error(["body"], f"the body is over {self.limit} bytes", "too_large")])
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


DRAIN = 64 * 2**20  # bytes of an oversized body read and dropped at most; past that, the connection closes


def token_guard(expected: str):
    """A dependency that lets a request through only with ``Authorization: Bearer <expected>``."""
    bearer = HTTPBearer(auto_error=False, description="the write token (serving.token_env)")

    def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, [error(["header", "Authorization"], "a valid Bearer token is required", "unauthorized")],
                                headers={"WWW-Authenticate": "Bearer"})

    return check
