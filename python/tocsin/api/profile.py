"""`/api/profile/…`: the caller's own paging settings (docs/profile.md): the profile
(account, time zone, contact methods, notification rules, organisations), contact
methods (values masked on every read; an email method is verified by a mailed link;
`…/test` sends a test page), notification rules (who is paged how, and after how long),
and the public link that verifies an email method
(`/api/contact-methods/verify/{token}`: a GET shows a button, the POST verifies).

Every row is the caller's own: another user's ids are 404. The work (kinds, masking,
tokens, sending) is in tocsin/paging/."""

from __future__ import annotations

import logging
import math
import re
import time
import urllib.parse
from typing import Any, ClassVar, Literal

import falcon
import falcon.asgi
from pydantic import Field, field_validator
from typing_extensions import TypedDict

from tocsin.api.body import read_json_object
from tocsin.api.common import iso, principal
from tocsin.api.context import AppContext
from tocsin.api.errors import ValidationFailed, field_error
from tocsin.api.identity_common import LEFT_OUT, Body
from tocsin.api.paths import CONTACT_VERIFY_PREFIX, ID
from tocsin.api.schemas import Id, json_number, parse
from tocsin.api.users import MeJson, me_json
from tocsin.notify.subscribers import render
from tocsin.paging.contacts import (
    MAX_DELAY_MINUTES,
    MAX_METHODS,
    MAX_VALUE,
    RESEND_AFTER_S,
    VERIFY_TTL_S,
    ContactKind,
    mask,
    new_token,
    normalize_value,
    token_hash,
    verified_on_creation,
)
from tocsin.paging.pager import Pager
from tocsin.ratelimits import TokenBuckets
from tocsin.store.base import NotFoundError, Principal, Row, Store

log = logging.getLogger("tocsin.api")

HTML = "text/html"
MAX_LABEL = 100
# Verification mails per user (on top of one a minute per method): a burst, then one a
# minute, so adding and removing addresses cannot mail strangers without end.
MAIL_BURST = 5.0
MAIL_RATE = 1 / 60
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

# What became of an email method's verification in this request: `verified` (nothing to
# do: not an email method, or verified already), `sent` (a link was mailed), `send_failed`
# (mailing failed: ask again with …/verify), `smtp_not_configured` (this server sends no
# mail: the method stays unverified), `pending` (unverified; no mail sent this time).
Verification = Literal["verified", "sent", "send_failed", "smtp_not_configured", "pending"]


# -- request bodies -----------------------------------------------------------------------


class ContactMethodCreate(Body):
    # email: an address; webhook, slack, discord, teams: the http(s) URL to post to;
    # telegram: https://api.telegram.org/bot<token>/sendMessage?chat_id=<chat id>
    kind: ContactKind
    value: str = Field(min_length=1, max_length=MAX_VALUE)
    label: str = Field(default="", max_length=MAX_LABEL)


class ContactMethodUpdate(Body):
    """A new label or value (a new value is verified again)."""

    value: str = Field(default=LEFT_OUT, min_length=1, max_length=MAX_VALUE)
    label: str = Field(default=LEFT_OUT, max_length=MAX_LABEL)


class RuleBody(Body):
    """Page on this contact method `delay_minutes` after the page is due."""

    contact_method_id: Id
    delay_minutes: int = Field(default=0, ge=0, le=MAX_DELAY_MINUTES)

    @field_validator("contact_method_id", "delay_minutes", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)


class RulesBody(Body):
    """The whole list (it replaces the stored one); an empty list restores the default:
    every verified contact method at once."""

    notification_rules: list[RuleBody] = Field(max_length=MAX_METHODS)


# -- responses ----------------------------------------------------------------------------


class ContactMethodJson(TypedDict):
    """A contact method; `value` is masked (`e•••@example.com`, `https://host/•••`)."""

    id: int
    kind: ContactKind
    value: str
    label: str
    verified: bool
    verified_at: str | None
    verification_sent_at: str | None
    created_at: str
    updated_at: str


class ContactMethodChangeJson(ContactMethodJson):
    """A contact method created, changed or sent its link again, and what became of its
    verification in this request."""

    verification: Verification


class RuleJson(TypedDict):
    id: int
    contact_method_id: int
    delay_minutes: int


class RulesJson(TypedDict):
    """The caller's rules; `uses_default` when there are none (then every verified
    contact method is paged at once)."""

    notification_rules: list[RuleJson]
    uses_default: bool


