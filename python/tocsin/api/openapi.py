"""`GET /api/openapi.json`: an OpenAPI 3.1 document generated from the routes as they are
registered and from the pydantic models that validate the request bodies, so it cannot
drift from what the server does.

The document is built on the first request from Falcon's router (every route, with its
resource and the responders Falcon mapped to each method):
- the methods: the resource's `on_<method>[_<suffix>]` responders;
- path parameters: the template's fields, named as in the template, typed by their
  converters (`{id:int(min=1, max=…)}`) or by the resource's optional
  `path_params = (query.PathChoice(…), …)` (a name the template lacks is an error);
- query parameters: the resource's optional `query_params = {"get": (param, …)}`, the
  same objects (api/query.py) that read and validate them in the responder;
- request bodies: the resource's optional `body_models = {"post": Model, "put_item": …}`
  (keys are responder names without `on_`); the body of a `patch` responder is the model
  with nothing required (only the fields sent change); a PATCH routed to a `put`
  responder takes the PUT body. `body_media_types` lists the accepted media types when
  it is not only JSON (the JSON one is documented, the others named in the body's
  description). A model may declare `openapi_body` (a ClassVar dict):
  `variants` = {"tag": field, "models": {value: Model}, "default": value when the tag is
  absent, "under": the field holding the variant's settings (else beside the tag)}
  becomes one `if`/`then` per model (its settings, required ones included), and
  `null_is_default` = True says a null field means its default (it accepts null);
- strings marked `format: iana-time-zone` (schemas.TimeZoneName) refer to the
  `TimeZone` schema: the names this server's time zone database has;
- responses: the resource's `response_models = {"get": CheckJson, "get_list": list[…],
  "delete": None}` (keys as for bodies): the typed success body (TypedDicts, the same
  that type the functions building the answers, or pydantic models), `None` for a
  `204` with no body; the status is 200 (201, 202… where the resource's
  `response_status = {"post": 201}` says so); `response_media_type` on the resource
  when a route answers something other than JSON; and the API's error model for 4xx
  (`{"detail": …}`, 422 with a list);
- links: a POST to a collection (`/api/checks`) links to every method of its item route
  (`/api/checks/{check_id}`), the id taken from the response (`/id`, or the pointer in
  the resource's `created_ids = {"post": "/slo/id"}`), the collection's own path
  parameters passed on;
- security: a bearer token, except for public routes (`auth_public`, `PUBLIC_PREFIXES`).
"""

from __future__ import annotations

import importlib.metadata
import re
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import falcon
import falcon.asgi
import typing_extensions
from pydantic import BaseModel, TypeAdapter

from tocsin import schedules
from tocsin.api.context import AppContext
from tocsin.api.limits import MAX_BODY, MAX_DEPTH
from tocsin.api.paths import PUBLIC_PREFIXES
from tocsin.api.query import parameters
from tocsin.api.schemas import NOT_BLANK_PATTERN, TIME_ZONE_FORMAT

JSON = "application/json"
METHODS = ("get", "head", "put", "post", "patch", "delete")
_FIELD = re.compile(r"\{(?P<name>\w+)(?::(?P<conv>\w+)(?:\((?P<args>[^)]*)\))?)?\}")
_REF = "#/components/schemas/{model}"
TIME_ZONE = "TimeZone"
# Keywords that describe a schema without constraining it.
_ANNOTATIONS = ("title", "description", "default", "examples", "deprecated")
DESCRIPTION = f"""Monitoring checks, incidents, maintenance windows, notification
channels and their organisations.

Input rules for every operation: surrounding whitespace is removed from text fields
before their limits apply; no text (in a body, a path or a query) may hold U+0000 or an
unpaired surrogate (422); a JSON body is at most {MAX_BODY} bytes (413) and
{MAX_DEPTH} levels deep (400); body fields an operation does not know are ignored; an
empty query parameter is no parameter. A 422 names every field at fault in `loc`
(`["body", field, …]`, `["query", name]`, `["path", name]`)."""


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


