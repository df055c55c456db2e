"""Request bodies as pydantic models: they validate input (422 with the field at
fault) and are the single source the OpenAPI document is generated from.

A check body is validated in two parts: the fields every check has (`CheckCommon`) and
the settings of its type (`CHECK_SETTINGS[type]`). Clients send the union of every
type's fields, often with zero values, so each part ignores what it does not know and a
field that does not apply to the type is never looked at."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math
import re
import typing
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

import tocsin._core as _core
from tocsin import schedules
from tocsin.api.errors import ValidationFailed, field_error
from tocsin.api.query import caseless
from tocsin.headers import MAX_HEADERS, MAX_NAME, MAX_VALUE, valid_headers
from tocsin.heartbeat import MAX_GRACE_S
from tocsin.probes.database import readonly_problem

CheckType = Literal[
    "uptime",
    "heartbeat",
    "icmp",
    "tcp",
    "udp",
    "dns",
    "tls",
    "ftp",
    "mail",
    "database",
    "api_scenario",
    "oidc",
]
CHECK_TYPES: tuple[str, ...] = typing.get_args(CheckType)
# The engine's own schedule limits (rust_core/schedule.rs), in the API's seconds.
MIN_INTERVAL_S = _core.MIN_INTERVAL_MS // 1000
MAX_INTERVAL_S = _core.MAX_INTERVAL_MS // 1000
MAX_TIMEOUT_S = _core.MAX_TIMEOUT_MS // 1000
# Stored encrypted (tocsin.encryption.SECRET_KEYS), answered as MASK.
SECRET_FIELDS = ("auth_password", "auth_bearer_token", "db_password", "ftp_password")
MASK = "******"
DNS_RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "TXT", "SOA", "SRV", "CAA")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DB_TYPES = ("postgresql", "mysql", "redis", "mongodb")
DB_DEFAULT_PORTS = {
    "postgresql": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "redis": 6379,
    "mongodb": 27017,
}
MAX_ID = 2**63 - 1  # ids are SQL BIGINTs
# An id in a body, also inside lists: bounded to the store's range.
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
_SOURCE_KEY = re.compile(r"^(agent:[1-9][0-9]{0,18}|geo:[A-Za-z0-9_.-]{1,64})$")

# -- what the OpenAPI document says of a field ----------------------------------------
# Patterns that JSON Schema (ECMA 262) and Python's `re` read alike, declared in the
# document (json_schema_extra: metadata only, the validators below decide) so that it
# allows exactly what they accept. Surrounding whitespace is removed from text before
# any of this applies (`str_strip_whitespace`).

# What Python counts as whitespace (str.isspace, `\s`), spelled out: ECMA's `\s` differs.
_SPACE = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# What `str_strip_whitespace` removes (Unicode White_Space: without \x1c-\x1f).
_STRIPPED = r"\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Text that is not only whitespace (which the model's stripping would leave empty).
NOT_BLANK_PATTERN = f"[^{_STRIPPED}]"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"({_OCTET}\.){{3}}{_OCTET}"
_H4 = "[0-9A-Fa-f]{1,4}"
_IPV6_ADDRESS = (
    "("
    + "|".join(
        [
            f"({_H4}:){{7}}{_H4}",
            f"({_H4}:){{1,7}}:",
            f"({_H4}:){{1,6}}:{_H4}",
            *(f"({_H4}:){{1,{6 - n}}}(:{_H4}){{1,{n + 1}}}" for n in range(1, 6)),
            f":((:{_H4}){{1,7}}|:)",
            f"({_H4}:){{6}}{_IPV4}",
            f"::({_H4}:){{0,5}}{_IPV4}",
            *(f"({_H4}:){{{n}}}:({_H4}:){{0,{5 - n}}}{_IPV4}" for n in range(1, 6)),
        ]
    )
    + ")"
)
# No IPv6 zone (`%eth0`): Python reads one, the engine refuses it.
_IPV6 = _IPV6_ADDRESS
# An IP address as `ipaddress.ip_address` and the engine read it.
IP_PATTERN = f"^({_IPV4}|{_IPV6})$"
_PORTS = r"6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
_PORT = rf"0*({_PORTS}|[0-9]{{1,4}})"  # 0-65535
_PORT1 = rf"0*({_PORTS}|[1-9][0-9]{{0,3}})"  # 1-65535
# `http_url` and the engine's URL parser: http(s), a host, a valid port, no
# user:password@, no whitespace. Host names are ASCII (the engine refuses international
# names IDNA does not map) and end in a label that starts with a letter (a name ending
# in a number is read as an IPv4 address).
_NAME = r"([A-Za-z0-9_-]+\.)*[A-Za-z][A-Za-z0-9_-]*\.?"
HTTP_URL_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://(\[{_IPV6}\]|{_IPV4}|{_NAME})"
    rf"(:({_PORT})?)?([/?#][^{_SPACE}]*)?$"
)
# `host_name`: a host name or an IP address, brackets around IPv6 allowed.
HOST_PATTERN = rf"^\[?[^/?#@\[\]{_SPACE}]{{1,253}}\]?$"
# `dns_server`: an IP address, optionally with a port (IPv6 in brackets then).
DNS_SERVER_PATTERN = rf"^({_IPV4}(:{_PORT1})?|\[{_IPV4}\]|{_IPV6}|\[{_IPV6}\](:{_PORT1})?)?$"
# An email address as the API checks it: something@something, no spaces.
EMAIL_PATTERN = rf"^[^@{_SPACE}]+@[^@{_SPACE}]+$"
# A time of day, `HH:MM` (24-hour clock).
TIME_OF_DAY_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
# Marks an IANA time zone name: the document lists the names of this server's time zone
# database (api/openapi.py).
TIME_ZONE_FORMAT = "iana-time-zone"
# Five cron fields or an @-macro; whether the rule ever matches is checked on top.
CRON_PATTERN = rf"^(@[^{_SPACE}]+|[^{_SPACE}]+([{_SPACE}]+[^{_SPACE}]+){{4}})$"
HEADERS_SCHEMA: JsonDict = {
    "type": "object",
    "maxProperties": MAX_HEADERS,
    "propertyNames": {"pattern": rf"^[!#$%&'*+.^_`|~0-9A-Za-z-]{{1,{MAX_NAME}}}$"},
    "additionalProperties": {
        "type": "string",
        "maxLength": MAX_VALUE,
        "pattern": r"^[^\x00-\x08\x0a-\x1f\x7f]*$",
    },
    "description": 'header name to value; a value `******` keeps the stored one, `""` removes'
    " the header",
}

# For other modules' models: the same validation as `str`, declared in the document.
EmailAddress = Annotated[str, Field(json_schema_extra={"pattern": EMAIL_PATTERN})]
TimeOfDay = Annotated[str, Field(json_schema_extra={"pattern": TIME_OF_DAY_PATTERN})]
TimeZoneName = Annotated[
    str,
    Field(json_schema_extra={"format": TIME_ZONE_FORMAT, "description": "IANA time zone name"}),
]


def _with_empty(schema: dict[str, Any]) -> None:
    """An enum that also takes "" (read as the default)."""
    schema["enum"] = [*schema["enum"], ""]


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
HostName = Annotated[
    str, AfterValidator(host_name), Field(json_schema_extra={"pattern": HOST_PATTERN})
]
_URL_DOC: JsonDict = {"pattern": HTTP_URL_PATTERN}


# Unix seconds up to the year 3000: every time a body gives (and what is added to it)
# stays representable.
MAX_EPOCH = 32_503_680_000
TIME_BODY_ERROR = "Input should be Unix seconds (a number) or an ISO 8601 date-time"


def not_boolean(v: Any) -> Any:
    """For a `mode="before"` validator of time fields (Unix seconds or ISO 8601 text):
    a boolean is neither."""
    if isinstance(v, bool):
        raise PydanticCustomError("time_type", TIME_BODY_ERROR)
    return v


def parse_time(field: str, value: float | str, zone: dt.tzinfo = dt.UTC) -> float:
    """A body's time as Unix seconds: a number, its text, or ISO 8601 text (without an
    offset: wall time in `zone`); 422 naming `field` otherwise or out of range."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                when = dt.datetime.fromisoformat(text)
            except ValueError:
                raise field_error(
                    field, "must be an ISO 8601 date-time or Unix seconds", "datetime_parsing"
                ) from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=zone)
            try:
                value = when.timestamp()
            except (OverflowError, ValueError):
                raise field_error(field, "is out of range") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_EPOCH:
        raise field_error(field, "is out of range")
    return float(value)


