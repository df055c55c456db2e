"""Channel types: each one's validated config, the message it sends for an incident
transition, and how it is sent (aiohttp for the HTTP services, aiosmtplib for email).

A message is the same dict for every type (see `message()`); each sender formats it the
way its service expects. Every base URL is configurable (`api_base_url`, or the webhook
URL itself), which is how tests point them at receivers on loopback."""

from __future__ import annotations

import datetime as dt
import email.message
import email.utils
import hashlib
import hmac
import html
import json
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import aiohttp
import aiosmtplib
import yarl
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

from tocsin.headers import valid_headers

ChannelType = Literal[
    "email", "slack", "discord", "teams", "telegram", "webhook", "pagerduty", "opsgenie"
]
CHANNEL_TYPES: tuple[str, ...] = get_args(ChannelType)
# Secret config keys per type (all in tocsin.encryption.SECRET_KEYS: stored encrypted).
SECRETS: dict[str, tuple[str, ...]] = {
    "email": ("smtp_password",),
    "slack": ("webhook_url",),
    "discord": ("webhook_url",),
    "teams": ("webhook_url",),
    "telegram": ("bot_token",),
    "webhook": ("secret",),
    "pagerduty": ("routing_key",),
    "opsgenie": ("api_key",),
}
EVENTS = ("opened", "escalated", "acknowledged", "resolved", "reminder", "test")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
SIGNATURE_HEADER = "X-Tocsin-Signature"
TIMESTAMP_HEADER = "X-Tocsin-Timestamp"
DELIVERY_HEADER = "X-Tocsin-Delivery"
EVENT_HEADER = "X-Tocsin-Event"
USER_AGENT = "tocsin-notify/1"


def _http_url(v: str) -> str:
    v = v.strip()
    if not re.match(r"^https?://[^/\s:@]+(:\d+)?(/\S*)?$", v):
        raise ValueError("must be an http:// or https:// URL, without credentials")
    return v.rstrip("/") if v.count("/") == 2 else v


class _Config(BaseModel):
    # Unknown keys are ignored (clients send the union of all types' fields).
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    # Repeat the alert while the incident stays open and unacknowledged (0: never).
    reminder_interval_s: int = Field(default=0, ge=0, le=7 * 86_400)


class _UrlConfig(_Config):
    webhook_url: str

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)


class SlackConfig(_UrlConfig):
    channel: str | None = Field(default=None, max_length=200)
    username: str | None = Field(default=None, max_length=200)


class DiscordConfig(_UrlConfig):
    username: str | None = Field(default=None, max_length=80)


class TeamsConfig(_UrlConfig):
    pass


