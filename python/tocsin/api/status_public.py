"""The public side of status pages, by slug and without a token: the summary JSON, the
90-day uptime, the Atom feed and the HTML page. Every answer comes from the public cache
(`ctx.public_cache`): a hit reads nothing from the database, answers `ETag` and
`Cache-Control`, and a matching `If-None-Match` is a 304 with no body. A private page
and an unknown slug are 404 alike. (The subscribe routes are in status_subscriptions.py.)"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import ClassVar

import falcon
import falcon.asgi
import orjson

from tocsin.api.cached import answer
from tocsin.api.context import AppContext
from tocsin.statuspages.cache import Built, Cached, PublicCache
from tocsin.statuspages.documents import PublicPageJson, PublicUptimeJson
from tocsin.statuspages.feed import ATOM_TYPE, render_feed
from tocsin.statuspages.invalidation import page_prefix
from tocsin.statuspages.model import is_slug
from tocsin.statuspages.public import DAY_S, UPTIME_DAYS, PageNotFound, PublicPages
from tocsin.statuspages.render import render_not_found, render_page

JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"
# Browsers and proxies may keep an answer this long; the server's own copy is dropped
# as soon as what it shows changes.
MAX_AGE = 15
API_BASE = "/api/status-pages/public"
HTML_BASE = "/status"

Builder = Callable[[str], Awaitable[Built]]


class _Public:
    """Serves one document kind of a page through the cache."""

    kind: ClassVar[str] = ""
    html_errors: ClassVar[bool] = False

    def __init__(self, ctx: AppContext, pages: PublicPages) -> None:
        self._cache: PublicCache = ctx.public_cache
        self._pages = pages

    async def build(self, slug: str) -> Built:
        raise NotImplementedError

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str) -> None:
        if not is_slug(slug):
            self._not_found(resp)
            return
        try:
            entry = await self._cache.get_or_build(
                f"{page_prefix(slug)}{self.kind}", lambda: self.build(slug)
            )
        except PageNotFound:
            self._not_found(resp)
            return
        self._answer(req, resp, entry)

    def _answer(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, e: Cached) -> None:
        answer(req, resp, e, max_age=MAX_AGE)

    def _not_found(self, resp: falcon.asgi.Response) -> None:
        if not self.html_errors:
            raise falcon.HTTPNotFound(description="Status page not found")
        resp.status = falcon.HTTP_404
        resp.content_type = HTML_TYPE
        resp.text = render_not_found()


def _json(doc: object) -> bytes:
    return orjson.dumps(doc)


class SummaryResource(_Public):
    """Overall status, components by section, open incidents, maintenance."""

    kind = "json"
    response_models: ClassVar = {"get": PublicPageJson}

    async def build(self, slug: str) -> Built:
        page = await self._pages.load(slug)
        return Built(_json(await self._pages.summary(page)), JSON_TYPE, page.check_ids)


class UptimeResource(_Public):
    """Per component, the uptime of each of the last 90 days (UTC) and its incidents."""

    kind = "uptime"
    response_models: ClassVar = {"get": PublicUptimeJson}

    async def build(self, slug: str) -> Built:
        page = await self._pages.load(slug)
        return Built(_json(await self._pages.uptime(page)), JSON_TYPE, page.check_ids)


class FeedResource(_Public):
    """Atom 1.0: the page's incidents of the last 90 days and its maintenance."""

    kind = "feed"
    response_media_type = "application/atom+xml"

    async def build(self, slug: str) -> Built:
        pages = self._pages
        page = await pages.load(slug)
        summary = await pages.summary(page)
        incidents = await pages.incidents(page, since=time.time() - UPTIME_DAYS * DAY_S)
        body = render_feed(summary, incidents, self_url=f"{API_BASE}/{slug}/feed.atom")
        return Built(body, ATOM_TYPE, page.check_ids)


class HtmlResource(_Public):
    """The status page people open: rendered on the server, no script."""

    kind = "html"
    html_errors = True
    response_media_type = "text/html"

    async def build(self, slug: str) -> Built:
        pages = self._pages
        page = await pages.load(slug)
        uptime = await pages.uptime(page)
        body = render_page(
            await pages.summary(page),
            uptime,
            pages.bar_strips(uptime),
            pages.blocks,
            page_id=page.page_id,
            feed_url=f"{API_BASE}/{slug}/feed.atom",
            subscribe_url=f"{HTML_BASE}/{slug}/subscribe",
        )
        return Built(body.encode(), HTML_TYPE, page.check_ids)


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    pages = PublicPages(ctx.store, ctx.engine, ctx.windows)
    app.add_route(API_BASE + "/{slug}", SummaryResource(ctx, pages))
    app.add_route(API_BASE + "/{slug}/uptime", UptimeResource(ctx, pages))
    app.add_route(API_BASE + "/{slug}/feed.atom", FeedResource(ctx, pages))
    app.add_route(HTML_BASE + "/{slug}", HtmlResource(ctx, pages))