class ProfileJson(MeJson):
    """The caller's account, time zone (of their notification preferences), contact
    methods, notification rules and organisations."""

    timezone: str | None
    contact_methods: list[ContactMethodJson]
    notification_rules: list[RuleJson]


class TestPageJson(TypedDict):
    """What the contact method's receiver answered to a test page."""

    contact_method_id: int
    kind: ContactKind
    ok: bool
    status_code: int | None
    error: str | None


def method_json(row: Row) -> ContactMethodJson:
    # APPSEC: the value only ever leaves masked.
    return {
        "id": row["id"],
        "kind": row["kind"],
        "value": mask(row["kind"], row["value"]),
        "label": row["label"],
        "verified": row["verified"],
        "verified_at": iso(row["verified_at"]),
        "verification_sent_at": iso(row["verification_sent_at"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def rule_json(row: Row) -> RuleJson:
    return {
        "id": row["id"],
        "contact_method_id": row["contact_method_id"],
        "delay_minutes": row["delay_minutes"],
    }


# -- the routes ---------------------------------------------------------------------------


class _Area:
    def __init__(self, store: Store, pager: Pager, mails: TokenBuckets) -> None:
        self._store = store
        self._pager = pager
        self._mails = mails

    async def _method(self, p: Principal, method_id: int) -> Row:
        row = await self._store.get_contact_method(p.user_id, method_id)
        if row is None:
            raise falcon.HTTPNotFound(description="Contact method not found")
        return row

    def _mail_allowed(self, p: Principal, *, spend: bool) -> None:
        """429 when the caller has had too many verification mails lately."""
        wait = self._mails.take(p.user_id) if spend else self._mails.wait(p.user_id)
        if wait:
            raise falcon.HTTPTooManyRequests(
                description="Too many verification mails lately; try again later",
                retry_after=wait,
            )

    def _verification_fields(
        self, p: Principal, kind: str, now: float
    ) -> tuple[dict[str, Any], str | None]:
        """The verification columns of a new (or newly valued) method, and the token to
        mail (None: nothing to mail)."""
        if verified_on_creation(kind):
            return {
                "verified": True,
                "verified_at": now,
                "verification_hash": None,
                "verification_sent_at": None,
            }, None
        fields: dict[str, Any] = {
            "verified": False,
            "verified_at": None,
            "verification_hash": None,
            "verification_sent_at": None,
        }
        if self._pager.smtp is None:
            return fields, None
        self._mail_allowed(p, spend=True)
        token = new_token()
        fields.update(verification_hash=token_hash(token), verification_sent_at=now)
        return fields, token

    async def _verification(self, p: Principal, row: Row, token: str | None) -> Verification:
        """Mail the link when there is one to mail; what became of the verification."""
        if row["verified"]:
            return "verified"
        if self._pager.smtp is None:
            return "smtp_not_configured"
        if token is None:
            return "pending"
        out = await self._pager.send_verification({"email": p.email}, row["value"], token)
        if not out.ok:
            log.warning("verification mail for contact method %s: %s", row["id"], out.error)
            return "send_failed"
        return "sent"


class ProfileResource(_Area):
    response_models: ClassVar = {"get": ProfileJson}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The caller's profile: account, contact methods, rules, organisations."""
        p = principal(req)
        user = await self._store.get_user(p.user_id)
        if user is None:
            raise falcon.HTTPNotFound(description="User not found")
        methods = await self._store.list_contact_methods([p.user_id])
        rules = await self._store.list_notification_rules([p.user_id])
        prefs = user.get("notification_preferences") or {}
        answer: ProfileJson = {
            **me_json(user, await self._store.list_organizations(p.org_ids), p),
            "timezone": prefs.get("timezone"),
            "contact_methods": [method_json(m) for m in methods],
            "notification_rules": [rule_json(r) for r in rules],
        }
        resp.media = answer


class ContactMethodsResource(_Area):
    body_models: ClassVar = {"post": ContactMethodCreate}
    response_models: ClassVar = {"get": list[ContactMethodJson], "post": ContactMethodChangeJson}
    response_status: ClassVar = {"post": 201}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The caller's contact methods (values masked)."""
        rows = await self._store.list_contact_methods([principal(req).user_id])
        resp.media = [method_json(r) for r in rows]

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Add a contact method; an email one is mailed a verification link."""
        p = principal(req)
        body: ContactMethodCreate = parse(ContactMethodCreate, await read_json_object(req))
        try:
            value = normalize_value(body.kind, body.value)
        except ValueError as exc:
            raise field_error("value", str(exc)) from None
        have = await self._store.list_contact_methods([p.user_id])
        if len(have) >= MAX_METHODS:
            raise _full()
        fields, token = self._verification_fields(p, body.kind, time.time())
        row = await self._store.create_contact_method(
            p.user_id,
            {"kind": body.kind, "value": value, "label": body.label, **fields},
            limit=MAX_METHODS,
        )
        if row is None:
            raise _full()
        answer: ContactMethodChangeJson = {
            **method_json(row),
            "verification": await self._verification(p, row, token),
        }
        resp.status = falcon.HTTP_201
        resp.media = answer


def _full() -> ValidationFailed:
    return field_error(
        "value", f"you have the most contact methods one may have ({MAX_METHODS})", "limit_reached"
    )


class ContactMethodResource(_Area):
    body_models: ClassVar = {"patch": ContactMethodUpdate}
    response_models: ClassVar = {
        "get": ContactMethodJson,
        "patch": ContactMethodChangeJson,
        "delete": None,
    }

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, method_id: int
    ) -> None:
        """One of the caller's contact methods (value masked)."""
        resp.media = method_json(await self._method(principal(req), method_id))

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, method_id: int
    ) -> None:
        """Change the label or the value (a new value is verified again)."""
        p = principal(req)
        row = await self._method(p, method_id)
        body: ContactMethodUpdate = parse(ContactMethodUpdate, await read_json_object(req))
        changes = body.changes()
        fields: dict[str, Any] = {}
        token = None
        if "label" in changes:
            fields["label"] = changes["label"]
        if "value" in changes:
            try:
                value = normalize_value(row["kind"], changes["value"])
            except ValueError as exc:
                raise field_error("value", str(exc)) from None
            if value != row["value"]:
                more, token = self._verification_fields(p, row["kind"], time.time())
                fields.update(value=value, **more)
        if fields:
            changed = await self._store.update_contact_method(p.user_id, method_id, fields)
            if changed is None:
                raise falcon.HTTPNotFound(description="Contact method not found")
            row = changed
        answer: ContactMethodChangeJson = {
            **method_json(row),
            "verification": await self._verification(p, row, token),
        }
        resp.media = answer

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, method_id: int
    ) -> None:
        """Remove a contact method (and the rules that name it)."""
        if not await self._store.delete_contact_method(principal(req).user_id, method_id):
            raise falcon.HTTPNotFound(description="Contact method not found")
        resp.status = falcon.HTTP_204


class ResendResource(_Area):
    response_models: ClassVar = {"post": ContactMethodChangeJson}

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, method_id: int
    ) -> None:
        """Mail an unverified email method a new verification link (once a minute)."""
        p = principal(req)
        row = await self._method(p, method_id)
        if row["verified"]:
            raise falcon.HTTPConflict(description="this contact method is verified already")
        token = None
        if self._pager.smtp is not None:
            self._mail_allowed(p, spend=False)
            token = new_token()
            now = time.time()
            renewed, wait = await self._store.renew_verification(
                p.user_id, method_id, token_hash(token), now, resend_after=RESEND_AFTER_S
            )
            if renewed is None:
                raise falcon.HTTPNotFound(description="Contact method not found")
            if wait > 0:
                raise falcon.HTTPTooManyRequests(
                    description="A verification link was mailed less than a minute ago",
                    retry_after=max(1, math.ceil(wait)),
                )
            self._mail_allowed(p, spend=True)
            row = renewed
        answer: ContactMethodChangeJson = {
            **method_json(row),
            "verification": await self._verification(p, row, token),
        }
        resp.media = answer


