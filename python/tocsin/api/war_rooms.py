"""`/api/organizations/{org_id}/war-rooms/…`: where people work an incident together:
members, a running log, closed with a summary; live in the event stream. The operations
are `tocsin.workflow.war_rooms` (shared with the playbook step `open_war_room`). See
docs/war-rooms.md."""

from __future__ import annotations

from typing import Any, ClassVar

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import principal, require_role
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.paths import ID, ORG
from tocsin.api.schemas import Id, json_number, parse
from tocsin.store.base import Row, Store
from tocsin.workflow.war_rooms import (
    DEFAULT_ROLE,
    ROLES,
    WarRoomDetailJson,
    WarRoomEntryJson,
    WarRoomJson,
    WarRoomMemberJson,
    WarRoomOpen,
    WarRooms,
    room_json,
)

KIND = "war_rooms"
NOT_FOUND = "War room not found"
STATUS = query.Text("status", "only open or closed rooms", choices=("open", "closed"))
INCIDENT = query.OptInt("incident_id", 1, query.MAX_ID, "only the rooms of this incident")


class WarRoomCreate(BaseModel):
    """A room for an incident of the organisation (a check's or an inbound one)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    incident_id: Id
    title: str | None = Field(
        default=None, max_length=200, description="default: `War room: {incident title}`"
    )
    member_ids: list[Id] = Field(
        default_factory=list,
        max_length=50,
        description="members of the organisation who join as participants (the opener"
        " joins as commander)",
    )

    @field_validator("incident_id", "member_ids", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)

    @field_validator("member_ids", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


class CloseBody(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    summary: str = Field(default="", max_length=20_000, description="what happened and was done")


class MemberBody(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    user_id: Id
    role: str = Field(default=DEFAULT_ROLE, description="one of " + ", ".join(ROLES))

    @field_validator("user_id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, v: Any) -> Any:
        if v is None or v == "":
            return DEFAULT_ROLE
        if isinstance(v, str) and v.strip().lower() in ROLES:
            return v.strip().lower()
        raise ValueError(f"must be one of {', '.join(ROLES)}")


class EntryBody(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    body: str = Field(min_length=1, max_length=10_000)


class WarRoomConflictJson(TypedDict):
    detail: str
    # the incident's open room
    war_room_id: int


async def _room(
    store: Store, req: falcon.asgi.Request, org_id: int, room_id: int, role: str
) -> Row:
    require_role(principal(req), org_id, role)
    row = await store.get(KIND, [org_id], room_id)
    if row is None:
        raise falcon.HTTPNotFound(description=NOT_FOUND)
    return row


class WarRoomsResource:
    body_models: ClassVar = {"post": WarRoomCreate}
    response_models: ClassVar = {"get": list[WarRoomJson], "post": WarRoomJson}
    response_status: ClassVar = {"post": 201}
    query_params: ClassVar = {"get": (query.limit(100, 500), query.OFFSET, STATUS, INCIDENT)}

    def __init__(self, store: Store, rooms: WarRooms) -> None:
        self._store = store
        self._rooms = rooms

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        require_role(principal(req), org_id, "VIEWER")
        limit, offset = query.limit(100, 500).get(req), query.OFFSET.get(req)
        where: dict[str, Any] = {}
        status, incident = STATUS.get(req), INCIDENT.get(req)
        if status is not None:
            where["status"] = status
        if incident is not None:
            where["incident_id"] = incident
        rows = await self._store.select(
            KIND, [org_id], where=where, limit=limit, offset=offset, newest_first=True
        )
        resp.set_header("X-Total-Count", str(await self._store.count(KIND, [org_id], where=where)))
        resp.media = [room_json(r) for r in rows]

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int
    ) -> None:
        """Open a room. An incident has one open room at a time: a second answers 409
        with the open one's id (`war_room_id`)."""
        p = principal(req)
        require_role(p, org_id, "MEMBER")
        body: WarRoomCreate = parse(WarRoomCreate, await read_json_object(req))
        incident = await self._store.get("incidents", [org_id], body.incident_id)
        if incident is None:
            raise field_error("incident_id", f"incident {body.incident_id} not found", "not_found")
        members = {int(m["user_id"]) for m in await self._store.list_members([org_id], org_id)}
        for j, uid in enumerate(body.member_ids):
            if uid not in members:
                raise field_error(
                    ["member_ids", j],
                    f"user {uid} is not a member of the organisation",
                    "not_found",
                )
        try:
            room = await self._rooms.open(
                org_id, incident, title=body.title, member_ids=body.member_ids, actor_id=p.user_id
            )
        except WarRoomOpen as exc:
            resp.status = falcon.HTTP_409
            answer: WarRoomConflictJson = {"detail": str(exc), "war_room_id": int(exc.room["id"])}
            resp.media = answer
            return
        resp.status = falcon.HTTP_201
        resp.media = room_json(room)


