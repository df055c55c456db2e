"""Checks, results, status changes, rollups, retention and pings in the store, on both
backends."""

from __future__ import annotations

from typing import Any

import pytest

from store_helpers import DAY, NOW, check_fields, raw_fetch, rollup, sketch, store
from tocsin.models import Result, Status, StatusChange
from tocsin.store import Ping, Retention
from tocsin.store.sql import SqlStore

__all__ = ["store"]  # the fixture


# -- checks ------------------------------------------------------------------------------


async def test_checks_keep_every_field_and_filter(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    full = await store.create_check(
        org,
        check_fields(
            "Shop API",
            type="tcp",
            url=None,
            host="db.internal",
            port=5432,
            tags=["prod", "eu"],
            assigned_agent_ids=[3, 4],
            geo_monitoring_enabled=True,
            check_source_critical={"agent:3": True},
            grace_period=30,
            alert_after_failures=3,
            runbook_url="https://wiki/x",
        ),
    )
    await store.create_check(org, check_fields("blog", tags=["staging"]))
    await store.create_check(org, check_fields("paused", is_active=False))
    assert full["tags"] == ["prod", "eu"] and full["assigned_agent_ids"] == [3, 4]
    assert full["geo_monitoring_enabled"] is True and full["check_source_critical"] == {
        "agent:3": True
    }
    assert (full["port"], full["grace_period"], full["alert_after_failures"]) == (5432, 30, 3)
    assert full["uuid"] and full["status"] == "UNKNOWN"
    by_uuid = await store.check_by_uuid(full["uuid"])
    assert by_uuid is not None and by_uuid["id"] == full["id"]

    async def names(**filters: Any) -> list[str]:
        rows = await store.list_checks([org], limit=10, offset=0, **filters)
        return [r["name"] for r in rows]

    assert await names(type="tcp") == ["Shop API"]
    assert await names(tag="prod") == ["Shop API"]
    assert await names(tag="pro") == []
    assert await names(text="SHOP") == ["Shop API"]
    assert await names(text="internal") == ["Shop API"]
    assert await names(text="%") == []
    # LIKE's wildcards and its escape character match only themselves.
    for name in ("abc", "a_c", "a%c", "a\\c", "aXc"):
        await store.create_check(org, check_fields(name, url=None, host=None))
    assert await names(text="a_c") == ["a_c"]
    assert await names(text="A_C") == ["a_c"]
    assert await names(text="a%c") == ["a%c"]
    assert await names(text="a\\c") == ["a\\c"]
    assert await names(text="_") == ["a_c"]
    assert await names(text="\\") == ["a\\c"]
    assert await names(text="a\\_c") == []
    assert await names(text="abc") == ["abc"]
    for name in ("abc", "a_c", "a%c", "a\\c", "aXc"):
        [row] = await store.list_checks([org], limit=1, offset=0, text=name)
        await store.delete_check([org], row["id"])
    assert await names(status="PAUSED") == ["paused"]
    assert await names(status="UNKNOWN") == ["Shop API", "blog"]
    assert await names() == ["Shop API", "blog", "paused"]
    changed = await store.update_check([org], full["id"], {"tags": [], "port": 5433})
    assert changed is not None and (changed["tags"], changed["port"]) == ([], 5433)
    assert changed["name"] == "Shop API"


# -- results, transitions, rollups -------------------------------------------------------


async def test_a_batch_stores_results_transitions_and_latest_status(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    check = (await store.create_check(org, check_fields("c")))["id"]
    results = [
        Result(check, Status.UP, NOW + i, 10.0 + i, due_at=NOW + i, source="central")
        for i in range(250)
    ]
    results.append(
        Result(check, Status.DOWN, NOW + 100, 5.0, error_kind="timeout", source="geo:EU")
    )
    change = StatusChange(
        check, Status.UNKNOWN, Status.UP, NOW, "first", {"central": Status.UP}, in_maintenance=True
    )
    written = await store.write_batch(results, [change])
    assert (written.results, written.changes, written.rollups) == (251, 1, 0)
    row = await store.get_check([org], check)
    assert row is not None
    assert (row["status"], row["status_changed_at"], row["last_checked_at"]) == (
        "UP",
        NOW,
        NOW + 249,
    )
    assert row["last_result"]["latency_ms"] == 259.0
    assert await store.check_sources([org], check) == {"central": "UP", "geo:EU": "DOWN"}
    # A late batch does not move the latest result or status backwards.
    await store.write_batch(
        [Result(check, Status.DOWN, NOW - 50, 1.0)],
        [StatusChange(check, Status.UP, Status.DOWN, NOW - 50)],
    )
    row = await store.get_check([org], check)
    assert row is not None and (row["status"], row["last_checked_at"]) == ("UP", NOW + 249)
    # Keyset pages: newest first, no overlap, nothing missing.
    seen: list[int] = []
    before = None
    while True:
        page = await store.list_results([org], check, limit=100, before=before)
        seen += [r["id"] for r in page]
        if len(page) < 100:
            break
        before = page[-1]["id"]
    assert len(seen) == len(set(seen)) == 252 and seen == sorted(seen, reverse=True)


async def test_results_for_a_deleted_check_do_not_fail_the_batch(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    keep = (await store.create_check(org, check_fields("keep")))["id"]
    gone = (await store.create_check(org, check_fields("gone")))["id"]
    assert await store.delete_check([org], gone)
    written = await store.write_batch(
        [Result(keep, Status.UP, NOW, 1.0), Result(gone, Status.UP, NOW, 1.0)],
        [StatusChange(gone, Status.UP, Status.DOWN, NOW)],
        [rollup(gone, 0)],
    )
    assert written.rows == 1
    assert len(await store.list_results([org], keep, limit=10, before=None)) == 1


async def test_minute_rollups_merge_into_hours_and_days(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    check = (await store.create_check(org, check_fields("c")))["id"]
    base = 1_789_948_800_000  # a UTC midnight, in ms
    await store.write_batch(
        [],
        [],
        [
            rollup(check, base, up=2, sketch=sketch((10, 2))),
            rollup(check, base + 60_000, up=1, down=1, downtime_ms=30_000, incidents=1),
        ],
    )
    # A later batch extends the same hour and day, and repeats a minute (a restart).
    await store.write_batch(
        [], [], [rollup(check, base + 3_600_000, up=4, sketch=sketch((10, 1), (12, 3)))]
    )
    await store.write_batch([], [], [rollup(check, base, up=1, sketch=sketch((12, 1)))])
    minutes = await store.list_rollups([org], check, "minute", since_ms=base)
    assert [(m.start_ms - base, m.runs_up) for m in minutes] == [
        (0, 3),
        (60_000, 1),
        (3_600_000, 4),
    ]
    assert minutes[0].sketch == sketch((10, 2), (12, 1))
    hours = await store.list_rollups([org], check, "hour", since_ms=base)
    assert [(h.start_ms - base, h.span_ms, h.runs_up, h.runs_down) for h in hours] == [
        (0, 3_600_000, 4, 1),
        (3_600_000, 3_600_000, 4, 0),
    ]
    [day] = await store.list_rollups([org], check, "day", since_ms=base)
    assert (day.start_ms, day.span_ms, day.runs_up, day.runs_down) == (base, 86_400_000, 8, 1)
    assert (day.downtime_ms, day.incidents) == (30_000, 1)
    assert day.sketch == sketch((10, 4), (12, 4))
    assert await store.list_rollups([org], check, "day", since_ms=base, until_ms=base) == []
    other = (await store.create_organization("x"))["id"]
    assert await store.list_rollups([other], check, "day", since_ms=0) == []
    with pytest.raises(ValueError, match="tier"):
        await store.list_rollups([org], check, "week", since_ms=0)


async def test_checks_by_ids_in_one_read_match_one_by_one(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    other = (await store.create_organization("x"))["id"]
    mine = [(await store.create_check(org, check_fields(f"c{i}")))["id"] for i in range(3)]
    foreign = (await store.create_check(other, check_fields("f")))["id"]
    rows = await store.get_checks([org], [mine[2], foreign, mine[0], 10**9])
    assert [r["id"] for r in rows] == [mine[0], mine[2]]
    for row in rows:
        assert row == await store.get_check([org], row["id"])
    assert await store.get_checks([org], []) == []
    states = await store.check_states([org], [mine[2], foreign, mine[0], 10**9])
    assert states == [
        {k: r[k] for k in ("id", "name", "is_active", "status", "created_at")} for r in rows
    ]
    assert await store.check_states([org], []) == []


async def test_rollups_of_many_checks_in_one_read_match_one_by_one(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    other = (await store.create_organization("x"))["id"]
    checks = [(await store.create_check(org, check_fields(f"c{i}")))["id"] for i in range(3)]
    foreign = (await store.create_check(other, check_fields("f")))["id"]
    base = 1_789_948_800_000
    await store.write_batch(
        [],
        [],
        [
            rollup(cid, base + k * 86_400_000, up=k + 1, down=i)
            for i, cid in enumerate([*checks, foreign])
            for k in range(3)
        ],
    )
    asked = [*checks, foreign, 10**9]
    since, until = base + 86_400_000, base + 3 * 86_400_000
    many = await store.list_rollups_of([org], asked, "day", since_ms=since, until_ms=until)
    one_by_one = [
        r
        for cid in sorted(checks)
        for r in await store.list_rollups([org], cid, "day", since_ms=since, until_ms=until)
    ]
    assert many == one_by_one and len(many) == 6
    assert await store.list_rollups_of([org], [foreign], "day", since_ms=0) == []
    assert await store.list_rollups_of([org], [], "day", since_ms=0) == []
    assert await store.list_rollups_of([org], checks, "day", since_ms=until, until_ms=since) == []
    with pytest.raises(ValueError, match="tier"):
        await store.list_rollups_of([org], checks, "week", since_ms=0)


async def test_retention_removes_what_it_should_and_nothing_else(store: SqlStore) -> None:
    org = (await store.create_organization("o"))["id"]
    check = (await store.create_check(org, check_fields("c")))["id"]
    today = NOW - NOW % DAY
    ages = [0, 1, 13, 14, 15, 40]  # whole days before today
    await store.write_batch(
        [Result(check, Status.UP, today - d * DAY + 3600, 1.0) for d in ages],
        [StatusChange(check, Status.UNKNOWN, Status.UP, today - 40 * DAY)],
        [rollup(check, int((today - d * DAY) * 1000)) for d in (0, 29, 31, 364, 366, 1000)],
    )
    with pytest.raises(ValueError, match="raw_days"):
        Retention(raw_days=-1)
    await store.enforce_retention(Retention(), NOW)
    kept = await store.list_results([org], check, limit=100, before=None)
    # Raw: 14 days; the cutoff is the UTC midnight 14 days before now.
    assert sorted(round((today - r["started_at"] + 3600) / DAY) for r in kept) == [0, 1, 13, 14]

    async def days(tier: str) -> list[int]:
        rows = await store.list_rollups([org], check, tier, since_ms=0)
        return sorted(round((today * 1000 - r.start_ms) / 86_400_000) for r in rows)

    assert await days("minute") == [0, 29]
    assert await days("hour") == [0, 29, 31, 364]
    assert await days("day") == [0, 29, 31, 364, 366, 1000]
    # Transitions are history, never removed by retention.
    assert len(await raw_fetch(store, "SELECT id FROM status_changes")) == 1
    again = await store.enforce_retention(Retention(), NOW)
    assert again["raw"] == 0
    await store.enforce_retention(
        Retention(raw_days=None, minute_days=0, hour_days=0, day_days=0), NOW + DAY
    )
    assert await days("day") == []
    assert len(await store.list_results([org], check, limit=100, before=None)) == 4


async def test_pings_are_kept_with_their_log_and_move_last_ping_at(store: SqlStore) -> None:
    a = (await store.create_organization("a"))["id"]
    b = (await store.create_organization("b"))["id"]
    check = (
        await store.create_check(
            a, {"name": "job", "type": "heartbeat", "interval": 60, "timeout": 1}
        )
    )["id"]
    assert await store.record_pings(
        [
            Ping(check, "start", NOW, rid="r1"),
            Ping(check, "exit_code", NOW + 5, exit_code=3, rid="r1", body="oops\n"),
            Ping(10_000, "success", NOW),
        ]
    ) == [True, True, False]
    pings = await store.list_pings([a], check, limit=10, before=None)
    assert [(p["kind"], p["exit_code"], p["body"]) for p in pings] == [
        ("exit_code", 3, "oops\n"),
        ("start", None, None),
    ]
    older = await store.list_pings([a], check, limit=10, before=pings[0]["id"])
    assert [p["kind"] for p in older] == ["start"]
    assert await store.list_pings([b], check, limit=10, before=None) == []
    row = await store.get_check([a], check)
    assert row is not None and row["last_ping_at"] == NOW + 5
    # Retention keeps pings as long as raw results.
    await store.enforce_retention(Retention(), NOW + 30 * DAY)
    assert await store.list_pings([a], check, limit=10, before=None) == []


async def test_probe_text_with_nul_is_stored_the_same_on_both_backends(store: SqlStore) -> None:
    """PostgreSQL refuses U+0000 in text (and would refuse the whole batch with it):
    a probe or plugin that reports one gets U+FFFD instead, on either backend."""
    org = (await store.create_organization("o"))["id"]
    check = (await store.create_check(org, check_fields("c")))["id"]
    bad = Result(
        check,
        Status.DOWN,
        NOW,
        1.0,
        error_kind="kind\x00",
        message="got \x00\x00 back",
        source="central",
    )
    good = Result(check, Status.UP, NOW + 1, 1.0, source="central")
    change = StatusChange(check, Status.UNKNOWN, Status.DOWN, NOW, "down \x00", {})
    written = await store.write_batch([bad, good], [change])
    assert written.results == 2
    rows = await store.list_results([org], check, limit=10, before=None)
    assert [(r["error_kind"], r["message"]) for r in rows] == [
        (None, None),
        ("kind\ufffd", "got \ufffd\ufffd back"),
    ]