def json_number(v: Any) -> Any:
    """For a `mode="before"` validator of number fields (or lists of numbers): numbers
    are JSON numbers, as the document says (`integer`: 3 or 3.0, not "3" or true), where
    pydantic's lax mode would read true as 1 and parse text."""
    for item in v if isinstance(v, list) else (v,):
        if isinstance(item, bool | str):
            raise PydanticCustomError("number_type", "Input should be a JSON number")
    return v


def _numeric(annotation: Any) -> bool:
    """Whether a field holds numbers: int or float, optional, or a list of them."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _numeric(get_args(annotation)[0])
    if origin in (Union, UnionType, list):
        return any(_numeric(a) for a in get_args(annotation) if a is not type(None))
    return annotation in (int, float)


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _json_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """Numbers are JSON numbers, as the document says (`integer`: 3 or 3.0, not "3"
        or true): pydantic's lax mode would read true/false as 1/0 and parse text."""
        field = info.field_name
        if field is None or not _numeric(cls.model_fields[field].annotation):
            return v
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, bool | str):
                raise PydanticCustomError("number_type", "Input should be a JSON number")
        return v


class CheckCommon(_Part):
    """Fields every check has; they are stored as columns."""

    name: str = Field(min_length=1, max_length=200)
    type: CheckType = "uptime"
    description: str = Field(default="", max_length=2000)
    is_active: StrictBool = True
    interval: int = Field(default=60, ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S, description="seconds")
    timeout: int = Field(default=10, ge=1, le=MAX_TIMEOUT_S, description="seconds")
    grace_period: int = Field(default=60, ge=0, le=MAX_GRACE_S, description="seconds")
    alert_after_failures: int = Field(
        default=1, ge=0, le=64, description="consecutive failures before DOWN; 0 means 1"
    )
    runbook_url: str | None = Field(
        default=None,
        max_length=2048,
        json_schema_extra={"pattern": f"^$|{HTTP_URL_PATTERN}", "description": '"": none'},
    )
    escalation_policy_id: int | None = Field(default=None, ge=0, le=MAX_ID)
    owner_team_id: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="the team that owns the check (0: none)"
    )
    service_id: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ID,
        description="the service the check belongs to (0: none); its incidents take the"
        " service's escalation policy (unless the check has one) and channels",
    )
    tags: list[str] = Field(
        default_factory=list,
        max_length=50,
        json_schema_extra={
            "items": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                # `_tags` strips again, with Python's whitespace.
                "pattern": f"[^{_SPACE}]",
            }
        },
    )
    assigned_agent_ids: list[int] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
    )
    assigned_agent_id: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="deprecated: use assigned_agent_ids"
    )
    geo_monitoring_enabled: StrictBool = False
    check_source_critical: dict[str, StrictBool] = Field(
        default_factory=dict,
        max_length=200,
        json_schema_extra={"propertyNames": {"pattern": _SOURCE_KEY.pattern}},
    )
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
        self.owner_team_id = self.owner_team_id or None
        self.service_id = self.service_id or None
        self.project_id = self.project_id or None
        return self


