"""War rooms: where people work one incident together (docs/war-rooms.md). A room is
opened for an incident (a check's or an inbound one), has members with a role, a running
log (`war_room_entries`: opened, member added / changed / removed, notes, what playbooks
did, closed) and is closed with a summary. The API (`api/war_rooms.py`) and the playbook
step `open_war_room` (`workflow/playbooks.py`) both go through `WarRooms`.

One open room per incident: opening another while one is open answers the open one
(`WarRoomOpen` for the API, which makes it a 409 naming it). The rule is kept by one lock
in this process (the schema has no partial unique index for it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Final, Literal

from typing_extensions import TypedDict

from tocsin.events import EventHub
from tocsin.store.base import ConflictError, NotFoundError, Row, Store
from tocsin.timestamps import iso

log = logging.getLogger("tocsin.war_rooms")

OPEN: Final = "open"
CLOSED: Final = "closed"
WarRoomStatus = Literal["open", "closed"]
ROLES: tuple[str, ...] = ("commander", "scribe", "communications", "participant", "observer")
DEFAULT_ROLE = "participant"
# The opener of a room (a person, not a playbook) joins it as its commander.
OPENER_ROLE = "commander"
# How much of a room's log and member list one read returns.
MAX_ENTRIES = 5_000
MAX_MEMBERS = 500
_PAGE = 500


class WarRoomOpen(ConflictError):
    """The incident already has an open war room (`room` is it)."""

    def __init__(self, room: Row) -> None:
        super().__init__(f"incident {room['incident_id']} already has open war room {room['id']}")
        self.room = room


class WarRoomJson(TypedDict):
    id: int
    organization_id: int
    # the incident it was opened for (null once that incident was deleted)
    incident_id: int | None
    title: str
    status: WarRoomStatus
    # given when it was closed
    summary: str | None
    # null when a playbook opened it
    opened_by: int | None
    closed_by: int | None
    opened_at: str
    closed_at: str | None
    created_at: str
    updated_at: str


class WarRoomMemberJson(TypedDict):
    user_id: int
    email: str | None
    role: str
    added_by: int | None
    added_at: str


class WarRoomEntryJson(TypedDict):
    id: int
    # opened, member_added, member_updated, member_removed, note, playbook, closed
    kind: str
    # null for what the server (a playbook) did
    actor_id: int | None
    body: str
    at: str


class WarRoomDetailJson(WarRoomJson):
    members: list[WarRoomMemberJson]
    entries: list[WarRoomEntryJson]


def room_json(row: Row) -> WarRoomJson:
    return {
        "id": row["id"],
        "organization_id": row["organization_id"],
        "incident_id": row["incident_id"],
        "title": row["title"],
        "status": row["status"],
        "summary": row["summary"],
        "opened_by": row["opened_by"],
        "closed_by": row["closed_by"],
        "opened_at": iso(row["opened_at"]) or "",
        "closed_at": iso(row["closed_at"]),
        "created_at": iso(row["created_at"]) or "",
        "updated_at": iso(row["updated_at"]) or "",
    }


def entry_json(row: Row) -> WarRoomEntryJson:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "actor_id": row["actor_id"],
        "body": row["body"],
        "at": iso(row["at"]) or "",
    }


class WarRooms:
    """War room operations; every change is logged in the room, published live
    (`war_room.opened`, `war_room.updated`, `war_room.closed`) and, for opening and
    closing, put on the incident's timeline (`war_room_opened`, `war_room_closed`)."""

    def __init__(self, store: Store, events: EventHub) -> None:
        self._store = store
        self._events = events
        self._lock = asyncio.Lock()

    # -- reads ---------------------------------------------------------------------------

    async def get(self, org_id: int, room_id: int) -> Row | None:
        return await self._store.get("war_rooms", [org_id], room_id)

    async def open_room(self, org_id: int, incident_id: int) -> Row | None:
        rows = await self._store.select(
            "war_rooms", [org_id], where={"incident_id": incident_id, "status": OPEN}, limit=1
        )
        return rows[0] if rows else None

    async def members(self, org_id: int, room_id: int) -> list[WarRoomMemberJson]:
        rows = await self._store.select(
            "war_room_members", [org_id], where={"war_room_id": room_id}, limit=MAX_MEMBERS
        )
        emails: dict[int, str | None] = {}
        for m in await self._store.list_members([org_id], org_id):
            emails[int(m["user_id"])] = m.get("email")
        return [
            {
                "user_id": r["user_id"],
                "email": emails.get(int(r["user_id"])),
                "role": r["role"],
                "added_by": r["added_by"],
                "added_at": iso(r["created_at"]) or "",
            }
            for r in rows
        ]

    async def entries(self, org_id: int, room_id: int) -> list[WarRoomEntryJson]:
        out: list[Row] = []
        while len(out) < MAX_ENTRIES:
            page = await self._store.select(
                "war_room_entries",
                [org_id],
                where={"war_room_id": room_id},
                limit=min(_PAGE, MAX_ENTRIES - len(out)),
                offset=len(out),
            )
            out += page
            if len(page) < _PAGE:
                break
        return [entry_json(r) for r in out]

    async def detail(self, room: Row) -> WarRoomDetailJson:
        org_id, room_id = int(room["organization_id"]), int(room["id"])
        return {
            **room_json(room),
            "members": await self.members(org_id, room_id),
            "entries": await self.entries(org_id, room_id),
        }

    # -- changes -------------------------------------------------------------------------

    async def open(
        self,
        org_id: int,
        incident: Row,
        *,
        title: str | None = None,
        member_ids: Sequence[int] = (),
        actor_id: int | None = None,
        why: str | None = None,
    ) -> Row:
        """Open a room for `incident` (a row of the organisation's incidents); the actor
        (a person) joins as commander, `member_ids` (members of the organisation) as
        participants. `WarRoomOpen` if the incident has an open room already."""
        now = time.time()
        async with self._lock:
            existing = await self.open_room(org_id, int(incident["id"]))
            if existing is not None:
                raise WarRoomOpen(existing)
            room = await self._store.insert(
                "war_rooms",
                org_id,
                {
                    "incident_id": incident["id"],
                    "title": title or f"War room: {incident.get('title') or incident['id']}",
                    "status": OPEN,
                    "opened_by": actor_id,
                    "opened_at": now,
                },
            )
        room_id = int(room["id"])
        opened = why or ("opened" if actor_id is not None else "opened by a playbook")
        await self._entry(org_id, room_id, "opened", actor_id, opened, now)
        people: list[tuple[int, str]] = []
        if actor_id is not None:
            people.append((actor_id, OPENER_ROLE))
        people += [(int(u), DEFAULT_ROLE) for u in member_ids if int(u) != actor_id]
        roles: dict[int, str] = {}
        for user_id, role in people:
            roles.setdefault(user_id, role)
        for user_id, role in roles.items():
            await self._member(org_id, room_id, user_id, role, actor_id, now)
        await self._timeline(
            org_id,
            int(incident["id"]),
            "war_room_opened",
            actor_id,
            now,
            {"war_room_id": room_id, "title": room["title"]},
        )
        self._publish("war_room.opened", room)
        return room

    async def close(self, room: Row, summary: str, actor_id: int | None) -> Row:
        """Close an open room with a summary. ConflictError if it is closed already."""
        org_id = int(room["organization_id"])
        now = time.time()
        async with self._lock:
            fresh = await self.get(org_id, int(room["id"]))
            if fresh is None:
                raise NotFoundError("War room not found")
            if fresh["status"] != OPEN:
                raise ConflictError("the war room is closed already")
            updated = await self._store.update(
                "war_rooms",
                [org_id],
                int(room["id"]),
                {"status": CLOSED, "summary": summary, "closed_by": actor_id, "closed_at": now},
            )
        if updated is None:
            raise NotFoundError("War room not found")
        await self._entry(org_id, int(room["id"]), "closed", actor_id, summary, now)
        if updated["incident_id"] is not None:
            await self._timeline(
                org_id,
                int(updated["incident_id"]),
                "war_room_closed",
                actor_id,
                now,
                {"war_room_id": updated["id"], "summary": summary},
            )
        self._publish("war_room.closed", updated)
        return updated

    async def add_member(
        self, room: Row, user_id: int, role: str, actor_id: int | None
    ) -> tuple[WarRoomMemberJson, bool]:
        """Add a member (or change their role); answers the member and whether they are
        new. The user must be a member of the organisation (NotFoundError naming
        `user_id` otherwise)."""
        org_id, room_id = int(room["organization_id"]), int(room["id"])
        emails = {
            int(m["user_id"]): m.get("email")
            for m in await self._store.list_members([org_id], org_id)
        }
        if user_id not in emails:
            raise NotFoundError(f"user {user_id} is not a member of the organisation", "user_id")
        now = time.time()
        row, created = await self._member(org_id, room_id, user_id, role, actor_id, now)
        self._publish("war_room.updated", await self._fresh(room))
        return (
            {
                "user_id": row["user_id"],
                "email": emails.get(user_id),
                "role": row["role"],
                "added_by": row["added_by"],
                "added_at": iso(row["created_at"]) or "",
            },
            created,
        )

    async def remove_member(self, room: Row, user_id: int, actor_id: int | None) -> bool:
        org_id, room_id = int(room["organization_id"]), int(room["id"])
        rows = await self._store.select(
            "war_room_members", [org_id], where={"war_room_id": room_id, "user_id": user_id}
        )
        if not rows or not await self._store.delete("war_room_members", [org_id], rows[0]["id"]):
            return False
        await self._entry(
            org_id, room_id, "member_removed", actor_id, f"user {user_id} left", time.time()
        )
        self._publish("war_room.updated", await self._fresh(room))
        return True

    async def add_entry(
        self, room: Row, body: str, actor_id: int | None, kind: str = "note"
    ) -> WarRoomEntryJson:
        """Add to the running log (a closed room's log is kept, not extended:
        ConflictError)."""
        org_id, room_id = int(room["organization_id"]), int(room["id"])
        fresh = await self._fresh(room)
        if fresh["status"] != OPEN:
            raise ConflictError("the war room is closed")
        row = await self._entry(org_id, room_id, kind, actor_id, body, time.time())
        self._publish("war_room.updated", fresh)
        return entry_json(row)

    # -- helpers ---------------------------------------------------------------------------

    async def _fresh(self, room: Row) -> Row:
        row = await self.get(int(room["organization_id"]), int(room["id"]))
        return row if row is not None else room

    async def _member(
        self, org_id: int, room_id: int, user_id: int, role: str, actor: int | None, now: float
    ) -> tuple[Row, bool]:
        rows = await self._store.select(
            "war_room_members", [org_id], where={"war_room_id": room_id, "user_id": user_id}
        )
        if rows:
            row = rows[0]
            if row["role"] == role:
                return row, False
            updated = await self._store.update(
                "war_room_members", [org_id], row["id"], {"role": role}
            )
            await self._entry(
                org_id, room_id, "member_updated", actor, f"user {user_id} is now {role}", now
            )
            return (updated or row), False
        try:
            row = await self._store.insert(
                "war_room_members",
                org_id,
                {"war_room_id": room_id, "user_id": user_id, "role": role, "added_by": actor},
            )
        except ConflictError:  # added meanwhile
            rows = await self._store.select(
                "war_room_members", [org_id], where={"war_room_id": room_id, "user_id": user_id}
            )
            if not rows:
                raise
            return rows[0], False
        await self._entry(
            org_id, room_id, "member_added", actor, f"user {user_id} joined as {role}", now
        )
        return row, True

    async def _entry(
        self, org_id: int, room_id: int, kind: str, actor: int | None, body: str, at: float
    ) -> Row:
        return await self._store.insert(
            "war_room_entries",
            org_id,
            {"war_room_id": room_id, "kind": kind, "actor_id": actor, "body": body, "at": at},
        )

    async def _timeline(
        self,
        org_id: int,
        incident_id: int,
        kind: str,
        actor: int | None,
        at: float,
        detail: dict[str, Any],
    ) -> None:
        # The incident may have been deleted meanwhile.
        with contextlib.suppress(NotFoundError):
            await self._store.insert(
                "incident_events",
                org_id,
                {
                    "incident_id": incident_id,
                    "kind": kind,
                    "actor_id": actor,
                    "detail": detail,
                    "at": at,
                },
            )

    def _publish(self, type_: str, room: Row) -> None:
        self._events.publish(int(room["organization_id"]), type_, dict(room_json(room)))
