"""The service's schema as OpenAPI 3.0, so that it says what the service does with integers.

FastAPI writes OpenAPI 3.1, whose JSON Schema (2020-12) counts ``1.0`` as an integer; the
service refuses ``1.0`` for an id or ``k`` (an id sent as a float has been through a double
somewhere and may not be the id meant). OpenAPI 3.0's schema objects read ``integer`` as a
number without a fraction part, which is exactly the rule enforced. The few 3.1 spellings
pydantic emits are rewritten to their 3.0 forms: ``anyOf`` with ``null`` becomes
``nullable``, ``const`` becomes a one-value ``enum``.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

VERSION = "3.0.3"


def as_openapi_30(node: Any) -> Any:
    """``node`` (a 3.1 schema or any part of one) in 3.0 spellings."""
    if isinstance(node, list):
        return [as_openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: as_openapi_30(value) for key, value in node.items()}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out = {**rest[0], **out}
        elif len(rest) == 1:
            out["allOf"] = rest  # a $ref may have no siblings in 3.0
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    return out


def install(app: FastAPI) -> None:
    """Serve ``app``'s schema (at /openapi.json) as OpenAPI 3.0."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = {**as_openapi_30(schema), "openapi": VERSION}
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
