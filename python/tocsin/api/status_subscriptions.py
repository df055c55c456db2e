"""Email subscriptions to public status pages (docs/subscriptions.md), no auth:

- `POST /api/status-pages/public/{slug}/subscribe` (JSON `{"email"}`) → 202
  `{"status": "pending_confirmation"}`, the same whether or not the address was
  subscribed already;
- `POST /status/{slug}/subscribe` (the HTML page's form, `email`) → an HTML answer;
- `GET /status/{slug}/confirm?token=…` confirms (double opt-in);
- `GET /status/{slug}/unsubscribe?token=…` shows a button; `POST` to the same URL
  unsubscribes (also RFC 8058 one-click, from the mails' `List-Unsubscribe-Post`).

The work (tokens, mails, the outbox) is in notify/subscribers.py. Subscribing is limited
per client address beyond the public routes' general budget, and each page takes at most
`MAX_SUBSCRIBERS_PER_PAGE` subscribers."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import parse_qs, quote

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_bytes, read_json_object
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.notify.subscribers import (
    EMAIL_MAX,
    MAX_SUBSCRIBERS_PER_PAGE,
    SubscriberMail,
    normalize_email,
    parse_token,
    render,
)
from tocsin.ratelimits import TokenBuckets
from tocsin.store.base import Row, Store

# Subscriptions per client address: a burst, then one every 30 seconds.
SUBSCRIBE_BURST = 20.0
SUBSCRIBE_RATE = 1 / 30
FORM_LIMIT = 4096
MAX_SLUG = 200
HTML = "text/html"
TOKEN = query.Text("token", "the token from the mail", max_length=200)


class SubscribeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # the address to notify; a confirmation link is mailed to it first
    email: str = Field(min_length=3, max_length=EMAIL_MAX)


class SubscribeAnswer(TypedDict):
    # always `pending_confirmation` (whether the address was subscribed is not told)
    status: str


class _Base:
    auth_public = True

    def __init__(self, ctx: AppContext, buckets: TokenBuckets) -> None:
        self._store: Store = ctx.store
        self._mail: SubscriberMail = ctx.subscribers
        self._buckets = buckets

    async def _page(self, slug: str) -> Row | None:
        if not slug or len(slug) > MAX_SLUG:
            return None
        page = await self._store.status_page_by_slug(slug)
        if page is None or not page.get("is_public"):
            return None
        return page

    def _limited(self, req: falcon.asgi.Request) -> int:
        return self._buckets.take(req.remote_addr or "")


def _html(
    resp: falcon.asgi.Response,
    status: str,
    title: str,
    lines: list[str],
    *,
    page: Row | None = None,
    page_url: str | None = None,
    form_action: str | None = None,
    button: str = "",
) -> None:
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    # Tokens are in these URLs: not cached, not sent on as a Referer.
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("Referrer-Policy", "no-referrer")
    resp.set_header("X-Robots-Tag", "noindex")
    resp.text = render(
        "web_subscription.html",
        title=title,
        lines=lines,
        page_name=page["name"] if page else "Status page",
        page_url=page_url,
        form_action=form_action,
        button=button,
    )


def _not_found(resp: falcon.asgi.Response) -> None:
    _html(resp, falcon.HTTP_404, "Not found", ["There is no such status page."])


class ApiSubscribeResource(_Base):
    body_models: ClassVar = {"post": SubscribeBody}
    response_models: ClassVar = {"post": SubscribeAnswer}
    response_status: ClassVar = {"post": 202}

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str
    ) -> None:
        """Subscribe an email address to a public status page (a confirmation mail follows)."""
        page = await self._page(slug)
        if page is None:
            raise falcon.HTTPNotFound(description="Status page not found")
        body = await read_json_object(req, FORM_LIMIT)
        email = normalize_email(body.get("email"))
        if email is None:
            raise field_error("email", "must be an email address")
        wait = self._limited(req)
        if wait:
            raise falcon.HTTPTooManyRequests(
                description="Too many subscriptions from this address; try again later",
                retry_after=wait,
            )
        if await self._mail.subscribe(page, email) == "full":
            raise field_error(
                "email",
                f"this status page has the most subscribers it takes ({MAX_SUBSCRIBERS_PER_PAGE})",
                "limit_reached",
            )
        resp.status = falcon.HTTP_202
        answer: SubscribeAnswer = {"status": "pending_confirmation"}
        resp.media = answer


async def _form(req: falcon.asgi.Request) -> dict[str, str]:
    data = await read_bytes(req, FORM_LIMIT)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return {}
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


class HtmlSubscribeResource(_Base):
    response_media_type = HTML

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str
    ) -> None:
        """The status page's subscribe form (`email`, URL-encoded): an HTML answer."""
        page = await self._page(slug)
        if page is None:
            _not_found(resp)
            return
        url = self._mail.page_url(page)
        try:
            form = await _form(req)
        except falcon.HTTPError:
            form = {}
        email = normalize_email(form.get("email"))
        if email is None:
            _html(
                resp,
                falcon.HTTP_422,
                "That is not an email address",
                ["Go back and check the address you typed."],
                page=page,
                page_url=url,
            )
            return
        wait = self._limited(req)
        if wait:
            resp.set_header("Retry-After", str(wait))
            _html(
                resp,
                falcon.HTTP_429,
                "Too many subscriptions",
                ["Too many subscriptions came from your address; try again in a while."],
                page=page,
                page_url=url,
            )
            return
        if await self._mail.subscribe(page, email) == "full":
            _html(
                resp,
                falcon.HTTP_422,
                "Subscriptions are full",
                ["This status page takes no more subscribers."],
                page=page,
                page_url=url,
            )
            return
        _html(
            resp,
            falcon.HTTP_200,
            "Check your inbox",
            [
                f"If {email} is not subscribed yet, a mail with a confirmation link is on its"
                " way. Follow the link to start receiving updates.",
            ],
            page=page,
            page_url=url,
        )


