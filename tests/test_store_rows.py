"""The organisation-owned rows of every kind on both backends: one organisation never
reads, changes or points at another's, uniqueness rules, round trips and paging, and
secrets encrypted at rest."""

from __future__ import annotations

import json
from typing import Any

import pytest

from store_helpers import NOW, check_fields, raw_fetch, store
from tocsin.store import ConflictError, NotFoundError
from tocsin.store.sql import SqlStore
from tocsin.store.tables import LINKS, TABLES

__all__ = ["store"]  # the fixture


# -- organisation-owned rows: every kind -------------------------------------------------


def sample(kind: str, refs: dict[str, int]) -> dict[str, Any]:
    """Minimal valid fields for each kind; `refs` supplies ids of rows it points at."""
    return {
        "projects": lambda: {"name": "p2"},
        "incidents": lambda: {"title": "down", "started_at": NOW, "check_id": refs["checks"]},
        "incident_notes": lambda: {"incident_id": refs["incidents"], "body": "looking"},
        "incident_events": lambda: {"incident_id": refs["incidents"], "kind": "opened", "at": NOW},
        "maintenance_windows": lambda: {
            "name": "w",
            "starts_at": NOW,
            "duration_s": 3600,
            "check_ids": [refs["checks"]],
        },
        "notification_channels": lambda: {"name": "n", "channel_type": "webhook", "config": {}},
        "notification_deliveries": lambda: {
            "channel_id": refs["notification_channels"],
            "event": "open",
            "dedup_key": f"k{refs['checks']}",
            "next_attempt_at": NOW,
        },
        "status_pages": lambda: {"name": "s", "slug": f"s{refs['checks']}"},
        "status_page_subscribers": lambda: {"status_page_id": refs["status_pages"], "email": "e@x"},
        "agents": lambda: {"name": "a"},
        "agent_registration_tokens": lambda: {"token_hash": f"h{refs['checks']}", "prefix": "reg_"},
        "slos": lambda: {"check_id": refs["checks"], "target_percentage": 99.9},
        "applications": lambda: {"name": "app", "key_hash": f"k{refs['checks']}", "prefix": "ck_"},
        "systems": lambda: {"name": "sys"},
        "system_groups": lambda: {"name": "grp"},
        "reports": lambda: {"format": "json", "params": {"check_ids": [refs["checks"]]}},
        "metrics_keys": lambda: {
            "name": "prom",
            "key_hash": f"m{refs['checks']}",
            "prefix": "tmk_",
        },
        "oncall_schedules": lambda: {"name": "oc", "timezone": "Europe/Warsaw", "layers": []},
        "oncall_overrides": lambda: {
            "schedule_id": refs["oncall_schedules"],
            "user_id": refs["users"],
            "starts_at": NOW,
            "ends_at": NOW + 3600,
        },
        "escalation_policies": lambda: {
            "name": "ep",
            "steps": [{"delay_seconds": 300, "targets": [{"type": "user", "id": refs["users"]}]}],
        },
        "integration_keys": lambda: {
            "name": "am",
            "key_hash": f"i{refs['checks']}",
            "prefix": "ik_",
            "escalation_policy_id": refs["escalation_policies"],
        },
        "inbound_events": lambda: {
            "integration_key_id": refs["integration_keys"],
            "incident_id": refs["incidents"],
            "action": "trigger",
            "dedup_key": "disk-full",
            "received_at": NOW,
        },
        "teams": lambda: {"name": "Payments", "slug": "payments"},
        "team_members": lambda: {"team_id": refs["teams"], "user_id": refs["users"]},
        "services": lambda: {
            "name": "checkout",
            "owner_team_id": refs["teams"],
            "escalation_policy_id": refs["escalation_policies"],
            "notification_channel_ids": [refs["notification_channels"]],
        },
        "playbooks": lambda: {
            "name": "pb",
            "trigger_type": "incident_opened",
            "service_id": refs["services"],
            "steps": [{"type": "add_note", "body": "x"}],
        },
        "playbook_runs": lambda: {
            "playbook_id": refs["playbooks"],
            "incident_id": refs["incidents"],
            "started_at": NOW,
        },
        "war_rooms": lambda: {
            "incident_id": refs["incidents"],
            "title": "db down",
            "opened_at": NOW,
        },
        "war_room_members": lambda: {"war_room_id": refs["war_rooms"], "user_id": refs["users"]},
        "war_room_entries": lambda: {
            "war_room_id": refs["war_rooms"],
            "kind": "note",
            "body": "x",
            "at": NOW,
        },
        "postmortems": lambda: {"title": "pm", "incident_ids": [refs["incidents"]]},
        "lifecycle_watches": lambda: {"platform": "postgresql", "channel_ids": []},
        "lifecycle_notices": lambda: {
            "watch_id": refs["lifecycle_watches"],
            "notice": "eol:16:30d",
            "at": NOW,
        },
        "slo_events": lambda: {
            "slo_id": refs["slos"],
            "check_id": refs["checks"],
            "kind": "budget_warning",
            "at": NOW,
        },
    }[kind]()


