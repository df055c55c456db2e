"""The inbound formats as pure functions: tocsin's own events, PagerDuty's Events API v2,
and Alertmanager's and Grafana's webhook bodies as those senders write them (the
shapes of Alertmanager 0.25's `notify/webhook` Message and Grafana alerting's
`webhookMessage`), each becoming normalised events; what does not fit names the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tocsin.paging.inbound_formats import (
    InboundFormatError,
    field_value,
    labels_key,
    parse_alertmanager,
    parse_event,
    parse_grafana,
    severity_of,
    timestamp,
)

# What Alertmanager 0.25 POSTs to a `webhook_configs` URL (notify/webhook/webhook.go:
# template.Data plus version, groupKey and truncatedAlerts; Go's RFC 3339 times with
# nanoseconds, and its zero time for an alert that has not ended).
ALERTMANAGER: dict[str, Any] = {
    "receiver": "tocsin",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "ProbeFailure",
                "instance": "https://server.example.org",
                "job": "http_checks",
                "severity": "warning",
            },
            "annotations": {
                "description": "Instance https://server.example.org has been down for 5m.",
                "summary": "BlackBox Probe Failure: https://server.example.org",
            },
            "startsAt": "2023-02-06T13:08:45.828266876Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=probe_success+%3D%3D+0&g0.tab=1",
            "fingerprint": "1a30ba71cca2921f",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "DiskFull", "instance": "db1:9100", "job": "node"},
            "annotations": {},
            "startsAt": "2023-02-06T12:00:00.000000001+02:00",
            "endsAt": "2023-02-06T13:00:00Z",
            "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=up",
            "fingerprint": "c6eadffa33fcdf37",
        },
    ],
    "groupLabels": {"alertname": "ProbeFailure"},
    "commonLabels": {"alertname": "ProbeFailure"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager.example.org:9093",
    "version": "4",
    "groupKey": '{}/{severity="critical"}:{alertname="ProbeFailure"}',
    "truncatedAlerts": 0,
}

# What Grafana's webhook contact point sends (grafana/alerting receivers/webhook:
# ExtendedData with Grafana's links, values and the alert's orgId, plus version "1",
# orgId, title, state and message).
GRAFANA: dict[str, Any] = {
    "receiver": "tocsin",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
            "annotations": {
                "description": "The system has high memory usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone us-1",
            },
            "startsAt": "2021-10-12T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit?orgId=1",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana",
            "dashboardURL": "https://play.grafana.org/d/abcd?orgId=1",
            "panelURL": "https://play.grafana.org/d/abcd?orgId=1&viewPanel=efgh",
            "values": {"B": 44.23943737541908, "C": 1},
            "valueString": "[ var='B' labels={} value=44.23943737541908 ]",
            "orgId": 1,
        },
        {
            "status": "firing",
            "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
            "annotations": {},
            "startsAt": "2021-10-12T09:56:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit?orgId=1",
            "fingerprint": "bc97ff14869b13e3",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana",
            "dashboardURL": "",
            "panelURL": "",
            "values": None,
            "valueString": "",
            "orgId": 1,
        },
    ],
    "groupLabels": {"alertname": ""},
    "commonLabels": {"team": "blue"},
    "commonAnnotations": {},
    "externalURL": "https://play.grafana.org/",
    "version": "1",
    "groupKey": '{}:{alertname=""}',
    "truncatedAlerts": 0,
    "orgId": 1,
    "title": "[FIRING:2]  (blue)",
    "state": "alerting",
    "message": "**Firing**\n\nValue: B=44.239, C=1\n",
}


def errors_of(call: Any) -> list[list[Any]]:
    with pytest.raises(InboundFormatError) as caught:
        call()
    return [e["loc"] for e in caught.value.errors]


def test_a_native_trigger_becomes_one_event() -> None:
    key, ev = parse_event(
        {
            "routing_key": "ik_abc",
            "event_action": "trigger",
            "dedup_key": "disk-full-srv01",
            "payload": {
                "summary": "Disk full on srv01",
                "severity": "critical",
                "source": "prometheus",
                "component": "disk",
                "group": "infrastructure",
                "class": "disk",
                "custom_details": {"usage_pct": 95},
                "timestamp": "2024-05-01T12:00:00Z",
            },
            "links": [{"href": "https://grafana.example/d/1", "text": "dashboard"}],
        }
    )
    assert key == "ik_abc"
    assert (ev.action, ev.dedup_key, ev.summary, ev.severity) == (
        "trigger",
        "disk-full-srv01",
        "Disk full on srv01",
        "critical",
    )
    assert (ev.source, ev.component, ev.group, ev.class_) == (
        "prometheus",
        "disk",
        "infrastructure",
        "disk",
    )
    assert ev.custom_details == {"usage_pct": 95}
    assert ev.occurred_at == 1714564800.0
    assert ev.links == [{"href": "https://grafana.example/d/1", "text": "dashboard"}]
    assert ev.details()["class"] == "disk" and ev.details()["links"] == ev.links


def test_a_trigger_without_dedup_key_gets_one_and_severity_defaults_to_critical() -> None:
    body = {
        "routing_key": "k",
        "event_action": "trigger",
        "payload": {"summary": "s", "source": "x"},
    }
    _, one = parse_event(body)
    _, two = parse_event(body)
    assert one.generated_key and one.dedup_key and one.dedup_key != two.dedup_key
    assert one.severity == "critical"
    # Action and severity in any letter case, as senders write them.
    _, ev = parse_event(
        {**body, "event_action": "TRIGGER", "payload": {**body["payload"], "severity": "Warning"}}
    )  # type: ignore[dict-item]
    assert (ev.action, ev.severity) == ("trigger", "warning")


def test_what_a_trigger_and_a_resolution_need_is_named() -> None:
    assert errors_of(lambda: parse_event({"routing_key": "k", "event_action": "trigger"})) == [
        ["body", "payload"]
    ]
    assert errors_of(
        lambda: parse_event(
            {"routing_key": "k", "event_action": "trigger", "payload": {"summary": "  "}}
        )
    ) == [["body", "payload", "summary"], ["body", "payload", "source"]]
    assert errors_of(lambda: parse_event({"routing_key": "k", "event_action": "resolve"})) == [
        ["body", "dedup_key"]
    ]
    assert errors_of(
        lambda: parse_event({"routing_key": "k", "event_action": "acknowledge", "dedup_key": ""})
    ) == [["body", "dedup_key"]]
    assert errors_of(lambda: parse_event({"event_action": "explode", "routing_key": 5})) == [
        ["body", "routing_key"],
        ["body", "event_action"],
    ]
    payload = {"summary": "s", "source": "x", "severity": "fatal"}
    assert errors_of(
        lambda: parse_event({"routing_key": "k", "event_action": "trigger", "payload": payload})
    ) == [["body", "payload", "severity"]]
    payload = {"summary": "s", "source": "x", "timestamp": "yesterday"}
    assert errors_of(
        lambda: parse_event({"routing_key": "k", "event_action": "trigger", "payload": payload})
    ) == [["body", "payload", "timestamp"]]


def test_pagerduty_events_need_a_severity_to_trigger_as_pagerduty_does() -> None:
    body = {
        "routing_key": "k",
        "event_action": "trigger",
        "payload": {"summary": "CPU high", "source": "web-1"},
    }
    assert errors_of(lambda: parse_event(body, pagerduty=True)) == [["body", "payload", "severity"]]
    full = copy.deepcopy(body)
    full["payload"]["severity"] = "error"  # type: ignore[index]
    full.update(
        client="Monitoring",
        client_url="https://monitoring.example.com",
        images=[{"src": "https://chart.example/1.png", "alt": "chart"}],
    )
    _, ev = parse_event(full, pagerduty=True)
    assert ev.severity == "error" and ev.images == [
        {"src": "https://chart.example/1.png", "alt": "chart"}
    ]
    # A summary longer than PagerDuty's 1024 characters is cut, not refused.
    full["payload"]["summary"] = "x" * 5000  # type: ignore[index]
    assert len(parse_event(full, pagerduty=True)[1].summary) == 1024


def test_an_alertmanager_group_becomes_one_event_per_alert() -> None:
    firing, resolved = parse_alertmanager(ALERTMANAGER)
    assert (firing.action, firing.dedup_key, firing.severity) == (
        "trigger",
        "1a30ba71cca2921f",
        "warning",
    )
    assert firing.summary == "BlackBox Probe Failure: https://server.example.org"
    assert firing.source == "https://server.example.org"
    assert (firing.component, firing.class_) == ("http_checks", "ProbeFailure")
    assert firing.custom_details["labels"]["job"] == "http_checks"
    assert firing.custom_details["annotations"]["description"].startswith("Instance")
    assert firing.custom_details["groupKey"] == ALERTMANAGER["groupKey"]
    assert firing.links == [{"href": ALERTMANAGER["alerts"][0]["generatorURL"], "text": "Source"}]
    assert firing.occurred_at == pytest.approx(1675688925.828266)
    # Resolved: a resolution of the same fingerprint, at its end; no summary annotation,
    # so the alert's name; no severity label, so critical.
    assert (resolved.action, resolved.dedup_key) == ("resolve", "c6eadffa33fcdf37")
    assert (resolved.summary, resolved.severity) == ("DiskFull", "critical")
    assert resolved.occurred_at == 1675688400.0


def test_an_alert_without_fingerprint_is_keyed_by_its_labels() -> None:
    body = copy.deepcopy(ALERTMANAGER)
    for alert in body["alerts"]:
        del alert["fingerprint"]
    first, _ = parse_alertmanager(body)
    again, _ = parse_alertmanager(body)
    assert first.dedup_key == again.dedup_key == labels_key(ALERTMANAGER["alerts"][0]["labels"])
    assert first.dedup_key != labels_key({"alertname": "ProbeFailure"})


def test_alertmanager_bodies_that_do_not_fit_name_the_field() -> None:
    assert errors_of(lambda: parse_alertmanager({"version": "4"})) == [["body", "alerts"]]
    body = copy.deepcopy(ALERTMANAGER)
    body["alerts"][1]["status"] = "pending"
    assert errors_of(lambda: parse_alertmanager(body)) == [["body", "alerts", 1, "status"]]
    body = copy.deepcopy(ALERTMANAGER)
    body["alerts"][0]["startsAt"] = "not a time"
    assert errors_of(lambda: parse_alertmanager(body)) == [["body", "alerts", 0, "startsAt"]]
    body = copy.deepcopy(ALERTMANAGER)
    body["alerts"][0]["labels"]["severity"] = 3
    assert errors_of(lambda: parse_alertmanager(body)) == [
        ["body", "alerts", 0, "labels", "severity"]
    ]


def test_a_grafana_notification_keeps_its_links_and_values() -> None:
    memory, cpu = parse_grafana(GRAFANA)
    assert (memory.action, memory.dedup_key) == ("trigger", "c6eadffa33fcdf37")
    assert memory.summary == "This alert was triggered for zone us-1"
    assert memory.source == "https://play.grafana.org/"
    assert [link["text"] for link in memory.links] == ["Source", "Silence", "Dashboard", "Panel"]
    assert memory.custom_details["values"] == {"B": 44.23943737541908, "C": 1}
    assert memory.custom_details["orgId"] == 1
    # Empty links are left out; null values are kept as null.
    assert [link["text"] for link in cpu.links] == ["Source", "Silence"]
    assert cpu.summary == "High CPU usage" and cpu.custom_details["values"] is None
    resolved = copy.deepcopy(GRAFANA)
    resolved["alerts"][0].update(status="resolved", endsAt="2021-10-12T10:01:03.157076+02:00")
    assert parse_grafana(resolved)[0].action == "resolve"


@pytest.mark.parametrize(
    ("label", "level"),
    [
        ("critical", "critical"),
        ("PAGE", "critical"),
        ("error", "error"),
        ("high", "error"),
        ("warning", "warning"),
        ("warn", "warning"),
        ("info", "info"),
        ("none", "info"),
        ("weird", "critical"),
        ("", "critical"),
    ],
)
def test_severity_labels_map_to_the_four_levels(label: str, level: str) -> None:
    assert severity_of({"severity": label}) == level


def test_times_and_grouping_paths() -> None:
    assert timestamp("0001-01-01T00:00:00Z") is None
    assert timestamp(None) is None
    assert timestamp("2024-01-01T00:00:00.123456789+00:00") == pytest.approx(1704067200.123456)
    with pytest.raises(ValueError, match="isoformat"):
        timestamp("soon")
    fields = {
        "component": "api",
        "custom_details": {"cluster": "eu-1", "shards": [1, 2], "n": 3, "nested": {"b": 1}},
    }
    assert field_value(fields, "component") == "api"
    assert field_value(fields, "custom_details.cluster") == "eu-1"
    assert field_value(fields, "custom_details.n") == "3"
    assert field_value(fields, "custom_details.shards") == "[1,2]"
    assert field_value(fields, "custom_details.missing") is None
    assert field_value(fields, "component.deeper") is None
    assert field_value(fields, "group") is None
