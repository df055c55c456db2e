"""Notification channels: `/api/notification-channels` (CRUD, `/{id}/test`,
`/{id}/deliveries`), `/api/notifications/deliveries`, and on checks
`/api/checks/{id}/test-alert` and `/api/checks/{id}/notification-channels` (which
channels a check notifies). The router and the outbox worker are services (tocsin/services.py)."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal, get_args

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed
from tocsin.api.paths import ID
from tocsin.api.schemas import MASK, MAX_ID, Id, _validate
from tocsin.headers import merge_masked
from tocsin.notify.channels import (
    CHANNEL_TYPES,
    CONFIGS,
    SECRETS,
    ChannelType,
    message,
    validate_config,
)
from tocsin.notify.router import Router, check_links
from tocsin.notify.worker import Outbox
from tocsin.store.base import Principal, Row, Store

DeliveryStatus = Literal["pending", "sending", "delivered", "failed", "suppressed"]
DELIVERY_STATUSES: tuple[str, ...] = get_args(DeliveryStatus)


class ChannelBody(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    # The document (api/openapi.py): `config` holds the settings of the channel's type.
    openapi_body: ClassVar = {
        "variants": {"tag": "channel_type", "under": "config", "models": CONFIGS}
    }

    name: str = Field(min_length=1, max_length=200)
    channel_type: ChannelType
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="the settings of the channel's type; in a change, a secret sent as"
        ' `******` or left out keeps the stored one, `""` clears it',
    )
    is_default: StrictBool = False
    is_active: StrictBool = True
    # The checks that notify this channel (omitted on update: unchanged).
    check_ids: list[Id] | None = Field(default=None, max_length=10_000)
    org_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class CheckChannelsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    channel_ids: list[Id] = Field(max_length=1000)


class ChannelJson(TypedDict):
    id: int
    organization_id: int
    org_id: int
    name: str
    channel_type: ChannelType
    config: dict[str, Any]
    is_default: bool
    is_active: bool
    check_ids: list[int]
    created_at: str
    updated_at: str


def channel_json(row: Row, check_ids: list[int]) -> ChannelJson:
    """The channel, its secrets (and a webhook's header values) shown as `******`, or
    `""` when not set."""
    config = dict(row["config"])
    for secret in SECRETS.get(row["channel_type"], ()):
        if secret in config:
            config[secret] = MASK if config[secret] else ""
    if isinstance(config.get("headers"), dict):
        # A webhook's custom headers often carry a credential: names shown, values not.
        config["headers"] = {k: MASK for k in config["headers"]}
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "org_id": row["organization_id"],
        "name": row["name"],
        "channel_type": row["channel_type"],
        "config": config,
        "is_default": row["is_default"],
        "is_active": row["is_active"],
        "check_ids": check_ids,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


class DeliveryJson(TypedDict):
    """A message in the outbox: to which channel, for which incident and event, and how
    its sending went."""

    id: int
    organization_id: int
    channel_id: int | None
    incident_id: int | None
    check_id: int | None
    event: str
    dedup_key: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: str | None
    last_error: str | None
    response_code: int | None
    delivered_at: str | None
    summary: str | None
    created_at: str
    updated_at: str


def delivery_json(row: Row) -> DeliveryJson:
    payload = row["payload"] or {}
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "channel_id": row["channel_id"],
        "incident_id": row["incident_id"],
        "check_id": row["check_id"],
        "event": row["event"],
        "dedup_key": row["dedup_key"],
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": iso(row["next_attempt_at"])
        if row["status"] in ("pending", "sending")
        else None,
        "last_error": row["last_error"] or payload.get("suppressed"),
        "response_code": row["response_code"],
        "delivered_at": iso(row["delivered_at"]),
        "summary": payload.get("summary"),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


class DeliveriesJson(TypedDict):
    """A page of deliveries, newest first, and how many there are in all."""

    total: int
    offset: int
    limit: int
    deliveries: list[DeliveryJson]


class ChannelTestJson(TypedDict):
    """A test message's outcome: what the receiver answered."""

    channel_id: int
    channel_type: ChannelType
    ok: bool
    status_code: int | None
    error: str | None
    response: str | None


class CheckTestAlertJson(TypedDict):
    check_id: int
    results: list[ChannelTestJson]


class CheckChannelsJson(TypedDict):
    """The channels a check notifies (besides its organisation's defaults)."""

    check_id: int
    channel_ids: list[int]


def check_channels_json(check_id: int, channel_ids: list[int]) -> CheckChannelsJson:
    return {"check_id": check_id, "channel_ids": channel_ids}


def parse_channel(body: dict[str, Any], stored: Row | None) -> tuple[ChannelBody, dict[str, Any]]:
    """The validated body and config (a secret sent as `******` or omitted keeps the
    stored one, `""` clears it); 422 naming every bad field."""
    parsed, errors = _validate(ChannelBody, body)
    config: dict[str, Any] = {}
    kind = body.get("channel_type")
    if isinstance(kind, str) and kind in CHANNEL_TYPES:
        raw = body.get("config", {})
        raw = dict(raw) if isinstance(raw, dict) else {}
        kept = stored["config"] if stored is not None and stored["channel_type"] == kind else {}
        for secret in SECRETS[kind]:
            if secret not in raw or raw[secret] == MASK:
                if kept.get(secret):
                    raw[secret] = kept[secret]
                else:
                    raw.pop(secret, None)
        headers = raw.get("headers")
        if isinstance(headers, dict):
            # `******` keeps a stored value, `""` removes the header (as for checks).
            raw["headers"] = merge_masked(headers, kept.get("headers") or {}, MASK)
        if isinstance(body.get("config", {}), dict):
            config, more = validate_config(kind, raw)
            errors += more
    if errors:
        raise ValidationFailed(errors)
    assert parsed is not None
    return parsed, config


CHANNELS_LIMIT = query.limit(100, 500)
CHANNELS_ORG = query.OptInt("org_id", 1, MAX_ID, "only this organisation's channels")
CHANNEL_TYPE = query.Text("channel_type", "only channels of this type", choices=CHANNEL_TYPES)
DELIVERIES_LIMIT = query.limit(50, 200)
DELIVERY_STATUS = query.Text("status", "only deliveries in this state", choices=DELIVERY_STATUSES)
DELIVERY_FILTERS = {
    name: query.OptInt(name, 1, MAX_ID, f"only deliveries with this {name}")
    for name in ("channel_id", "check_id", "incident_id")
}


def _filter_orgs(p: Principal, req: falcon.asgi.Request, param: query.OptInt) -> list[int]:
    org_ids = p.org_ids
    wanted = param.get(req)
    if wanted is not None:
        org_ids = [o for o in org_ids if o == wanted]
    return org_ids


class Channels:
    def __init__(self, ctx: AppContext, router: Router, outbox: Outbox) -> None:
        self.store: Store = ctx.store
        self.ctx = ctx
        self.router = router
        self.outbox = outbox

    async def get(self, p: Principal, channel_id: int, role: str = "VIEWER") -> Row:
        row = await self.store.get("notification_channels", p.org_ids, channel_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Notification channel not found")
        require_role(p, int(row["organization_id"]), role)
        return row

    async def check(self, p: Principal, check_id: int, role: str = "VIEWER") -> Row:
        row = await self.store.get_check(p.org_ids, check_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Check not found")
        require_role(p, int(row["organization_id"]), role)
        return row

    async def set_checks(self, org_id: int, channel_id: int, check_ids: list[int]) -> None:
        for i, cid in enumerate(check_ids):
            if await self.store.get_check([org_id], cid) is None:
                raise ValidationFailed(
                    [
                        {
                            "loc": ["body", "check_ids", i],
                            "msg": f"check {cid} not found",
                            "type": "not_found",
                        }
                    ]
                )
        current = set(await self.store.channel_checks([org_id], channel_id))
        for cid in current - set(check_ids):
            await self.store.unlink("check_channels", [org_id], cid, channel_id)
        for cid in sorted(set(check_ids) - current):
            await self.store.link("check_channels", org_id, cid, channel_id)
        self.router.invalidate()

    async def json(self, row: Row) -> ChannelJson:
        checks = await self.store.channel_checks([row["organization_id"]], row["id"])
        return channel_json(row, checks)

    async def test(self, channel: Row, check: Row | None, user: str | None) -> ChannelTestJson:
        now = time.time()
        check_id = check["id"] if check is not None else None
        m = message(
            event="test",
            incident={
                "id": None,
                "check_id": check_id,
                "organization_id": channel["organization_id"],
                "severity": "info",
                "started_at": now,
                "title": "Test notification",
                "cause": "This is a test notification sent from tocsin; no action is needed.",
                "sources": {},
            },
            check={"name": check["name"], "type": check["type"], "url": check["url"]}
            if check is not None
            else {"name": channel["name"]},
            links=check_links(check_id) if check_id is not None else {},
            at=now,
            actor=user,
        )
        key = f"test:{channel['id']}:{int(now * 1000)}"
        out = await self.outbox.sender.send(channel["channel_type"], channel["config"], m, key)
        return {
            "channel_id": channel["id"],
            "channel_type": channel["channel_type"],
            "ok": out.ok,
            "status_code": out.status_code,
            "error": out.error,
            "response": out.response,
        }


class ChannelsResource:
    body_models: ClassVar = {"post": ChannelBody}
    query_params: ClassVar = {"get": (CHANNELS_LIMIT, query.OFFSET, CHANNELS_ORG, CHANNEL_TYPE)}
    response_models: ClassVar = {"get": list[ChannelJson], "post": ChannelJson}
    response_status: ClassVar = {"post": 201}

    def __init__(self, c: Channels) -> None:
        self._c = c

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        limit, offset = CHANNELS_LIMIT.get(req), query.OFFSET.get(req)
        where: dict[str, Any] = {}
        kind = CHANNEL_TYPE.get(req)
        if kind is not None:
            where["channel_type"] = kind
        org_ids = _filter_orgs(p, req, CHANNELS_ORG)
        rows = (
            await self._c.store.select(
                "notification_channels", org_ids, where=where, limit=limit, offset=offset
            )
            if org_ids
            else []
        )
        resp.media = [await self._c.json(r) for r in rows]

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        body, config = parse_channel(await read_json_object(req), None)
        org_id = body.org_id if body.org_id is not None else p.default_org_id
        if org_id is None or org_id not in p.roles:
            raise ValidationFailed(
                [{"loc": ["body", "org_id"], "msg": "organisation not found", "type": "not_found"}]
            )
        require_role(p, org_id, "ADMIN")
        row = await self._c.store.insert(
            "notification_channels",
            org_id,
            {
                "name": body.name,
                "channel_type": body.channel_type,
                "config": config,
                "is_default": body.is_default,
                "is_active": body.is_active,
            },
        )
        if body.check_ids:
            try:
                await self._c.set_checks(org_id, row["id"], body.check_ids)
            except Exception:
                await self._c.store.delete("notification_channels", [org_id], row["id"])
                raise
        self._c.router.invalidate()
        resp.status = falcon.HTTP_201
        resp.media = await self._c.json(row)


class ChannelResource:
    body_models: ClassVar = {"put": ChannelBody}
    response_models: ClassVar = {"get": ChannelJson, "put": ChannelJson, "delete": None}

    def __init__(self, c: Channels) -> None:
        self._c = c

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, channel_id: int
    ) -> None:
        resp.media = await self._c.json(await self._c.get(principal(req), channel_id))

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, channel_id: int
    ) -> None:
        """Replace every field; a secret sent as `******` or left out is kept, `""`
        clears it; `check_ids` left out keeps the links."""
        p = principal(req)
        current = await self._c.get(p, channel_id, "ADMIN")
        body, config = parse_channel(await read_json_object(req), current)
        org_id = int(current["organization_id"])
        if body.check_ids is not None:
            await self._c.set_checks(org_id, channel_id, body.check_ids)
        row = await self._c.store.update(
            "notification_channels",
            [org_id],
            channel_id,
            {
                "name": body.name,
                "channel_type": body.channel_type,
                "config": config,
                "is_default": body.is_default,
                "is_active": body.is_active,
            },
        )
        self._c.router.invalidate()
        if row is None:
            raise falcon.HTTPNotFound(description="Notification channel not found")
        resp.media = await self._c.json(row)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, channel_id: int
    ) -> None:
        p = principal(req)
        current = await self._c.get(p, channel_id, "ADMIN")
        if not await self._c.store.delete(
            "notification_channels", [current["organization_id"]], channel_id
        ):
            raise falcon.HTTPNotFound(description="Notification channel not found")
        self._c.router.invalidate()
        resp.status = falcon.HTTP_204


