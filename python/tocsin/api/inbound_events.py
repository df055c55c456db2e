"""Inbound events from other tools (docs/inbound.md), public: the integration key is the
credential, and an unknown or revoked key is the same 404.

- `POST /api/events/ingest`: tocsin's own format (the key is `routing_key`);
- `POST /api/events/v2/enqueue`: PagerDuty's Events API v2, answered as PagerDuty does
  (202), so an integration only changes its URL;
- `POST /api/events/alertmanager`: Prometheus Alertmanager's webhook;
- `POST|PUT /api/events/grafana`: Grafana alerting's webhook contact point. These two
  take the key as a bearer token (`Authorization: Bearer ik_…`), as a Basic password, or
  as `?routing_key=`.

A request is answered once its events are stored (`InboundProcessor`, group commit):
any other answer means nothing was applied. Bodies up to 512 KB (413 beyond); 400 for
malformed JSON, 422 naming the field; 429 with `Retry-After` past the key's events per
second; 503 with `Retry-After` while the database is unavailable."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import falcon
import falcon.asgi
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import parse_json_body, read_bytes
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed
from tocsin.paging.inbound import Accepted, Backlogged, InboundProcessor
from tocsin.paging.inbound_formats import (
    AlertmanagerBody,
    GrafanaBody,
    InboundEvent,
    InboundEventBody,
    InboundFormatError,
    PagerDutyEventBody,
    SourceFormat,
    parse_alertmanager,
    parse_event,
    parse_grafana,
)
from tocsin.paging.inbound_keys import IntegrationKey
from tocsin.ratelimits import TokenBuckets

log = logging.getLogger("tocsin.api.inbound")

MAX_BODY = 512 * 1024
ROUTING_KEY = query.Text(
    "routing_key",
    "the integration key, when the sender cannot send it as a bearer token",
    max_length=200,
)
NOT_FOUND = "Integration key not found"


class IngestAnswerJson(TypedDict):
    status: Literal["success"]
    # the event's dedup key (made up for a trigger that sent none)
    dedup_key: str
    # the incident it opened or changed; null for an acknowledgement or resolution that
    # reached no open incident (the event is kept)
    incident_id: int | None


class PagerDutyAnswerJson(TypedDict):
    """As PagerDuty's Events API v2 answers."""

    status: Literal["success"]
    message: str
    dedup_key: str


class WebhookAnswerJson(TypedDict):
    status: Literal["success"]
    # events taken (one per alert)
    events: int
    # the incidents they opened or changed, each once, in the alerts' order
    incidents: list[int]


def _body(data: bytes) -> Mapping[str, Any]:
    if not data.strip():
        raise ValidationFailed([{"loc": ["body"], "msg": "Field required", "type": "missing"}])
    body = parse_json_body(data)
    if not isinstance(body, dict):
        raise ValidationFailed(
            [{"loc": ["body"], "msg": "Input should be a JSON object", "type": "dict_type"}]
        )
    return body


