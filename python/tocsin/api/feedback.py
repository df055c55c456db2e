"""`/api/feedback`: users tell the operators of the server what they think (a bug, an
idea, a question…); superusers read all of it and triage it (status, a response). A
user reads only their own. See docs/feedback.md."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import falcon
import falcon.asgi
from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypedDict

from tocsin.api import query
from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal
from tocsin.api.context import AppContext
from tocsin.api.errors import field_error
from tocsin.api.paths import ID
from tocsin.api.schemas import MAX_ID, json_number, parse
from tocsin.store.base import Row, Store

NOT_FOUND = "Feedback not found"

FeedbackKind = Literal["bug", "idea", "question", "praise", "other"]
FeedbackStatus = Literal["new", "triaged", "planned", "done", "declined"]
# What clients send for a kind, as tocsin names it.
KIND_ALIASES = {
    "feature": "idea",
    "feature_request": "idea",
    "suggestion": "idea",
    "improvement": "idea",
    "general": "other",
    "complaint": "other",
    "compliment": "praise",
    # A zero value: the default.
    "": "other",
}
STATUS_ALIASES = {"open": "new", "in_progress": "triaged", "closed": "done", "resolved": "done"}


def _alias(aliases: dict[str, str]) -> Any:
    def convert(v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip().lower().replace("-", "_")
            return aliases.get(v, v)
        return v

    return convert


class FeedbackCreate(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    kind: FeedbackKind = "other"
    message: str = Field(min_length=1, max_length=5000)
    page: str | None = Field(
        default=None, max_length=500, description="where in the product it was sent from"
    )
    organization_id: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ID,
        description="one of the sender's organisations (0 or null: none)",
    )

    _kind = field_validator("kind", mode="before")(_alias(KIND_ALIASES))

    @field_validator("organization_id", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)


class FeedbackTriage(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    status: FeedbackStatus | None = None
    response: str | None = Field(default=None, max_length=5000)

    _status = field_validator("status", mode="before")(_alias(STATUS_ALIASES))

    @field_validator("status", mode="before")
    @classmethod
    def _empty(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v


class FeedbackJson(TypedDict):
    id: int
    user_id: int | None
    organization_id: int | None
    kind: str
    message: str
    page: str | None
    status: str
    response: str | None
    responded_by: int | None
    responded_at: str | None
    created_at: str
    updated_at: str


def feedback_json(row: Row) -> FeedbackJson:
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "organization_id": row["organization_id"],
        "kind": row["kind"],
        "message": row["message"],
        "page": row["page"],
        "status": row["status"],
        "response": row["response"],
        "responded_by": row["responded_by"],
        "responded_at": iso(row["responded_at"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


STATUS = query.Text(
    "status",
    "only feedback in this status",
    choices=("new", "triaged", "planned", "done", "declined"),
)
KIND = query.Text(
    "kind", "only feedback of this kind", choices=("bug", "idea", "question", "praise", "other")
)


class FeedbackListResource:
    body_models: ClassVar = {"post": FeedbackCreate}
    response_models: ClassVar = {"get": list[FeedbackJson], "post": FeedbackJson}
    response_status: ClassVar = {"post": 201}
    query_params: ClassVar = {"get": (query.limit(50, 500), query.OFFSET, STATUS, KIND)}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Superusers: everyone's feedback; others: their own. Newest first."""
        p = principal(req)
        rows, total = await self._store.list_feedback(
            user_id=None if p.superuser else p.user_id,
            status=STATUS.get(req),
            kind=KIND.get(req),
            limit=query.limit(50, 500).get(req),
            offset=query.OFFSET.get(req),
        )
        resp.set_header("X-Total-Count", str(total))
        resp.media = [feedback_json(r) for r in rows]

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        p = principal(req)
        body: FeedbackCreate = parse(FeedbackCreate, await read_json_object(req))
        org_id = body.organization_id or None
        if org_id is not None and org_id not in p.roles:
            raise field_error("organization_id", "is not one of your organisations", "not_found")
        row = await self._store.create_feedback(
            p.user_id, org_id, body.kind, body.message, body.page or None
        )
        resp.status = falcon.HTTP_201
        resp.media = feedback_json(row)


class FeedbackResource:
    body_models: ClassVar = {"patch": FeedbackTriage, "put": FeedbackTriage}
    response_models: ClassVar = {"get": FeedbackJson, "patch": FeedbackJson, "put": FeedbackJson}

    def __init__(self, store: Store) -> None:
        self._store = store

    async def _visible(self, req: falcon.asgi.Request, feedback_id: int) -> Row:
        p = principal(req)
        row = await self._store.get_feedback(feedback_id)
        # Another user's feedback is missing, not forbidden (ids cannot be probed).
        if row is None or not (p.superuser or row["user_id"] == p.user_id):
            raise falcon.HTTPNotFound(description=NOT_FOUND)
        return row

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, feedback_id: int
    ) -> None:
        resp.media = feedback_json(await self._visible(req, feedback_id))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, feedback_id: int
    ) -> None:
        """Triage (superusers): a new status and/or a response to the sender."""
        p = principal(req)
        await self._visible(req, feedback_id)
        if not p.superuser:
            raise falcon.HTTPForbidden(description="only superusers triage feedback")
        body: FeedbackTriage = parse(FeedbackTriage, await read_json_object(req))
        fields: dict[str, Any] = {}
        if body.status is not None:
            fields["status"] = body.status
        if body.response:
            fields["response"] = body.response
            fields["responded_by"] = p.user_id
            fields["responded_at"] = time.time()
        elif body.response is not None:
            # An empty response takes the answer back.
            fields.update(response=None, responded_by=None, responded_at=None)
        row = await self._store.update_feedback(feedback_id, fields) if fields else None
        if row is None:
            row = await self._visible(req, feedback_id)
        resp.media = feedback_json(row)

    on_put = on_patch


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    app.add_route("/api/feedback", FeedbackListResource(ctx.store))
    app.add_route(f"/api/feedback/{{feedback_id:{ID}}}", FeedbackResource(ctx.store))