class HttpSettings(_Part):
    """`uptime` checks (and the HTTP side of `oidc`)."""

    model_config = ConfigDict(
        extra="ignore",
        str_strip_whitespace=True,
        json_schema_extra={
            "if": {"properties": {"auth_method": {"const": "bearer"}}, "required": ["auth_method"]},
            "then": {
                "required": ["auth_bearer_token"],
                "properties": {"auth_bearer_token": {"minLength": 1}},
            },
        },
    )

    url: str = Field(max_length=2048, json_schema_extra=_URL_DOC)
    http_method: str = Field(
        default="GET",
        json_schema_extra={"pattern": f"^$|{caseless(HTTP_METHODS)}", "description": '"": GET'},
    )
    http_headers: dict[str, str] = Field(default_factory=dict, json_schema_extra=HEADERS_SCHEMA)
    http_body: str = Field(
        default="",
        max_length=65_536,
        json_schema_extra={"description": "JSON when http_body_type is json"},
    )
    http_body_type: Literal["none", "json", "form", "raw"] = Field(
        default="none", json_schema_extra=_with_empty
    )
    http_follow_redirects: StrictBool = True
    expected_status_codes: list[int] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra={"items": {"type": "integer", "minimum": 100, "maximum": 599}},
    )
    ssl_verify: StrictBool = True
    auth_method: Literal["none", "basic", "bearer"] = Field(
        default="none", json_schema_extra=_with_empty
    )
    auth_username: str = Field(default="", max_length=512)
    auth_password: str = Field(default="", max_length=4096)
    auth_bearer_token: str = Field(default="", max_length=8192)
    content_match_enabled: StrictBool = False
    content_match_text: str = Field(
        default="",
        max_length=4096,
        json_schema_extra={
            "description": "when content_match_type is regex, a regular expression the"
            " engine compiles (Rust syntax: no look-around, no backreferences)"
        },
    )
    content_match_type: Literal["contains", "not_contains", "regex"] = Field(
        default="contains", json_schema_extra=_with_empty
    )
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
        default="",
        max_length=200,
        description="cron (five fields, or an @-macro) that matches at some time, at most"
        ' once a minute; "": the interval',
        json_schema_extra={"pattern": f"^$|{CRON_PATTERN}"},
    )
    timezone: TimeZoneName = Field(
        default="UTC", min_length=1, max_length=64, description="IANA time zone name"
    )

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


