"""The endpoints BentoML's own clients call: ``bentoml.SyncHTTPClient(url).recommend(user_id=1, k=5)``.

The service's endpoints are FastAPI routes (strict request models, one error shape, a body
limit before parsing: ``serving.edge``). BentoML's clients learn a service's endpoints from
its ``/schema.json``, which lists ``@bentoml.api`` methods only, so they saw none. This ASGI
middleware answers ``GET /schema.json`` with BentoML's own schema plus a client route per
POST operation of the app's OpenAPI schema, named by its operationId: the routes are still
defined once, in FastAPI, and a client's call goes through the same validation as any other.
BentoML's clients send POST only, so the GET routes (``/version``, the demo page) are not
listed; ``client.request("GET", "/version")`` reads them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send


def client_routes(openapi: dict) -> list[dict]:
    """One BentoML client route per POST operation of ``openapi`` (an OpenAPI document)."""
    components = openapi.get("components", {}).get("schemas", {})

    def resolved(schema: dict) -> dict:
        ref = schema.get("$ref", "")
        return dict(components[ref.rsplit("/", 1)[-1]]) if ref.startswith("#/components/schemas/") else dict(schema)

    routes = []
    for path, operations in openapi.get("paths", {}).items():
        operation = operations.get("post")
        if operation is None:
            continue
        body = resolved(operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}))
        if "properties" not in body:  # a list or a value: the client sends its one argument as the body
            body["root_input"] = True
        ok = operation.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {})
        routes.append({"name": operation["operationId"], "route": path, "description": operation.get("description"),
                       "input": body, "output": resolved(ok.get("schema", {"type": "object"})), "is_task": False})
    return routes


class ClientSchema:
    """Serves ``GET /schema.json``: ``bentoml_schema()`` with ``openapi()``'s client routes added."""

    def __init__(self, app: ASGIApp, bentoml_schema: Callable[[], dict], openapi: Callable[[], dict]) -> None:
        self.app, self._bentoml_schema, self._openapi = app, bentoml_schema, openapi
        self._body: bytes | None = None

    def body(self) -> bytes:
        if self._body is None:
            schema: dict[str, Any] = self._bentoml_schema()
            named = {route["name"] for route in schema.get("routes", [])}
            extra = [route for route in client_routes(self._openapi()) if route["name"] not in named]
            self._body = orjson.dumps({**schema, "routes": [*schema.get("routes", []), *extra]})
        return self._body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/schema.json" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        body = self.body()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
