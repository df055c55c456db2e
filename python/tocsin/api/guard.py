"""The first middleware: a path or query string holding text no field may hold (see
api/limits.py) is refused before authentication or any handler, on every route,
public ones included. Pings answer in plain text, like the rest of their answers."""

from __future__ import annotations

from urllib.parse import unquote

import falcon
import falcon.asgi

from tocsin.api.errors import ValidationFailed
from tocsin.api.limits import text_problem
from tocsin.api.paths import PING_PREFIX


class InputGuardMiddleware:
    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        where, problem = "path", text_problem(req.path)
        if problem is None and req.query_string:
            where = "query"
            problem = text_problem(unquote(req.query_string, errors="surrogateescape"))
        if problem is None:
            return
        if req.path.startswith(PING_PREFIX):
            resp.status = falcon.HTTP_400
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = f"the {where} {problem}"
            resp.complete = True
            return
        if where == "path":
            raise falcon.HTTPNotFound(description="Not found")
        raise ValidationFailed([{"loc": ["query"], "msg": problem, "type": "string_unstorable"}])