def _header_key(req: falcon.asgi.Request) -> str | None:
    """The key from `Authorization`: a bearer token, or either half of Basic credentials
    (senders that only do Basic put it in the password)."""
    header = req.get_header("Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or user or None
    return None


class _Ingest:
    """What every inbound route does once it has a key and events."""

    auth_public = True

    def __init__(self, processor: InboundProcessor) -> None:
        self._processor = processor
        # The server's budgets (tocsin/ratelimits.py), set by `register`: events per key,
        # and failed authentications per client address (an unknown or revoked key is
        # one, so keys are not guessed at line rate).
        self.failures: TokenBuckets | None = None
        self.events: TokenBuckets | None = None

    async def _key(self, text: str | None, req: falcon.asgi.Request) -> IntegrationKey:
        keys = self._processor.keys
        known = keys.cached(text) if text else None
        if known is not None:
            return known  # a live key is never held back by its address's failures
        address = ("fail", req.remote_addr)
        if self.failures is not None:
            wait = self.failures.wait(address)
            if wait:
                raise falcon.HTTPTooManyRequests(description="Too many requests", retry_after=wait)
        key = await keys.find(text) if text else None
        if key is None:
            if self.failures is not None:
                self.failures.take(address)
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        return key

    async def _submit(
        self, key: IntegrationKey, events: Sequence[InboundEvent], fmt: SourceFormat
    ) -> list[Accepted]:
        if self.events is not None and events:
            wait = self.events.take(key.id, len(events))
            if wait:
                raise falcon.HTTPTooManyRequests(
                    description="Too many events for this integration key", retry_after=wait
                )
        try:
            return await self._processor.submit(key, events, fmt)
        except Backlogged:
            raise falcon.HTTPServiceUnavailable(
                description="Too many events are waiting to be stored; try again shortly",
                retry_after=1,
            ) from None


class IngestResource(_Ingest):
    body_models: ClassVar = {"post": InboundEventBody}
    response_models: ClassVar = {"post": IngestAnswerJson}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Trigger, acknowledge or resolve an incident (tocsin's own format)."""
        body = _body(await read_bytes(req, MAX_BODY))
        try:
            routing_key, event = parse_event(body)
        except InboundFormatError as exc:
            raise ValidationFailed(exc.errors) from None
        key = await self._key(routing_key, req)
        (done,) = await self._submit(key, [event], "native")
        answer: IngestAnswerJson = {
            "status": "success",
            "dedup_key": done.dedup_key,
            "incident_id": done.incident_id,
        }
        resp.media = answer


class PagerDutyResource(_Ingest):
    body_models: ClassVar = {"post": PagerDutyEventBody}
    response_models: ClassVar = {"post": PagerDutyAnswerJson}
    response_status: ClassVar = {"post": 202}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """An event in PagerDuty's Events API v2 format (send it here instead)."""
        body = _body(await read_bytes(req, MAX_BODY))
        try:
            routing_key, event = parse_event(body, pagerduty=True)
        except InboundFormatError as exc:
            raise ValidationFailed(exc.errors) from None
        key = await self._key(routing_key, req)
        (done,) = await self._submit(key, [event], "pagerduty")
        answer: PagerDutyAnswerJson = {
            "status": "success",
            "message": "Event processed",
            "dedup_key": done.dedup_key,
        }
        resp.status = falcon.HTTP_202
        resp.media = answer


class _WebhookResource(_Ingest):
    """A sender's webhook: the key from `Authorization` or `?routing_key=`, one event
    per alert."""

    def __init__(
        self,
        processor: InboundProcessor,
        fmt: SourceFormat,
        parser: Callable[[Mapping[str, Any]], list[InboundEvent]],
    ) -> None:
        super().__init__(processor)
        self._fmt: SourceFormat = fmt
        self._parser = parser

    async def _handle(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        key = await self._key(_header_key(req) or ROUTING_KEY.get(req), req)
        body = _body(await read_bytes(req, MAX_BODY))
        try:
            events = self._parser(body)
        except InboundFormatError as exc:
            raise ValidationFailed(exc.errors) from None
        done = await self._submit(key, events, self._fmt)
        incidents = [a.incident_id for a in done if a.incident_id is not None]
        answer: WebhookAnswerJson = {
            "status": "success",
            "events": len(done),
            # each once, in the alerts' order
            "incidents": list(dict.fromkeys(incidents)),
        }
        resp.media = answer


class AlertmanagerResource(_WebhookResource):
    body_models: ClassVar = {"post": AlertmanagerBody}
    query_params: ClassVar = {"post": (ROUTING_KEY,)}
    response_models: ClassVar = {"post": WebhookAnswerJson}

    def __init__(self, processor: InboundProcessor) -> None:
        super().__init__(processor, "alertmanager", parse_alertmanager)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Alertmanager's webhook (`webhook_configs`): one event per alert."""
        await self._handle(req, resp)


class GrafanaResource(_WebhookResource):
    body_models: ClassVar = {"post": GrafanaBody, "put": GrafanaBody}
    query_params: ClassVar = {"post": (ROUTING_KEY,), "put": (ROUTING_KEY,)}
    response_models: ClassVar = {"post": WebhookAnswerJson, "put": WebhookAnswerJson}

    def __init__(self, processor: InboundProcessor) -> None:
        super().__init__(processor, "grafana", parse_grafana)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Grafana's webhook contact point (POST or PUT): one event per alert."""
        await self._handle(req, resp)

    on_put = on_post


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    processor = ctx.inbound
    routes: dict[str, _Ingest] = {
        "/api/events/ingest": IngestResource(processor),
        "/api/events/v2/enqueue": PagerDutyResource(processor),
        "/api/events/alertmanager": AlertmanagerResource(processor),
        "/api/events/grafana": GrafanaResource(processor),
    }
    for path, resource in routes.items():
        resource.failures, resource.events = ctx.limits.failures, ctx.limits.events
        app.add_route(path, resource)
