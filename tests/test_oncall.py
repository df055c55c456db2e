"""On-call schedules: the shift computation (rotations, layers, restrictions, overrides,
DST in two time zones, against a deliberately simple reference), and the API over a
real server (CRUD, current, timeline across a DST change, overrides, validation, roles,
isolation)."""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import Server, api, other_org_user
from tocsin.oncall import (
    Layer,
    Override,
    Restriction,
    Schedule,
    Shift,
    layer_on_call_at,
    on_call_at,
    shifts,
    to_instant,
)

UTC = dt.UTC
WARSAW = "Europe/Warsaw"
NEW_YORK = "America/New_York"


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M")


def table(found: list[Shift]) -> list[tuple[int, str, str]]:
    return [(s.user_id, utc(s.start), utc(s.end)) for s in found]


def daily(*users: int, start: str = "2026-03-01", handoff: str = "09:00", **kw: Any) -> Layer:
    h, m = handoff.split(":")
    return Layer(
        tuple(users), dt.date.fromisoformat(start), handoff_time=dt.time(int(h), int(m)), **kw
    )


# -- the computation ---------------------------------------------------------------------


def test_a_daily_rotation_hands_off_at_local_time_across_the_march_change_in_warsaw() -> None:
    s = Schedule(WARSAW, (daily(1, 2, start="2026-03-27"),))
    found = shifts(s, ts("2026-03-27T00:00Z"), ts("2026-03-31T00:00Z"))
    assert table(found) == [
        (1, "2026-03-27T08:00", "2026-03-28T08:00"),
        (2, "2026-03-28T08:00", "2026-03-29T07:00"),  # 09:00 CET, then 09:00 CEST
        (1, "2026-03-29T07:00", "2026-03-30T07:00"),
        (2, "2026-03-30T07:00", "2026-03-31T00:00"),
    ]


def test_new_york_keeps_its_handoff_across_the_november_change() -> None:
    s = Schedule(
        NEW_YORK,
        (daily(7, start="2026-10-30", rotation_type="weekly"), daily(1, 2, start="2026-10-30")),
    )
    found = shifts(s, ts("2026-10-31T00:00Z"), ts("2026-11-03T00:00Z"))
    # 09:00 EDT is 13:00Z, 09:00 EST is 14:00Z.
    assert [(u, a) for u, a, _ in table(found)][1:] == [
        (2, "2026-10-31T13:00"),
        (1, "2026-11-01T14:00"),
        (2, "2026-11-02T14:00"),
    ]


def test_weekly_and_custom_rotations() -> None:
    weekly = Schedule("UTC", (daily(1, 2, 3, start="2026-01-05", rotation_type="weekly"),))
    found = shifts(weekly, ts("2026-01-05T00:00Z"), ts("2026-01-27T00:00Z"))
    assert table(found) == [
        (1, "2026-01-05T09:00", "2026-01-12T09:00"),
        (2, "2026-01-12T09:00", "2026-01-19T09:00"),
        (3, "2026-01-19T09:00", "2026-01-26T09:00"),
        (1, "2026-01-26T09:00", "2026-01-27T00:00"),
    ]
    custom = Schedule(
        "UTC", (daily(1, 2, start="2026-01-05", rotation_type="custom", rotation_length_hours=12),)
    )
    found = shifts(custom, ts("2026-01-05T09:00Z"), ts("2026-01-06T09:00Z"))
    assert table(found) == [
        (1, "2026-01-05T09:00", "2026-01-05T21:00"),
        (2, "2026-01-05T21:00", "2026-01-06T09:00"),
    ]


def test_nobody_is_on_call_before_the_first_handoff() -> None:
    s = Schedule("UTC", (daily(1, start="2026-01-05"),))
    assert on_call_at(s, ts("2026-01-05T08:59Z")) is None
    found = on_call_at(s, ts("2026-01-05T09:00Z"))
    assert found is not None and found.user_id == 1


def test_a_later_layer_overrides_where_it_has_someone_and_restrictions_limit_it() -> None:
    business = Restriction((0, 1, 2, 3, 4), dt.time(9), dt.time(17))
    s = Schedule(
        "UTC",
        (daily(1, start="2026-01-01"), daily(2, start="2026-01-01", restrictions=(business,))),
    )
    # Friday 9 January to Monday 12 January.
    found = shifts(s, ts("2026-01-09T00:00Z"), ts("2026-01-12T12:00Z"))
    assert table(found) == [
        (1, "2026-01-09T00:00", "2026-01-09T09:00"),
        (2, "2026-01-09T09:00", "2026-01-09T17:00"),
        (1, "2026-01-09T17:00", "2026-01-12T09:00"),
        (2, "2026-01-12T09:00", "2026-01-12T12:00"),
    ]
    assert layer_on_call_at(s, 1, ts("2026-01-10T12:00Z")) is None
    assert layer_on_call_at(s, 0, ts("2026-01-10T12:00Z")) == 1


