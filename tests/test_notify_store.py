"""The notification store methods on both backends: an incident change and its outbox
rows commit together (or not at all), one row per dedup key, claims with leases, and
settling only what is still being sent."""

from __future__ import annotations

from typing import Any

import pytest

from store_helpers import NOW, raw_fetch, store
from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.incidents import IncidentManager
from tocsin.models import Check, Status, StatusChange
from tocsin.notify.router import Router
from tocsin.store import ConflictError, NotFoundError
from tocsin.store.sql import SqlStore

__all__ = ["store"]  # the fixture


async def setup(store: SqlStore) -> tuple[int, int, int]:
    org = int((await store.create_organization("Acme"))["id"])
    check = await store.create_check(
        org, {"name": "web", "type": "uptime", "interval": 60, "timeout": 5}
    )
    channel = await store.insert(
        "notification_channels",
        org,
        {"name": "hook", "channel_type": "webhook", "config": {"url": "http://x", "secret": "k"}},
    )
    return org, int(check["id"]), int(channel["id"])


def outbox(channel_id: int, event: str, **kw: Any) -> dict[str, Any]:
    return {
        "channel_id": channel_id,
        "event": event,
        "dedup_key": f"incident:{{incident}}:{event}:{channel_id}",
        "payload": {"summary": f"web {event}"},
        "status": "pending",
        "next_attempt_at": NOW,
        **kw,
    }


def incident(check_id: int) -> dict[str, Any]:
    return {
        "check_id": check_id,
        "kind": "check",
        "status": "OPEN",
        "severity": "critical",
        "title": "web is DOWN",
        "started_at": NOW,
    }


async def test_incident_timeline_and_outbox_commit_together(store: SqlStore) -> None:
    org, cid, ch = await setup(store)
    other_org = int((await store.create_organization("Other"))["id"])
    foreign = await store.insert(
        "notification_channels", other_org, {"name": "x", "channel_type": "slack", "config": {}}
    )
    row = await store.write_incident_change(
        org,
        None,
        incident(cid),
        event={"kind": "opened", "actor_id": None, "at": NOW, "detail": {"x": 1}},
        deliveries=[outbox(ch, "opened", check_id=cid), outbox(foreign["id"], "opened")],
    )
    assert row is not None and row["status"] == "OPEN"
    rows = await store.select("notification_deliveries", [org])
    # The foreign organisation's channel is never written to.
    assert [(r["channel_id"], r["event"], r["status"]) for r in rows] == [(ch, "opened", "pending")]
    assert rows[0]["dedup_key"] == f"incident:{row['id']}:opened:{ch}"
    assert rows[0]["payload"] == {"summary": "web opened", "incident_id": row["id"]}
    assert await store.count("notification_deliveries", [other_org]) == 0
    events = await store.select("incident_events", [org], where={"incident_id": row["id"]})
    assert [e["kind"] for e in events] == ["opened"]

    # A second open incident for the check breaks the unique rule: nothing of it stays.
    with pytest.raises(ConflictError):
        await store.write_incident_change(
            org,
            None,
            incident(cid),
            event={"kind": "opened", "actor_id": None, "at": NOW, "detail": {}},
            deliveries=[outbox(ch, "opened2")],
        )
    assert await store.count("notification_deliveries", [org]) == 1
    assert await store.count("incident_events", [org]) == 1
    # Another organisation's check: refused, nothing written.
    with pytest.raises(NotFoundError):
        await store.write_incident_change(
            other_org, None, incident(cid), deliveries=[outbox(foreign["id"], "x")]
        )
    assert await store.count("incidents", [other_org]) == 0
    assert await store.count("notification_deliveries", [other_org]) == 0


async def test_updates_are_guarded_and_dedup_keys_deliver_once(store: SqlStore) -> None:
    org, cid, ch = await setup(store)
    row = await store.write_incident_change(org, None, incident(cid))
    assert row is not None
    resolve = {"status": "RESOLVED", "resolved_at": NOW + 5}
    done = await store.write_incident_change(
        org,
        row["id"],
        resolve,
        event={"kind": "resolved", "actor_id": None, "at": NOW + 5, "detail": {}},
        deliveries=[outbox(ch, "resolved")],
        only_if_status=("OPEN", "ACKNOWLEDGED"),
    )
    assert done is not None and done["status"] == "RESOLVED"
    # The same transition again (a retry, a second process): no change, no second row.
    again = await store.write_incident_change(
        org,
        row["id"],
        resolve,
        deliveries=[outbox(ch, "resolved")],
        only_if_status=("OPEN", "ACKNOWLEDGED"),
    )
    assert again is None
    # Without a guard the same dedup key is still written once.
    await store.write_incident_change(org, row["id"], {}, deliveries=[outbox(ch, "resolved")])
    assert await store.count("notification_deliveries", [org]) == 1
    assert await store.write_incident_change(org + 99, row["id"], resolve) is None


