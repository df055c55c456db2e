"""Reading JSON request bodies with the limits of api/limits.py: 413 when too large,
400 when malformed or nested too deeply, 422 when it is not an object or a text in it
cannot be stored (the field named)."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from tocsin.api.errors import ValidationFailed
from tocsin.api.limits import MAX_BODY, InputError, MalformedJson, parse_json

__all__ = ["MAX_BODY", "read_bytes", "read_json_object"]


async def read_bytes(req: falcon.asgi.Request, limit: int) -> bytes:
    if req.content_length is not None and req.content_length > limit:
        raise falcon.HTTPContentTooLarge(description=f"request body is larger than {limit} bytes")
    data = await req.stream.read(limit + 1)
    if len(data) > limit:
        raise falcon.HTTPContentTooLarge(description=f"request body is larger than {limit} bytes")
    return data


def parse_json_body(data: bytes) -> Any:
    """A request body's JSON, with the API's errors (400, 422)."""
    try:
        return parse_json(data)
    except MalformedJson as exc:
        raise falcon.HTTPBadRequest(description=f"malformed JSON body: {exc}") from None
    except InputError as exc:
        raise ValidationFailed([{"loc": exc.loc, "msg": exc.msg, "type": exc.kind}]) from None


async def read_json_object(req: falcon.asgi.Request, limit: int = MAX_BODY) -> dict[str, Any]:
    data = await read_bytes(req, limit)
    if not data.strip():
        raise ValidationFailed([{"loc": ["body"], "msg": "Field required", "type": "missing"}])
    body = parse_json_body(data)
    if not isinstance(body, dict):
        raise ValidationFailed(
            [{"loc": ["body"], "msg": "Input should be a JSON object", "type": "dict_type"}]
        )
    return body