def test_an_overnight_restriction_ends_the_next_day() -> None:
    nights = Restriction((4,), dt.time(22), dt.time(6))
    s = Schedule("UTC", (daily(5, start="2026-01-01", restrictions=(nights,)),))
    found = shifts(s, ts("2026-01-09T00:00Z"), ts("2026-01-11T00:00Z"))
    assert table(found) == [(5, "2026-01-09T22:00", "2026-01-10T06:00")]


def test_overrides_replace_whoever_is_on_call_and_the_later_one_wins() -> None:
    s = Schedule(
        "UTC",
        (daily(1, start="2026-01-01"),),
        (
            Override(8, ts("2026-01-05T10:00Z"), ts("2026-01-05T14:00Z"), id=1),
            Override(9, ts("2026-01-05T12:00Z"), ts("2026-01-05T13:00Z"), id=2),
        ),
    )
    found = shifts(s, ts("2026-01-05T09:00Z"), ts("2026-01-05T15:00Z"))
    assert [(s.user_id, utc(s.start), utc(s.end), s.override_id) for s in found] == [
        (1, "2026-01-05T09:00", "2026-01-05T10:00", None),
        (8, "2026-01-05T10:00", "2026-01-05T12:00", 1),
        (9, "2026-01-05T12:00", "2026-01-05T13:00", 2),
        (8, "2026-01-05T13:00", "2026-01-05T14:00", 1),
        (1, "2026-01-05T14:00", "2026-01-05T15:00", None),
    ]


def test_nonexistent_and_ambiguous_wall_times() -> None:
    zone = zoneinfo.ZoneInfo(WARSAW)
    # 02:30 does not exist on 29 March 2026: the clocks jump from 02:00 CET to 03:00 CEST.
    assert utc(to_instant(dt.datetime(2026, 3, 29, 2, 30), zone)) == "2026-03-29T01:00"
    # 02:30 happens twice on 25 October 2026: the first time counts.
    assert utc(to_instant(dt.datetime(2026, 10, 25, 2, 30), zone)) == "2026-10-25T00:30"


def test_the_range_is_capped() -> None:
    s = Schedule("UTC", (daily(1),))
    with pytest.raises(ValueError, match="90 days"):
        shifts(s, 0.0, 91 * 86_400.0)
    with pytest.raises(ValueError, match="after"):
        shifts(s, 10.0, 10.0)


# -- the property: against a simple reference ------------------------------------------

STEP = 900  # every time in these schedules is on a 15-minute grid, as DST changes are
DST_WEEKS = [
    (WARSAW, "2026-03-26"),
    (WARSAW, "2026-10-22"),
    (NEW_YORK, "2026-03-05"),
    (NEW_YORK, "2026-10-29"),
]


def reference(s: Schedule, t: float, wall: dt.datetime) -> int | None:
    """Who is on call at `t`, straight from the definition. `wall` is the latest local
    wall time the clock has shown by `t` (it only repeats an hour when clocks go back)."""
    for o in reversed(s.overrides):
        if o.start <= t < o.end:
            return o.user_id
    for layer in reversed(s.layers):
        hours = {"daily": 24, "weekly": 168}.get(layer.rotation_type) or layer.rotation_length_hours
        assert hours
        anchor = dt.datetime.combine(layer.start, layer.handoff_time)
        if wall < anchor:
            continue
        k = int((wall - anchor) / dt.timedelta(hours=hours))
        if layer.restrictions and not any(
            day.weekday() in r.days
            and dt.datetime.combine(day, r.start)
            <= wall
            < dt.datetime.combine(day if r.end > r.start else day + dt.timedelta(days=1), r.end)
            for r in layer.restrictions
            for day in (wall.date(), wall.date() - dt.timedelta(days=1))
        ):
            continue
        return layer.participants[k % len(layer.participants)]
    return None


def walk(zone: zoneinfo.ZoneInfo, start: float, end: float) -> Iterator[tuple[float, dt.datetime]]:
    """Every grid instant in [start, end) with the latest wall time shown by then."""
    t = start - 3 * 3600
    seen = dt.datetime.min
    while t < end:
        seen = max(seen, dt.datetime.fromtimestamp(t, zone).replace(tzinfo=None))
        if t >= start:
            yield t, seen
        t += STEP


