"""Hostile and careless input against a real `tocsin serve`, on SQLite and on PostgreSQL:
schedules that never match, text the databases cannot store, documents nested a
thousand levels deep, ids beyond 64 bits inside lists, secrets in check headers and
URLs. Each case is a 4xx naming what is wrong (never a 500), changes nothing, and the
server starts again after it. One server per backend for the whole module."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from helpers import Server, api, server_store
from pgcluster import PgCluster
from tocsin.store import Store

NEVER = "0 0 30 2 *"  # the 30th of February
URL = "http://127.0.0.1:1/"
SOURCES = [f"geo:n{i}" for i in range(201)]  # one over the limit


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    args: tuple[str, ...] = ()
    cluster: PgCluster | None = None
    name = f"hostile_{uuid.uuid4().hex[:8]}"
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        args = ("--database", cluster.create_database(name))
    with pytest.MonkeyPatch.context() as mp:
        # Hundreds of requests from one address: the limits are tested elsewhere.
        mp.setenv("TOCSIN_RATE_LIMIT_PER_TOKEN", "0")
        mp.setenv("TOCSIN_RATE_LIMIT_PER_ADDRESS", "0")
        s = Server(tmp_path_factory.mktemp(f"hostile-{request.param}") / "data")
        s.start(*args)
        try:
            yield s
        finally:
            s.kill()
            if cluster is not None:
                cluster.drop_database(name)


@pytest.fixture
async def store(server: Server) -> AsyncIterator[Store]:
    """The running server's own database, as a second client."""
    st = server_store(server)
    await st.open(migrate=False)
    yield st
    await st.close()


def errors(body: Any) -> dict[str, str]:
    """{last part of loc: message} of a 422 body."""
    return {str(e["loc"][-1]): e["msg"] for e in body["detail"]}


def locs(body: Any) -> list[list[Any]]:
    return [e["loc"] for e in body["detail"]]


async def restarts(server: Server, http: aiohttp.ClientSession) -> None:
    """After a destructive case: the server stops cleanly, starts, and answers."""
    assert server.stop() == 0
    server.start()
    code, _ = await api(http, server, "GET", "/api/checks")
    assert code == 200


async def raw(
    http: aiohttp.ClientSession,
    server: Server,
    method: str,
    path: str,
    data: bytes,
    *,
    auth: bool = True,
    content_type: str = "application/json",
) -> tuple[int, str, Any]:
    """A request with a body sent byte for byte: (status, content type, body)."""
    headers = {**(server.headers if auth else {}), "Content-Type": content_type}
    async with http.request(method, server.base + path, data=data, headers=headers) as resp:
        if resp.content_type == "application/json":
            return resp.status, resp.content_type, await resp.json()
        return resp.status, resp.content_type, await resp.text()


async def count_checks(http: aiohttp.ClientSession, server: Server) -> int:
    code, rows = await api(http, server, "GET", "/api/checks?limit=500")
    assert code == 200
    return len(rows)


async def heartbeat(
    http: aiohttp.ClientSession, server: Server, name: str, **fields: Any
) -> dict[str, Any]:
    body = {"name": name, "type": "heartbeat", "interval": 60, "grace_period": 60, **fields}
    code, check = await api(http, server, "POST", "/api/checks", json=body)
    assert code == 200, check
    return dict(check)


async def ping(
    http: aiohttp.ClientSession, server: Server, path: str, method: str = "GET", **kw: Any
) -> tuple[int, str, str]:
    async with http.request(method, f"{server.base}/api/ping/{path}", **kw) as resp:
        return resp.status, resp.content_type, await resp.text()


# -- schedules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"schedule": NEVER}, "schedule"),
        ({"schedule": "0 0 31 4 *"}, "schedule"),  # the 31st of April
        ({"schedule": "* * * * * *"}, "schedule"),  # every second
        ({"schedule": "*/10 * * * * *"}, "schedule"),
        ({"schedule": "not cron"}, "schedule"),
        ({"schedule": "*/5 * * * *", "timezone": ""}, "timezone"),
        ({"schedule": "*/5 * * * *", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
    ],
)
async def test_schedules_that_never_match_fire_too_often_or_name_no_zone_are_refused(
    server: Server, http: aiohttp.ClientSession, fields: dict[str, Any], field: str
) -> None:
    before = await count_checks(http, server)
    body = {"name": "nightly", "type": "heartbeat", **fields}
    code, err = await api(http, server, "POST", "/api/checks", json=body)
    assert code == 422, err
    assert field in errors(err), err
    assert await count_checks(http, server) == before