def path_template(template: str, declared: Iterable[Any] = ()) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path (`{name}` without converters) and its path parameters, named as
    in the template; `declared` (objects with `name` and `schema()`, e.g.
    `query.PathChoice`) describe fields further. ValueError for a declared name the
    template does not have."""
    by_name = {p.name: p for p in declared}
    params: list[dict[str, Any]] = []
    for m in _FIELD.finditer(template):
        schema: dict[str, Any] = {"type": "string"}
        if m["name"] in by_name:
            schema = by_name.pop(m["name"]).schema()
        elif m["conv"] == "int":
            schema = {"type": "integer"}
            bounds = _int_args(m["args"] or "")
            if "min" in bounds:
                schema["minimum"] = bounds["min"]
            if "max" in bounds:
                schema["maximum"] = bounds["max"]
        elif m["conv"] == "uuid":
            schema = {"type": "string", "format": "uuid"}
        params.append({"name": m["name"], "in": "path", "required": True, "schema": schema})
    if by_name:
        raise ValueError(f"{template}: path_params {sorted(by_name)} are not in the template")
    return _FIELD.sub(lambda m: "{" + m["name"] + "}", template), params


def _walk(schema: Any, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """`schema` with `fn` applied to every schema object in it, innermost first."""
    if isinstance(schema, list):
        return [_walk(s, fn) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return fn({k: _walk(v, fn) for k, v in schema.items()})


def _accepts_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if any(sub.get("type") == "null" for sub in schema.get("anyOf", [])):
        return True
    # A schema that names no type or value constrains nothing.
    return not any(
        k in schema for k in ("type", "anyOf", "oneOf", "allOf", "$ref", "enum", "const", "not")
    )


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    if _accepts_null(schema):
        return schema
    inner = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
    return {
        "anyOf": [inner, {"type": "null"}],
        **{k: schema[k] for k in _ANNOTATIONS if k in schema},
    }


def _nulls_are_defaults(schema: dict[str, Any]) -> None:
    """Every property that is not required also accepts null (its default)."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name not in required:
            schema["properties"][name] = _or_null(prop)


def _not_blank(schema: dict[str, Any]) -> dict[str, Any]:
    """Text that must not be empty must not be only whitespace either: the model strips
    it before its limits apply."""
    if schema.get("type") == "string" and schema.get("minLength", 0) > 0:
        schema.setdefault("pattern", NOT_BLANK_PATTERN)
    return schema