class ConfirmResource(_Base):
    response_media_type = HTML
    query_params: ClassVar = {"get": (TOKEN,), "post": (TOKEN,)}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str) -> None:
        """The link of the confirmation mail: a button that confirms (a GET changes
        nothing: mail scanners open links, which must not subscribe anyone)."""
        page = await self._page(slug)
        if page is None:
            _not_found(resp)
            return
        url = self._mail.page_url(page)
        token = req.get_param("token") or ""
        _html(
            resp,
            falcon.HTTP_200,
            "Confirm your subscription",
            [f"Receive a mail when something happens on {page['name']}."],
            page=page,
            page_url=url,
            form_action=f"/status/{quote(str(page['slug']))}/confirm?token={quote(token)}",
            button="Confirm",
        )

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str
    ) -> None:
        """Confirm a subscription (the button of the confirmation page)."""
        page = await self._page(slug)
        if page is None:
            _not_found(resp)
            return
        url = self._mail.page_url(page)
        sub = await self._mail.confirm(page, req.get_param("token"))
        if sub is None:
            _html(
                resp,
                falcon.HTTP_404,
                "This link does not work",
                [
                    "The confirmation link is wrong or has expired. Subscribe again from the"
                    " status page to get a new one."
                ],
                page=page,
                page_url=url,
            )
            return
        _html(
            resp,
            falcon.HTTP_200,
            "You are subscribed",
            [
                f"{sub['email']} will receive a mail when an incident opens or is resolved,"
                f" and when maintenance is scheduled or starts, on {page['name']}.",
                "Every mail has a link to unsubscribe.",
            ],
            page=page,
            page_url=url,
        )


class UnsubscribeResource(_Base):
    response_media_type = HTML
    query_params: ClassVar = {"get": (TOKEN,), "post": (TOKEN,)}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str) -> None:
        """Ask to confirm unsubscribing (a GET changes nothing: mail clients prefetch)."""
        page = await self._unsubscribe_page(req, slug)
        if page is None:
            _not_found(resp)
            return
        url = self._mail.page_url(page)
        token = req.get_param("token") or ""
        if parse_token(token) is None:
            self._bad_link(resp, page, url)
            return
        _html(
            resp,
            falcon.HTTP_200,
            "Unsubscribe?",
            [f"You will receive no more mails about {page['name']}."],
            page=page,
            page_url=url,
            form_action=f"/status/{quote(str(page['slug']))}/unsubscribe?token={quote(token)}",
            button="Unsubscribe",
        )

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str
    ) -> None:
        """Unsubscribe (the form's button, or RFC 8058 one-click from the mail)."""
        page = await self._unsubscribe_page(req, slug)
        if page is None:
            _not_found(resp)
            return
        url = self._mail.page_url(page)
        token = req.get_param("token") or ""
        if parse_token(token) is None:
            self._bad_link(resp, page, url)
            return
        # The same answer whether the subscription existed (a second click, a forged id).
        await self._mail.unsubscribe(page, token)
        _html(
            resp,
            falcon.HTTP_200,
            "You are unsubscribed",
            [f"You will receive no more mails about {page['name']}."],
            page=page,
            page_url=url,
        )

    async def _unsubscribe_page(self, req: falcon.asgi.Request, slug: str) -> Row | None:
        """The page of the subscriber the token names, whatever its slug or visibility
        now (a mail's link outlives a rename); else the public page of the slug."""
        page = await self._mail.page_for_token(req.get_param("token"))
        return page if page is not None else await self._page(slug)

    @staticmethod
    def _bad_link(resp: falcon.asgi.Response, page: Row, url: str) -> None:
        _html(
            resp,
            falcon.HTTP_400,
            "This link does not work",
            ["The unsubscribe link is incomplete; open it from the mail again."],
            page=page,
            page_url=url,
        )


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    buckets = TokenBuckets(SUBSCRIBE_RATE, SUBSCRIBE_BURST)
    app.add_route("/api/status-pages/public/{slug}/subscribe", ApiSubscribeResource(ctx, buckets))
    app.add_route("/status/{slug}/subscribe", HtmlSubscribeResource(ctx, buckets))
    app.add_route("/status/{slug}/confirm", ConfirmResource(ctx, buckets))
    app.add_route("/status/{slug}/unsubscribe", UnsubscribeResource(ctx, buckets))