class TestResource(_Area):
    response_models: ClassVar = {"post": TestPageJson}

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, method_id: int
    ) -> None:
        """Send a test page to a verified contact method; what its receiver answered."""
        p = principal(req)
        row = await self._method(p, method_id)
        if not row["verified"]:
            raise falcon.HTTPConflict(description="verify this contact method first")
        out = await self._pager.test(row, actor=p.email)
        answer: TestPageJson = {
            "contact_method_id": row["id"],
            "kind": row["kind"],
            "ok": out.ok,
            "status_code": out.status_code,
            "error": out.error,
        }
        resp.media = answer


class RulesResource(_Area):
    body_models: ClassVar = {"put": RulesBody}
    response_models: ClassVar = {"get": RulesJson, "put": RulesJson}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """The caller's notification rules."""
        resp.media = _rules(await self._store.list_notification_rules([principal(req).user_id]))

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Replace the caller's notification rules."""
        p = principal(req)
        body: RulesBody = parse(RulesBody, await read_json_object(req))
        mine = {int(m["id"]) for m in await self._store.list_contact_methods([p.user_id])}
        errors, seen = [], set()
        for i, rule in enumerate(body.notification_rules):
            loc = ["body", "notification_rules", i, "contact_method_id"]
            mid = rule.contact_method_id
            if mid not in mine:
                errors.append(
                    {"loc": loc, "msg": f"contact method {mid} not found", "type": "not_found"}
                )
            elif mid in seen:
                errors.append(
                    {
                        "loc": loc,
                        "msg": "names a contact method another rule names",
                        "type": "value_error",
                    }
                )
            seen.add(mid)
        if errors:
            raise ValidationFailed(errors)
        try:
            rows = await self._store.replace_notification_rules(
                p.user_id, [(r.contact_method_id, r.delay_minutes) for r in body.notification_rules]
            )
        except NotFoundError as exc:  # a method deleted meanwhile
            loc = [
                int(x) if x.isdigit() else x for x in (exc.field or "notification_rules").split(".")
            ]
            raise ValidationFailed(
                [{"loc": ["body", *loc], "msg": str(exc), "type": "not_found"}]
            ) from None
        resp.media = _rules(rows)

    on_patch = on_put


