"""`/api/ping/{uuid}…`: heartbeat pings, public (the uuid is the secret). The hottest
public endpoint: a known uuid is looked up in memory, and pings are stored by group
commit."""

from __future__ import annotations

import logging
import re
import time
from typing import ClassVar

import falcon
import falcon.asgi

from tocsin.api import query
from tocsin.api.context import AppContext
from tocsin.store.base import Ping, StoreUnavailableError

log = logging.getLogger("tocsin.api.pings")

MAX_BODY = 100 * 1024
# The part of a ping's body carried by its live event (the whole body is stored).
EVENT_BODY = 4 * 1024
MAX_RID = 200
CACHE_SIZE = 100_000
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SIGNALS = frozenset({"start", "fail", "log", "success"})

Signal = str | int


class _Reply(Exception):
    """Ends a ping with a plain-text answer (pings never answer JSON)."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _signal(raw: str | None) -> Signal:
    if raw is None:
        return "success"
    if raw in _SIGNALS:
        return raw
    if raw.isascii() and raw.isdigit():
        code = int(raw) if len(raw) <= 6 else 256
        if code > 255:
            raise _Reply(falcon.HTTP_400, "an exit code is 0-255")
        return code
    raise _Reply(falcon.HTTP_404, "not found")


def _text(body: bytes) -> str:
    """A ping body as stored text: undecodable bytes and NUL (which PostgreSQL cannot
    store) become U+FFFD on either backend; a job's output is kept, not refused."""
    return body.decode("utf-8", "replace").replace("\x00", "\ufffd")


RID = query.Text("rid", "a run id: correlates a start ping with its finish", max_length=MAX_RID)
_RID_ONLY = (RID,)


class PingResource:
    response_media_type = "text/plain"
    query_params: ClassVar = {
        key: _RID_ONLY
        for key in ("get", "post", "head", "get_signal", "post_signal", "head_signal")
    }

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self._recorder = ctx.pings
        # uuid -> (check_id, organization_id), heartbeat checks only. A check deleted
        # or no longer a heartbeat is noticed by the engine refusing the ping, which
        # drops the entry; the store is asked again.
        self._known: dict[str, tuple[int, int]] = {}

    async def _lookup(self, uuid: str) -> tuple[int, int]:
        hit = self._known.get(uuid)
        if hit is not None:
            return hit
        if not _UUID.fullmatch(uuid):
            raise _Reply(falcon.HTTP_404, "not found")
        row = await self._ctx.store.check_by_uuid(uuid)
        if row is None:
            raise _Reply(falcon.HTTP_404, "not found")
        if row["type"] != "heartbeat":
            raise _Reply(falcon.HTTP_409, "not a heartbeat check")
        found = (int(row["id"]), int(row["organization_id"]))
        if len(self._known) >= CACHE_SIZE:
            del self._known[next(iter(self._known))]  # the oldest entry
        self._known[uuid] = found
        return found

    async def _handle(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, uuid: str, raw: str | None
    ) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        try:
            await self._ping(req, uuid.lower(), raw)
        except _Reply as reply:
            resp.status = reply.status
            resp.text = reply.text
            if reply.status == falcon.HTTP_503:
                resp.set_header("Retry-After", "5")
            return
        resp.text = "OK"

    async def _ping(self, req: falcon.asgi.Request, uuid: str, raw: str | None) -> None:
        signal = _signal(raw)
        rid = req.get_param("rid") or None
        if rid is not None and len(rid) > MAX_RID:
            raise _Reply(falcon.HTTP_400, f"rid is longer than {MAX_RID} characters")
        body = b""
        if req.method == "POST":
            if req.content_length is not None and req.content_length > MAX_BODY:
                raise _Reply(falcon.HTTP_413, "body is larger than 100 KB")
            body = await req.stream.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise _Reply(falcon.HTTP_413, "body is larger than 100 KB")
        check_id, org_id = await self._accepting(uuid)
        at = time.time()
        kind = signal if isinstance(signal, str) else "exit_code"
        # A ping is applied to the engine only once it is stored: an answer other than
        # OK means it did not happen, so a client that retries cannot apply it twice.
        try:
            await self._recorder.record(
                Ping(
                    check_id,
                    kind,
                    at,
                    exit_code=signal if isinstance(signal, int) else None,
                    rid=rid,
                    body=_text(body) if body else None,
                    remote_addr=req.remote_addr,
                )
            )
        except StoreUnavailableError as exc:
            log.warning("ping for check %s not stored: %s", check_id, exc)
            raise _Reply(
                falcon.HTTP_503, "the database is unavailable; try again shortly"
            ) from None
        try:
            self._ctx.engine.ping(check_id, signal, rid=rid, at=at)
        except KeyError:
            # Deleted (or changed type) since it was looked up: stored, nothing to judge.
            self._known.pop(uuid, None)
        except ValueError as exc:
            # Its schedule changed since `_accepting` (a racing PATCH): the ping is stored,
            # so the answer stays OK; the new schedule takes over from here.
            log.warning("ping for check %s stored, not judged: %s", check_id, exc)
        if body:
            self._ctx.events.publish(
                org_id,
                "log.append",
                {
                    "check_id": check_id,
                    "ping": kind,
                    "exit_code": signal if isinstance(signal, int) else None,
                    "rid": rid,
                    "at": at,
                    "body": _text(body[:EVENT_BODY]),
                    "body_bytes": len(body),
                    "body_truncated": len(body) > EVENT_BODY,
                },
            )

    async def _accepting(self, uuid: str) -> tuple[int, int]:
        """The check a ping is for, once it is known the engine has it as a heartbeat
        check (so nothing is stored for a ping that is then refused; its schedule was
        validated when it was scheduled)."""
        check_id, org_id = await self._lookup(uuid)
        engine = self._ctx.engine
        try:
            engine.heartbeat(check_id)
        except KeyError:
            # The engine no longer has it as a heartbeat check: deleted or changed.
            self._known.pop(uuid, None)
            check_id, org_id = await self._lookup(uuid)
            refusal = engine.refusal(check_id)
            if refusal is not None:
                raise _Reply(falcon.HTTP_409, f"the check cannot be scheduled: {refusal}") from None
            try:
                engine.heartbeat(check_id)
            except KeyError:
                log.warning("heartbeat check %s is not scheduled", check_id)
                self._known.pop(uuid, None)
                raise _Reply(falcon.HTTP_503, "check is not scheduled") from None
        return check_id, org_id

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, uuid: str) -> None:
        await self._handle(req, resp, uuid, None)

    on_post = on_get
    on_head = on_get

    async def on_get_signal(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, uuid: str, signal: str
    ) -> None:
        await self._handle(req, resp, uuid, signal)

    on_post_signal = on_get_signal
    on_head_signal = on_get_signal


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    resource = PingResource(ctx)
    app.add_route("/api/ping/{uuid}", resource)
    app.add_route("/api/ping/{uuid}/{signal}", resource, suffix="signal")