async def test_a_schedule_patched_to_never_match_is_refused_and_the_check_keeps_its_own(
    server: Server, http: aiohttp.ClientSession
) -> None:
    check = await heartbeat(http, server, "backup", schedule="*/5 * * * *")
    assert (await ping(http, server, check["uuid"]))[0] == 200
    for change in ({"schedule": NEVER}, {"schedule": "* * * * * *"}, {"timezone": ""}):
        code, err = await api(http, server, "PATCH", f"/api/checks/{check['id']}", json=change)
        assert code == 422, (change, err)
        assert next(iter(change)) in errors(err)
    code, now = await api(http, server, "GET", f"/api/checks/{check['id']}")
    assert (now["schedule"], now["timezone"]) == ("*/5 * * * *", "UTC")
    assert now["schedule_error"] is None
    await restarts(server, http)


@pytest.mark.parametrize(
    ("window", "field"),
    [
        ({"cron": NEVER}, "cron"),
        ({"cron": "* * * * * *"}, "cron"),
        ({"cron": "*/5 * * * *"}, "cron"),  # more often than hourly
        ({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}, "rrule"),
        ({"rrule": "FREQ=DAILY;BYHOUR=25"}, "rrule"),
        ({"rrule": "FREQ=MINUTELY"}, "rrule"),
        # Would take minutes to search (a fine frequency that never matches).
        ({"rrule": "FREQ=SECONDLY;BYHOUR=1;BYMONTH=2;BYMONTHDAY=31;BYSETPOS=1"}, "rrule"),
        ({"cron": "0 3 * * *", "timezone": ""}, "timezone"),
        ({"cron": "0 3 * * *", "timezone": "Nowhere/Land"}, "timezone"),
    ],
)
async def test_maintenance_rules_that_never_match_are_refused(
    server: Server, http: aiohttp.ClientSession, window: dict[str, Any], field: str
) -> None:
    body = {"name": "w", "starts_at": "2030-01-01T00:00:00Z", "duration": 600, **window}
    code, err = await api(http, server, "POST", "/api/maintenance", json=body)
    assert code == 422, (window, err)
    assert field in errors(err), err


async def test_a_stored_schedule_the_engine_refuses_does_not_keep_the_server_down(
    server: Server, http: aiohttp.ClientSession, store: Store
) -> None:
    """A row written before its rule was refused (or by hand): the server starts, the
    check shows why it is not scheduled, its pings change nothing, the rest runs."""
    bad = await heartbeat(http, server, "nightly", schedule="0 3 * * *")
    good = await heartbeat(http, server, "hourly", schedule="0 * * * *")
    assert (await ping(http, server, bad["uuid"]))[0] == 200
    org = [bad["organization_id"]]
    stored = await store.get_check(org, bad["id"])
    assert stored is not None
    await store.update_check(org, bad["id"], {"config": {**stored["config"], "schedule": NEVER}})
    window = await store.insert(
        "maintenance_windows",
        bad["organization_id"],
        {
            "name": "stored before rules were checked",
            "starts_at": 1_900_000_000,
            "duration_s": 600,
            "cron": NEVER,
            "timezone": "UTC",
            "check_ids": [good["id"]],
            "is_active": True,
        },
    )

    await restarts(server, http)
    log = server.log.read_text()
    assert f"check {bad['id']} not scheduled" in log
    assert f"maintenance window {window['id']} not loaded" in log
    code, shown_window = await api(http, server, "GET", f"/api/maintenance/{window['id']}")
    assert code == 200 and "cron" in shown_window["schedule_error"], shown_window
    code, shown = await api(http, server, "GET", f"/api/checks/{bad['id']}")
    assert code == 200 and "schedule" in shown["schedule_error"], shown
    code, other = await api(http, server, "GET", f"/api/checks/{good['id']}")
    assert code == 200 and other["schedule_error"] is None

    pings_before = await store.list_pings(org, bad["id"], limit=100, before=None)
    status, kind, text = await ping(http, server, f"{bad['uuid']}/fail")
    assert (status, kind) == (409, "text/plain"), text
    assert "schedule" in text
    assert await store.list_pings(org, bad["id"], limit=100, before=None) == pings_before
    code, after = await api(http, server, "GET", f"/api/checks/{bad['id']}")
    assert after["status"] == shown["status"] != "DOWN"
    code, incidents = await api(http, server, "GET", f"/api/checks/{bad['id']}/incidents")
    assert code == 200 and incidents["incidents"] == [], incidents
    assert (await ping(http, server, good["uuid"]))[0] == 200

    # A valid change through the API schedules it again.
    code, fixed = await api(
        http, server, "PATCH", f"/api/checks/{bad['id']}", json={"schedule": "0 4 * * *"}
    )
    assert code == 200 and fixed["schedule_error"] is None, fixed
    assert (await ping(http, server, bad["uuid"]))[0] == 200