ORDER = [
    "projects",
    "incidents",
    "incident_notes",
    "incident_events",
    "maintenance_windows",
    "notification_channels",
    "notification_deliveries",
    "status_pages",
    "status_page_subscribers",
    "agents",
    "agent_registration_tokens",
    "slos",
    "applications",
    "systems",
    "system_groups",
    "reports",
    "metrics_keys",
    "oncall_schedules",
    "oncall_overrides",
    "escalation_policies",
    "integration_keys",
    "inbound_events",
    "teams",
    "team_members",
    "services",
    "playbooks",
    "playbook_runs",
    "war_rooms",
    "war_room_members",
    "war_room_entries",
    "postmortems",
    "lifecycle_watches",
    "lifecycle_notices",
    "slo_events",
]


def test_the_contract_covers_every_table() -> None:
    assert sorted(ORDER) == sorted(TABLES)


async def populate(store: SqlStore, org_id: int) -> dict[str, int]:
    refs: dict[str, int] = {"checks": (await store.create_check(org_id, check_fields("c")))["id"]}
    refs["users"] = await store.create_user(f"u{org_id}-{refs['checks']}@x", "h")
    for kind in ORDER:
        refs[kind] = (await store.insert(kind, org_id, sample(kind, refs)))["id"]
    return refs


async def test_one_organisation_never_reads_or_changes_anothers_rows(store: SqlStore) -> None:
    a = (await store.create_organization("a"))["id"]
    b = (await store.create_organization("b"))["id"]
    in_a = await populate(store, a)
    in_b = await populate(store, b)
    for kind in ORDER:
        row_b = in_b[kind]
        assert await store.get(kind, [a], row_b) is None, kind
        assert await store.get(kind, [b], row_b) is not None, kind
        assert row_b not in [r["id"] for r in await store.select(kind, [a], limit=500)], kind
        # `a` sees only its own: its default project too, for projects.
        assert await store.count(kind, [a]) == (2 if kind == "projects" else 1), kind
        assert await store.update(kind, [a], row_b, {}) is None, kind
        assert not await store.delete(kind, [a], row_b), kind
        assert await store.get(kind, [b], row_b) is not None, kind
        assert await store.get(kind, [a, b], in_a[kind]) is not None, kind
        assert await store.select(kind, [], limit=10) == [], kind
    check_b = in_b["checks"]
    assert await store.get_check([a], check_b) is None
    assert await store.update_check([a], check_b, {"name": "x"}) is None
    assert not await store.delete_check([a], check_b)
    assert [c["id"] for c in await store.list_checks([a], limit=10, offset=0)] == [in_a["checks"]]
    assert await store.list_checks([], limit=10, offset=0) == []


async def test_a_write_cannot_point_at_another_organisations_row(store: SqlStore) -> None:
    a = (await store.create_organization("a"))["id"]
    b = (await store.create_organization("b"))["id"]
    in_b = await populate(store, b)
    in_a = await populate(store, a)
    for kind in ORDER:
        for col, ref in TABLES[kind].refs.items():
            with pytest.raises(NotFoundError) as err:
                await store.insert(kind, a, {**sample(kind, in_a), col: in_b[ref]})
            assert err.value.field == col, (kind, col)
            with pytest.raises(NotFoundError):
                await store.update(kind, [a], in_a[kind], {col: in_b[ref]})
    with pytest.raises(NotFoundError) as err:
        await store.create_check(a, check_fields("c", project_id=await store.default_project(b)))
    assert err.value.field == "project_id"
    for name, link in LINKS.items():
        with pytest.raises(NotFoundError):
            await store.link(name, a, in_a[link.left_table], in_b[link.right_table])
        with pytest.raises(NotFoundError):
            await store.link(name, a, in_b[link.left_table], in_a[link.right_table])
        await store.link(name, a, in_a[link.left_table], in_a[link.right_table])
        await store.link(name, a, in_a[link.left_table], in_a[link.right_table])  # idempotent
        assert await store.linked(name, [a], in_a[link.left_table]) == [in_a[link.right_table]]
        assert await store.linked(name, [b], in_a[link.left_table]) == []
        assert not await store.unlink(name, [b], in_a[link.left_table], in_a[link.right_table])
        assert await store.unlink(name, [a], in_a[link.left_table], in_a[link.right_table])