class ChannelTestResource:
    response_models: ClassVar = {"post": ChannelTestJson}

    def __init__(self, c: Channels) -> None:
        self._c = c

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, channel_id: int
    ) -> None:
        """Send a test message now; answers what the receiver said."""
        p = principal(req)
        channel = await self._c.get(p, channel_id, "ADMIN")
        resp.media = await self._c.test(channel, None, p.email)


class DeliveriesResource:
    """Outbox rows, newest first: `{total, offset, limit, deliveries}`."""

    query_params: ClassVar = {
        "get_channel": (DELIVERIES_LIMIT, query.OFFSET, DELIVERY_STATUS),
        "get": (
            DELIVERIES_LIMIT,
            query.OFFSET,
            query.ORGANIZATION_ID,
            *DELIVERY_FILTERS.values(),
            DELIVERY_STATUS,
        ),
    }
    response_models: ClassVar = {"get": DeliveriesJson, "get_channel": DeliveriesJson}

    def __init__(self, c: Channels) -> None:
        self._c = c

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, channel_id: int | None = None
    ) -> None:
        p = principal(req)
        limit, offset = DELIVERIES_LIMIT.get(req), query.OFFSET.get(req)
        where: dict[str, Any] = {}
        if channel_id is not None:
            channel = await self._c.get(p, channel_id)
            org_ids = [int(channel["organization_id"])]
            where["channel_id"] = channel_id
        else:
            org_ids = _filter_orgs(p, req, query.ORGANIZATION_ID)
            for name, param in DELIVERY_FILTERS.items():
                value = param.get(req)
                if value is not None:
                    where[name] = value
        status = DELIVERY_STATUS.get(req)
        if status is not None:
            where["status"] = status
        if not org_ids:
            total, rows = 0, []
        else:
            total = await self._c.store.count("notification_deliveries", org_ids, where=where)
            rows = await self._c.store.select(
                "notification_deliveries",
                org_ids,
                where=where,
                limit=limit,
                offset=offset,
                newest_first=True,
            )
        page: DeliveriesJson = {
            "total": total,
            "offset": offset,
            "limit": limit,
            "deliveries": [delivery_json(r) for r in rows],
        }
        resp.media = page

    async def on_get_channel(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, channel_id: int
    ) -> None:
        await self.on_get(req, resp, channel_id)


