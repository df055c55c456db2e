"""`/api/auth/…`: password sign-in (`POST /api/auth/token`, which also sets the session
cookie), logout, and the session cookie itself (set again by a password change)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs

import falcon
import falcon.asgi
from pydantic import Field
from typing_extensions import TypedDict

from tocsin.api import auth
from tocsin.api.body import read_bytes, read_json_object
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed
from tocsin.api.identity_common import Body, password_ok
from tocsin.api.limits import InputError, check_tree
from tocsin.api.schemas import parse
from tocsin.security import SESSION_TTL, issue_session, password_stamp
from tocsin.store.base import Store

_FORM_LIMIT = 16 * 1024


class LoginForm(Body):
    username: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class AccessTokenJson(TypedDict):
    """A session token, as OAuth2 password clients read it."""

    access_token: str
    token_type: Literal["bearer"]


def access_token_json(token: str) -> AccessTokenJson:
    return {"access_token": token, "token_type": "bearer"}


def set_session_cookie(req: falcon.asgi.Request, resp: falcon.asgi.Response, jwt: str) -> None:
    resp.set_cookie(
        auth.SESSION_COOKIE,
        jwt,
        max_age=int(SESSION_TTL),
        path="/",
        http_only=True,
        same_site="Lax",
        secure=req.scheme == "https",
    )


async def _form(req: falcon.asgi.Request) -> dict[str, Any]:
    """The login form: URL-encoded (what OAuth2 password clients send) or JSON."""
    if (req.content_type or "").startswith("application/json"):
        return await read_json_object(req, _FORM_LIMIT)
    data = await read_bytes(req, _FORM_LIMIT)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise falcon.HTTPBadRequest(description="the form is not valid UTF-8") from None
    form = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
    try:
        check_tree(form, ["body"])
    except InputError as exc:
        raise ValidationFailed([{"loc": exc.loc, "msg": exc.msg, "type": exc.kind}]) from None
    return form


# -- /api/auth ----------------------------------------------------------------------------


class TokenLoginResource:
    """`POST /api/auth/token`: password login (form fields `username`, `password`)."""

    auth_public = True

    body_models: ClassVar = {"post": LoginForm}
    body_media_types = ("application/x-www-form-urlencoded", "application/json")
    response_models: ClassVar = {"post": AccessTokenJson}

    def __init__(self, store: Store, key: bytes, throttle: auth.LoginThrottle) -> None:
        self._store = store
        self._key = key
        self._throttle = throttle

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        form: LoginForm = parse(LoginForm, await _form(req))
        username = form.username.lower()
        address = req.remote_addr or ""
        wait = self._throttle.retry_after(username, address)
        if wait > 0:
            raise falcon.HTTPTooManyRequests(
                description="Too many failed logins; try again later",
                retry_after=max(1, int(wait + 0.999)),
            )
        user = await self._store.user_by_email(username)
        ok = await password_ok(user["password_hash"] if user else None, form.password)
        if user is None or not ok or not user["is_active"]:
            self._throttle.failed(username, address)
            raise falcon.HTTPUnauthorized(
                description="Incorrect username or password", challenges=['Bearer realm="tocsin"']
            )
        self._throttle.succeeded(username, address)
        token = issue_session(self._key, user["id"], password_stamp(user["password_hash"]))
        set_session_cookie(req, resp, token)
        resp.set_header("Cache-Control", "no-store")
        resp.media = access_token_json(token)


class LogoutResource:
    """`POST /api/auth/logout`: drops the session cookie (a JWT itself stays valid until
    it expires or the password changes)."""

    auth_public = True
    response_models: ClassVar = {"post": None}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.unset_cookie(auth.SESSION_COOKIE, path="/")
        resp.status = falcon.HTTP_204


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    """Add this module's routes."""
    key = ctx.session_key
    app.add_route("/api/auth/token", TokenLoginResource(ctx.store, key, auth.LoginThrottle()))
    app.add_route("/api/auth/logout", LogoutResource())
