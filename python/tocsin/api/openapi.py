"""`GET /api/openapi.json`: an OpenAPI 3.1 document generated from the routes as they are
registered and from the pydantic models that validate the request bodies, so it cannot
drift from what the server does.

The document is built on the first request from Falcon's router (every route, with its
resource and the responders Falcon mapped to each method):
- the methods: the resource's `on_<method>[_<suffix>]` responders;
- path parameters: the template's fields and converters (`{id:int(min=1, max=…)}`);
- query parameters: the resource's optional `query_params = {"get": (param, …)}`, the
  same objects (api/query.py) that read and validate them in the responder;
- request bodies: the resource's optional `body_models = {"post": Model, "put_item": …}`
  (keys are responder names without `on_`); a PATCH body is the model with nothing
  required (only the fields sent change). `body_media_types` lists the accepted media
  types when it is not only JSON;
- responses: `response_media_type` on the resource when a route answers something other
  than JSON, and the API's error model for 4xx (`{"detail": …}`, 422 with a list);
- security: a bearer token, except for public routes (`auth_public`, `PUBLIC_PREFIXES`).
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
from dataclasses import dataclass
from typing import Any

import falcon
import falcon.asgi
from pydantic import BaseModel

from tocsin.api.context import AppContext
from tocsin.api.query import parameters

JSON = "application/json"
METHODS = ("get", "head", "put", "post", "patch", "delete")
_FIELD = re.compile(r"\{(?P<name>\w+)(?::(?P<conv>\w+)(?:\((?P<args>[^)]*)\))?)?\}")
_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Route:
    template: str
    resource: Any
    # method -> responder name without `on_` (`get`, `put_item`)
    responders: dict[str, str]


def app_routes(app: falcon.asgi.App) -> list[Route]:  # type: ignore[type-arg]
    """Every route of the app's router with the resource's own responders (not the
    OPTIONS and 405 ones Falcon adds)."""
    routes: list[Route] = []
    router: Any = app._router
    stack: list[Any] = list(router._roots)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.resource is None or not node.method_map:
            continue
        responders = {
            method.lower(): responder.__name__.removeprefix("on_")
            for method, responder in node.method_map.items()
            if getattr(responder, "__self__", None) is node.resource
            and responder.__name__.startswith("on_")
        }
        routes.append(Route(node.uri_template, node.resource, responders))
    return sorted(routes, key=lambda r: r.template)


def _int_args(args: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in args.split(","):
        key, _, value = part.partition("=")
        if key.strip() in ("min", "max") and value.strip().lstrip("-").isdigit():
            out[key.strip()] = int(value)
    return out


def path_template(template: str) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path (`{name}` without converters) and its path parameters."""
    params: list[dict[str, Any]] = []
    for m in _FIELD.finditer(template):
        schema: dict[str, Any] = {"type": "string"}
        if m["conv"] == "int":
            schema = {"type": "integer"}
            bounds = _int_args(m["args"] or "")
            if "min" in bounds:
                schema["minimum"] = bounds["min"]
            if "max" in bounds:
                schema["maximum"] = bounds["max"]
        elif m["conv"] == "uuid":
            schema = {"type": "string", "format": "uuid"}
        params.append({"name": m["name"], "in": "path", "required": True, "schema": schema})
    return _FIELD.sub(lambda m: "{" + m["name"] + "}", template), params


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {
            "Error": {
                "type": "object",
                "properties": {"detail": {}},
                "required": ["detail"],
            },
            "ValidationError": {
                "type": "object",
                "properties": {
                    "detail": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "loc": {
                                    "type": "array",
                                    "items": {"type": ["string", "integer"]},
                                },
                                "msg": {"type": "string"},
                                "type": {"type": "string"},
                            },
                            "required": ["loc", "msg", "type"],
                        },
                    }
                },
                "required": ["detail"],
            },
        }

    def model(self, model: type[BaseModel], partial: bool = False) -> dict[str, Any]:
        """A `$ref` to the model's schema, added to the components with its `$defs`."""
        schema = model.model_json_schema(ref_template=_REF)
        for name, sub in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, sub)
        name = model.__name__
        if partial:
            schema = copy.deepcopy(schema)
            schema.pop("required", None)
            name += "Patch"
        self.schemas.setdefault(name, schema)
        return {"$ref": _REF.format(model=name)}


def _responses(media: str, public: bool) -> dict[str, Any]:
    def error(ref: str, description: str) -> dict[str, Any]:
        content: dict[str, Any] = {JSON: {"schema": {"$ref": _REF.format(model=ref)}}}
        if media != JSON:
            # Such routes (pings) may answer their own errors in their media type.
            content[media] = {"schema": {"type": "string"}}
        return {"description": description, "content": content}

    success: dict[str, Any] = {"description": "Success"}
    if media == JSON:
        success["content"] = {JSON: {"schema": {}}}
    else:
        success["content"] = {media: {"schema": {"type": "string"}}}
    out = {
        "2XX": success,
        # Deletions and the like answer nothing.
        "204": {"description": "Done, no content"},
        "422": error("ValidationError", "Invalid input: every field at fault"),
        "4XX": error("Error", "Client error"),
        "503": error("Error", "The database is unavailable"),
    }
    if not public:
        out["401"] = error("Error", "Not authenticated")
    return out


def _version() -> str:
    try:
        return importlib.metadata.version("tocsin")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def build(routes: list[Route], public_prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The OpenAPI document of `routes`."""
    comps = _Components()
    paths: dict[str, Any] = {}
    for route in routes:
        path, params = path_template(route.template)
        bodies: dict[str, type[BaseModel]] = getattr(route.resource, "body_models", {})
        body_media: tuple[str, ...] = getattr(route.resource, "body_media_types", (JSON,))
        media: str = getattr(route.resource, "response_media_type", JSON)
        public = bool(getattr(route.resource, "auth_public", False)) or path.startswith(
            public_prefixes
        )
        item: dict[str, Any] = paths.setdefault(path, {})
        if params:
            item["parameters"] = params
        for method in METHODS:
            key = route.responders.get(method)
            if key is None:
                continue
            op: dict[str, Any] = {
                "operationId": f"{method}:{path}",
                "responses": _responses(media, public),
            }
            doc = (getattr(route.resource, f"on_{key}").__doc__ or "").strip()
            if doc:
                op["summary"] = doc.splitlines()[0]
            if public:
                op["security"] = []
            query = getattr(route.resource, "query_params", {}).get(key)
            if query:
                op["parameters"] = parameters(query)
            model = bodies.get(key)
            if model is not None:
                schema = comps.model(model, partial=method == "patch")
                op["requestBody"] = {
                    "required": True,
                    "content": {m: {"schema": schema} for m in body_media},
                }
            item[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "tocsin", "version": _version()},
        "paths": paths,
        "components": {
            "schemas": comps.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


class OpenAPIResource:
    auth_public = True

    def __init__(
        self,
        app: falcon.asgi.App,  # type: ignore[type-arg]
        public_prefixes: tuple[str, ...],
    ) -> None:
        self._app = app
        self._public = public_prefixes
        self._doc: dict[str, Any] | None = None

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """This document."""
        if self._doc is None:
            self._doc = build(app_routes(self._app), self._public)
        resp.media = self._doc


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    """The document is built from the app's router on the first request, when every
    area has added its routes."""
    from tocsin.api.app import PUBLIC_PREFIXES  # app imports this module

    app.add_route("/api/openapi.json", OpenAPIResource(app, PUBLIC_PREFIXES))


async def start(ctx: AppContext) -> None:
    """Nothing to do: the document is built on the first request."""