class CheckTestAlertResource:
    response_models: ClassVar = {"post": CheckTestAlertJson}

    def __init__(self, c: Channels) -> None:
        self._c = c

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        """A test alert through every channel of the check (its own and the
        organisation's defaults), with each receiver's answer."""
        p = principal(req)
        check = await self._c.check(p, check_id, "MEMBER")
        org_id = int(check["organization_id"])
        channels = await self._c.router.channels_for(org_id, check_id)
        answer: CheckTestAlertJson = {
            "check_id": check_id,
            "results": [await self._c.test(ch, check, p.email) for ch in channels],
        }
        resp.media = answer


class CheckChannelsResource:
    body_models: ClassVar = {"put": CheckChannelsBody}
    response_models: ClassVar = {"get": CheckChannelsJson, "put": CheckChannelsJson}

    def __init__(self, c: Channels) -> None:
        self._c = c

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        p = principal(req)
        check = await self._c.check(p, check_id)
        ids = await self._c.store.linked("check_channels", [check["organization_id"]], check_id)
        resp.media = check_channels_json(check_id, ids)

    async def on_put(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, check_id: int
    ) -> None:
        """Replace the check's channels."""
        p = principal(req)
        check = await self._c.check(p, check_id, "MEMBER")
        org_id = int(check["organization_id"])
        parsed, errors = _validate(CheckChannelsBody, await read_json_object(req))
        if errors:
            raise ValidationFailed(errors)
        wanted = list(dict.fromkeys(parsed.channel_ids))
        for i, cid in enumerate(wanted):
            if await self._c.store.get("notification_channels", [org_id], cid) is None:
                raise ValidationFailed(
                    [
                        {
                            "loc": ["body", "channel_ids", i],
                            "msg": f"channel {cid} not found",
                            "type": "not_found",
                        }
                    ]
                )
        current = set(await self._c.store.linked("check_channels", [org_id], check_id))
        for cid in current - set(wanted):
            await self._c.store.unlink("check_channels", [org_id], check_id, cid)
        for cid in wanted:
            if cid not in current:
                await self._c.store.link("check_channels", org_id, check_id, cid)
        self._c.router.invalidate()
        ids = await self._c.store.linked("check_channels", [org_id], check_id)
        resp.media = check_channels_json(check_id, ids)


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    router, outbox = ctx.router, ctx.outbox
    c = Channels(ctx, router, outbox)
    base = "/api/notification-channels"
    item = f"{base}/{{channel_id:{ID}}}"
    app.add_route(base, ChannelsResource(c))
    app.add_route(item, ChannelResource(c))
    app.add_route(f"{item}/test", ChannelTestResource(c))
    app.add_route(f"{item}/deliveries", DeliveriesResource(c), suffix="channel")
    app.add_route("/api/notifications/deliveries", DeliveriesResource(c))
    check = f"/api/checks/{{check_id:{ID}}}"
    app.add_route(f"{check}/test-alert", CheckTestAlertResource(c))
    app.add_route(f"{check}/notification-channels", CheckChannelsResource(c))
