"""`/api/organizations/{org_id}/integration-keys…`: the keys other tools send inbound
events with (docs/inbound.md), ADMIN and up. A key is shown once, at creation; the store
keeps its SHA-256 hash, reads show its prefix. A key names the escalation policy its
incidents follow and how its triggers group into incidents. Revoking (DELETE) keeps the
row: a revoked key is refused on ingest and left out of the list unless asked for."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import falcon
import falcon.asgi
from pydantic import Field, field_validator
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.identity_common import LEFT_OUT, Body
from tocsin.api.paths import ID, ORG
from tocsin.api.schemas import Id, json_number, parse
from tocsin.paging.inbound_keys import KeyBook, key_prefix, new_key
from tocsin.security import hash_token
from tocsin.store.base import Row, Store

KIND = "integration_keys"
MAX_KEYS = 1_000
MAX_WINDOW_S = 86_400
# A dotted path into an event's fields: `component`, `custom_details.cluster`.
FIELD_PATH = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
GroupingType = Literal["dedup_key", "none", "time_window", "payload_field"]
INCLUDE_REVOKED = query.Bool("include_revoked", "list revoked keys too")


class KeyUpdate(Body):
    """A change to a key: only the fields sent change (`escalation_policy_id` and
    `grouping_field` may be null: none)."""

    name: str = Field(default=LEFT_OUT, min_length=1, max_length=100)
    escalation_policy_id: Id | None = Field(
        default=None, description="the policy its incidents follow (of this organisation)"
    )
    service_id: Id | None = Field(
        default=None,
        description="the service its incidents belong to (of this organisation): they take"
        " the service's escalation policy when the key has none, and its channels",
    )
    grouping_type: GroupingType = Field(
        default=LEFT_OUT,
        description="dedup_key (the default): a trigger updates the open incident of its"
        " dedup key; none: every trigger opens an incident; time_window: a trigger with a"
        " new dedup key joins the key's newest open incident opened within"
        " grouping_window_seconds; payload_field: it joins the newest open incident whose"
        " event had the same grouping_field value",
    )
    grouping_window_seconds: int = Field(
        default=LEFT_OUT,
        ge=0,
        le=MAX_WINDOW_S,
        description="more than 0 for time_window; for payload_field, 0 is no limit",
    )
    grouping_field: str | None = Field(
        default=None,
        max_length=200,
        pattern=FIELD_PATH,
        description="for payload_field: a dotted path such as component or custom_details.cluster",
    )

    @field_validator("escalation_policy_id", "service_id", "grouping_window_seconds", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)


class KeyCreate(KeyUpdate):
    name: str = Field(min_length=1, max_length=100)
    grouping_type: GroupingType = "dedup_key"
    grouping_window_seconds: int = Field(default=0, ge=0, le=MAX_WINDOW_S)


class IntegrationKeyJson(TypedDict):
    id: int
    organization_id: int
    name: str
    # the key's first characters (the key itself is shown only when created)
    prefix: str
    escalation_policy_id: int | None
    service_id: int | None
    grouping_type: str
    grouping_window_seconds: int
    grouping_field: str | None
    created_by: int | None
    created_at: str | None
    updated_at: str | None
    # when the last event sent with it arrived
    last_event_at: str | None
    revoked_at: str | None


class NewIntegrationKeyJson(IntegrationKeyJson):
    """The key itself, shown only in the answer that created it."""

    key: str


def key_json(row: Row) -> IntegrationKeyJson:
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "escalation_policy_id": row["escalation_policy_id"],
        "service_id": row.get("service_id"),
        "grouping_type": row["grouping_type"],
        "grouping_window_seconds": int(row["grouping_window_seconds"] or 0),
        "grouping_field": row["grouping_field"],
        "created_by": row["created_by"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "last_event_at": iso(row["last_event_at"]),
        "revoked_at": iso(row["revoked_at"]),
    }


def check_grouping(fields: dict[str, Any]) -> None:
    """The grouping settings a key ends up with must make sense together."""
    kind = fields.get("grouping_type")
    if kind == "time_window" and not fields.get("grouping_window_seconds"):
        raise field_error("grouping_window_seconds", "must be more than 0 for time_window grouping")
    if kind == "payload_field" and not fields.get("grouping_field"):
        raise field_error("grouping_field", "is required for payload_field grouping", "missing")


async def org_key(store: Store, req: falcon.asgi.Request, org_id: int, key_id: int) -> Row:
    require_role(principal(req), org_id, "ADMIN")
    row = await store.get(KIND, [org_id], key_id)
    if row is None:
        raise falcon.HTTPNotFound(description="Integration key not found")
    return row


class IntegrationKeysResource:
    body_models: ClassVar = {"post": KeyCreate}
    query_params: ClassVar = {"get": (INCLUDE_REVOKED,)}
    response_models: ClassVar = {
        "get": list[IntegrationKeyJson],
        "post": NewIntegrationKeyJson,
    }
    response_status: ClassVar = {"post": 201}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """The organisation's integration keys (live ones, unless include_revoked)."""
        require_role(principal(req), org_id, "ADMIN")
        everything = INCLUDE_REVOKED.get(req) or False
        rows = await self._store.select(KIND, [org_id], limit=MAX_KEYS)
        resp.media = [key_json(r) for r in rows if everything or r["revoked_at"] is None]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """A new integration key, shown this once."""
        p = principal(req)
        require_role(p, org_id, "ADMIN")
        body: KeyCreate = parse(KeyCreate, await read_json_object(req))
        fields = body.model_dump()
        check_grouping(fields)
        key = new_key()
        row = await self._store.insert(
            KIND,
            org_id,
            {
                **fields,
                "key_hash": hash_token(key),
                "prefix": key_prefix(key),
                "created_by": p.user_id,
            },
        )
        resp.status = falcon.HTTP_201
        resp.set_header("Cache-Control", "no-store")
        # The only time the key is shown: only its hash is stored.
        answer: NewIntegrationKeyJson = {**key_json(row), "key": key}
        resp.media = answer


