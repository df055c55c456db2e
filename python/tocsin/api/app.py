"""The Falcon ASGI application: routes, middleware and the error model. Each area of the
API is a module with `register(app, ctx)`: its routes over the services it is given
(`ctx`, built by tocsin/services.py, which also starts and stops them)."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon
import falcon.asgi
import falcon.media
import orjson

from tocsin.api import (
    agent_wire,
    agents,
    badges,
    channels,
    checks,
    escalation_policies,
    feedback,
    inbound_events,
    inbound_incidents,
    incidents,
    integration_keys,
    lifecycle_watches,
    live,
    maintenance,
    members,
    metrics,
    oncall,
    openapi,
    organizations,
    pings,
    playbooks,
    postmortems,
    profile,
    reports,
    services,
    sessions,
    slo_alerts,
    status_pages,
    status_public,
    status_subscriptions,
    teams,
    users,
    war_rooms,
)
from tocsin.api.auth import AuthMiddleware
from tocsin.api.context import AppContext
from tocsin.api.errors import handle_unexpected, serialize_error
from tocsin.api.guard import InputGuardMiddleware
from tocsin.api.paths import PUBLIC_PREFIXES
from tocsin.api.ratelimit import RateLimitMiddleware

log = logging.getLogger("tocsin.api")

AREAS = (
    agents,
    agent_wire,
    checks,
    sessions,
    users,
    organizations,
    members,
    incidents,
    maintenance,
    pings,
    live,
    openapi,
    channels,
    status_pages,
    status_public,
    status_subscriptions,
    badges,
    reports,
    metrics,
    oncall,
    profile,
    escalation_policies,
    integration_keys,
    inbound_events,
    inbound_incidents,
    teams,
    services,
    playbooks,
    war_rooms,
    postmortems,
    lifecycle_watches,
    feedback,
    slo_alerts,
)


def dumps(obj: Any) -> bytes:
    """Response JSON: orjson (several times faster than the standard library on the check
    documents the API serves); the standard library for what orjson refuses (integers
    beyond 64 bits echoed from input, non-string keys)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False).encode()


def create_app(ctx: AppContext) -> falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]:
    auth = AuthMiddleware(ctx.store, public_prefixes=PUBLIC_PREFIXES, session_key=ctx.session_key)
    # After auth: the limit is per token for authenticated routes.
    limits = RateLimitMiddleware(ctx.limits)
    # The guard first: refused input never reaches authentication or a handler.
    app = falcon.asgi.App(middleware=(InputGuardMiddleware(), auth, limits))
    # Clients call both `/api/checks` and `/api/checks/`; neither may redirect.
    app.req_options.strip_url_path_trailing_slash = True
    # Responses only: request bodies are parsed by api/body.py (size cap, error model).
    handler = falcon.media.JSONHandler(dumps=dumps)
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    for area in AREAS:
        area.register(app, ctx)
    return app