def clocks() -> st.SearchStrategy[dt.time]:
    # Often inside the hours that DST changes skip or repeat.
    hours = st.one_of(st.sampled_from([1, 2, 3]), st.integers(0, 23))
    return st.builds(dt.time, hours, st.sampled_from([0, 15, 30, 45]))


@dataclass
class Case:
    schedule: Schedule
    start: float
    end: float


@st.composite
def cases(draw: st.DrawFn) -> Case:
    tz, week = draw(st.sampled_from(DST_WEEKS))
    zone = zoneinfo.ZoneInfo(tz)
    first = dt.date.fromisoformat(week)
    start = dt.datetime.combine(first, dt.time()).replace(tzinfo=zone).timestamp()
    start += draw(st.integers(0, 24 * 4)) * STEP
    end = start + 7 * 86_400
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["daily", "weekly", "custom"]))
        restrictions = tuple(
            Restriction(
                tuple(sorted(draw(st.sets(st.integers(0, 6), min_size=1)))),
                draw(clocks()),
                draw(clocks()),
            )
            for _ in range(draw(st.integers(0, 2)))
        )
        layers.append(
            Layer(
                tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))),
                first + dt.timedelta(days=draw(st.integers(-20, 4))),
                rotation_type=kind,
                handoff_time=draw(clocks()),
                rotation_length_hours=draw(st.integers(1, 60)) if kind == "custom" else None,
                restrictions=restrictions,
            )
        )
    overrides = []
    for i in range(draw(st.integers(0, 3))):
        a = start + draw(st.integers(-96, 7 * 96)) * STEP
        overrides.append(
            Override(draw(st.integers(6, 7)), a, a + draw(st.integers(1, 200)) * STEP, i + 1)
        )
    return Case(Schedule(tz, tuple(layers), tuple(overrides)), start, end)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_shifts_agree_with_a_simple_reference_over_dst_weeks(case: Case) -> None:
    s = case.schedule
    found = shifts(s, case.start, case.end)
    for a, b in itertools.pairwise(found):
        assert a.end <= b.start
        assert (a.end, a.user_id, a.layer, a.override_id) != (
            b.start,
            b.user_id,
            b.layer,
            b.override_id,
        )
    i = 0
    for t, wall in walk(zoneinfo.ZoneInfo(s.timezone), case.start, case.end):
        while i < len(found) and found[i].end <= t:
            i += 1
        in_shifts = found[i].user_id if i < len(found) and found[i].start <= t else None
        expected = reference(s, t, wall)
        assert in_shifts == expected, (utc(t), wall)
        now = on_call_at(s, t, horizon=STEP)
        assert (now.user_id if now else None) == expected, (utc(t), wall)


# -- the API over a real server -----------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("oncall") / "data")
    s.start()
    yield s
    s.kill()


async def admin_org(http: aiohttp.ClientSession, server: Server) -> int:
    code, orgs = await api(http, server, "GET", "/api/organizations/")
    assert code == 200, orgs
    return int(orgs[0]["id"])


async def members(http: aiohttp.ClientSession, server: Server, org: int, n: int) -> list[int]:
    """`n` new MEMBERs of `org`, by id."""
    before = {
        m["user_id"]
        for m in (await api(http, server, "GET", f"/api/organizations/{org}/members"))[1]
    }
    for _ in range(n):
        await other_org_user(server, role="MEMBER", org_id=org)
    code, rows = await api(http, server, "GET", f"/api/organizations/{org}/members")
    assert code == 200, rows
    return sorted(m["user_id"] for m in rows if m["user_id"] not in before)


def base(org: int) -> str:
    return f"/api/organizations/{org}/oncall-schedules"


