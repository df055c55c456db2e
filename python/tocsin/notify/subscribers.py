"""Mails to the subscribers of status pages: the server's own SMTP settings, the tokens of
the double opt-in and of unsubscribing, the rendered mails, and how they go through the
outbox (docs/subscriptions.md).

- Subscribing writes the subscriber (unconfirmed, only the hash of its confirmation
  token) and its confirmation mail in one transaction (`Store.subscribe`).
- An incident opened or resolved on a check that a public page with confirmed
  subscribers shows gets ONE extra outbox row in the incident's own transaction (planned
  by `Router.plan`, see `incident_fanout`): a *fan-out* row (`channel_id` NULL, payload
  `kind: subscriber_fanout`). Maintenance windows get the same row when created (the API
  calls `window_scheduled`) and when an occurrence opens (a task watching the
  `WindowBook`, dedup key per occurrence).
- The outbox worker hands a fan-out row to `expand`: one row per confirmed subscriber of
  the pages concerned (`kind: subscriber_mail`, dedup key `{fan-out key}:sub:{id}`), so a
  fan-out expanded twice (a crash before it was settled) adds nothing; then `send` sends
  each with the server's SMTP settings (`send_mail`, as the email channel does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import email.message
import email.policy
import email.utils
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from tocsin.notify.channels import Outcome, send_mail
from tocsin.store.base import Row, Store, StoreUnavailableError
from tocsin.windows import WindowBook, engine_window

log = logging.getLogger("tocsin.notify")

FANOUT = "subscriber_fanout"
MAIL = "subscriber_mail"
KINDS = (FANOUT, MAIL)
# A confirmation link works this long; an unconfirmed subscriber is removed after it.
CONFIRM_TTL_S = 7 * 86_400.0
# A second subscribe of an unconfirmed address within this time sends no second mail.
RESEND_AFTER_S = 300.0
MAX_SUBSCRIBERS_PER_PAGE = 100_000
# An occurrence of a window that opened longer ago than this (the server was down) is
# not announced any more.
STARTED_GRACE_S = 3600.0
# A window created this recently is announced by the watcher if the API's own call did
# not get through (the dedup key makes it once).
SCHEDULED_CATCH_UP_S = 86_400.0
EXPAND_CHUNK = 1000
EMAIL_MAX = 254
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"
)
_TOKEN = re.compile(r"^([0-9]{1,19})\.([A-Za-z0-9_-]{16,64})$")
_PLACEHOLDER = "https://unsubscribe.invalid/__tocsin_unsubscribe__"
_POLICY = email.policy.default.clone(max_line_length=998)

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, /, **values: Any) -> str:
    return TEMPLATES.get_template(template).render(**values)


# -- settings ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where the server's own mails go: `smtp://[user[:password]@]host[:port]` (STARTTLS
    when the server offers it; `?starttls=1` requires it, `?starttls=0` never tries),
    `smtps://…` (implicit TLS, port 465); `?tls_verify=0` accepts any certificate;
    `?from=address` (or `from_address`) the sender."""

    host: str
    port: int
    username: str | None
    password: str | None
    security: str  # tls | starttls | auto | none
    tls_verify: bool
    from_address: str

    @classmethod
    def parse(cls, url: str, from_address: str | None = None) -> SmtpSettings:
        try:
            parts = urllib.parse.urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"--smtp-url: {exc}") from None
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("--smtp-url must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("--smtp-url names no host")
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(query) - {"starttls", "tls_verify", "from"}
        if unknown:
            raise ValueError(f"--smtp-url: unknown parameter(s) {', '.join(sorted(unknown))}")

        def flag(name: str) -> bool | None:
            raw = query.get(name)
            if raw is None:
                return None
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"--smtp-url: {name} must be 1 or 0, got {raw!r}")

        starttls = flag("starttls")
        if parts.scheme == "smtps":
            if starttls:
                raise ValueError("--smtp-url: smtps:// is TLS already; starttls does not apply")
            security = "tls"
        else:
            security = {True: "starttls", False: "none", None: "auto"}[starttls]
        if port is None:
            port = 465 if security == "tls" else (587 if security == "starttls" else 25)
        sender = (from_address or query.get("from") or "").strip()
        if not sender:
            sender = f"tocsin@{parts.hostname}"
        if not valid_email(sender):
            raise ValueError(f"the SMTP sender {sender!r} is not an email address")
        return cls(
            host=parts.hostname,
            port=port,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
            security=security,
            tls_verify=flag("tls_verify") is not False,
            from_address=sender,
        )

    def describe(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{self.security} {user}{self.host}:{self.port} from {self.from_address}"

    async def send(
        self,
        to: str,
        subject: str,
        text: str,
        *,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
        send_timeout: float = 10.0,
    ) -> Outcome:
        """One of the server's own mails (to a status page subscriber, a person paged or
        an address to verify); never raises: a network error is a retry, and the error
        never holds the SMTP password."""
        # Long header lines stay whole (a folded List-Unsubscribe URL would become encoded
        # words no mail client reads as a link); 998 is SMTP's line limit.
        msg = email.message.EmailMessage(policy=_POLICY)
        # Names typed by users may hold line breaks: never in a header.
        msg["Subject"] = one_line(subject)
        msg["From"] = self.from_address
        msg["To"] = to
        msg["Date"] = email.utils.formatdate(usegmt=True)
        msg["Message-ID"] = email.utils.make_msgid(domain="tocsin")
        msg["Auto-Submitted"] = "auto-generated"
        for name, value in (headers or {}).items():
            msg[name] = one_line(value)
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        try:
            out = await send_mail(
                # Flattened here: aiosmtplib would fold long headers at 78 characters.
                msg.as_bytes(policy=_POLICY.clone(linesep="\r\n")),
                [to],
                sender=self.from_address,
                host=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                security=self.security,
                tls_verify=self.tls_verify,
                send_timeout=send_timeout,
            )
        except Exception as exc:  # network errors (and anything unforeseen): try again
            out = Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500], retry=True)
        if out.error and self.password:
            out.error = out.error.replace(self.password, "[redacted]")
        return out


