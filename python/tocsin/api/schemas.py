"""Request bodies as pydantic models: they validate input (422 with the field at
fault) and are the single source the OpenAPI document is generated from.

A check body is validated in two parts: the fields every check has (`CheckCommon`) and
the settings of its type (`CHECK_SETTINGS[type]`). Clients send the union of every
type's fields, often with zero values, so each part ignores what it does not know and a
field that does not apply to the type is never looked at."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from tocsin import schedules
from tocsin.api.errors import ValidationFailed
from tocsin.headers import valid_headers
from tocsin.heartbeat import MAX_GRACE_S

CHECK_TYPES = (
    "uptime",
    "heartbeat",
    "icmp",
    "tcp",
    "udp",
    "dns",
    "ftp",
    "mail",
    "database",
    "api_scenario",
    "oidc",
)
CheckType = Literal[
    "uptime",
    "heartbeat",
    "icmp",
    "tcp",
    "udp",
    "dns",
    "ftp",
    "mail",
    "database",
    "api_scenario",
    "oidc",
]
# Stored encrypted (tocsin.encryption.SECRET_KEYS), answered as MASK.
SECRET_FIELDS = ("auth_password", "auth_bearer_token", "db_password")
MASK = "******"
DNS_RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "TXT", "SOA", "SRV", "CAA")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DB_TYPES = ("postgresql", "mysql", "redis", "mongodb")
DB_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "redis": 6379, "mongodb": 27017}
MAX_ID = 2**63 - 1  # ids are SQL BIGINTs
# An id in a body, also inside lists: bounded to the store's range.
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
_SOURCE_KEY = re.compile(r"^(agent:[1-9][0-9]{0,18}|geo:[A-Za-z0-9_.-]{1,64})$")


def http_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if "@" in parts.netloc:
        # A password in a URL would be stored and shown in clear with the URL.
        raise ValueError(
            "must not hold credentials (user:password@); use auth_username and auth_password"
        )
    if any(c.isspace() for c in v):
        raise ValueError("must not contain whitespace")
    try:
        parts.port  # noqa: B018  raises on a bad port
    except ValueError as exc:
        raise ValueError(f"invalid port: {exc}") from None
    return v


def host_name(v: str) -> str:
    v = v.strip().removeprefix("[").removesuffix("]")
    if not v:
        raise ValueError("required")
    if len(v) > 253 or any(c.isspace() or c in "/?#@" for c in v):
        raise ValueError("must be a host name or an IP address")
    return v


# A host name or an IP address (brackets around IPv6 removed).
HostName = Annotated[str, AfterValidator(host_name)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class CheckCommon(_Part):
    """Fields every check has; they are stored as columns."""

    name: str = Field(min_length=1, max_length=200)
    type: CheckType = "uptime"
    description: str = Field(default="", max_length=2000)
    is_active: StrictBool = True
    interval: int = Field(default=60, ge=1, le=86_400, description="seconds")
    timeout: int = Field(default=10, ge=1, le=3_600, description="seconds")
    grace_period: int = Field(default=60, ge=0, le=MAX_GRACE_S, description="seconds")
    alert_after_failures: int = Field(
        default=1, ge=0, le=64, description="consecutive failures before DOWN; 0 means 1"
    )
    runbook_url: str | None = Field(default=None, max_length=2048)
    escalation_policy_id: int | None = Field(default=None, ge=0, le=MAX_ID)
    tags: list[str] = Field(default_factory=list, max_length=50)
    assigned_agent_ids: list[int] = Field(default_factory=list, max_length=100)
    assigned_agent_id: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="deprecated: use assigned_agent_ids"
    )
    geo_monitoring_enabled: StrictBool = False
    check_source_critical: dict[str, StrictBool] = Field(default_factory=dict)
    project_id: int | None = Field(default=None, ge=0, le=MAX_ID)
    org_id: int | None = Field(default=None, ge=1, le=MAX_ID)

    @field_validator("runbook_url")
    @classmethod
    def _runbook(cls, v: str | None) -> str | None:
        return http_url(v) if v else None

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for tag in v:
            tag = tag.strip()
            if not 1 <= len(tag) <= 64:
                raise ValueError("each tag must be 1-64 characters")
            if tag not in out:
                out.append(tag)
        return out

    @field_validator("assigned_agent_ids")
    @classmethod
    def _agents(cls, v: list[int]) -> list[int]:
        if any(not 1 <= i <= MAX_ID for i in v):
            raise ValueError("agent ids are positive integers")
        return sorted(set(v))

    @field_validator("check_source_critical")
    @classmethod
    def _sources(cls, v: dict[str, bool]) -> dict[str, bool]:
        bad = [k for k in v if not _SOURCE_KEY.match(k)]
        if bad:
            raise ValueError(f"keys are agent:<id> or geo:<location>, not {bad}")
        return v

    @model_validator(mode="after")
    def _normalise(self) -> CheckCommon:
        # The deprecated single agent joins the list; zero values mean "none".
        if self.assigned_agent_id:
            self.assigned_agent_ids = sorted({*self.assigned_agent_ids, self.assigned_agent_id})
        self.assigned_agent_id = None
        self.alert_after_failures = self.alert_after_failures or 1
        self.escalation_policy_id = self.escalation_policy_id or None
        self.project_id = self.project_id or None
        return self


class HttpSettings(_Part):
    """`uptime` checks (and the HTTP side of `oidc`)."""

    url: str = Field(max_length=2048)
    http_method: str = "GET"
    http_headers: dict[str, str] = Field(default_factory=dict)
    http_body: str = Field(default="", max_length=65_536)
    http_body_type: Literal["none", "json", "form", "raw"] = "none"
    http_follow_redirects: StrictBool = True
    expected_status_codes: list[int] = Field(default_factory=list, max_length=100)
    ssl_verify: StrictBool = True
    auth_method: Literal["none", "basic", "bearer"] = "none"
    auth_username: str = Field(default="", max_length=512)
    auth_password: str = Field(default="", max_length=4096)
    auth_bearer_token: str = Field(default="", max_length=8192)
    content_match_enabled: StrictBool = False
    content_match_text: str = Field(default="", max_length=4096)
    content_match_type: Literal["contains", "not_contains", "regex"] = "contains"
    content_match_case_sensitive: StrictBool = True
    degraded_threshold_ms: int = Field(default=0, ge=0, le=3_600_000)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, default in (
                ("http_method", "GET"),
                ("http_body_type", "none"),
                ("auth_method", "none"),
                ("content_match_type", "contains"),
            ):
                if data.get(key) == "":
                    data = {**data, key: default}
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return http_url(v)

    @field_validator("http_method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v.upper() not in HTTP_METHODS:
            raise ValueError(f"must be one of {', '.join(HTTP_METHODS)}")
        return v.upper()

    @field_validator("http_headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        return valid_headers(v)

    @field_validator("expected_status_codes")
    @classmethod
    def _codes(cls, v: list[int]) -> list[int]:
        bad = [c for c in v if not 100 <= c <= 599]
        if bad:
            raise ValueError(f"status codes must be 100-599, got {bad}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> HttpSettings:
        if self.http_body_type == "json" and self.http_body.strip():
            try:
                json.loads(self.http_body)
            except ValueError as exc:
                raise _field("http_body", f"body type is json but: {exc}") from None
        if self.auth_method == "bearer" and not self.auth_bearer_token:
            raise _field("auth_bearer_token", "required for bearer auth")
        if self.content_match_enabled and self.content_match_type == "regex":
            try:
                re.compile(self.content_match_text)
            except re.error as exc:
                raise _field("content_match_text", f"not a regular expression: {exc}") from None
        return self


class HeartbeatSettings(_Part):
    schedule: str = Field(
        default="", max_length=200, description="cron (five fields); else the interval"
    )
    timezone: str = Field(default="UTC", min_length=1, max_length=64, description="IANA name")

    @model_validator(mode="after")
    def _schedule(self) -> HeartbeatSettings:
        # The engine loads stored checks through the same functions (tocsin.schedules).
        try:
            schedules.time_zone(self.timezone)
            if self.schedule:
                self.schedule = schedules.cron(self.schedule, self.timezone)
        except ValueError as exc:
            raise _field(getattr(exc, "field", "schedule"), _reason(exc)) from None
        return self


class IcmpSettings(_Part):
    host: HostName = Field(max_length=255)
    ping_count: int = Field(default=3, ge=0, le=100, description="0 means 3")

    @model_validator(mode="after")
    def _count(self) -> IcmpSettings:
        self.ping_count = self.ping_count or 3
        return self


class NetSettings(_Part):
    """`tcp` and `udp`: a host and a port, optionally a payload and an expected reply."""

    host: HostName = Field(max_length=255)
    port: int = Field(ge=1, le=65_535)
    payload: str = Field(default="", max_length=65_536)
    expected_response: str = Field(default="", max_length=65_536)


class DnsSettings(_Part):
    host: HostName = Field(max_length=255, description="the name to resolve")
    dns_server: str = Field(default="", max_length=64, description="IP[:port]; default: system")
    dns_record_type: str = "A"
    dns_expected_value: str = Field(default="", max_length=4096)
    dns_expected_ips: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("dns_record_type")
    @classmethod
    def _record(cls, v: str) -> str:
        v = (v or "A").upper()
        if v not in DNS_RECORD_TYPES:
            raise ValueError(f"must be one of {', '.join(DNS_RECORD_TYPES)}")
        return v

    @field_validator("dns_server")
    @classmethod
    def _server(cls, v: str) -> str:
        if not v:
            return v
        host, port = v, "53"
        if v.startswith("["):
            host, _, rest = v[1:].partition("]")
            port = rest.removeprefix(":") or "53"
        elif v.count(":") == 1:
            host, port = v.split(":")
        try:
            ipaddress.ip_address(host)
            if not 1 <= int(port) <= 65_535:
                raise ValueError
        except ValueError:
            raise ValueError("must be an IP address, optionally with :port") from None
        return v

    @field_validator("dns_expected_ips")
    @classmethod
    def _ips(cls, v: list[str]) -> list[str]:
        for ip in v:
            try:
                ipaddress.ip_address(ip.strip())
            except ValueError:
                raise ValueError(f"{ip!r} is not an IP address") from None
        return [ip.strip() for ip in v]


class FtpSettings(_Part):
    host: HostName = Field(max_length=255)
    port: int = Field(default=21, ge=0, le=65_535, description="0 means 21")
    auth_username: str = Field(default="", max_length=512)
    auth_password: str = Field(default="", max_length=4096)

    @model_validator(mode="after")
    def _port(self) -> FtpSettings:
        self.port = self.port or 21
        return self


class MailSettings(_Part):
    host: HostName = Field(max_length=255, description="the SMTP server")
    port: int = Field(default=25, ge=0, le=65_535, description="0 means 25")

    @model_validator(mode="after")
    def _port(self) -> MailSettings:
        self.port = self.port or 25
        return self


class DatabaseSettings(_Part):
    db_type: Literal["postgresql", "mysql", "redis", "mongodb"]
    db_host: HostName = Field(max_length=255)
    db_port: int = Field(default=0, ge=0, le=65_535, description="0: the type's default")
    db_name: str = Field(default="", max_length=255)
    db_username: str = Field(default="", max_length=255)
    db_password: str = Field(default="", max_length=4096)
    db_query: str = Field(default="", max_length=65_536)
    db_expected_result: str = Field(default="", max_length=4096)

    @model_validator(mode="after")
    def _port(self) -> DatabaseSettings:
        self.db_port = self.db_port or DB_DEFAULT_PORTS[self.db_type]
        return self


class ScenarioStep(_Part):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    url: str = Field(max_length=2048)
    method: str = "GET"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return http_url(v)


class ApiScenarioSettings(_Part):
    steps: list[ScenarioStep] = Field(min_length=1, max_length=50)


class OidcSettings(_Part):
    url: str = Field(max_length=2048, description="the issuer (its discovery document)")
    ssl_verify: StrictBool = True
    expected_status_codes: list[int] = Field(default_factory=list, max_length=100)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return http_url(v)


CHECK_SETTINGS: dict[str, type[_Part]] = {
    "uptime": HttpSettings,
    "heartbeat": HeartbeatSettings,
    "icmp": IcmpSettings,
    "tcp": NetSettings,
    "udp": NetSettings,
    "dns": DnsSettings,
    "ftp": FtpSettings,
    "mail": MailSettings,
    "database": DatabaseSettings,
    "api_scenario": ApiScenarioSettings,
    "oidc": OidcSettings,
}
# Settings stored as check columns rather than in `config`.
COLUMN_SETTINGS = ("url", "host", "port")
# Fields that may be null: a null anywhere else means "the default".
NULLABLE = frozenset({"runbook_url", "escalation_policy_id", "project_id", "org_id"})


def _union_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for settings in CHECK_SETTINGS.values():
        for name, info in settings.model_fields.items():
            if name not in CheckCommon.model_fields and name not in fields:
                fields[name] = (info.annotation | None, Field(default=None))  # type: ignore[operator]
    return fields


# Documentation of a check body: the common fields plus every type's settings (those
# of other types are ignored). Validation goes through `parse_check`.
CheckCreate = create_model("CheckCreate", __base__=CheckCommon, **_union_fields())


class _FieldError(ValueError):
    def __init__(self, field: str, msg: str) -> None:
        super().__init__(msg)
        self.field = field


def _field(field: str, msg: str) -> _FieldError:
    return _FieldError(field, msg)


def _reason(exc: ValueError) -> str:
    """The message of an `InvalidCheckError` without its `field: ` prefix."""
    field = getattr(exc, "field", None)
    text = str(exc)
    return text.removeprefix(f"{field}: ") if field else text


def _validate(model: type[BaseModel], body: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    try:
        return model.model_validate(body), []
    except ValidationError as exc:
        errors = []
        for e in exc.errors(include_url=False, include_input=False):
            loc: list[str | int] = ["body", *e["loc"]]
            msg = e["msg"]
            err = (e.get("ctx") or {}).get("error")
            if isinstance(err, _FieldError):
                loc, msg = ["body", err.field], str(err)
            errors.append({"loc": loc, "msg": msg, "type": e["type"]})
        return None, errors


def parse_check(body: dict[str, Any]) -> tuple[CheckCommon, BaseModel]:
    """The common fields and the type's settings of a check body; 422 naming every bad
    field of both."""
    body = {k: v for k, v in body.items() if v is not None or k in NULLABLE}
    common, errors = _validate(CheckCommon, body)
    kind = body.get("type", "uptime")
    settings = None
    if isinstance(kind, str) and kind in CHECK_SETTINGS:
        settings, more = _validate(CHECK_SETTINGS[kind], body)
        errors += more
    if errors:
        raise ValidationFailed(errors)
    assert common is not None
    assert settings is not None
    return common, settings


def parse(model: type[BaseModel], body: dict[str, Any]) -> Any:
    parsed, errors = _validate(model, body)
    if errors:
        raise ValidationFailed(errors)
    return parsed


class SloBody(_Part):
    sli_type: Literal["availability", "latency"] = "availability"
    target_percentage: float = Field(gt=0, lt=100)
    window_days: int = Field(default=30, ge=1, le=365)
    latency_threshold_ms: float | None = Field(default=None, gt=0, le=3_600_000)
    notify_on_budget_warn: StrictBool = True
    budget_warn_pct: float = Field(default=25.0, ge=0, le=100)
    notify_on_budget_exhausted: StrictBool = True
    burn_rate_alert_enabled: StrictBool = False
    burn_rate_threshold: float = Field(default=2.0, gt=0, le=1000)
    burn_rate_window_minutes: int = Field(default=60, ge=5, le=7 * 24 * 60)

    @model_validator(mode="after")
    def _latency(self) -> SloBody:
        if self.sli_type == "latency" and not self.latency_threshold_ms:
            raise _field("latency_threshold_ms", "required for a latency SLO")
        return self