class TlsSettings(_Part):
    """`tls`: a TLS handshake with the host (the certificate's chain, name and expiry)."""

    host: HostName = Field(max_length=255)
    port: int = Field(default=443, ge=0, le=65_535, description="0 means 443")
    tls_server_name: str = Field(
        default="", max_length=255, description='the name sent and checked (SNI); "": the host'
    )
    tls_expiry_threshold_days: int = Field(
        default=14,
        ge=0,
        le=3650,
        description="DEGRADED when the certificate expires within this many days",
    )
    ssl_verify: StrictBool = Field(
        default=True, description="false: an untrusted or mismatched certificate is not DOWN"
    )

    @model_validator(mode="after")
    def _port(self) -> TlsSettings:
        self.port = self.port or 443
        return self


class DnsSettings(_Part):
    host: HostName = Field(max_length=255, description="the name to resolve")
    dns_server: str = Field(
        default="",
        max_length=64,
        description='IP[:port] ([IPv6]:port); "": the system\'s resolver',
        json_schema_extra={"pattern": DNS_SERVER_PATTERN},
    )
    dns_record_type: str = Field(
        default="A",
        json_schema_extra={"pattern": f"^$|{caseless(DNS_RECORD_TYPES)}", "description": '"": A'},
    )
    dns_expected_value: str = Field(default="", max_length=4096)
    dns_expected_ips: list[str] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra={"items": {"type": "string", "pattern": IP_PATTERN}},
    )

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


FTP_PORTS = {"ftp": 21, "ftps": 21, "ftps_implicit": 990, "sftp": 22}


class FtpSettings(_Part):
    """`ftp`: log in over FTP, FTPS (explicit or implicit) or SFTP, optionally look at
    one path (probes/ftp.py)."""

    host: HostName = Field(max_length=255)
    port: int = Field(default=0, ge=0, le=65_535, description="0: the protocol's default")
    ftp_protocol: Literal["ftp", "ftps", "ftps_implicit", "sftp"] = Field(
        default="ftp", description="ftps: explicit (AUTH TLS); ftps_implicit: TLS from the start"
    )
    ftp_username: str = Field(default="", max_length=512, description='"": anonymous')
    ftp_password: str = Field(default="", max_length=4096)
    # The older names, still taken.
    auth_username: str = Field(default="", max_length=512)
    auth_password: str = Field(default="", max_length=4096)
    ftp_passive: StrictBool = Field(
        default=True, description="passive mode (active mode is not supported: false is 422)"
    )
    ftp_path: str = Field(default="", max_length=1024, description="a path that must exist")
    ftp_min_size_bytes: int = Field(default=0, ge=0, le=2**62)
    ftp_max_age_minutes: int = Field(default=0, ge=0, le=10 * 525_600)
    ssl_verify: StrictBool = True
    tls_expiry_threshold_days: int = Field(default=14, ge=0, le=3650)

    @model_validator(mode="after")
    def _port(self) -> FtpSettings:
        self.port = self.port or FTP_PORTS[self.ftp_protocol]
        if not self.ftp_passive and self.ftp_protocol != "sftp":
            raise _field("ftp_passive", "active mode is not supported; use passive mode")
        return self


class MailSettings(_Part):
    host: HostName = Field(max_length=255, description="the SMTP server")
    port: int = Field(default=25, ge=0, le=65_535, description="0 means 25")

    @model_validator(mode="after")
    def _port(self) -> MailSettings:
        self.port = self.port or 25
        return self