class TelegramConfig(_Config):
    bot_token: str = Field(min_length=1, max_length=200)
    chat_id: str = Field(min_length=1, max_length=100)
    api_base_url: str = "https://api.telegram.org"

    @field_validator("api_base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v).rstrip("/")

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class WebhookConfig(_Config):
    url: str
    secret: str = Field(default="", max_length=500)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        return valid_headers(v)


class PagerDutyConfig(_Config):
    routing_key: str = Field(min_length=1, max_length=200)
    api_base_url: str = "https://events.pagerduty.com"

    @field_validator("api_base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v).rstrip("/")


class OpsgenieConfig(_Config):
    api_key: str = Field(min_length=1, max_length=200)
    api_base_url: str = "https://api.opsgenie.com"
    responders: list[dict[str, str]] = Field(default_factory=list)

    @field_validator("api_base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v).rstrip("/")


class EmailConfig(_Config):
    smtp_host: str = Field(min_length=1, max_length=253)
    smtp_port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    tls_verify: StrictBool = True
    smtp_username: str = Field(default="", max_length=200)
    smtp_password: str = Field(default="", max_length=500)
    from_address: str
    to_addresses: list[str] = Field(min_length=1, max_length=100)

    @field_validator("from_address")
    @classmethod
    def _from(cls, v: str) -> str:
        if not _EMAIL.match(v):
            raise ValueError("must be an email address")
        return v

    @field_validator("to_addresses")
    @classmethod
    def _to(cls, v: list[str]) -> list[str]:
        for a in v:
            if not _EMAIL.match(a.strip()):
                raise ValueError(f"{a!r} is not an email address")
        return [a.strip() for a in v]


CONFIGS: dict[str, type[_Config]] = {
    "email": EmailConfig,
    "slack": SlackConfig,
    "discord": DiscordConfig,
    "teams": TeamsConfig,
    "telegram": TelegramConfig,
    "webhook": WebhookConfig,
    "pagerduty": PagerDutyConfig,
    "opsgenie": OpsgenieConfig,
}


def validate_config(
    channel_type: str, config: Mapping[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The config as stored (validated, unknown keys dropped), or the errors with
    `loc` ["body", "config", field]."""
    model = CONFIGS[channel_type]
    try:
        return model.model_validate(dict(config)).model_dump(), []
    except ValidationError as exc:
        errors = []
        for e in exc.errors(include_url=False, include_input=False):
            msg = e["msg"].removeprefix("Value error, ")
            errors.append({"loc": ["body", "config", *e["loc"]], "msg": msg, "type": e["type"]})
        return {}, errors


# -- messages ---------------------------------------------------------------------------


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def message(
    *,
    event: str,
    incident: Mapping[str, Any],
    check: Mapping[str, Any] | None,
    links: Mapping[str, str],
    at: float,
    actor: str | None = None,
) -> dict[str, Any]:
    """What every channel type formats: what is down, since when, from which sources,
    the error, and links back to the check. An incident without a check (sent in by
    another tool) is named by its title; its source and component are the target."""
    check = check or {}
    details = incident.get("details") or {}
    checkless = not check.get("name") and incident.get("check_id") is None
    if checkless:
        name = str(incident.get("title") or f"incident {incident.get('id') or ''}".strip())
        where = [str(details[k]) for k in ("source", "component") if details.get(k)]
        target = " / ".join(where) or None
    else:
        name = check.get("name") or f"check {incident.get('check_id')}"
        target = check.get("url") or check.get("host")
    status = {
        "opened": "DOWN" if incident.get("severity") == "critical" else "DEGRADED",
        "escalated": "DOWN",
        "reminder": "DOWN" if incident.get("severity") == "critical" else "DEGRADED",
        "acknowledged": "ACKNOWLEDGED",
        "resolved": "UP",
        "test": "TEST",
    }.get(event, event.upper())
    verb = {
        "opened": f"{name} is {status}",
        "escalated": f"{name} is now DOWN",
        "reminder": f"Reminder: {name} is still {status}",
        "acknowledged": f"{name}: incident acknowledged",
        "resolved": f"{name} has recovered",
        "test": f"Test notification from tocsin for {name}",
    }.get(event, f"{name}: {event}")
    if checkless and event in ("opened", "escalated", "reminder", "resolved"):
        # A title says what happened ("Disk full on db-1"): it is not a thing that is DOWN.
        status = "RESOLVED" if event == "resolved" else "TRIGGERED"
        verb = {
            "opened": f"Incident: {name}",
            "escalated": f"Escalated: {name}",
            "reminder": f"Reminder: still open: {name}",
            "resolved": f"Resolved: {name}",
        }[event]
    return {
        "event": event,
        "summary": verb,
        "status": status,
        "severity": incident.get("severity") or "critical",
        "incident_id": incident.get("id"),
        "incident_title": incident.get("title"),
        "check_id": incident.get("check_id"),
        "check_name": name,
        "check_type": check.get("type"),
        "target": target,
        "organization_id": incident.get("organization_id"),
        "since": _iso(incident.get("started_at")),
        "at": _iso(at),
        "resolved_at": _iso(incident.get("resolved_at")),
        "error": incident.get("cause"),
        "sources": dict(incident.get("sources") or {}),
        "actor": actor,
        "check_link": links.get("check"),
        "check_api_link": links.get("check_api"),
    }


def notice(
    *,
    event: str,
    summary: str,
    status: str,
    organization_id: int,
    at: float,
    severity: str = "warning",
    check: Mapping[str, Any] | None = None,
    target: str | None = None,
    error: str | None = None,
    links: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A message that is not an incident's transition (an SLO crossing its budget, a
    product nearing end of life, a playbook's notification): the same keys as
    `message`, so every channel type formats it; `extra` adds keys (kept in webhook
    bodies)."""
    check = check or {}
    links = links or {}
    return {
        "event": event,
        "summary": summary,
        "status": status,
        "severity": severity,
        "incident_id": None,
        "incident_title": None,
        "check_id": check.get("id"),
        "check_name": check.get("name") or summary,
        "check_type": check.get("type"),
        "target": target or check.get("url") or check.get("host"),
        "organization_id": organization_id,
        "since": None,
        "at": _iso(at),
        "resolved_at": None,
        "error": error,
        "sources": {},
        "actor": None,
        "check_link": links.get("check"),
        "check_api_link": links.get("check_api"),
        **(extra or {}),
    }


def text(m: Mapping[str, Any]) -> str:
    lines = [m["summary"]]
    if m.get("since"):
        lines.append(f"Since: {m['since']}")
    if m.get("event") == "resolved" and m.get("resolved_at"):
        lines.append(f"Recovered: {m['resolved_at']}")
    if m.get("target"):
        lines.append(f"Target: {m['target']}")
    if m.get("sources"):
        lines.append("Sources: " + ", ".join(f"{k} {v}" for k, v in sorted(m["sources"].items())))
    if m.get("error"):
        lines.append(f"Error: {m['error']}")
    if m.get("actor"):
        lines.append(f"By: {m['actor']}")
    if m.get("check_link"):
        lines.append(f"Check: {m['check_link']}")
    return "\n".join(lines)


def _color(m: Mapping[str, Any]) -> tuple[str, int]:
    if m["event"] == "resolved":
        return "#2eb67d", 0x2EB67D
    if m["event"] == "acknowledged":
        return "#ecb22e", 0xECB22E
    if m["severity"] == "warning":
        return "#f2c744", 0xF2C744
    return "#e01e5a", 0xE01E5A


def _facts(m: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = [("Status", str(m["status"]))]
    if m.get("since"):
        facts.append(("Since", str(m["since"])))
    if m.get("target"):
        facts.append(("Target", str(m["target"])))
    if m.get("sources"):
        facts.append(("Sources", ", ".join(f"{k}: {v}" for k, v in sorted(m["sources"].items()))))
    if m.get("error"):
        facts.append(("Error", str(m["error"])))
    return facts


# -- sending ----------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """A receiver's answer. `retry` says whether trying again may help; `retry_after` is
    the receiver's Retry-After in seconds, if it gave one."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry: bool = False
    retry_after: float | None = None
    response: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status_code": self.status_code,
            "error": self.error,
            "response": self.response,
        }


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: hex HMAC-SHA256 over `{timestamp}.{body}`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


REDACTED = "[redacted]"


def secret_values(channel_type: str, config: Mapping[str, Any]) -> list[str]:
    """The strings of a channel's config that must never be shown or logged: its secret
    keys, a URL that carries a key in its path or query (all of it, and its path and
    query alone, as an error may quote either), custom header values."""
    found: list[str] = []
    for key in SECRETS.get(channel_type, ()):
        value = config.get(key)
        if isinstance(value, str) and value:
            found.append(value)
    for key in ("webhook_url", "url"):
        value = config.get(key)
        if isinstance(value, str) and value:
            found.append(value)
            path = re.sub(r"^https?://[^/?#]*", "", value)
            if len(path) > 1:
                found.append(path)
    headers = config.get("headers")
    if isinstance(headers, Mapping):
        found += [v for v in headers.values() if isinstance(v, str) and len(v) >= 4]
    return sorted({v for v in found if len(v) >= 4}, key=len, reverse=True)


def redact(text_: str, channel_type: str, config: Mapping[str, Any]) -> str:
    for value in secret_values(channel_type, config):
        if value in text_:
            text_ = text_.replace(value, REDACTED)
    return text_


class Sender:
    """Sends messages to every channel type; one aiohttp session for all HTTP calls."""

    def __init__(self, *, timeout: float = 10.0, limit: int = 200) -> None:
        self._timeout = timeout
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    def _url(self, url: str) -> yarl.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) > 10_000:
                self._urls.clear()
            parsed = self._urls[url] = yarl.URL(url)
        return parsed

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        channel_type: str,
        config: Mapping[str, Any],
        m: Mapping[str, Any],
        delivery_key: str,
        *,
        response: bool = True,
    ) -> Outcome:
        """Send one message; never raises. What the answer says (error, the receiver's
        response: kept only when asked for) has the channel's secrets blanked out: it is
        stored and shown."""
        try:
            if channel_type == "email":
                out = await self._email(config, m)
            else:
                out = await getattr(self, f"_{channel_type}")(config, m, delivery_key)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            out = Outcome(False, error=f"{type(exc).__name__}: {exc}", retry=True)
        except Exception as exc:  # a bug in a formatter must not stop the worker
            out = Outcome(False, error=f"{type(exc).__name__}: {exc}", retry=True)
        if out.error is not None:
            out.error = redact(out.error, channel_type, config)[:500]
        if not response:
            out.response = None
        elif out.response:
            out.response = redact(out.response, channel_type, config)
        return out

    async def _post(
        self,
        url: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        ok_check: Any = None,
    ) -> Outcome:
        data = body if body is not None else json.dumps(payload, separators=(",", ":")).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        # PERF: a ready payload and a parsed URL (cached) spare aiohttp its lookups.
        sent = aiohttp.payload.BytesPayload(data, content_type="application/json")
        async with self.session().post(self._url(url), data=sent, headers=hdrs) as resp:
            raw = (await resp.read())[:2000].decode("utf-8", "replace")
            code = resp.status
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
        if 200 <= code < 300:
            if ok_check is not None:
                problem = ok_check(raw)
                if problem:
                    return Outcome(False, code, problem, retry=False, response=raw[:500])
            return Outcome(True, code, response=raw[:500])
        retry = code in (408, 425, 429) or code >= 500
        return Outcome(
            False, code, f"HTTP {code}", retry=retry, retry_after=retry_after, response=raw[:500]
        )

    async def _slack(self, c: Mapping[str, Any], m: Mapping[str, Any], key: str) -> Outcome:
        color, _ = _color(m)
        payload: dict[str, Any] = {
            "text": m["summary"],
            "attachments": [
                {
                    "color": color,
                    "title": m["summary"],
                    "title_link": m.get("check_link"),
                    "text": text(m),
                    "fields": [
                        {"title": k, "value": v, "short": k != "Error"} for k, v in _facts(m)
                    ],
                    "ts": int(time.time()),
                }
            ],
        }
        if c.get("channel"):
            payload["channel"] = c["channel"]
        if c.get("username"):
            payload["username"] = c["username"]
        return await self._post(c["webhook_url"], payload)

    async def _discord(self, c: Mapping[str, Any], m: Mapping[str, Any], key: str) -> Outcome:
        _, color = _color(m)
        payload: dict[str, Any] = {
            "content": m["summary"],
            "embeds": [
                {
                    "title": m["summary"][:256],
                    "url": m.get("check_link"),
                    "description": text(m)[:4000],
                    "color": color,
                    "fields": [
                        {"name": k, "value": v[:1024], "inline": k != "Error"} for k, v in _facts(m)
                    ],
                    "timestamp": m.get("at"),
                }
            ],
            "allowed_mentions": {"parse": []},
        }
        if c.get("username"):
            payload["username"] = c["username"]
        return await self._post(c["webhook_url"], payload)

    async def _teams(self, c: Mapping[str, Any], m: Mapping[str, Any], key: str) -> Outcome:
        color, _ = _color(m)
        payload: dict[str, Any] = {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": m["summary"],
            "themeColor": color.lstrip("#"),
            "title": m["summary"],
            "text": html.escape(text(m)).replace("\n", "<br>"),
            "sections": [{"facts": [{"name": k, "value": v} for k, v in _facts(m)]}],
        }
        if m.get("check_link"):
            payload["potentialAction"] = [
                {
                    "@type": "OpenUri",
                    "name": "Open check",
                    "targets": [{"os": "default", "uri": m["check_link"]}],
                }
            ]
        return await self._post(c["webhook_url"], payload)

    async def _telegram(self, c: Mapping[str, Any], m: Mapping[str, Any], key: str) -> Outcome:
        url = f"{c['api_base_url']}/bot{c['bot_token']}/sendMessage"
        body = (
            "<b>" + html.escape(m["summary"]) + "</b>\n" + html.escape(text(m).split("\n", 1)[-1])
        )
        payload = {
            "chat_id": c["chat_id"],
            "text": body[:4096],
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }

        def ok(raw: str) -> str | None:
            try:
                answer = json.loads(raw)
            except ValueError:
                return "Telegram answered no JSON"
            if not isinstance(answer, dict) or answer.get("ok") is not True:
                return f"Telegram refused: {raw[:200]}"
            return None

        out = await self._post(url, payload, ok_check=ok)
        if out.status_code == 429 and out.retry_after is None and out.response:
            try:
                params = json.loads(out.response).get("parameters") or {}
                out.retry_after = float(params["retry_after"])
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
        return out

    async def _webhook(self, c: Mapping[str, Any], m: Mapping[str, Any], key: str) -> Outcome:
        body = json.dumps(
            {"event": m["event"], "delivery_id": key, "message": dict(m)}, separators=(",", ":")
        ).encode()
        ts = str(int(time.time()))
        headers = {
            **c.get("headers", {}),
            TIMESTAMP_HEADER: ts,
            EVENT_HEADER: m["event"],
            DELIVERY_HEADER: key,
        }
        if c.get("secret"):
            headers[SIGNATURE_HEADER] = sign(c["secret"], ts, body)
        return await self._post(c["url"], None, headers=headers, body=body)

    async def _pagerduty(self, c: Mapping[str, Any], m: Mapping[str, Any], key: str) -> Outcome:
        action = {"resolved": "resolve", "acknowledged": "acknowledge"}.get(m["event"], "trigger")
        dedup = f"tocsin-incident-{m.get('incident_id') or 'test-' + key}"
        payload: dict[str, Any] = {
            "routing_key": c["routing_key"],
            "event_action": action,
            "dedup_key": dedup,
        }
        if action == "trigger":
            payload["payload"] = {
                "summary": m["summary"][:1024],
                "source": str(m.get("target") or m["check_name"]),
                "severity": "info" if m["event"] == "test" else m["severity"],
                "timestamp": m.get("at"),
                "component": m["check_name"],
                "group": f"organization-{m.get('organization_id')}",
                "class": m.get("check_type"),
                "custom_details": {
                    "since": m.get("since"),
                    "error": m.get("error"),
                    "sources": m.get("sources"),
                    "event": m["event"],
                },
            }
            if m.get("check_link"):
                payload["links"] = [{"href": m["check_link"], "text": "Open check in tocsin"}]
        return await self._post(f"{c['api_base_url']}/v2/enqueue", payload)

    async def _opsgenie(self, c: Mapping[str, Any], m: Mapping[str, Any], key: str) -> Outcome:
        alias = f"tocsin-incident-{m.get('incident_id') or 'test-' + key}"
        headers = {"Authorization": f"GenieKey {c['api_key']}"}
        base = f"{c['api_base_url']}/v2/alerts"
        if m["event"] == "resolved":
            return await self._post(
                f"{base}/{alias}/close?identifierType=alias",
                {"source": "tocsin", "note": text(m)},
                headers=headers,
            )
        if m["event"] == "acknowledged":
            return await self._post(
                f"{base}/{alias}/acknowledge?identifierType=alias",
                {"source": "tocsin", "user": m.get("actor") or "tocsin", "note": text(m)},
                headers=headers,
            )
        payload: dict[str, Any] = {
            "message": m["summary"][:130],
            "alias": alias,
            "description": text(m)[:15000],
            "priority": "P5"
            if m["event"] == "test"
            else ("P1" if m["severity"] == "critical" else "P3"),
            "source": "tocsin",
            "entity": m["check_name"],
            "tags": ["tocsin", str(m["status"]).lower()],
            "details": {
                "since": str(m.get("since")),
                "error": str(m.get("error")),
                "check_link": str(m.get("check_link")),
            },
        }
        if c.get("responders"):
            payload["responders"] = c["responders"]
        return await self._post(base, payload, headers=headers)

    async def _email(self, c: Mapping[str, Any], m: Mapping[str, Any]) -> Outcome:
        recipients = list(m.get("recipients") or c["to_addresses"])
        msg = email.message.EmailMessage()
        msg["Subject"] = f"[tocsin] {m['summary']}"
        msg["From"] = c["from_address"]
        msg["To"] = ", ".join(recipients)
        msg["Date"] = email.utils.formatdate(usegmt=True)
        msg["Message-ID"] = email.utils.make_msgid(domain="tocsin")
        msg["X-Tocsin-Event"] = m["event"]
        msg.set_content(text(m) + "\n")
        return await send_mail(
            msg,
            recipients,
            host=c["smtp_host"],
            port=c["smtp_port"],
            username=c.get("smtp_username") or None,
            password=c.get("smtp_password") or None,
            security=c["security"],
            tls_verify=c.get("tls_verify", True),
            send_timeout=self._timeout,
        )


async def send_mail(
    msg: email.message.EmailMessage | bytes,
    recipients: list[str],
    *,
    sender: str | None = None,
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    security: str,
    tls_verify: bool = True,
    send_timeout: float = 10.0,
) -> Outcome:
    """Send one mail with aiosmtplib (the email channel's and the server's own mails to
    status page subscribers). `security`: `tls` (implicit TLS), `starttls` (required),
    `auto` (STARTTLS when the server offers it) or `none`. Network errors raise (the
    caller's `Sender.send` turns them into a retry); SMTP answers become an `Outcome`.
    A message already flattened (bytes) needs its `sender`."""
    tls_context = None
    if security != "none" and not tls_verify:
        tls_context = ssl.create_default_context()
        tls_context.check_hostname = False
        tls_context.verify_mode = ssl.CERT_NONE
    try:
        errors, answer = await aiosmtplib.send(
            msg,
            sender=sender,
            recipients=recipients,
            hostname=host,
            port=port,
            username=username,
            password=password,
            use_tls=security == "tls",
            start_tls={"starttls": True, "auto": None}.get(security, False),
            tls_context=tls_context,
            timeout=send_timeout,
        )
    except aiosmtplib.SMTPResponseException as exc:
        # 4xx: try again later; 5xx: the server refuses for good.
        return Outcome(
            False, exc.code, f"SMTP {exc.code}: {exc.message}"[:500], retry=exc.code < 500
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return Outcome(False, None, f"recipients refused: {exc}"[:500], retry=False)
    except aiosmtplib.SMTPException as exc:
        return Outcome(False, None, f"SMTP: {exc}"[:500], retry=True)
    if errors:
        return Outcome(False, None, f"some recipients refused: {errors}"[:500], retry=False)
    return Outcome(True, 250, response=answer[:500])