async def crud_and_dst(http: aiohttp.ClientSession, server: Server) -> None:
    org = await admin_org(http, server)
    u1, u2 = await members(http, server, org, 2)
    simple = {
        "name": "Primary",
        "timezone": WARSAW,
        "rotation_type": "daily",
        "handoff_time": "09:00",
        "start": "2026-03-27",
        "participants": [u1, u2],
    }
    code, sched = await api(http, server, "POST", base(org), json=simple)
    assert code == 201, sched
    sid = sched["id"]
    assert sched["participants"] == [u1, u2] and sched["layers"][0]["handoff_time"] == "09:00"
    code, listed = await api(http, server, "GET", base(org))
    assert code == 200 and sid in [s["id"] for s in listed]
    code, got = await api(http, server, "GET", f"{base(org)}/{sid}")
    assert code == 200 and got == sched

    q = "from=2026-03-28T00:00:00Z&to=2026-03-31T00:00:00Z"
    code, tl = await api(http, server, "GET", f"{base(org)}/{sid}/timeline?{q}")
    assert code == 200, tl
    assert [(s["user_id"], s["start"][:16], s["end"][:16]) for s in tl["shifts"]] == [
        (u1, "2026-03-28T00:00", "2026-03-28T08:00"),
        (u2, "2026-03-28T08:00", "2026-03-29T07:00"),
        (u1, "2026-03-29T07:00", "2026-03-30T07:00"),
        (u2, "2026-03-30T07:00", "2026-03-31T00:00"),
    ]

    code, changed = await api(
        http, server, "PUT", f"{base(org)}/{sid}", json={"name": "Renamed", "participants": [u2]}
    )
    assert code == 200, changed
    assert changed["name"] == "Renamed" and changed["participants"] == [u2]
    assert changed["timezone"] == WARSAW and changed["layers"][0]["start"] == "2026-03-27"

    code, current = await api(http, server, "GET", f"{base(org)}/{sid}/current")
    assert code == 200, current
    assert current["user_id"] == u2 and current["layer"] == 0 and current["until"] is None
    assert current["layers"] == [{"layer": 0, "name": "", "user_id": u2}]

    code, _ = await api(http, server, "DELETE", f"{base(org)}/{sid}")
    assert code == 204
    code, _ = await api(http, server, "GET", f"{base(org)}/{sid}")
    assert code == 404


@pytest.mark.both_backends
async def test_crud_and_a_timeline_across_the_dst_change(
    server: Server, http: aiohttp.ClientSession
) -> None:
    await crud_and_dst(http, server)


async def test_layers_overrides_and_current(shared: Server, http: aiohttp.ClientSession) -> None:
    org = await admin_org(http, shared)
    u1, u2, u3 = await members(http, shared, org, 3)
    body = {
        "name": "Layered",
        "timezone": "UTC",
        "layers": [
            {"rotation_type": "weekly", "start": "2026-01-05", "participants": [u1]},
            {
                "name": "business hours",
                "rotation_type": "custom",
                "rotation_length_hours": 48,
                "handoff_time": "00:00",
                "start": "2026-01-05",
                "participants": [u2],
                "restrictions": [
                    {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}
                ],
            },
        ],
    }
    code, sched = await api(http, shared, "POST", base(org), json=body)
    assert code == 201, sched
    sid = sched["id"]
    code, ov = await api(
        http,
        shared,
        "POST",
        f"{base(org)}/{sid}/overrides",
        json={
            "user_id": u3,
            "starts_at": "2026-01-09T10:00:00Z",
            "ends_at": "2026-01-09T12:00:00Z",
        },
    )
    assert code == 201, ov
    code, listed = await api(http, shared, "GET", f"{base(org)}/{sid}/overrides")
    assert code == 200 and [o["id"] for o in listed] == [ov["id"]]
    q = "from=2026-01-09T08:00:00Z&to=2026-01-09T18:00:00Z"
    code, tl = await api(http, shared, "GET", f"{base(org)}/{sid}/timeline?{q}")
    assert code == 200, tl
    assert [(s["user_id"], s["start"][11:16], s["layer"]) for s in tl["shifts"]] == [
        (u1, "08:00", 0),
        (u2, "09:00", 1),
        (u3, "10:00", None),
        (u2, "12:00", 1),
        (u1, "17:00", 0),
    ]
    code, current = await api(http, shared, "GET", f"{base(org)}/{sid}/current")
    assert code == 200, current
    assert current["user_id"] in (u1, u2) and current["until"] is not None
    assert [entry["layer"] for entry in current["layers"]] == [0, 1]
    # The default range: a week from now.
    code, tl = await api(http, shared, "GET", f"{base(org)}/{sid}/timeline")
    assert code == 200 and tl["shifts"], tl


