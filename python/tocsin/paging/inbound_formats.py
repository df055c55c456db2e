"""What other tools send, as one normalised event: tocsin's own format, PagerDuty's Events
API v2, Prometheus Alertmanager's webhook (version 4) and Grafana's alerting webhook
(version 1). Pure functions over a decoded JSON body; a body that does not fit raises
`InboundFormatError` naming every field at fault (`loc` starts with "body").

The pydantic models validate the bodies and are what the OpenAPI document says of them.
The rules on top (a trigger needs a summary and a source; PagerDuty's needs a severity)
are applied by `parse_event` and declared in the models' `if`/`then`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.config import JsonDict

Action = Literal["trigger", "acknowledge", "resolve"]
Severity = Literal["critical", "error", "warning", "info"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
# Stronger last: a retrigger raises an incident's severity, never lowers it.
SEVERITY_RANK = {s: i for i, s in enumerate(reversed(SEVERITIES))}
SourceFormat = Literal["native", "pagerduty", "alertmanager", "grafana"]

MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
MAX_TEXT = 1024
MAX_URL = 2048
MAX_LINKS = 50
MAX_ALERTS = 10_000
# What `str_strip_whitespace` removes: text that is only this is blank.
_STRIPPED = r"\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{_STRIPPED}]"

# Label values Alertmanager and Grafana users give `severity`, mapped to the four levels
# (anything else, or no label, is critical: what Alertmanager's own PagerDuty receiver
# sends by default).
_SEVERITY_WORDS = {
    **{w: "critical" for w in ("critical", "crit", "page", "p1", "fatal", "emergency", "alert")},
    **{w: "error" for w in ("error", "err", "high", "major", "p2")},
    **{w: "warning" for w in ("warning", "warn", "medium", "minor", "p3")},
    **{w: "info" for w in ("info", "informational", "low", "notice", "none", "p4", "p5")},
}


class InboundFormatError(ValueError):
    """The body does not fit its format: `errors` are the API's validation errors
    (`{"loc": ["body", …], "msg", "type"}`)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


@dataclass(slots=True)
class InboundEvent:
    """One event as every format becomes: what to do to the incident of `dedup_key`,
    and what the sender said of it."""

    action: Action
    dedup_key: str
    summary: str = ""
    severity: str = "critical"
    source: str = ""
    component: str | None = None
    group: str | None = None
    class_: str | None = None
    custom_details: Any = None
    links: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    # When the sender saw it happen (Unix seconds), if it said.
    occurred_at: float | None = None
    # The dedup key was made up here (a trigger that sent none).
    generated_key: bool = False

    def fields(self) -> dict[str, Any]:
        """The event as grouping paths read it (`component`, `custom_details.cluster`)."""
        return {
            "summary": self.summary,
            "severity": self.severity,
            "source": self.source,
            "component": self.component,
            "group": self.group,
            "class": self.class_,
            "custom_details": self.custom_details,
        }

    def details(self) -> dict[str, Any]:
        """What an incident keeps of the event that opened it."""
        out: dict[str, Any] = {
            "source": self.source,
            "component": self.component,
            "group": self.group,
            "class": self.class_,
            "custom_details": self.custom_details,
        }
        if self.links:
            out["links"] = self.links
        if self.images:
            out["images"] = self.images
        return out

    def payload(self) -> dict[str, Any]:
        """What the stored event keeps besides its action, key, summary and severity."""
        out = self.details()
        if self.occurred_at is not None:
            out["occurred_at"] = self.occurred_at
        return out


# -- the models ---------------------------------------------------------------------------


class _Model(BaseModel):
    # Senders add fields over time: unknown ones are ignored.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True)


class Link(_Model):
    href: str = Field(min_length=1, max_length=MAX_URL)
    text: str | None = Field(default=None, max_length=MAX_TEXT)


class Image(_Model):
    src: str = Field(min_length=1, max_length=MAX_URL)
    href: str | None = Field(default=None, max_length=MAX_URL)
    alt: str | None = Field(default=None, max_length=MAX_TEXT)


def _lower(v: Any) -> Any:
    return v.strip().lower() if isinstance(v, str) else v


class EventPayload(_Model):
    """What happened. `summary` and `source` are required to trigger."""

    summary: str | None = Field(
        default=None,
        description=f"what is wrong; required to trigger; cut to {MAX_SUMMARY} characters",
    )
    severity: Severity | None = Field(
        default=None, description="critical (the default), error, warning or info"
    )
    source: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="the affected system (host, service); required to trigger",
    )
    timestamp: str | None = Field(
        default=None, max_length=64, description="when it happened, ISO 8601"
    )
    component: str | None = Field(default=None, max_length=MAX_TEXT)
    group: str | None = Field(default=None, max_length=MAX_TEXT)
    class_: str | None = Field(default=None, alias="class", max_length=MAX_TEXT)
    custom_details: Any = Field(default=None, description="any JSON, kept as sent")

    _severity = field_validator("severity", mode="before")(_lower)


