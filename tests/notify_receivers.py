"""Real receivers on loopback for the notification tests: one aiohttp server that speaks
for Slack, Discord, Teams, Telegram, PagerDuty, Opsgenie and signed webhooks (each path
checks the payload shape that service expects and refuses anything else with 400), and
an aiosmtpd SMTP server with AUTH that keeps what arrives."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import trustme
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from helpers import free_port, wait_for

WEBHOOK_SECRET = "s3cret-hmac-key"
TELEGRAM_TOKEN = "123456:ABC-token"
PD_ROUTING_KEY = "R0UTINGKEY0000000000000000000000"
OPSGENIE_KEY = "og-api-key-1"
SMTP_USER, SMTP_PASSWORD = "mailer", "mail-pass"


@dataclass
class Hit:
    kind: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    accepted: bool
    problem: str | None = None


def _need(cond: bool, problem: str) -> None:
    if not cond:
        raise ValueError(problem)


def check_shape(kind: str, request_path: str, headers: dict[str, str], raw: bytes) -> Any:
    """The payload as the service would parse it; ValueError naming what is wrong."""
    body = json.loads(raw)
    _need(isinstance(body, dict), "not a JSON object")
    if kind == "slack":
        _need(isinstance(body.get("text"), str) and body["text"], "slack: text missing")
        for a in body.get("attachments", []):
            _need(isinstance(a.get("fields", []), list), "slack: attachment fields")
    elif kind == "discord":
        _need(bool(body.get("content") or body.get("embeds")), "discord: content/embeds")
        _need(len(body.get("content", "")) <= 2000, "discord: content too long")
        embeds = body.get("embeds", [])
        _need(len(embeds) <= 10, "discord: too many embeds")
        for e in embeds:
            _need(len(e.get("title", "")) <= 256, "discord: title too long")
            _need(isinstance(e.get("color", 0), int), "discord: color not an int")
    elif kind == "teams":
        _need(body.get("@type") == "MessageCard", "teams: @type")
        _need(bool(body.get("summary") or body.get("text")), "teams: summary/text")
    elif kind == "telegram":
        _need(request_path == f"/bot{TELEGRAM_TOKEN}/sendMessage", "telegram: path/token")
        _need(bool(body.get("chat_id")) and bool(body.get("text")), "telegram: chat_id/text")
        _need(len(body["text"]) <= 4096, "telegram: text too long")
    elif kind == "pagerduty":
        _need(body.get("routing_key") == PD_ROUTING_KEY, "pagerduty: routing_key")
        _need(body.get("event_action") in ("trigger", "acknowledge", "resolve"), "pd: action")
        _need(isinstance(body.get("dedup_key"), str), "pagerduty: dedup_key")
        if body["event_action"] == "trigger":
            p = body.get("payload") or {}
            _need(bool(p.get("summary")) and bool(p.get("source")), "pd: summary/source")
            _need(p.get("severity") in ("critical", "error", "warning", "info"), "pd: severity")
    elif kind == "opsgenie":
        _need(headers.get("Authorization") == f"GenieKey {OPSGENIE_KEY}", "opsgenie: key")
        if request_path == "/v2/alerts":
            _need(bool(body.get("message")) and len(body["message"]) <= 130, "og: message")
            _need(bool(body.get("alias")), "opsgenie: alias")
        else:
            _need(request_path.endswith(("/close", "/acknowledge")), "opsgenie: path")
    elif kind == "webhook":
        ts = headers.get("X-Tocsin-Timestamp", "")
        _need(ts.isdigit() and abs(time.time() - int(ts)) < 300, "webhook: stale timestamp")
        mac = hmac.new(WEBHOOK_SECRET.encode(), ts.encode() + b"." + raw, hashlib.sha256)
        expected = "sha256=" + mac.hexdigest()
        _need(
            hmac.compare_digest(headers.get("X-Tocsin-Signature", ""), expected),
            "webhook: bad signature",
        )
        _need(body.get("event") == body.get("message", {}).get("event"), "webhook: event")
    return body


def kind_of(path: str) -> str:
    if path.startswith("/bot"):
        return "telegram"
    if path == "/v2/enqueue":
        return "pagerduty"
    if path.startswith("/v2/alerts"):
        return "opsgenie"
    return path.strip("/").split("/")[0]


class Receivers:
    """All webhook-style services on one port. `fail(n)` answers the next n requests
    with 500 (or `status`, with `retry_after`); stop() and start() take it down and up
    on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[Hit] = []
        self._fail = 0
        self._fail_status = 500
        self._retry_after: str | None = None
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail(self, n: int, status: int = 500, retry_after: str | None = None) -> None:
        self._fail, self._fail_status, self._retry_after = n, status, retry_after

    def accepted(self, kind: str | None = None) -> list[Hit]:
        return [h for h in self.hits if h.accepted and (kind is None or h.kind == kind)]

    async def _any(self, request: web.Request) -> web.Response:
        raw = await request.read()
        kind = kind_of(request.path)
        headers = dict(request.headers)
        if self._fail > 0:
            self._fail -= 1
            self.hits.append(Hit(kind, request.path_qs, headers, None, raw, False, "fail"))
            extra = {"Retry-After": self._retry_after} if self._retry_after else {}
            return web.Response(status=self._fail_status, text="try later", headers=extra)
        try:
            body = check_shape(kind, request.path, headers, raw)
        except (ValueError, KeyError, TypeError) as exc:
            self.hits.append(Hit(kind, request.path_qs, headers, None, raw, False, str(exc)))
            return web.json_response({"error": str(exc)}, status=400)
        self.hits.append(Hit(kind, request.path_qs, headers, body, raw, True))
        if kind == "telegram":
            return web.json_response({"ok": True, "result": {"message_id": len(self.hits)}})
        if kind == "pagerduty":
            return web.json_response(
                {"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]},
                status=202,
            )
        if kind == "opsgenie":
            return web.json_response({"result": "Request will be processed"}, status=202)
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: Message
    user: str | None


@dataclass
class _Handler:
    mails: list[Mail] = field(default_factory=list)
    logins: dict[int, str] = field(default_factory=dict)

    def authenticator(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            self.logins[id(session)] = SMTP_USER
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        user = self.logins.get(id(session)) if session.authenticated else None
        self.mails.append(
            Mail(
                str(envelope.mail_from),
                [str(r) for r in envelope.rcpt_tos],
                message_from_bytes(content),
                user,
            )
        )
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """aiosmtpd on loopback: STARTTLS (a throwaway CA's certificate) and AUTH required."""

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = _Handler()
        ca = trustme.CA()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self.handler.authenticator,
            auth_required=True,
            tls_context=tls,
            require_starttls=True,
        )

    @property
    def mails(self) -> list[Mail]:
        return self.handler.mails

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


async def settle(seconds: float) -> None:
    """Give a process time to (wrongly) do more; used only to show nothing else came."""
    await asyncio.sleep(seconds)


# -- reading what arrived ---------------------------------------------------------------------


def text_of(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True)
            assert isinstance(raw, bytes)
            return raw.decode()
    raise AssertionError("no text/plain part")


def mails_to(smtp: SmtpReceiver, address: str) -> list[Message]:
    return [m.message for m in smtp.mails if address in m.recipients]


async def mail_to(
    smtp: SmtpReceiver, address: str, subject_part: str, timeout: float = 40.0
) -> Message:
    """The first mail to `address` whose subject holds `subject_part`, once it arrives."""

    async def found() -> Message | None:
        for msg in mails_to(smtp, address):
            if subject_part in str(msg["Subject"]):
                return msg
        return None

    msg: Message = await wait_for(found, timeout=timeout)
    return msg
