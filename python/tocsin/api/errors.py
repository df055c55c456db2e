"""One error model for the REST API: `{"detail": "message"}`, and for validation errors
422 with `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`. No stack trace ever
reaches a client."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import falcon
import falcon.asgi

from tocsin.store.base import ConflictError, NotFoundError, StoreUnavailableError

log = logging.getLogger("tocsin.api")


class ValidationFailed(falcon.HTTPError):
    def __init__(self, errors: Sequence[dict[str, Any]]) -> None:
        super().__init__(falcon.HTTP_422)
        self.errors = list(errors)

    def to_dict(self, obj_type: type = dict) -> Any:
        return {"detail": self.errors}


def field_error(
    field: str | Sequence[str | int], msg: str, type_: str = "value_error"
) -> ValidationFailed:
    loc = [field] if isinstance(field, str) else list(field)
    return ValidationFailed([{"loc": ["body", *loc], "msg": msg, "type": type_}])


def query_error(param: str, msg: str, type_: str = "value_error") -> ValidationFailed:
    return ValidationFailed([{"loc": ["query", param], "msg": msg, "type": type_}])


def serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    if isinstance(exc, ValidationFailed):
        body: dict[str, Any] = exc.to_dict()
    else:
        body = {"detail": exc.description or exc.title}
    resp.media = body
    resp.content_type = falcon.MEDIA_JSON


async def handle_unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, exc: Exception, params: dict[str, Any]
) -> None:
    if isinstance(exc, falcon.HTTPError):
        raise exc
    if isinstance(exc, StoreUnavailableError):
        log.warning("%s %s: %s", req.method, req.path, exc)
        raise falcon.HTTPServiceUnavailable(
            description="The database is unavailable; try again shortly", retry_after=5
        )
    if isinstance(exc, ConflictError):
        raise falcon.HTTPConflict(description=str(exc))
    if isinstance(exc, NotFoundError):
        if exc.field is not None:
            raise field_error(exc.field, str(exc), "not_found")
        raise falcon.HTTPNotFound(description="Not found")
    # APPSEC: the trace goes to the log only; the client gets a generic message.
    log.error("unhandled error on %s %s", req.method, req.path, exc_info=exc)
    raise falcon.HTTPInternalServerError(description="Internal server error")
