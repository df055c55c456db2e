"""The Falcon ASGI application: routes, middleware and the error model."""

from __future__ import annotations

import falcon
import falcon.asgi

from tocsin.api.auth import AuthMiddleware
from tocsin.api.checks import CheckLogsResource, CheckResource, ChecksResource
from tocsin.api.errors import handle_unexpected, serialize_error
from tocsin.engine import Engine
from tocsin.store.base import Store


def create_app(
    store: Store, engine: Engine
) -> falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]:
    app = falcon.asgi.App(middleware=[AuthMiddleware(store)])
    # Clients call both `/api/checks` and `/api/checks/`; neither may redirect.
    app.req_options.strip_url_path_trailing_slash = True
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)

    app.add_route("/api/checks", ChecksResource(store, engine))
    app.add_route("/api/checks/{check_id:int}", CheckResource(store, engine))
    app.add_route("/api/checks/{check_id:int}/logs", CheckLogsResource(store))
    return app