async def test_claims_lease_and_settle(store: SqlStore) -> None:
    org, cid, ch = await setup(store)
    row = await store.write_incident_change(
        org,
        None,
        incident(cid),
        deliveries=[outbox(ch, "opened"), outbox(ch, "later", next_attempt_at=NOW + 100)],
    )
    assert row is not None
    claimed = await store.claim_deliveries(NOW + 1, 10, 30)
    assert [(r["event"], r["status"], r["attempts"]) for r in claimed] == [("opened", "sending", 1)]
    # Leased: not claimed again before the lease ends.
    assert await store.claim_deliveries(NOW + 2, 10, 30) == []
    # A process that died holding it: claimed again after the lease.
    again = await store.claim_deliveries(NOW + 32, 10, 30)
    assert [(r["id"], r["attempts"]) for r in again] == [(claimed[0]["id"], 2)]
    await store.settle_deliveries(
        [(claimed[0]["id"], {"status": "delivered", "delivered_at": NOW + 33})]
    )
    # Settling twice (a stale worker) changes nothing.
    await store.settle_deliveries([(claimed[0]["id"], {"status": "failed", "last_error": "x"})])
    later = await store.claim_deliveries(NOW + 101, 10, 30)
    assert [r["event"] for r in later] == ["later"]
    done = await store.get("notification_deliveries", [org], claimed[0]["id"])
    assert done is not None and done["status"] == "delivered" and done["last_error"] is None
    assert [i["id"] for i in await store.open_check_incidents()] == [row["id"]]
    assert [i["id"] for i in await store.open_check_incidents([row["check_id"]])] == [row["id"]]
    assert await store.open_check_incidents([row["check_id"] + 1000]) == []
    await store.link("check_channels", org, cid, ch)
    assert await store.channel_checks([org], ch) == [cid]
    assert await store.channel_checks([org + 1], ch) == []


async def test_channel_secrets_are_encrypted_at_rest(store: SqlStore) -> None:
    org, _, ch = await setup(store)
    raw = await raw_fetch(store, f"SELECT config FROM notification_channels WHERE id = {ch}")
    text = str(raw[0]["config"])
    assert "enc:v1:" in text and '"k"' not in text
    row = await store.get("notification_channels", [org], ch)
    assert row is not None and row["config"]["secret"] == "k"


async def test_a_batch_of_transitions_writes_incidents_and_outbox_in_order(
    store: SqlStore,
) -> None:
    """The engine's transitions through the incident manager's batch path: a warning
    incident raised to critical and resolved, all in one transaction, each transition
    with its outbox row (the later ones refer to the incident opened earlier in the
    batch); then the same transitions one at a time give the same rows."""
    org, cid, ch = await setup(store)
    await store.link("check_channels", org, cid, ch)
    engine = Engine()  # not started: it knows the check, it probes nothing
    try:
        engine.upsert([Check(cid, "uptime", 60, 10, "web", "http://127.0.0.1:1/")])
        manager = IncidentManager(store, engine, EventHub())
        manager.router = Router(store, engine)
        await manager.directory.learn([cid])
        down = {"central": Status.DOWN}
        changes = [
            StatusChange(
                cid, Status.UP, Status.DEGRADED, NOW, "slow", {"central": Status.DEGRADED}
            ),
            StatusChange(cid, Status.DEGRADED, Status.DOWN, NOW + 1, "timeout", down),
            StatusChange(cid, Status.DOWN, Status.UP, NOW + 2, None, {"central": Status.UP}),
            StatusChange(cid, Status.UP, Status.DOWN, NOW + 3, "refused", down),
        ]
        await manager.apply_many(changes)
        first, second = await store.select("incidents", [org])
        assert (first["status"], first["severity"], first["resolved_at"]) == (
            "RESOLVED",
            "critical",
            NOW + 2,
        )
        assert (second["status"], second["cause"]) == ("OPEN", "refused")
        rows = await store.select("notification_deliveries", [org])
        assert [(r["incident_id"], r["event"]) for r in rows] == [
            (first["id"], "opened"),
            (first["id"], "escalated"),
            (first["id"], "resolved"),
            (second["id"], "opened"),
        ]
        assert rows[0]["payload"]["severity"] == "warning"
        assert rows[1]["payload"]["summary"] == "web is now DOWN"
        assert rows[2]["dedup_key"] == f"incident:{first['id']}:resolved:{ch}"
        assert all(r["payload"]["incident_id"] == r["incident_id"] for r in rows)
        events = await store.select("incident_events", [org], where={"incident_id": first["id"]})
        assert [e["kind"] for e in events] == ["opened", "severity_changed", "resolved"]

        # The same again, one at a time: the same shape of rows.
        for change in changes[2:]:
            await manager.apply(change)
        third = (await store.select("incidents", [org]))[-1]
        rows = await store.select("notification_deliveries", [org], offset=4)
        assert [(r["incident_id"], r["event"]) for r in rows] == [
            (second["id"], "resolved"),
            (third["id"], "opened"),
        ]
    finally:
        await engine.close()


