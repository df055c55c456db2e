"""Reading JSON request bodies with a size cap: 413 when too large, 400 when malformed,
422 when it is not an object."""

from __future__ import annotations

import json
from typing import Any

import falcon
import falcon.asgi

from tocsin.api.errors import ValidationFailed

MAX_BODY = 1 << 20


async def read_bytes(req: falcon.asgi.Request, limit: int) -> bytes:
    if req.content_length is not None and req.content_length > limit:
        raise falcon.HTTPContentTooLarge(description=f"request body is larger than {limit} bytes")
    data = await req.stream.read(limit + 1)
    if len(data) > limit:
        raise falcon.HTTPContentTooLarge(description=f"request body is larger than {limit} bytes")
    return data


async def read_json_object(req: falcon.asgi.Request, limit: int = MAX_BODY) -> dict[str, Any]:
    data = await read_bytes(req, limit)
    if not data.strip():
        raise ValidationFailed([{"loc": ["body"], "msg": "Field required", "type": "missing"}])
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise falcon.HTTPBadRequest(description=f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationFailed(
            [{"loc": ["body"], "msg": "Input should be a JSON object", "type": "dict_type"}]
        )
    return body