# -- text, depth and ids ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": "a\x00b", "url": "http://127.0.0.1:1/"}, ["body", "name"]),
        (
            {"name": "n", "description": "\x00", "url": "http://127.0.0.1:1/"},
            ["body", "description"],
        ),
        (
            {"name": "n", "tags": ["ok", "b\x00d"], "url": "http://127.0.0.1:1/"},
            ["body", "tags", 1],
        ),
        (
            {"name": "n", "url": "http://127.0.0.1:1/", "http_headers": {"X-A": "\x00"}},
            ["body", "http_headers", "X-A"],
        ),
        ({"name": "n", "url": "http://127.0.0.1:1/", "x\x00": 1}, ["body", "x\x00"]),
    ],
)
async def test_nul_in_any_text_is_a_422_naming_the_field(
    server: Server, http: aiohttp.ClientSession, body: dict[str, Any], loc: list[Any]
) -> None:
    before = await count_checks(http, server)
    code, err = await api(http, server, "POST", "/api/checks", json=body)
    assert code == 422, err
    assert loc in locs(err), err
    assert await count_checks(http, server) == before


async def test_nul_and_lone_surrogates_are_refused_on_every_kind_of_route(
    server: Server, http: aiohttp.ClientSession, store: Store
) -> None:
    before = await count_checks(http, server)
    # A lone surrogate is not text at all.
    status, _, err = await raw(http, server, "POST", "/api/checks", b'{"name": "\\ud800"}')
    assert status == 400, err
    # Query strings and paths.
    code, err = await api(http, server, "GET", "/api/checks?q=%00")
    assert code == 422 and locs(err) == [["query"]], err
    code, err = await api(http, server, "GET", "/api/checks?q=%ED%A0%80")
    assert code == 422, err
    code, _ = await api(http, server, "GET", "/api/checks/%00")
    assert code == 404
    # An integer of thousands of digits (Python refuses to convert it).
    code, err = await api(http, server, "GET", "/api/checks?limit=" + "9" * 5000)
    assert code == 422 and locs(err) == [["query", "limit"]], err
    # Routes without credentials.
    status, _, err = await raw(
        http,
        server,
        "POST",
        "/api/auth/token",
        b'{"username": "a\\u0000", "password": "x"}',
        auth=False,
    )
    assert status == 422, err
    form = b"username=admin%40localhost%00&password=x"
    status, _, err = await raw(
        http,
        server,
        "POST",
        "/api/auth/token",
        form,
        auth=False,
        content_type="application/x-www-form-urlencoded",
    )
    assert status == 422 and locs(err) == [["body", "username"]], err
    status, _, err = await raw(
        http, server, "POST", "/api/agents/register", b'{"token": "reg_\\u0000"}', auth=False
    )
    assert status == 422, err
    # Pings answer in plain text; a job's output with NUL bytes is kept, not refused.
    check = await heartbeat(http, server, "with output")
    status, kind, text = await ping(http, server, f"{check['uuid']}?rid=%00")
    assert (status, kind) == (400, "text/plain"), text
    status, _, _ = await ping(http, server, check["uuid"], "POST", data=b"line\x00two\xff")
    assert status == 200
    pings = await store.list_pings([check["organization_id"]], check["id"], limit=10, before=None)
    assert [p["body"] for p in pings] == ["line\ufffdtwo\ufffd"]
    assert await count_checks(http, server) == before + 1
    await restarts(server, http)


DEEP = b"[" * 1000 + b"]" * 1000  # 2 KB


@pytest.mark.parametrize(
    ("path", "auth"),
    [
        ("/api/checks", True),
        ("/api/maintenance", True),
        ("/api/notification-channels", True),
        ("/api/organizations", True),
        ("/api/auth/token", False),
        ("/api/agents/register", False),
    ],
)
async def test_json_nested_a_thousand_levels_deep_is_a_400(
    server: Server, http: aiohttp.ClientSession, path: str, auth: bool
) -> None:
    for body in (DEEP, b'{"name": "n", "x": ' + DEEP + b"}", b'{"a":' * 40 + b"1" + b"}" * 40):
        status, _, err = await raw(http, server, "POST", path, body, auth=auth)
        assert status == 400, (path, err)
        assert "nested" in err["detail"] or "JSON" in err["detail"], err


