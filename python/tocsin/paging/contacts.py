"""A person's contact methods and how pages reach them (docs/profile.md): the kinds a
person can receive and the sender config each one's value becomes, their validation,
how a value is shown (masked), verification tokens, and the outbox rows that page users
about an incident (`plan_pages`).

- Kinds: `email` (sent with the server's own SMTP settings; unverified until the link
  mailed to it is followed), `webhook`, `slack`, `discord`, `teams` (the URL to post to)
  and `telegram` (a Bot API URL `https://api.telegram.org/bot<token>/sendMessage?
  chat_id=<chat>`, which carries both the bot's token and the chat); these are verified
  when created (the person pasted a URL of their own; `…/test` tries it).
- Values are sealed at rest by the store and never shown whole: `e•••@example.com`,
  `https://hooks.example.com/•••`.
- Notification rules: `(contact method, delay in minutes)`; a person without any rule
  (or whose rules name no verified method) is paged on every verified method at once.
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, Protocol, get_args

from tocsin.notify.channels import message, validate_config
from tocsin.notify.router import check_links
from tocsin.notify.router import public_url as default_public_url
from tocsin.notify.subscribers import normalize_email, token_hash
from tocsin.store.base import Principal, Row

__all__ = [
    "KINDS",
    "MASK",
    "MAX_DELAY_MINUTES",
    "MAX_METHODS",
    "MAX_VALUE",
    "PAGE",
    "RESEND_AFTER_S",
    "VERIFY_TTL_S",
    "ContactKind",
    "check_info",
    "incident_links",
    "mask",
    "new_token",
    "normalize_value",
    "page_summaries",
    "plan_pages",
    "schedule",
    "sender_config",
    "token_hash",
    "verified_on_creation",
]

ContactKind = Literal["email", "webhook", "slack", "discord", "teams", "telegram"]
KINDS: tuple[str, ...] = get_args(ContactKind)
# The outbox payload kind of a page (notify/worker.py hands these rows to the Pager).
PAGE = "page"
MASK = "•••"
MAX_METHODS = 20
MAX_VALUE = 2000
MAX_DELAY_MINUTES = 1440
# A verification link works this long; another one is mailed at most this often.
VERIFY_TTL_S = 86_400.0
RESEND_AFTER_S = 60.0
_URL_KEY = {
    "webhook": "url",
    "slack": "webhook_url",
    "discord": "webhook_url",
    "teams": "webhook_url",
}
_TELEGRAM_PATH = "/sendMessage"


def verified_on_creation(kind: str) -> bool:
    """Whether a method of this kind is verified when created (all but email)."""
    return kind != "email"


def sender_config(kind: str, value: str) -> dict[str, Any]:
    """The config `notify.channels.Sender` sends a non-email method's messages with."""
    if kind == "telegram":
        parts = urllib.parse.urlsplit(value)
        token = parts.path.removeprefix("/bot").removesuffix(_TELEGRAM_PATH)
        chat = urllib.parse.parse_qs(parts.query).get("chat_id", [""])[0]
        return {
            "api_base_url": f"{parts.scheme}://{parts.netloc}",
            "bot_token": token,
            "chat_id": chat,
        }
    return {_URL_KEY[kind]: value}


def normalize_value(kind: str, raw: str) -> str:
    """The value to store for `kind`; ValueError saying what is wrong with it."""
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_VALUE:
        raise ValueError(f"must be at most {MAX_VALUE} characters")
    if kind == "email":
        address = normalize_email(value)
        if address is None:
            raise ValueError("must be an email address")
        return address
    if kind == "telegram":
        parts = urllib.parse.urlsplit(value)
        if not parts.path.startswith("/bot") or not parts.path.endswith(_TELEGRAM_PATH):
            raise ValueError(
                "must be a Telegram Bot API URL:"
                " https://api.telegram.org/bot<token>/sendMessage?chat_id=<chat id>"
            )
    config, errors = validate_config(kind, sender_config(kind, value))
    if errors:
        field = errors[0]["loc"][-1]
        what = "" if field in ("url", "webhook_url") else f"{field}: "
        raise ValueError(f"{what}{errors[0]['msg']}")
    return value if kind == "telegram" else str(config[_URL_KEY[kind]])


def mask(kind: str, value: str) -> str:
    """How a value is shown: an address's first character and its domain, a URL's
    scheme and host."""
    if kind == "email":
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}{MASK}@{domain}"
    parts = urllib.parse.urlsplit(value)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}/{MASK}"


def new_token() -> str:
    """A verification token (only its SHA-256, `token_hash`, is stored)."""
    return secrets.token_urlsafe(24)


# -- planning pages ----------------------------------------------------------------------