async def test_uniqueness_rules_are_conflicts_and_change_nothing(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    check = (await store.create_check(org, check_fields("c")))["id"]
    await store.insert("status_pages", org, {"name": "s", "slug": "status"})
    with pytest.raises(ConflictError):
        await store.insert("status_pages", org, {"name": "s2", "slug": "status"})
    first = await store.insert(
        "incidents", org, {"title": "a", "started_at": NOW, "check_id": check}
    )
    with pytest.raises(ConflictError):
        await store.insert("incidents", org, {"title": "b", "started_at": NOW, "check_id": check})
    assert await store.count("incidents", [org]) == 1
    await store.update("incidents", [org], first["id"], {"status": "RESOLVED", "resolved_at": NOW})
    await store.insert("incidents", org, {"title": "c", "started_at": NOW, "check_id": check})
    assert await store.count("incidents", [org], where={"status": "OPEN"}) == 1
    with pytest.raises(ValueError, match="cannot be filtered"):
        await store.select("incidents", [org], where={"title": "c"})
    with pytest.raises(ValueError, match="no column"):
        await store.insert("incidents", org, {"bogus": 1})


async def test_rows_round_trip_json_booleans_and_paging(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    rows = [
        await store.insert(
            "maintenance_windows",
            org,
            {"name": f"w{i}", "starts_at": NOW, "duration_s": 60, "check_ids": [i, i + 1]},
        )
        for i in range(5)
    ]
    assert rows[0]["check_ids"] == [0, 1] and rows[0]["is_active"] is True
    page = await store.select("maintenance_windows", [org], limit=2, offset=2)
    assert [r["name"] for r in page] == ["w2", "w3"]
    newest = await store.select("maintenance_windows", [org], limit=1, newest_first=True)
    assert newest[0]["name"] == "w4"
    off = await store.update("maintenance_windows", [org], rows[1]["id"], {"is_active": False})
    assert off is not None and off["is_active"] is False and off["updated_at"] >= off["created_at"]
    assert await store.count("maintenance_windows", [org], where={"is_active": False}) == 1


# -- secrets at rest ---------------------------------------------------------------------


async def test_secrets_are_encrypted_at_rest_and_read_back_in_clear(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    check = await store.create_check(
        org,
        check_fields(
            "c",
            config={
                "auth_method": "basic",
                "auth_username": "u",
                "auth_password": "hunter2",
                "http_headers": {"X-Api-Key": "hk-9", "Accept": "text/html"},
            },
        ),
    )
    channel = await store.insert(
        "notification_channels",
        org,
        {
            "name": "n",
            "channel_type": "email",
            "config": {"smtp_host": "h", "smtp_password": "pw-42", "nested": {"token": "tk-7"}},
        },
    )
    assert check["config"]["auth_password"] == "hunter2"
    assert check["config"]["http_headers"] == {"X-Api-Key": "hk-9", "Accept": "text/html"}
    assert channel["config"]["smtp_password"] == "pw-42"
    assert channel["config"]["nested"]["token"] == "tk-7"
    raw = json.dumps(
        [
            await raw_fetch(store, "SELECT config FROM checks"),
            await raw_fetch(store, "SELECT config FROM notification_channels"),
        ],
        default=str,
    )
    for secret in ("hunter2", "pw-42", "tk-7", "hk-9", "text/html"):
        assert secret not in raw
    # Header names stay readable; every header value is sealed.
    assert raw.count("enc:v1:") == 5 and "auth_username" in raw and "X-Api-Key" in raw
    again = await store.update_check([org], check["id"], {"config": {"auth_password": ""}})
    assert again is not None and again["config"] == {"auth_password": ""}