async def test_bad_input_is_a_422_naming_the_field(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    (u1,) = await members(http, shared, org, 1)
    stranger_token, _ = await other_org_user(shared)
    code, others = await api(http, shared, "GET", "/api/users/me", token=stranger_token)
    stranger = others["id"]
    ok = {"name": "x", "timezone": "UTC", "participants": [u1]}
    bad: list[tuple[dict[str, Any], list[Any]]] = [
        ({**ok, "timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ({**ok, "handoff_time": "25:00"}, ["body", "handoff_time"]),
        ({**ok, "rotation_type": "hourly"}, ["body", "rotation_type"]),
        ({**ok, "rotation_type": "custom"}, ["body", "rotation_length_hours"]),
        ({**ok, "participants": []}, ["body", "participants"]),
        ({**ok, "participants": [stranger]}, ["body", "participants", 0]),
        ({**ok, "start": "yesterday"}, ["body", "start"]),
        ({"name": "x"}, ["body", "participants"]),
        ({**ok, "name": ""}, ["body", "name"]),
        (
            {
                "name": "x",
                "layers": [
                    {
                        "participants": [u1],
                        "restrictions": [{"days": ["xyz"], "start": "09:00", "end": "17:00"}],
                    }
                ],
            },
            ["body", "layers", 0, "restrictions", 0, "days", 0],
        ),
        (
            {"name": "x", "layers": [{"participants": [u1, stranger]}]},
            ["body", "layers", 0, "participants", 1],
        ),
    ]
    for body, loc in bad:
        code, err = await api(http, shared, "POST", base(org), json=body)
        assert code == 422, (body, err)
        assert loc in [e["loc"] for e in err["detail"]], (body, err)

    code, sched = await api(http, shared, "POST", base(org), json=ok)
    assert code == 201
    one = f"{base(org)}/{sched['id']}"
    for q, param in [
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("from=2026-01-01T00:00:00Z&to=2026-06-01T00:00:00Z", "to"),
        ("from=soon", "from"),
    ]:
        code, err = await api(http, shared, "GET", f"{one}/timeline?{q}")
        assert code == 422, err
        assert ["query", param] in [e["loc"] for e in err["detail"]], err
    for body, field in [
        (
            {
                "user_id": stranger,
                "starts_at": "2026-01-01T00:00:00Z",
                "ends_at": "2026-01-02T00:00:00Z",
            },
            "user_id",
        ),
        (
            {"user_id": u1, "starts_at": "2026-01-02T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z"},
            "ends_at",
        ),
        ({"user_id": u1, "starts_at": "later", "ends_at": "2026-01-01T00:00:00Z"}, "starts_at"),
        ({"user_id": u1, "starts_at": True, "ends_at": "2026-01-01T00:00:00Z"}, "starts_at"),
    ]:
        code, err = await api(http, shared, "POST", f"{one}/overrides", json=body)
        assert code == 422, (body, err)
        assert ["body", field] in [e["loc"] for e in err["detail"]], (body, err)


async def test_viewers_read_and_other_organisations_see_nothing(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    org = await admin_org(http, shared)
    (u1,) = await members(http, shared, org, 1)
    code, sched = await api(
        http, shared, "POST", base(org), json={"name": "v", "timezone": "UTC", "participants": [u1]}
    )
    assert code == 201
    one = f"{base(org)}/{sched['id']}"
    override = {
        "user_id": u1,
        "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": "2026-01-02T00:00:00Z",
    }

    viewer, _ = await other_org_user(shared, role="VIEWER", org_id=org)
    for path in (base(org), one, f"{one}/current", f"{one}/timeline", f"{one}/overrides"):
        code, _ = await api(http, shared, "GET", path, token=viewer)
        assert code == 200, path
    for method, path, body in [
        ("POST", base(org), {"name": "w", "participants": [u1]}),
        ("PUT", one, {"name": "w"}),
        ("DELETE", one, None),
        ("POST", f"{one}/overrides", override),
    ]:
        code, _ = await api(http, shared, method, path, token=viewer, json=body)
        assert code == 403, (method, path)

    stranger, other_org = await other_org_user(shared)
    for method, path, body in [
        ("GET", base(org), None),
        ("POST", base(org), {"name": "w", "participants": [u1]}),
        ("GET", one, None),
        ("PUT", one, {"name": "w"}),
        ("DELETE", one, None),
        ("GET", f"{one}/current", None),
        ("GET", f"{one}/timeline", None),
        ("GET", f"{one}/overrides", None),
        ("POST", f"{one}/overrides", override),
        # Their own organisation's path with this organisation's schedule id.
        ("GET", f"{base(other_org)}/{sched['id']}", None),
        ("GET", f"{base(other_org)}/{sched['id']}/timeline", None),
        ("DELETE", f"{base(other_org)}/{sched['id']}", None),
    ]:
        code, _ = await api(http, shared, method, path, token=stranger, json=body)
        assert code == 404, (method, path)
    code, still = await api(http, shared, "GET", one)
    assert code == 200 and still["name"] == "v"