class IntegrationKeyResource:
    body_models: ClassVar = {"patch": KeyUpdate}
    response_models: ClassVar = {
        "get": IntegrationKeyJson,
        "patch": IntegrationKeyJson,
        "delete": None,
    }

    def __init__(self, store: Store, keys: KeyBook) -> None:
        self._store = store
        self._keys = keys

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, key_id: int
    ) -> None:
        """One integration key (revoked ones too)."""
        resp.media = key_json(await org_key(self._store, req, org_id, key_id))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, key_id: int
    ) -> None:
        """Rename a key, or change its escalation policy or grouping."""
        row = await org_key(self._store, req, org_id, key_id)
        body: KeyUpdate = parse(KeyUpdate, await read_json_object(req))
        changes = body.changes()
        if row["revoked_at"] is not None:
            raise falcon.HTTPConflict(description="The integration key is revoked")
        check_grouping({**row, **changes})
        updated = await self._store.update(KIND, [org_id], key_id, changes) if changes else row
        if updated is None:
            raise falcon.HTTPNotFound(description="Integration key not found")
        # Events from now on follow the new settings.
        self._keys.forget(key_id)
        resp.media = key_json(updated)

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, key_id: int
    ) -> None:
        """Revoke a key: events sent with it are refused from now on."""
        row = await org_key(self._store, req, org_id, key_id)
        if row["revoked_at"] is None:
            await self._store.update(KIND, [org_id], key_id, {"revoked_at": time.time()})
        self._keys.forget(key_id)
        resp.status = falcon.HTTP_204


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    app.add_route(f"{ORG}/integration-keys", IntegrationKeysResource(ctx.store))
    app.add_route(
        f"{ORG}/integration-keys/{{key_id:{ID}}}",
        IntegrationKeyResource(ctx.store, ctx.inbound.keys),
    )
