"""Per-check metrics as OTLP JSON: one `ExportMetricsServiceRequest` (opentelemetry-proto's
`opentelemetry.proto.collector.metrics.v1`) in the OTLP/JSON mapping: camelCase field
names, 64-bit integers (`timeUnixNano`, `asInt`) as decimal strings, every metric a
gauge. Names and attributes are the Prometheus export's (docs/metrics.md), with the
units in `unit` (UCUM: `s`, `1`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tocsin.metrics.exposition import LABELS, QUANTILES, STATUSES, UPTIME_WINDOWS, CheckSample

CONTENT_TYPE = "application/json"
SCOPE = "tocsin.metrics"


def _attr(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _point(attrs: list[dict[str, Any]], now_ns: str, value: float | int) -> dict[str, Any]:
    point: dict[str, Any] = {"attributes": attrs, "timeUnixNano": now_ns}
    if isinstance(value, int):
        point["asInt"] = str(value)
    else:
        point["asDouble"] = float(value)
    return point


def render(
    samples: Sequence[CheckSample],
    *,
    now: float,
    org_id: int,
    version: str = "",
) -> bytes:
    """The request body (CONTENT_TYPE) for `samples`, observed at `now` (Unix seconds)."""
    now_ns = str(int(now * 1e9))
    points: dict[str, list[dict[str, Any]]] = {
        name: [] for name in ("status", "up", "latency", "uptime", "last", "response")
    }
    for s in samples:
        base = [
            _attr(k, s.check_id if k == "check_id" else v)
            for k, v in zip(LABELS, s.labels(), strict=True)
        ]
        for st in STATUSES:
            points["status"].append(
                _point([*base, _attr("status", st)], now_ns, int(s.status == st))
            )
        points["up"].append(_point(base, now_ns, s.up))
        for q in QUANTILES:
            v = s.latency_s.get(q)
            if v is not None:
                points["latency"].append(
                    _point([*base, _attr("quantile", format(q, "g"))], now_ns, v)
                )
        for w in UPTIME_WINDOWS:
            ratio = s.uptime.get(w)
            if ratio is not None:
                points["uptime"].append(_point([*base, _attr("window", w)], now_ns, ratio))
        if s.last_check_at is not None:
            points["last"].append(_point(base, now_ns, s.last_check_at))
        if s.response_time_s is not None:
            points["response"].append(_point(base, now_ns, s.response_time_s))
    described = (
        ("status", "tocsin_check_status", "1", "1 for the check's current status, else 0."),
        ("up", "tocsin_check_up", "1", "1 when the check is UP or DEGRADED, else 0."),
        (
            "latency",
            "tocsin_check_latency_seconds",
            "s",
            "Latency of successful runs over the last 24h, by quantile.",
        ),
        ("uptime", "tocsin_check_uptime_ratio", "1", "Share of the window not DOWN."),
        (
            "last",
            "tocsin_check_last_check_timestamp_seconds",
            "s",
            "When the last result started (Unix seconds).",
        ),
        ("response", "tocsin_check_response_time_seconds", "s", "Last result's response time."),
    )
    metrics = [
        {"name": name, "description": doc, "unit": unit, "gauge": {"dataPoints": points[key]}}
        for key, name, unit, doc in described
        if points[key]
    ]
    body = {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [
                        _attr("service.name", "tocsin"),
                        _attr("tocsin.organization_id", org_id),
                    ]
                },
                "scopeMetrics": [
                    {"scope": {"name": SCOPE, "version": version}, "metrics": metrics}
                ],
            }
        ]
    }
    return json.dumps(body, separators=(",", ":")).encode()