def schedule(rules: Sequence[Mapping[str, Any]], verified: Sequence[int]) -> list[tuple[int, int]]:
    """`(contact method id, delay in minutes)` to page one person by, earliest first: the
    rules that name a verified method (each method once, at its earliest delay); with
    none, every verified method at once."""
    usable = set(verified)
    delays: dict[int, int] = {}
    for rule in rules:
        mid = int(rule["contact_method_id"])
        if mid in usable:
            delay = int(rule["delay_minutes"])
            delays[mid] = min(delay, delays.get(mid, delay))
    if not delays:
        delays = dict.fromkeys(usable, 0)
    return sorted(delays.items(), key=lambda item: (item[1], item[0]))


def incident_links(incident: Mapping[str, Any], base: str) -> dict[str, str]:
    """Links to an incident: its check's (as channels link), or none for an incident
    that has no check (inbound events)."""
    check_id = incident.get("check_id")
    return check_links(check_id, base) if check_id is not None else {}


def check_info(check: Mapping[str, Any] | None) -> dict[str, Any]:
    if check is None:
        return {}
    return {k: check.get(k) for k in ("name", "type", "url", "host")}


class PeopleReads(Protocol):
    """What planning pages reads: the store, or a cache of it over one batch of steps
    (`paging/escalation.py`)."""

    async def principal_for_user(self, user_id: int) -> Principal | None: ...

    async def list_contact_methods(
        self, user_ids: Collection[int], *, verified_only: bool = False
    ) -> list[Row]: ...

    async def list_notification_rules(self, user_ids: Collection[int]) -> list[Row]: ...

    async def get_check(self, org_ids: Collection[int], check_id: int) -> Row | None: ...


async def plan_pages(
    store: PeopleReads,
    incident: Mapping[str, Any],
    user_ids: Sequence[int],
    *,
    at: float,
    key: str,
    step: Mapping[str, Any] | None = None,
    event: str | None = None,
    public_url: str | None = None,
) -> list[dict[str, Any]]:
    """The outbox rows that page `user_ids` about `incident` (a row of `incidents`; its
    id may be unknown yet: the store fills `{incident}` in the dedup key and
    `incident_id` in the payload), in the shape `Router.plan` returns. Each person is
    paged on the verified methods their notification rules name, each at `at` plus its
    delay (without rules: every verified method at once). People who are not active
    members of the incident's organisation are skipped. `key` is unique per incident
    step (`"{incident}:r0:s1"`): the outbox's unique dedup key makes each page go out
    once. `event` is the message's (default: `opened`, or `escalated` with a `step`)."""
    org_id = int(incident["organization_id"])
    reachable: list[int] = []
    for uid in dict.fromkeys(int(u) for u in user_ids):
        p = await store.principal_for_user(uid)
        if p is not None and org_id in p.roles:
            reachable.append(uid)
    if not reachable:
        return []
    methods: dict[int, Row] = {
        int(m["id"]): m for m in await store.list_contact_methods(reachable, verified_only=True)
    }
    rules = await store.list_notification_rules(reachable)
    check_id = incident.get("check_id")
    check = await store.get_check([org_id], int(check_id)) if check_id is not None else None
    m = message(
        event=event or ("opened" if step is None else "escalated"),
        incident={**incident, "organization_id": org_id},
        check=check_info(check),
        links=incident_links(incident, public_url or default_public_url()),
        at=at,
    )
    rows: list[dict[str, Any]] = []
    for uid in reachable:
        verified = [mid for mid, row in methods.items() if int(row["user_id"]) == uid]
        mine = [r for r in rules if int(r["user_id"]) == uid]
        for mid, delay in schedule(mine, verified):
            method = methods[mid]
            payload: dict[str, Any] = {
                "kind": PAGE,
                "user_id": uid,
                "contact_method_id": mid,
                "method_kind": method["kind"],
                "masked": mask(method["kind"], method["value"]),
                "message": m,
            }
            if step is not None:
                payload["step"] = dict(step)
            rows.append(
                {
                    "channel_id": None,
                    "check_id": check_id,
                    "event": PAGE,
                    "dedup_key": f"page:{key}:{uid}:{mid}",
                    "payload": payload,
                    "status": "pending",
                    "next_attempt_at": at + delay * 60.0,
                }
            )
    return rows


def page_summaries(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What an incident's timeline tells of the pages among these outbox rows:
    `{user_id, contact_method_id, kind, to, at}` each (`to` masked: never the contact
    method's value; `at` when it is due)."""
    out = []
    for row in rows:
        p = row["payload"]
        if p.get("kind") != PAGE:
            continue
        out.append(
            {
                "user_id": p["user_id"],
                "contact_method_id": p["contact_method_id"],
                "kind": p["method_kind"],
                "to": p["masked"],
                "at": row["next_attempt_at"],
            }
        )
    return out