def parse_public_url(url: str) -> str:
    """The base of links in mails: an absolute http(s) URL, without a trailing slash."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ValueError(f"--public-url must be an http:// or https:// URL, got {url!r}")
    return url.strip().rstrip("/")


def normalize_email(raw: Any) -> str | None:
    """The address to store (domain in lower case), or None when it is not one."""
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    if not valid_email(value):
        return None
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def valid_email(value: str) -> bool:
    if len(value) > EMAIL_MAX or not _EMAIL.match(value):
        return False
    domain = value.rpartition("@")[2]
    return "." in domain and ".." not in value and all(len(p) <= 63 for p in domain.split("."))


# -- tokens ------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: Any) -> tuple[int, str] | None:
    """`{subscriber id}.{secret}` -> (id, secret), or None."""
    if not isinstance(token, str):
        return None
    m = _TOKEN.match(token.strip())
    if m is None or int(m.group(1)) < 1 or int(m.group(1)) > 2**63 - 1:
        return None
    return int(m.group(1)), m.group(2)


class Tokens:
    """Confirmation tokens are random (only their SHA-256 is stored); unsubscribe tokens
    are an HMAC over (subscriber id, email) with a key derived from the server's session
    key, so nothing is stored and a new subscription (a new id) gets a new token."""

    def __init__(self, session_key: bytes) -> None:
        self._key = hmac.new(session_key, b"tocsin status page subscriptions", "sha256").digest()

    @staticmethod
    def new_confirmation() -> str:
        return secrets.token_urlsafe(24)

    def unsubscribe(self, subscriber_id: int, email: str) -> str:
        mac = hmac.new(self._key, f"unsubscribe:{subscriber_id}:{email}".encode(), "sha256")
        return f"{subscriber_id}.{_b64(mac.digest()[:18])}"

    def unsubscribe_ok(self, token: str, subscriber: Mapping[str, Any]) -> bool:
        return hmac.compare_digest(
            self.unsubscribe(int(subscriber["id"]), str(subscriber["email"])), token.strip()
        )


# -- pages and checks --------------------------------------------------------------------


def page_checks(page: Mapping[str, Any]) -> dict[int, str | None]:
    """The checks a page shows -> the display name its components give them (or None):
    `check_ids`, and every `check_id` / `check_ids` found in `components`."""
    out: dict[int, str | None] = {}
    for cid in page.get("check_ids") or []:
        if isinstance(cid, int) and not isinstance(cid, bool):
            out.setdefault(cid, None)

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            cid = node.get("check_id")
            if isinstance(cid, int) and not isinstance(cid, bool):
                name = node.get("display_name") or node.get("name")
                out[cid] = name if isinstance(name, str) and name else out.get(cid)
            for key, value in node.items():
                if key == "check_ids" and isinstance(value, list):
                    for c in value:
                        if isinstance(c, int) and not isinstance(c, bool):
                            out.setdefault(c, None)
                elif isinstance(value, list | dict):
                    walk(value)

    walk(page.get("components") or [])
    return out


def _when(ts: Any) -> str:
    if ts is None:
        return "unknown"
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def incident_fanout(
    org_id: int,
    incident: Mapping[str, Any],
    event: str,
    *,
    at: float,
    check: Mapping[str, Any],
    suppressed: str | None,
) -> dict[str, Any] | None:
    """The fan-out outbox row of an incident change, planned with the channels' rows (the
    store fills `{incident}` and `incident_id`); None for other events."""
    check_id = incident.get("check_id")
    if event not in ("opened", "resolved") or check_id is None:
        return None
    payload: dict[str, Any] = {
        "kind": FANOUT,
        "event": event,
        "summary": f"status page subscribers: incident {event}",
        "check": {"id": check_id, "name": check.get("name") or f"check {check_id}"},
        "incident": {
            # Never the cause or the title: they carry the probe's error text and the
            # check's internal name, which the public does not see (as on the page).
            "severity": incident.get("severity"),
            "started_at": incident.get("started_at"),
            "resolved_at": incident.get("resolved_at") if event == "resolved" else None,
        },
        "at": at,
    }
    row = {
        "channel_id": None,
        "check_id": check_id,
        "event": f"subscribers_{event}",
        "dedup_key": f"incident:{{incident}}:{event}:subscribers",
        "payload": payload,
        "status": "pending",
        "next_attempt_at": at,
    }
    if suppressed is not None:
        row["status"], payload["suppressed"] = "suppressed", suppressed
    return row


def window_occurrence(window: Any, now: float) -> tuple[float, float] | None:
    """The open occurrence (start, end) of a `MaintenanceWindow`, else the next one."""
    if window.active_at(now):
        end = window.next_change(now)
        if end is None:
            return float(window.start), float(window.start + window.duration)
        return float(end - window.duration), float(end)
    start = window.next_change(now)
    if start is None:
        return None
    return float(start), float(start + window.duration)


# -- the service -------------------------------------------------------------------------


class SubscriberMail:
    """Subscriptions and the mails to subscribers, over the store and the outbox."""

    def __init__(
        self,
        store: Store,
        windows: WindowBook,
        session_key: bytes,
        *,
        smtp: SmtpSettings | None = None,
        public_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._windows = windows
        self.tokens = Tokens(session_key)
        self.smtp = smtp
        self.public_url = (public_url or "http://localhost:8080").rstrip("/")
        self.timeout = timeout
        self.tick = float(os.environ.get("TOCSIN_SUBSCRIBERS_TICK_S", "5") or 5)
        # (org id, check id) shown on a public page with a confirmed subscriber; None
        # until first read (then every incident plans its fan-out row, to lose nothing).
        self._watched: set[tuple[int, int]] | None = None
        self._announced: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._warned = False
        self.on_queued: list[Any] = []

    # -- links -----------------------------------------------------------------------

    def page_url(self, page: Mapping[str, Any]) -> str:
        return f"{self.public_url}/status/{urllib.parse.quote(str(page['slug']))}"

    def confirm_url(self, page: Mapping[str, Any], token: str) -> str:
        return f"{self.page_url(page)}/confirm?token={token}"

    def unsubscribe_url(self, page: Mapping[str, Any], subscriber: Mapping[str, Any]) -> str:
        token = self.tokens.unsubscribe(int(subscriber["id"]), str(subscriber["email"]))
        return f"{self.page_url(page)}/unsubscribe?token={token}"

    # -- subscribing -----------------------------------------------------------------

    async def subscribe(self, page: Row, email_addr: str, now: float | None = None) -> str:
        """Subscribe (double opt-in): what `Store.subscribe` answered (`full` when the
        page has no room)."""
        now = time.time() if now is None else now
        secret = self.tokens.new_confirmation()

        def confirmation(sub: Row) -> dict[str, Any]:
            token = f"{sub['id']}.{secret}"
            values = {
                "page": _page_view(page, self.page_url(page)),
                "confirm_url": self.confirm_url(page, token),
                "expires_days": int(CONFIRM_TTL_S // 86_400),
            }
            subject = f"Confirm your subscription to {page['name']}"
            return {
                "event": "subscription_confirm",
                "dedup_key": f"subscriber:{sub['id']}:confirm:{token_hash(secret)[:16]}",
                "payload": {
                    "kind": MAIL,
                    "summary": subject,
                    "to": sub["email"],
                    "subject": subject,
                    "text": render("mail_confirm.txt", **values),
                    "html": render("mail_confirm.html", subject=subject, **values),
                    "headers": {},
                },
            }

        _, what = await self._store.subscribe(
            page,
            email_addr,
            token_hash(secret),
            now,
            resend_after=RESEND_AFTER_S,
            max_subscribers=MAX_SUBSCRIBERS_PER_PAGE,
            delivery=confirmation,
        )
        if what in ("new", "renewed"):
            self._queued()
        return what

    async def confirm(self, page: Row, token: Any, now: float | None = None) -> Row | None:
        now = time.time() if now is None else now
        parsed = parse_token(token)
        if parsed is None:
            return None
        sub_id, secret = parsed
        row = await self._store.confirm_subscriber(
            int(page["id"]), sub_id, token_hash(secret), now - CONFIRM_TTL_S, now
        )
        if row is not None:
            self._watch_page(page)
        return row

    async def find_for_unsubscribe(self, page: Row, token: Any) -> Row | None:
        parsed = parse_token(token)
        if parsed is None:
            return None
        sub = await self._store.subscriber(int(page["id"]), parsed[0])
        if sub is None or not self.tokens.unsubscribe_ok(str(token), sub):
            return None
        return sub

    async def page_for_token(self, token: Any) -> Row | None:
        """The page of the subscriber an unsubscribe token names (public or not, under
        whatever slug it has now), or None: the link in a mail keeps working after the
        page is renamed or made private."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        sub = await self._store.subscriber_by_id(parsed[0])
        if sub is None or not self.tokens.unsubscribe_ok(str(token), sub):
            return None
        return await self._store.get(
            "status_pages", [int(sub["organization_id"])], int(sub["status_page_id"])
        )

    async def unsubscribe(self, page: Row, token: Any) -> bool:
        sub = await self.find_for_unsubscribe(page, token)
        if sub is None:
            return False
        return await self._store.delete_subscriber(int(page["id"]), int(sub["id"]))

    # -- planning --------------------------------------------------------------------

    def watched(self, org_id: int, check_id: int | None) -> bool:
        if check_id is None:
            return False
        return self._watched is None or (org_id, int(check_id)) in self._watched

    def _watch_page(self, page: Mapping[str, Any]) -> None:
        if self._watched is not None and page.get("is_public", True):
            org = int(page["organization_id"])
            self._watched.update((org, cid) for cid in page_checks(page))

    async def refresh(self) -> None:
        watched: set[tuple[int, int]] = set()
        for page in await self._store.subscribed_pages():
            org = int(page["organization_id"])
            watched.update((org, cid) for cid in page_checks(page))
        self._watched = watched

    def plan_incident(
        self,
        org_id: int,
        incident: Mapping[str, Any],
        event: str,
        *,
        at: float,
        check: Mapping[str, Any],
        suppressed: str | None,
    ) -> dict[str, Any] | None:
        if not self.watched(org_id, incident.get("check_id")):
            return None
        return incident_fanout(org_id, incident, event, at=at, check=check, suppressed=suppressed)

    async def window_scheduled(self, row: Mapping[str, Any], now: float | None = None) -> None:
        """Announce a window just stored (by the API): once per window."""
        now = time.time() if now is None else now
        await self._queue_window(row, "scheduled", now)

    async def _queue_window(
        self, row: Mapping[str, Any], event: str, now: float, occurrence: float | None = None
    ) -> bool:
        org = int(row["organization_id"])
        if not row.get("is_active", True):
            return False
        if not any(self.watched(org, int(c)) for c in row.get("check_ids") or []):
            return False  # no page with a confirmed subscriber shows its checks
        window = engine_window(dict(row))
        span = window_occurrence(window, now)
        if span is None:
            return False
        start, end = span
        if occurrence is not None:
            start, end = occurrence, occurrence + float(window.duration)
        key = f"maintenance:{row['id']}:{event}"
        if event == "started":
            key += f":{int(start)}"
        if key in self._announced:
            return False
        payload = {
            "kind": FANOUT,
            "event": f"maintenance_{event}",
            "summary": f"status page subscribers: maintenance {event}",
            "window": {
                "id": row["id"],
                "name": row.get("name") or "Maintenance",
                "description": row.get("description") or "",
                "check_ids": list(row.get("check_ids") or []),
                "starts_at": start,
                "ends_at": end,
                "recurring": bool(row.get("rrule") or row.get("cron")),
            },
            "at": now,
        }
        await self._store.queue_deliveries(
            org, [{"event": f"maintenance_{event}", "dedup_key": key, "payload": payload}]
        )
        self._announced.add(key)
        if len(self._announced) > 100_000:
            self._announced.clear()
        self._queued()
        return True

    def _queued(self) -> None:
        for fn in self.on_queued:
            fn()

    # -- the watcher: windows opening, stale unconfirmed subscribers ----------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tocsin-subscribers")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        last_purge = 0.0
        while True:
            try:
                await self.refresh()
                now = time.time()
                await self.watch_windows(now)
                if now - last_purge > 3600:
                    removed = await self._store.purge_unconfirmed_subscribers(now - CONFIRM_TTL_S)
                    if removed:
                        log.info("removed %d unconfirmed status page subscribers", removed)
                    last_purge = now
            except asyncio.CancelledError:
                raise
            except StoreUnavailableError as exc:
                log.warning("status page subscribers wait for the database: %s", exc)
            except Exception:
                log.exception("status page subscriber watcher failed; retrying")
            await asyncio.sleep(self.tick)

    async def watch_windows(self, now: float) -> int:
        """Queue `started` for each window occurrence open now (and recently opened), and
        `scheduled` for windows created recently whose announcement is missing."""
        queued = 0
        for row, window in self._windows.snapshot():
            try:
                if now - float(row.get("created_at") or 0) < SCHEDULED_CATCH_UP_S:
                    queued += await self._queue_window(row, "scheduled", now)
                if window.active_at(now):
                    span = window_occurrence(window, now)
                    if span is not None and now - span[0] <= STARTED_GRACE_S:
                        queued += await self._queue_window(row, "started", now, span[0])
            except (StoreUnavailableError, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("announcing maintenance window %s failed", row.get("id"))
        return queued

    # -- the outbox worker's side ----------------------------------------------------

    async def deliver(self, row: Row) -> Outcome:
        payload = row["payload"] or {}
        if payload.get("kind") == FANOUT:
            return await self.expand(row)
        return await self.send(payload)

    async def expand(self, row: Row) -> Outcome:
        """One mail row per confirmed subscriber of the organisation's public pages that
        show the checks concerned (dedup keys make a second expansion add nothing)."""
        payload = row["payload"] or {}
        org = int(row["organization_id"])
        if payload.get("window") is not None:
            checks = [int(c) for c in payload["window"].get("check_ids") or []]
        else:
            checks = [int(payload["check"]["id"])]
        pages = await self._pages_showing(org, checks)
        mails = 0
        for page in pages:
            shown = page_checks(page)
            names = [shown.get(c) or _check_name(payload, c) for c in checks if c in shown]
            subject, text, html = self._render_event(page, payload, names, row)
            after = 0
            while True:
                subs = await self._store.confirmed_subscribers(
                    [int(page["id"])], after_id=after, limit=EXPAND_CHUNK
                )
                if not subs:
                    break
                after = int(subs[-1]["id"])
                rows = []
                for sub in subs:
                    link = self.unsubscribe_url(page, sub)
                    rows.append(
                        {
                            "check_id": row.get("check_id"),
                            "event": row["event"],
                            "dedup_key": f"{row['dedup_key']}:sub:{sub['id']}",
                            "payload": {
                                "kind": MAIL,
                                "summary": subject,
                                "to": sub["email"],
                                "subject": subject,
                                "text": text.replace(_PLACEHOLDER, link),
                                "html": html.replace(_PLACEHOLDER, link),
                                "headers": {
                                    "List-Unsubscribe": f"<{link}>",
                                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                                },
                            },
                        }
                    )
                await self._store.queue_deliveries(org, rows)
                mails += len(rows)
                if len(subs) < EXPAND_CHUNK:
                    break
        if mails:
            self._queued()
        return Outcome(True, None, response=f"{mails} subscriber mails queued")

    async def _pages_showing(self, org: int, checks: Iterable[int]) -> list[Row]:
        wanted = set(checks)
        out, offset = [], 0
        while True:
            rows = await self._store.select("status_pages", [org], limit=500, offset=offset)
            out += [p for p in rows if p.get("is_public") and wanted & set(page_checks(p))]
            if len(rows) < 500:
                return out
            offset += 500

    def _render_event(
        self, page: Row, payload: Mapping[str, Any], names: list[str], row: Row
    ) -> tuple[str, str, str]:
        event = str(payload["event"])
        view = _page_view(page, self.page_url(page))
        what = ", ".join(names) or "a component"
        if event in ("opened", "resolved"):
            inc = payload.get("incident") or {}
            subject = (
                f"[{page['name']}] Incident: {what} is having problems"
                if event == "opened"
                else f"[{page['name']}] Resolved: {what} is back to normal"
            )
            values: dict[str, Any] = {
                "event": event,
                "components": names,
                "started": _when(inc.get("started_at")),
                "resolved": _when(inc.get("resolved_at") or payload.get("at")),
                "incident_id": (payload.get("incident_id") or row.get("incident_id")),
            }
            template = "mail_incident"
        else:
            window = payload["window"]
            kind = event.removeprefix("maintenance_")
            subject = (
                f"[{page['name']}] Scheduled maintenance: {window['name']}"
                if kind == "scheduled"
                else f"[{page['name']}] Maintenance started: {window['name']}"
            )
            values = {
                "event": kind,
                "components": names,
                "name": window["name"],
                "description": window.get("description") or "",
                "starts": _when(window["starts_at"]),
                "ends": _when(window["ends_at"]),
                "recurring": bool(window.get("recurring")),
            }
            template = "mail_maintenance"
        values.update(page=view, unsubscribe_url=_PLACEHOLDER, subject=subject)
        return subject, render(f"{template}.txt", **values), render(f"{template}.html", **values)

    async def send(self, payload: Mapping[str, Any]) -> Outcome:
        smtp = self.smtp
        if smtp is None:
            if not self._warned:
                self._warned = True
                log.error(
                    "mails to status page subscribers cannot be sent: no SMTP server is"
                    " configured (tocsin serve --smtp-url / TOCSIN_SMTP_URL)"
                )
            return Outcome(
                False,
                None,
                "no SMTP server configured for subscriber mails (--smtp-url / TOCSIN_SMTP_URL)",
                retry=False,
            )
        return await smtp.send(
            str(payload["to"]),
            str(payload["subject"]),
            str(payload["text"]),
            html=str(payload["html"]),
            headers={str(k): str(v) for k, v in (payload.get("headers") or {}).items()},
            send_timeout=self.timeout,
        )


def _check_name(payload: Mapping[str, Any], check_id: int) -> str:
    check = payload.get("check") or {}
    if check.get("id") == check_id and check.get("name"):
        return str(check["name"])
    return f"check {check_id}"


def _page_view(page: Mapping[str, Any], url: str) -> dict[str, Any]:
    return {"name": page["name"], "url": url, "logo_url": page.get("logo_url")}


def one_line(text: str) -> str:
    """A header value: control characters (line breaks among them) become spaces."""
    return "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text).strip()