def _rules(rows: list[Row]) -> RulesJson:
    return {"notification_rules": [rule_json(r) for r in rows], "uses_default": not rows}


# -- the public verification link ---------------------------------------------------------


def _page(
    resp: falcon.asgi.Response,
    status: str,
    title: str,
    lines: list[str],
    *,
    form_action: str | None = None,
    button: str = "",
) -> None:
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    # The token is in the URL: not cached, not sent on as a Referer.
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("Referrer-Policy", "no-referrer")
    resp.set_header("X-Robots-Tag", "noindex")
    resp.text = render(
        "web_subscription.html",
        title=title,
        lines=lines,
        page_name="tocsin",
        page_url=None,
        form_action=form_action,
        button=button,
    )


def _bad_link(resp: falcon.asgi.Response) -> None:
    _page(
        resp,
        falcon.HTTP_404,
        "This link does not work",
        [
            "The verification link is wrong, used already or expired. Ask for a new one"
            " from your profile in tocsin."
        ],
    )


class VerifyResource:
    auth_public = True
    response_media_type = HTML

    def __init__(self, store: Store) -> None:
        self._store = store

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, token: str
    ) -> None:
        """The link of the verification mail: a button that verifies (a GET changes
        nothing: mail scanners open links, which must not verify an address)."""
        row = None
        if _TOKEN.match(token):
            row = await self._store.contact_method_by_token(
                token_hash(token), time.time() - VERIFY_TTL_S
            )
        if row is None:
            _bad_link(resp)
            return
        _page(
            resp,
            falcon.HTTP_200,
            "Verify your contact method",
            [f"Receive pages from tocsin at {mask(row['kind'], row['value'])}."],
            form_action=CONTACT_VERIFY_PREFIX + urllib.parse.quote(token),
            button="Verify",
        )

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, token: str
    ) -> None:
        """Verify the contact method (the button of the verification page)."""
        row = None
        if _TOKEN.match(token):
            now = time.time()
            row = await self._store.verify_contact_method(
                token_hash(token), now - VERIFY_TTL_S, now
            )
        if row is None:
            _bad_link(resp)
            return
        _page(
            resp,
            falcon.HTTP_200,
            "Contact method verified",
            [f"Pages from tocsin can now reach you at {mask(row['kind'], row['value'])}."],
        )


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    """Add this module's routes."""
    store, pager = ctx.store, ctx.pager
    mails = TokenBuckets(MAIL_RATE, MAIL_BURST)
    app.add_route("/api/profile", ProfileResource(store, pager, mails))
    app.add_route("/api/profile/contact-methods", ContactMethodsResource(store, pager, mails))
    one = f"/api/profile/contact-methods/{{method_id:{ID}}}"
    app.add_route(one, ContactMethodResource(store, pager, mails))
    app.add_route(one + "/verify", ResendResource(store, pager, mails))
    app.add_route(one + "/test", TestResource(store, pager, mails))
    app.add_route("/api/profile/notification-rules", RulesResource(store, pager, mails))
    app.add_route(CONTACT_VERIFY_PREFIX + "{token}", VerifyResource(store))