class DatabaseSettings(_Part):
    """`database`: connect, authenticate, optionally run a read-only query and compare
    the first value of its answer (probes/database.py)."""

    db_type: Literal["postgresql", "mysql", "mariadb", "redis", "mongodb"]
    db_host: HostName = Field(max_length=255)
    db_port: int = Field(default=0, ge=0, le=65_535, description="0: the type's default")
    db_name: str = Field(default="", max_length=255, description="the database (Redis: its number)")
    db_username: str = Field(default="", max_length=255)
    db_password: str = Field(default="", max_length=4096)
    db_ssl_enabled: StrictBool = False
    ssl_verify: StrictBool = True
    db_query: str = Field(
        default="",
        max_length=65_536,
        description="read-only: SQL (one statement), a Redis read command, or for MongoDB"
        ' {"collection", "filter", "op", "field"} or {"command"} as JSON',
    )
    db_expected_result: str = Field(
        default="",
        max_length=4096,
        description='the first value of the answer: text, "> 10", "<= 5", "!= 0" or "~ regex"',
    )

    @model_validator(mode="after")
    def _port(self) -> DatabaseSettings:
        self.db_port = self.db_port or DB_DEFAULT_PORTS[self.db_type]
        problem = readonly_problem(self.db_type, self.db_query)
        if problem is not None:
            raise _field("db_query", problem)
        if self.db_type == "redis" and self.db_name and not self.db_name.isdigit():
            raise _field("db_name", "must be a Redis database number")
        return self


_IDENT = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
_PLACEHOLDERS = re.compile(r"\{\{[^}]*\}\}")


class ScenarioExtract(_Part):
    """A value taken from a step's response into a variable (`{{var}}` later on)."""

    var: str = Field(max_length=64, pattern=_IDENT)
    # `from` is a Python keyword: the field is `source`, sent as `from` (or `source`).
    source: Literal["jsonpath", "header", "regex", "status"] = Field(
        default="jsonpath", alias="from"
    )
    path: str = Field(default="$", max_length=1000, description="JSONPath (RFC 9535)")
    header: str = Field(default="", max_length=200)
    pattern: str = Field(default="", max_length=1000, description="its first group, or the match")

    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, serialize_by_alias=True, str_strip_whitespace=True
    )


class ScenarioAssertion(_Part):
    type: Literal["status", "jsonpath", "header", "body", "latency"] = "status"
    op: Literal[
        "equals", "not_equals", "contains", "not_contains", "matches", "exists",
        "not_exists", "gt", "gte", "lt", "lte",
    ] = "equals"  # fmt: skip
    value: Any = None
    path: str = Field(default="$", max_length=1000)
    name: str = Field(default="", max_length=200, description="the header, for `header`")
    # status: any of these codes
    in_: list[int] = Field(default_factory=list, alias="in", max_length=100)
    lt_ms: float | None = Field(default=None, gt=0, le=3_600_000)

    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, serialize_by_alias=True, str_strip_whitespace=True
    )


class ScenarioStep(_Part):
    name: str = Field(default="", max_length=200)
    url: str = Field(max_length=2048, json_schema_extra=_URL_DOC)
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict, max_length=MAX_HEADERS)
    body: Any = None
    body_type: Literal["json", "form", "raw", ""] = ""
    follow_redirects: StrictBool = True
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S)
    extract: list[ScenarioExtract] = Field(default_factory=list, max_length=20)
    assertions: list[ScenarioAssertion] = Field(default_factory=list, max_length=50)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        # Placeholders stand for text taken later; the rest must make an http(s) URL.
        http_url(_PLACEHOLDERS.sub("x", v))
        return v

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        return (v.upper() or "GET") if isinstance(v, str) else v