async def test_ids_beyond_64_bits_inside_lists_are_a_422(
    server: Server, http: aiohttp.ClientSession
) -> None:
    check = await heartbeat(http, server, "linked")
    huge = 2**64
    window = {"name": "w", "starts_at": "2030-01-01T00:00:00Z", "duration": 60}
    cases = [
        (
            "POST",
            "/api/maintenance",
            {**window, "check_ids": [check["id"], huge]},
            ["check_ids", 1],
        ),
        ("POST", "/api/maintenance", {**window, "check_ids": [-1]}, ["check_ids", 0]),
        (
            "POST",
            "/api/notification-channels",
            {
                "name": "c",
                "channel_type": "webhook",
                "config": {"url": "http://127.0.0.1:9/"},
                "check_ids": [huge],
            },
            ["check_ids", 0],
        ),
        (
            "PUT",
            f"/api/checks/{check['id']}/notification-channels",
            {"channel_ids": [huge * huge]},
            ["channel_ids", 0],
        ),
    ]
    lists = ("/api/maintenance", "/api/notification-channels")
    before = [(await api(http, server, "GET", path))[1] for path in lists]
    for method, path, body, loc in cases:
        code, err = await api(http, server, method, path, json=body)
        assert code == 422, (path, err)
        assert ["body", *loc] in locs(err), err
    assert [(await api(http, server, "GET", path))[1] for path in lists] == before


# -- secrets ---------------------------------------------------------------------------


async def test_check_header_values_are_secrets_and_urls_carry_no_credentials(
    server: Server, http: aiohttp.ClientSession, store: Store
) -> None:
    body = {
        "name": "private api",
        "url": "http://127.0.0.1:9/health",
        "http_headers": {"Authorization": "Bearer s3cret", "X-Env": "prod"},
    }
    code, check = await api(http, server, "POST", "/api/checks", json=body)
    assert code == 200, check
    assert check["http_headers"] == {"Authorization": "******", "X-Env": "******"}
    code, read = await api(http, server, "GET", f"/api/checks/{check['id']}")
    assert "s3cret" not in str(read)
    # ****** keeps a value, "" removes the header, a new value replaces.
    change = {"http_headers": {"Authorization": "******", "X-Env": "", "X-New": "1"}}
    code, patched = await api(http, server, "PATCH", f"/api/checks/{check['id']}", json=change)
    assert code == 200, patched
    assert patched["http_headers"] == {"Authorization": "******", "X-New": "******"}
    stored = await store.get_check([check["organization_id"]], check["id"])
    assert stored is not None
    assert stored["config"]["http_headers"] == {"Authorization": "Bearer s3cret", "X-New": "1"}

    for bad, field in [
        ({"url": "http://user:pw@127.0.0.1:9/"}, "url"),
        ({"url": "https://token@127.0.0.1:9/"}, "url"),
        ({"http_headers": {"X-A": "a\r\nX-Injected: 1"}}, "http_headers"),
        ({"http_headers": {"X-A": "a\nb"}}, "http_headers"),
        ({"http_headers": {"Bad Name": "x"}}, "http_headers"),
        (
            {"check_source_critical": {f"geo:n{i}": True for i in range(201)}},
            "check_source_critical",
        ),
    ]:
        code, err = await api(http, server, "PATCH", f"/api/checks/{check['id']}", json=bad)
        assert code == 422, (bad, err)
        assert field in errors(err), err
    code, err = await api(
        http,
        server,
        "POST",
        "/api/notification-channels",
        json={
            "name": "hook",
            "channel_type": "webhook",
            "config": {"url": "http://127.0.0.1:9/", "headers": {"X-A": "a\r\nX-B: c"}},
        },
    )
    assert code == 422, err
    code, err = await api(
        http,
        server,
        "POST",
        "/api/notification-channels",
        json={
            "name": "hook",
            "channel_type": "webhook",
            "config": {"url": "http://t0ken@127.0.0.1:9/"},
        },
    )
    assert code == 422, err
    channels = (await api(http, server, "GET", "/api/notification-channels"))[1]
    assert "hook" not in [c["name"] for c in channels]
    stored_after = await store.get_check([check["organization_id"]], check["id"])
    assert stored_after is not None and stored_after["url"] == "http://127.0.0.1:9/health"