def _nothing_required(schema: dict[str, Any]) -> None:
    """A PATCH body: no field is required, neither at the top nor in a condition's
    `then` (the stored value may satisfy it); conditions still apply to what is sent."""
    schema.pop("required", None)
    for clause in [schema, *schema.get("allOf", [])]:
        while isinstance(clause, dict):
            then = clause.get("then")
            if isinstance(then, dict) and "$ref" not in then:
                then.pop("required", None)
            clause = clause.get("else")


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

    def model(
        self, model: type[BaseModel], partial: bool = False, null_is_default: bool = False
    ) -> dict[str, Any]:
        """A `$ref` to the model's schema, added to the components with its `$defs` (and
        with the schemas of its variants, see the module's docstring)."""
        name = model.__name__ + ("Patch" if partial else "")
        if name not in self.schemas:
            extra: dict[str, Any] = getattr(model, "openapi_body", {})
            null_is_default = null_is_default or bool(extra.get("null_is_default"))
            self.schemas[name] = {}  # taken: a variant may refer back
            schema = self._schema(model)
            if null_is_default:
                _nulls_are_defaults(schema)
            variants = extra.get("variants")
            if variants:
                clauses = self._variants(variants, partial, null_is_default)
                schema["allOf"] = [*schema.get("allOf", []), *clauses]
            if partial:
                _nothing_required(schema)
            # The component's own name, so generated clients name the class after it
            # (a model's title would name its Patch variant like the model).
            schema["title"] = name
            self.schemas[name] = schema
        return {"$ref": _REF.format(model=name)}

    def response(self, tp: Any) -> dict[str, Any]:
        """The schema of a response type: a TypedDict or pydantic model (added to the
        components by name), a list of one, or a plain type."""
        origin = typing.get_origin(tp)
        if origin is list:
            (item,) = typing.get_args(tp)
            return {"type": "array", "items": self.response(item)}
        name = getattr(tp, "__name__", None)
        if name is None or not (typing_extensions.is_typeddict(tp) or _is_model(tp)):
            plain: dict[str, Any] = _walk(
                TypeAdapter(tp).json_schema(ref_template=_REF), self._time_zone
            )
            return plain
        if name not in self.schemas:
            self.schemas[name] = {}  # taken: a type may refer back to itself
            schema = TypeAdapter(tp).json_schema(ref_template=_REF, mode="serialization")
            for sub_name, sub in schema.pop("$defs", {}).items():
                self.schemas.setdefault(sub_name, _walk(sub, self._time_zone))
            self.schemas[name] = _walk(schema, self._time_zone)
        return {"$ref": _REF.format(model=name)}

    def _schema(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template=_REF)
        for name, sub in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, _walk(sub, self._time_zone))
        out: dict[str, Any] = _walk(schema, self._time_zone)
        if model.model_config.get("str_strip_whitespace"):
            for name, prop in out.get("properties", {}).items():
                out["properties"][name] = _walk(prop, _not_blank)
        return out

    def _time_zone(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A time zone name refers to the names the server knows."""
        if schema.get("format") != TIME_ZONE_FORMAT:
            return schema
        self.schemas.setdefault(
            TIME_ZONE,
            {
                "type": "string",
                "enum": sorted(schedules.time_zone_names()),
                "description": "An IANA time zone name, as this server's time zone database"
                " has it (e.g. UTC, Europe/Paris)",
            },
        )
        ref = {"$ref": _REF.format(model=TIME_ZONE)}
        return {**ref, **{k: schema[k] for k in _ANNOTATIONS if k in schema}}

    def _variants(
        self, spec: dict[str, Any], partial: bool, null_is_default: bool
    ) -> list[dict[str, Any]]:
        """One `if`/`then` per variant model: when the tag names one of its values, the
        body (or its `under` field) is that model. An absent tag (or, where null means
        the default, a null one) is the default's variant; in a PATCH an absent tag is
        the stored one's, so nothing applies."""
        tag: str = spec["tag"]
        default: str | None = spec.get("default")
        under: str | None = spec.get("under")
        values_of: dict[type[BaseModel], list[Any]] = {}
        for value, variant in spec["models"].items():
            values_of.setdefault(variant, []).append(value)
        clauses: list[dict[str, Any]] = []
        for variant, values in values_of.items():
            ref = self.model(variant, partial=partial, null_is_default=null_is_default)
            matches = [*values, None] if null_is_default and default in values else values
            when: dict[str, Any] = {"properties": {tag: {"enum": matches}}}
            if partial or default not in values:
                when["required"] = [tag]
            then: dict[str, Any] = ref
            if under is not None:
                then = {"properties": {under: ref}}
                if not partial and any(f.is_required() for f in variant.model_fields.values()):
                    then["required"] = [under]
            clauses.append({"if": when, "then": then})
        if under is None:
            return clauses
        # One if/then/else chain, which says the same (the tag's values are distinct):
        # schema-driven generators (schemathesis) give up on seven or more separate
        # conditions that each name a nested field.
        chain = clauses[-1]
        for clause in reversed(clauses[:-1]):
            chain = {**clause, "else": chain}
        return [chain]


_UNTYPED = object()


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _responses(
    media: str, public: bool, body: dict[str, Any] | object | None, status: int
) -> dict[str, Any]:
    """`body`: the success body's schema, None for no body (204), or `_UNTYPED` for a
    route that declares none (any JSON, any 2xx)."""

    # A route that answers in a media type of its own has text (or bytes) for a body;
    # one that answers `*/*` (a report's document, in the format it was asked for) may
    # answer anything, JSON included.
    other: dict[str, Any] = {} if media == "*/*" else {"type": "string"}

    def error(ref: str, description: str) -> dict[str, Any]:
        content: dict[str, Any] = {JSON: {"schema": {"$ref": _REF.format(model=ref)}}}
        if media != JSON:
            # Such routes (pings) may answer their own errors in their media type.
            content[media] = {"schema": other}
        return {"description": description, "content": content}

    out: dict[str, Any] = {}
    if media != JSON:
        out[str(status)] = {
            "description": "Success",
            "content": {media: {"schema": other}},
        }
    elif body is _UNTYPED:
        out["2XX"] = {"description": "Success", "content": {JSON: {"schema": {}}}}
        # Deletions and the like answer nothing.
        out["204"] = {"description": "Done, no content"}
    elif body is None:
        out["204"] = {"description": "Done, no content"}
    else:
        out[str(status)] = {"description": "Success", "content": {JSON: {"schema": body}}}
    out.update(
        {
            "422": error("ValidationError", "Invalid input: every field at fault"),
            "4XX": error("Error", "Client error"),
            "503": error("Error", "The database is unavailable"),
        }
    )
    if not public:
        out["401"] = error("Error", "Not authenticated")
    return out


def _version() -> str:
    try:
        return importlib.metadata.version("tocsin")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def operation_id(method: str, path: str) -> str:
    """`get_api_checks_check_id` for GET /api/checks/{check_id}: what generated clients
    name their functions after."""
    return f"{method}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}"


def success_response(op: dict[str, Any]) -> dict[str, Any] | None:
    """An operation's success response with a body (the first 2xx but 204)."""
    return next(
        (v for k, v in op["responses"].items() if k[0] == "2" and k != "204"),
        None,
    )


def _is_patch(responder: str) -> bool:
    return responder == "patch" or responder.startswith("patch_")


def _links(routes: list[Route], paths: dict[str, Any]) -> None:
    """Links from each collection's POST to its item's operations (see the docstring)."""
    by_path = {path_template(r.template)[0]: r for r in routes}
    for path, route in by_path.items():
        post = paths[path].get("post")
        if post is None:
            continue
        own = [p["name"] for p in paths[path].get("parameters", [])]
        pointer: str = getattr(route.resource, "created_ids", {}).get(
            route.responders["post"], "/id"
        )
        for item_path, item in paths.items():
            m = re.fullmatch(re.escape(path) + r"/\{(\w+)\}", item_path)
            if m is None:
                continue
            success = success_response(post)
            if success is None:
                continue
            links = success.setdefault("links", {})
            for method, op in item.items():
                if method == "parameters":
                    continue
                links[f"{method}-{m[1]}"] = {
                    "operationId": op["operationId"],
                    "parameters": {
                        **{p: f"$request.path.{p}" for p in own},
                        m[1]: f"$response.body#{pointer}",
                    },
                    "description": f"the {m[1]} of what was created",
                }


def build(routes: list[Route], public_prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The OpenAPI document of `routes`."""
    comps = _Components()
    paths: dict[str, Any] = {}
    for route in routes:
        path, params = path_template(route.template, getattr(route.resource, "path_params", ()))
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
            typed: dict[str, Any] = getattr(route.resource, "response_models", {})
            body: dict[str, Any] | object | None = _UNTYPED
            if key in typed:
                body = None if typed[key] is None else comps.response(typed[key])
            status = getattr(route.resource, "response_status", {}).get(key, 200)
            op: dict[str, Any] = {
                "operationId": operation_id(method, path),
                "responses": _responses(media, public, body, status),
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
                schema = comps.model(model, partial=_is_patch(key))
                # One media type per body: the JSON one when the route takes several
                # (generators such as openapi-python-client emit broken code for a body
                # of two media types); the others are named in the description.
                main = JSON if JSON in body_media else body_media[0]
                op["requestBody"] = {"required": True, "content": {main: {"schema": schema}}}
                others = [m for m in body_media if m != main]
                if others:
                    op["requestBody"]["description"] = (
                        f"Also accepted as {', '.join(others)}, with the same fields."
                    )
            item[method] = op
    _links(routes, paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "tocsin", "version": _version(), "description": DESCRIPTION},
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
    app.add_route("/api/openapi.json", OpenAPIResource(app, PUBLIC_PREFIXES))