def _trigger_needs(*required: str) -> JsonDict:
    """The schema's rule for a trigger: a payload with these fields, not blank."""
    fields: JsonDict = {name: {"type": "string", "pattern": NOT_BLANK} for name in required}
    return {
        "if": {"properties": {"event_action": {"const": "trigger"}}},
        "then": {
            "required": ["payload"],
            "properties": {
                "payload": {"type": "object", "required": list(required), "properties": fields}
            },
        },
    }


class InboundEventBody(_Model):
    """An event for tocsin's own route: `trigger` opens an incident (or updates the open
    one of the same `dedup_key`), `acknowledge` and `resolve` change it."""

    model_config = ConfigDict(json_schema_extra=_trigger_needs("summary", "source"))

    routing_key: str = Field(min_length=1, max_length=200, description="the integration key")
    event_action: Action
    dedup_key: str | None = Field(
        default=None,
        max_length=MAX_DEDUP_KEY,
        description="required to acknowledge and resolve; made up for a trigger without",
    )
    payload: EventPayload | None = None
    client: str | None = Field(default=None, max_length=MAX_TEXT)
    client_url: str | None = Field(default=None, max_length=MAX_URL)
    links: list[Link] = Field(default_factory=list, max_length=MAX_LINKS)
    images: list[Image] = Field(default_factory=list, max_length=MAX_LINKS)

    _action = field_validator("event_action", mode="before")(_lower)


class PagerDutyEventBody(InboundEventBody):
    """An event as PagerDuty's Events API v2 takes it (a trigger needs a severity)."""

    model_config = ConfigDict(json_schema_extra=_trigger_needs("summary", "source", "severity"))


Labels = dict[str, str]


class AlertmanagerAlert(_Model):
    status: Literal["firing", "resolved"]
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    startsAt: str | None = Field(default=None, max_length=64)
    endsAt: str | None = Field(default=None, max_length=64)
    generatorURL: str | None = Field(default=None, max_length=MAX_URL)
    fingerprint: str | None = Field(default=None, max_length=MAX_DEDUP_KEY)


class AlertmanagerBody(_Model):
    """Alertmanager's webhook (`webhook_configs`), version 4: one event per alert."""

    version: str | None = Field(default=None, max_length=16)
    groupKey: str | None = Field(default=None, max_length=MAX_URL)
    truncatedAlerts: int | None = None
    status: str | None = Field(default=None, max_length=32)
    receiver: str | None = Field(default=None, max_length=MAX_TEXT)
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)
    externalURL: str | None = Field(default=None, max_length=MAX_URL)
    alerts: list[AlertmanagerAlert] = Field(max_length=MAX_ALERTS)


class GrafanaAlert(AlertmanagerAlert):
    silenceURL: str | None = Field(default=None, max_length=MAX_URL)
    dashboardURL: str | None = Field(default=None, max_length=MAX_URL)
    panelURL: str | None = Field(default=None, max_length=MAX_URL)
    imageURL: str | None = Field(default=None, max_length=MAX_URL)
    values: dict[str, Any] | None = None
    valueString: str | None = None


class GrafanaBody(AlertmanagerBody):
    """Grafana alerting's webhook contact point, version 1: one event per alert."""

    alerts: list[GrafanaAlert] = Field(max_length=MAX_ALERTS)  # type: ignore[assignment]
    orgId: int | None = None
    title: str | None = None
    state: str | None = Field(default=None, max_length=32)
    message: str | None = None


# -- parsing ------------------------------------------------------------------------------