class ApiScenarioSettings(_Part):
    """`api_scenario`: ordered HTTP requests with extractions and assertions
    (probes/api_scenario.py). `steps` is taken as `api_scenario_steps`."""

    api_scenario_steps: list[ScenarioStep] = Field(
        min_length=1, max_length=20, description="1 to 20 steps, in order (`steps` too)"
    )
    api_scenario_secrets: dict[Annotated[str, Field(pattern=_IDENT)], str] = Field(
        default_factory=dict,
        max_length=50,
        description="name → secret, used as {{secrets.name}}; encrypted at rest, masked"
        " on read, never in results",
    )
    ssl_verify: StrictBool = True

    @model_validator(mode="before")
    @classmethod
    def _steps_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("api_scenario_steps") and data.get("steps"):
            data = {**data, "api_scenario_steps": data["steps"]}
        return data

    @model_validator(mode="after")
    def _some(self) -> ApiScenarioSettings:
        # Steps may only use variables extracted by earlier steps, and known secrets.
        known: set[str] = set()
        for i, step in enumerate(self.api_scenario_steps):
            texts = [step.url, *step.headers.values(), json.dumps(step.body)]
            for text in texts:
                for m in _PLACEHOLDERS.finditer(text):
                    ref = m.group(0)[2:-2].strip()
                    if ref.startswith("secrets."):
                        if ref.removeprefix("secrets.") not in self.api_scenario_secrets:
                            raise _field(
                                f"api_scenario_steps.{i}", f"{ref} is not one of the secrets"
                            )
                    elif ref not in known:
                        raise _field(
                            f"api_scenario_steps.{i}",
                            f"{{{{{ref}}}}} is not extracted by an earlier step",
                        )
            known.update(e.var for e in step.extract)
        return self


class OidcConfig(_Part):
    """A client of the provider, for the client-credentials grant."""

    client_id: str = Field(default="", max_length=500)
    client_secret: str = Field(default="", max_length=4096, description="masked on read")
    scope: str = Field(default="", max_length=1000)
    audience: str = Field(default="", max_length=1000)


class OidcSettings(_Part):
    """`oidc`: the provider's discovery document, JWKS and (with a client) a token
    (probes/oidc.py)."""

    url: str = Field(
        max_length=2048,
        description="the issuer (its discovery document)",
        json_schema_extra=_URL_DOC,
    )
    ssl_verify: StrictBool = True
    expected_status_codes: list[int] = Field(default_factory=list, max_length=100)
    oidc_config: OidcConfig = Field(default_factory=OidcConfig)
    tls_expiry_threshold_days: int = Field(
        default=14,
        ge=0,
        le=3650,
        description="DEGRADED when the certificate or a signing key expires within this",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return http_url(v)


CHECK_SETTINGS: dict[str, type[_Part]] = {
    "uptime": HttpSettings,
    "heartbeat": HeartbeatSettings,
    "icmp": IcmpSettings,
    "tcp": NetSettings,
    "tls": TlsSettings,
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
NULLABLE = frozenset(
    {"runbook_url", "escalation_policy_id", "owner_team_id", "service_id", "project_id", "org_id"}
)


def _union_fields() -> dict[str, Any]:
    """Every type's settings as a field of any value: what each type requires and
    accepts is in the document's per-type schemas (`openapi_body` below), and a type
    never looks at the settings of other types."""
    users: dict[str, list[str]] = {}
    for kind, settings in CHECK_SETTINGS.items():
        for name in settings.model_fields:
            if name not in CheckCommon.model_fields:
                users.setdefault(name, []).append(kind)
    return {
        name: (Any, Field(default=None, description=f"settings of {', '.join(kinds)} checks"))
        for name, kinds in users.items()
    }


class _CheckDocument(CheckCommon):
    # The OpenAPI document (api/openapi.py): which settings a check needs and accepts
    # depends on its `type` (absent or null: uptime); a null anywhere but in NULLABLE
    # fields means the default (`parse_check`).
    openapi_body: ClassVar[dict[str, Any]] = {
        "variants": {"tag": "type", "default": "uptime", "models": CHECK_SETTINGS},
        "null_is_default": True,
    }


# Documentation of a check body: the common fields plus every type's settings (those
# of other types are ignored). Validation goes through `parse_check`.
CheckCreate = create_model("CheckCreate", __base__=_CheckDocument, **_union_fields())


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
                # Where the model sits (nested models), then the field it names ("a.0.b":
                # a path).
                path = [int(x) if x.isdigit() else x for x in err.field.split(".")]
                loc, msg = ["body", *e["loc"], *path], str(err)
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
    model_config = ConfigDict(
        extra="ignore",
        str_strip_whitespace=True,
        json_schema_extra={
            "if": {"properties": {"sli_type": {"const": "latency"}}, "required": ["sli_type"]},
            "then": {
                "required": ["latency_threshold_ms"],
                "properties": {"latency_threshold_ms": {"type": "number"}},
            },
        },
    )

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