async def test_deliveries_of_one_incident_to_one_channel_go_in_order(store: SqlStore) -> None:
    org, cid, ch = await setup(store)
    other = await store.insert(
        "notification_channels", org, {"name": "b", "channel_type": "slack", "config": {}}
    )
    row = await store.write_incident_change(
        org,
        None,
        incident(cid),
        deliveries=[
            outbox(ch, "opened"),
            outbox(ch, "resolved"),
            outbox(other["id"], "opened"),
        ],
    )
    assert row is not None
    first = await store.claim_deliveries(NOW, 10, 30)
    # The resolution waits for the opening on the same channel; the other channel not.
    assert sorted((r["channel_id"], r["event"]) for r in first) == sorted(
        [(ch, "opened"), (other["id"], "opened")]
    )
    opened = next(r for r in first if r["channel_id"] == ch)
    # A retry later: the resolution still waits, even when due.
    await store.settle_deliveries(
        [(opened["id"], {"status": "pending", "next_attempt_at": NOW + 5})]
    )
    assert await store.claim_deliveries(NOW + 1, 10, 30) == []
    (retry,) = await store.claim_deliveries(NOW + 6, 10, 30)
    assert retry["id"] == opened["id"]
    await store.settle_deliveries([(opened["id"], {"status": "failed", "last_error": "gone"})])
    (resolved,) = await store.claim_deliveries(NOW + 7, 10, 30)
    assert resolved["event"] == "resolved" and resolved["channel_id"] == ch


async def test_a_batch_applies_ops_in_order_with_guards(store: SqlStore) -> None:
    """One batch: an incident stored earlier is resolved and a new one opened for the
    same check (the one-open-incident rule holds at commit), a guard that fails, a ref
    to an op that changed nothing, another organisation's incident; each op answers the
    row as that op left it, and the stored rows are the last of them."""
    org, cid, ch = await setup(store)
    other_org = int((await store.create_organization("Other"))["id"])
    stored = await store.write_incident_change(org, None, incident(cid))
    assert stored is not None
    resolve = {"status": "RESOLVED", "resolved_at": NOW + 1}
    guard = ("OPEN", "ACKNOWLEDGED")
    opened = {"kind": "opened", "at": NOW + 2, "detail": {}}
    ops: list[dict[str, Any]] = [
        {"org_id": other_org, "incident_id": stored["id"], "fields": resolve},  # 0: foreign
        {"org_id": org, "incident_id": stored["id"], "fields": resolve, "only_if_status": guard},
        {"org_id": org, "incident_id": stored["id"], "fields": {}, "only_if_status": guard},
        {"org_id": org, "ref": 2, "fields": {"severity": "warning"}},  # 3: ref to a no-op
        {
            "org_id": org,
            "incident_id": None,
            "fields": {**incident(cid), "started_at": NOW + 2, "sources": {"a": "DOWN"}},
            "event": opened,
            "deliveries": [outbox(ch, "opened")],
        },
        {
            "org_id": org,
            "ref": 4,
            "fields": {"status": "ACKNOWLEDGED", "acknowledged_at": NOW + 3},
            "only_if_status": ("OPEN",),
            "deliveries": [outbox(ch, "acknowledged")],
        },
        {"org_id": org, "ref": 4, "fields": {"severity": "x"}, "only_if_status": ("OPEN",)},
    ]
    out = await store.write_incident_batch(ops)
    assert [r is None for r in out] == [True, False, True, True, False, False, True]
    assert out[1] is not None and out[1]["status"] == "RESOLVED"
    assert out[4] is not None and out[5] is not None
    assert (out[4]["status"], out[4]["acknowledged_at"]) == ("OPEN", None)
    assert (out[5]["status"], out[5]["acknowledged_at"]) == ("ACKNOWLEDGED", NOW + 3)
    assert out[5]["id"] == out[4]["id"] != stored["id"]
    first = await store.get("incidents", [org], stored["id"])
    second = await store.get("incidents", [org], out[4]["id"])
    assert first is not None and second is not None
    assert {k: first[k] for k in out[1]} == out[1]
    assert {k: second[k] for k in out[5]} == out[5]
    assert second["sources"] == {"a": "DOWN"} and second["severity"] == "critical"
    rows = await store.select("notification_deliveries", [org])
    assert [(r["incident_id"], r["event"]) for r in rows] == [
        (second["id"], "opened"),
        (second["id"], "acknowledged"),
    ]
    events = await store.select("incident_events", [org], where={"incident_id": second["id"]})
    assert [e["kind"] for e in events] == ["opened"]
    # The next incident gets a new id (ids handed out in the batch are not reused).
    third = await store.write_incident_batch(
        [
            {"org_id": org, "incident_id": second["id"], "fields": resolve},
            {"org_id": org, "incident_id": None, "fields": incident(cid)},
        ]
    )
    assert third[1] is not None and third[1]["id"] > second["id"]
    assert await store.count("incidents", [org]) == 3