class WarRoomResource:
    response_models: ClassVar = {"get": WarRoomDetailJson}

    def __init__(self, store: Store, rooms: WarRooms) -> None:
        self._store = store
        self._rooms = rooms

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, room_id: int
    ) -> None:
        """The room, its members and its log (oldest entry first)."""
        room = await _room(self._store, req, org_id, room_id, "VIEWER")
        resp.media = await self._rooms.detail(room)


class CloseResource:
    body_models: ClassVar = {"post": CloseBody}
    response_models: ClassVar = {"post": WarRoomJson}

    def __init__(self, store: Store, rooms: WarRooms) -> None:
        self._store = store
        self._rooms = rooms

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, room_id: int
    ) -> None:
        """Close the room with a summary (409 when it is closed already)."""
        room = await _room(self._store, req, org_id, room_id, "MEMBER")
        body: CloseBody = parse(CloseBody, await read_json_object(req))
        resp.media = room_json(await self._rooms.close(room, body.summary, principal(req).user_id))


class MembersResource:
    body_models: ClassVar = {"post": MemberBody}
    response_models: ClassVar = {"get": list[WarRoomMemberJson], "post": WarRoomMemberJson}
    response_status: ClassVar = {"post": 201}

    def __init__(self, store: Store, rooms: WarRooms) -> None:
        self._store = store
        self._rooms = rooms

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, room_id: int
    ) -> None:
        room = await _room(self._store, req, org_id, room_id, "VIEWER")
        resp.media = await self._rooms.members(org_id, int(room["id"]))

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, room_id: int
    ) -> None:
        """Add a member of the organisation, or change a member's role (201 both: the
        member as they are now)."""
        room = await _room(self._store, req, org_id, room_id, "MEMBER")
        body: MemberBody = parse(MemberBody, await read_json_object(req))
        member, _ = await self._rooms.add_member(
            room, body.user_id, body.role, principal(req).user_id
        )
        resp.status = falcon.HTTP_201
        resp.media = member


class MemberResource:
    response_models: ClassVar = {"delete": None}

    def __init__(self, store: Store, rooms: WarRooms) -> None:
        self._store = store
        self._rooms = rooms

    async def on_delete(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        org_id: int,
        room_id: int,
        user_id: int,
    ) -> None:
        """Remove a member (`{mid}` is the user's id)."""
        room = await _room(self._store, req, org_id, room_id, "MEMBER")
        if not await self._rooms.remove_member(room, user_id, principal(req).user_id):
            raise falcon.HTTPNotFound(description="Not a member of this war room")
        resp.status = falcon.HTTP_204


class EntriesResource:
    body_models: ClassVar = {"post": EntryBody}
    response_models: ClassVar = {"get": list[WarRoomEntryJson], "post": WarRoomEntryJson}
    response_status: ClassVar = {"post": 201}

    def __init__(self, store: Store, rooms: WarRooms) -> None:
        self._store = store
        self._rooms = rooms

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, room_id: int
    ) -> None:
        room = await _room(self._store, req, org_id, room_id, "VIEWER")
        resp.media = await self._rooms.entries(org_id, int(room["id"]))

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, org_id: int, room_id: int
    ) -> None:
        """Add to the running log (409 once the room is closed)."""
        room = await _room(self._store, req, org_id, room_id, "MEMBER")
        body: EntryBody = parse(EntryBody, await read_json_object(req))
        resp.status = falcon.HTTP_201
        resp.media = await self._rooms.add_entry(room, body.body, principal(req).user_id)


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    rooms = ctx.playbooks.war_rooms
    base = f"{ORG}/war-rooms"
    one = f"{base}/{{room_id:{ID}}}"
    app.add_route(base, WarRoomsResource(ctx.store, rooms))
    app.add_route(one, WarRoomResource(ctx.store, rooms))
    app.add_route(f"{one}/close", CloseResource(ctx.store, rooms))
    app.add_route(f"{one}/members", MembersResource(ctx.store, rooms))
    app.add_route(f"{one}/members/{{user_id:{ID}}}", MemberResource(ctx.store, rooms))
    app.add_route(f"{one}/entries", EntriesResource(ctx.store, rooms))