def _validate(model: type[BaseModel], body: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InboundFormatError(
            [
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


def _missing(*loc: str | int) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": "Field required", "type": "missing"}


def timestamp(text: str | None) -> float | None:
    """Unix seconds of an RFC 3339 / ISO 8601 time (Go's nanoseconds included); None for
    none, and for Go's zero time (`0001-01-01T00:00:00Z`: not set)."""
    if not text:
        return None
    when = dt.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    if when.year <= 1:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def parse_event(body: Mapping[str, Any], *, pagerduty: bool = False) -> tuple[str, InboundEvent]:
    """(routing key, event) of a native body (PagerDuty's with `pagerduty`, which needs
    a severity to trigger; tocsin's own defaults it to critical)."""
    model = PagerDutyEventBody if pagerduty else InboundEventBody
    parsed: InboundEventBody = _validate(model, body)
    action = parsed.event_action
    payload = parsed.payload or EventPayload()
    errors = []
    dedup_key = parsed.dedup_key or None
    if action == "trigger":
        if parsed.payload is None:
            errors.append(_missing("payload"))
        else:
            if not payload.summary:
                errors.append(_missing("payload", "summary"))
            if not payload.source:
                errors.append(_missing("payload", "source"))
            if pagerduty and payload.severity is None:
                errors.append(_missing("payload", "severity"))
    elif dedup_key is None:
        errors.append(_missing("dedup_key"))
    occurred_at = None
    try:
        occurred_at = timestamp(payload.timestamp)
    except ValueError:
        errors.append(
            {
                "loc": ["body", "payload", "timestamp"],
                "msg": "must be an ISO 8601 date-time",
                "type": "datetime_parsing",
            }
        )
    if errors:
        raise InboundFormatError(errors)
    generated = dedup_key is None
    event = InboundEvent(
        action=action,
        dedup_key=dedup_key or uuid.uuid4().hex,
        summary=(payload.summary or "")[:MAX_SUMMARY],
        severity=payload.severity or "critical",
        source=payload.source or "",
        component=payload.component or None,
        group=payload.group or None,
        class_=payload.class_ or None,
        custom_details=payload.custom_details,
        links=[link.model_dump(exclude_none=True) for link in parsed.links],
        images=[image.model_dump(exclude_none=True) for image in parsed.images],
        occurred_at=occurred_at,
        generated_key=generated,
    )
    return parsed.routing_key, event


def severity_of(labels: Mapping[str, str]) -> str:
    """The level of an alert's `severity` label (critical when absent or unknown)."""
    return _SEVERITY_WORDS.get((labels.get("severity") or "").strip().lower(), "critical")


def labels_key(labels: Mapping[str, str]) -> str:
    """A stable dedup key from an alert's labels, for a sender that gives no fingerprint."""
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _alert_event(
    alert: AlertmanagerAlert, body: AlertmanagerBody, i: int, extra: dict[str, Any]
) -> InboundEvent:
    labels, annotations = alert.labels, alert.annotations
    firing = alert.status == "firing"
    starts = _alert_time(alert.startsAt, i, "startsAt")
    ends = _alert_time(alert.endsAt, i, "endsAt")
    links = []
    if alert.generatorURL:
        links.append({"href": alert.generatorURL, "text": "Source"})
    for text, href in extra.pop("_links", ()):
        if href:
            links.append({"href": href, "text": text})
    details: dict[str, Any] = {
        "labels": dict(labels),
        "annotations": dict(annotations),
        "status": alert.status,
        "startsAt": alert.startsAt,
        "endsAt": alert.endsAt,
        "generatorURL": alert.generatorURL,
        "fingerprint": alert.fingerprint,
        "receiver": body.receiver,
        "groupKey": body.groupKey,
        "externalURL": body.externalURL,
        **extra,
    }
    summary = annotations.get("summary") or labels.get("alertname") or "alert"
    return InboundEvent(
        action="trigger" if firing else "resolve",
        dedup_key=alert.fingerprint or labels_key(labels),
        summary=summary[:MAX_SUMMARY],
        severity=severity_of(labels),
        source=labels.get("instance") or body.externalURL or "alertmanager",
        component=labels.get("component") or labels.get("job") or None,
        group=labels.get("group") or None,
        class_=labels.get("alertname") or None,
        custom_details=details,
        links=links,
        occurred_at=starts if firing else (ends or starts),
    )


def _alert_time(text: str | None, i: int, name: str) -> float | None:
    try:
        return timestamp(text)
    except ValueError:
        raise InboundFormatError(
            [
                {
                    "loc": ["body", "alerts", i, name],
                    "msg": "must be an RFC 3339 date-time",
                    "type": "datetime_parsing",
                }
            ]
        ) from None


def parse_alertmanager(body: Mapping[str, Any]) -> list[InboundEvent]:
    """One event per alert of an Alertmanager webhook: firing triggers, resolved
    resolves; the dedup key is the alert's fingerprint (or a hash of its labels)."""
    parsed: AlertmanagerBody = _validate(AlertmanagerBody, body)
    return [_alert_event(a, parsed, i, {}) for i, a in enumerate(parsed.alerts)]


def parse_grafana(body: Mapping[str, Any]) -> list[InboundEvent]:
    """One event per alert of a Grafana webhook, as for Alertmanager; Grafana's links
    (silence, dashboard, panel, image) and values are kept."""
    parsed: GrafanaBody = _validate(GrafanaBody, body)
    out = []
    for i, alert in enumerate(parsed.alerts):
        extra: dict[str, Any] = {
            "values": alert.values,
            "valueString": alert.valueString,
            "orgId": parsed.orgId,
            "_links": (
                ("Silence", alert.silenceURL),
                ("Dashboard", alert.dashboardURL),
                ("Panel", alert.panelURL),
                ("Image", alert.imageURL),
            ),
        }
        out.append(_alert_event(alert, parsed, i, extra))
    return out


# -- grouping -----------------------------------------------------------------------------


def field_value(fields: Mapping[str, Any], path: str) -> str | None:
    """The value at a dotted `path` of an event's fields (`component`,
    `custom_details.cluster`) as text, or None when there is none."""
    value: Any = fields
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
        if value is None:
            return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return repr(value)
    # A list or an object: its JSON, keys sorted, so equal values group together.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
