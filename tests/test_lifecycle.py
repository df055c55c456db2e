"""Lifecycle watches (docs/lifecycle.md): the API over real servers on both backends,
and the watcher reading a feed served on loopback, telling a real webhook receiver of
a cycle nearing its end of life and of a new release, each once."""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import Server, api, other_org_user, wait_for
from paging_helpers import Receiver
from tocsin.workflow.lifecycle import Feed, FeedError, eol_notice, lifecycle_of, pick_cycle

QUIET = {"TOCSIN_RATE_LIMIT_PER_TOKEN": "0", "TOCSIN_RATE_LIMIT_PER_ADDRESS": "0"}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def feed_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A directory of product documents served over HTTP on loopback: (dir, base URL)."""
    root = tmp_path_factory.mktemp("feed")
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    feed_dir: tuple[Path, str],
) -> Iterator[tuple[Server, Path]]:
    """A server per backend whose feed is its own directory of `feed_dir`."""
    backend = request.param
    root, base = feed_dir
    docs = root / backend
    docs.mkdir()
    env = {**QUIET, "TOCSIN_LIFECYCLE_FEED": f"{base}/{backend}", "TOCSIN_LIFECYCLE_INTERVAL": "1"}
    name = None
    args: tuple[str, ...] = ()
    if backend == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        name = f"t_lifecycle_{uuid.uuid4().hex[:8]}"
        args = ("--database", cluster.create_database(name))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        s = Server(tmp_path_factory.mktemp(f"lifecycle-{backend}") / "data")
        s.start(*args)
    yield s, docs
    s.kill()
    if name is not None:
        request.getfixturevalue("pg_cluster").drop_database(name)


@pytest.fixture
async def receiver() -> Any:
    r = Receiver()
    runner = await r.start()
    yield r
    await runner.cleanup()


def write_doc(docs: Path, platform: str, cycles: list[dict[str, Any]]) -> None:
    tmp = docs / f".{platform}.json.tmp"
    tmp.write_text(json.dumps(cycles))
    tmp.replace(docs / f"{platform}.json")


def days_ahead(n: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=n)).isoformat()


async def admin_org(http: aiohttp.ClientSession, server: Server) -> int:
    code, orgs = await api(http, server, "GET", "/api/organizations/")
    assert code == 200, orgs
    return int(orgs[0]["id"])


async def webhook_channel(
    http: aiohttp.ClientSession, server: Server, url: str, token: str | None = None
) -> int:
    code, channel = await api(
        http,
        server,
        "POST",
        "/api/notification-channels/",
        token=token,
        json={"name": "lifecycle", "channel_type": "webhook", "config": {"url": url}},
    )
    assert code == 201, channel
    return int(channel["id"])


async def passes(http: aiohttp.ClientSession, server: Server, path: str, n: int) -> dict[str, Any]:
    """Wait until the watcher checked the watch `n` more times (its `last_checked_at`
    changed `n` times); answers the watch then."""
    code, watch = await api(http, server, "GET", path)
    assert code == 200, watch
    for _ in range(n):
        seen = watch["last_checked_at"]

        async def moved(seen: Any = seen) -> Any:
            code, now = await api(http, server, "GET", path)
            assert code == 200, now
            return now if now["last_checked_at"] not in (None, seen) else None

        watch = await wait_for(moved, timeout=20)
    return watch  # type: ignore[no-any-return]


def of_event(receiver: Receiver, name: str, event: str) -> list[Any]:
    return [h for h in receiver.of(name) if h.get("event") == event]


# -- the watcher, end to end --------------------------------------------------------------


async def test_eol_30d_and_new_release_reach_a_webhook_once(
    shared: tuple[Server, Path], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server, docs = shared
    org = await admin_org(http, server)
    channel = await webhook_channel(http, server, receiver.url("life"))
    eol = days_ahead(20)
    cycles = [
        {"cycle": "3.13", "releaseDate": "2024-10-07", "eol": days_ahead(900), "latest": "3.13.1"},
        {
            "cycle": "3.11",
            "releaseDate": "2022-10-24",
            "eol": eol,
            "latest": "3.11.9",
            "latestReleaseDate": "2024-04-02",
            "lts": False,
        },
    ]
    write_doc(docs, "python", cycles)
    base = f"/api/organizations/{org}/lifecycle-watches"
    code, watch = await api(
        http,
        server,
        "POST",
        base,
        json={
            "vendor": "PSF",
            "platform": "python",
            "resource_id": "api-server",
            "resource_type": "runtime",
            "version": "3.11",
            "notify_on_new": True,
            "notify_90d": True,
            "notify_30d": True,
            "notify_7d": True,
            "channel_ids": [channel],
        },
    )
    assert code == 201, watch
    path = f"{base}/{watch['id']}"

    await wait_for(lambda: _async(of_event(receiver, "life", "lifecycle.eol_30d")), timeout=20)
    watch = await passes(http, server, path, 3)
    assert len(of_event(receiver, "life", "lifecycle.eol_30d")) == 1
    # Only the tightest crossed threshold: 90 days is crossed too, but not told.
    assert of_event(receiver, "life", "lifecycle.eol_90d") == []
    told = of_event(receiver, "life", "lifecycle.eol_30d")[0]["message"]
    assert told["lifecycle"]["watch_id"] == watch["id"]
    assert told["lifecycle"]["cycle"] == "3.11" and told["lifecycle"]["eol"] == eol
    assert told["organization_id"] == org and "python" in told["summary"]
    # The first sight of the latest release is recorded, not told.
    assert watch["known_latest"] == "3.11.9"
    assert of_event(receiver, "life", "lifecycle.new_release") == []
    assert watch["lifecycle"]["cycle"] == "3.11" and watch["lifecycle"]["eol"] == eol
    assert watch["lifecycle"]["latest"] == "3.11.9" and watch["lifecycle"]["is_eol"] is False
    assert (
        watch["lifecycle"]["days_left"]
        == (dt.date.fromisoformat(eol) - dt.date.fromisoformat(told["at"][:10])).days
    )

    # A new release of the cycle appears in the feed.
    cycles[1] = {**cycles[1], "latest": "3.11.10", "latestReleaseDate": days_ahead(0)}
    write_doc(docs, "python", cycles)
    await wait_for(lambda: _async(of_event(receiver, "life", "lifecycle.new_release")), timeout=20)
    watch = await passes(http, server, path, 3)
    (new_post,) = of_event(receiver, "life", "lifecycle.new_release")
    new = new_post["message"]
    assert new["lifecycle"]["latest"] == "3.11.10"
    assert new["lifecycle"]["previous_latest"] == "3.11.9"
    assert watch["known_latest"] == "3.11.10"
    assert len(of_event(receiver, "life", "lifecycle.eol_30d")) == 1

    code, notices = await api(http, server, "GET", f"{path}/notices")
    assert code == 200, notices
    assert [(n["kind"], n["notice"]) for n in notices] == [
        ("eol_30d", "eol_30d:3.11"),
        ("new_release", "new_release:3.11.10"),
    ]
    assert notices[0]["detail"]["days_left"] == watch["lifecycle"]["days_left"]

    code, _ = await api(http, server, "DELETE", path)
    assert code == 204


async def _async(value: Any) -> Any:
    return value


async def test_a_feed_that_fails_is_tried_again(
    shared: tuple[Server, Path], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server, docs = shared
    org = await admin_org(http, server)
    channel = await webhook_channel(http, server, receiver.url("late"))
    base = f"/api/organizations/{org}/lifecycle-watches"
    # No document for this product yet (the feed answers 404), and a broken one.
    (docs / "brokenproduct.json").write_text("{not json")
    code, missing = await api(
        http,
        server,
        "POST",
        base,
        json={"platform": "nodejs", "version": "18", "notify_7d": True, "channel_ids": [channel]},
    )
    assert code == 201, missing
    code, broken = await api(http, server, "POST", base, json={"platform": "brokenproduct"})
    assert code == 201, broken
    # A watch that works, checked meanwhile: the server went on.
    write_doc(docs, "redis", [{"cycle": "7.2", "eol": False, "latest": "7.2.4"}])
    code, ok = await api(http, server, "POST", base, json={"platform": "redis"})
    assert code == 201, ok
    ok = await passes(http, server, f"{base}/{ok['id']}", 2)
    assert ok["known_latest"] == "7.2.4" and ok["lifecycle"]["eol"] is False
    for w in (missing, broken):
        code, now = await api(http, server, "GET", f"{base}/{w['id']}")
        assert code == 200 and now["last_checked_at"] is None and now["lifecycle"] is None

    # The document appears: the next pass reads it (EOL passed: the 7-day notice).
    write_doc(docs, "nodejs", [{"cycle": "18", "eol": days_ahead(-3), "latest": "18.20.4"}])
    await wait_for(lambda: _async(of_event(receiver, "late", "lifecycle.eol_7d")), timeout=20)
    now = await passes(http, server, f"{base}/{missing['id']}", 2)
    assert now["lifecycle"]["is_eol"] is True and now["lifecycle"]["days_left"] < 0
    assert len(of_event(receiver, "late", "lifecycle.eol_7d")) == 1
    for w in (missing, broken, ok):
        assert (await api(http, server, "DELETE", f"{base}/{w['id']}"))[0] == 204


# -- the API --------------------------------------------------------------------------------


async def test_validation_roles_isolation_and_client_bodies(
    shared: tuple[Server, Path], http: aiohttp.ClientSession
) -> None:
    server, _ = shared
    org = await admin_org(http, server)
    base = f"/api/organizations/{org}/lifecycle-watches"
    channel = await webhook_channel(http, server, "http://127.0.0.1:9/hook")

    # Every field, as a SysTeam client sends them, with fields it does not own.
    everything = {
        "id": 77,
        "organization_id": 12345,
        "vendor": "PostgreSQL Global Development Group",
        "platform": "PostgreSQL",
        "resource_id": "db-primary",
        "resource_type": "database",
        "version": "16",
        "notify_on_new": False,
        "notify_90d": True,
        "notify_30d": True,
        "notify_7d": True,
        "channel_ids": [channel],
        "known_latest": "99.9",
        "last_checked_at": "2020-01-01T00:00:00Z",
        "something_else": {"a": 1},
    }
    code, full = await api(http, server, "POST", base, json=everything)
    assert code == 201, full
    assert full["organization_id"] == org and full["id"] != 77
    assert full["platform"] == "postgresql"
    for k in ("vendor", "resource_id", "resource_type", "version", "channel_ids"):
        assert full[k] == everything[k], k
    for k in ("notify_on_new", "notify_90d", "notify_30d", "notify_7d"):
        assert full[k] is everything[k], k
    assert full["known_latest"] is None and full["last_checked_at"] is None

    # Zero values: empty text is no value, false flags, no channels.
    zero = {
        "platform": "nodejs",
        "vendor": "",
        "resource_id": "",
        "resource_type": "",
        "version": "",
        "notify_on_new": False,
        "notify_90d": False,
        "notify_30d": False,
        "notify_7d": False,
        "channel_ids": [],
    }
    code, zeroed = await api(http, server, "POST", base, json=zero)
    assert code == 201, zeroed
    assert zeroed["vendor"] == "" and zeroed["channel_ids"] == []
    assert zeroed["resource_id"] is None and zeroed["version"] is None
    assert not any(zeroed[k] for k in ("notify_on_new", "notify_90d", "notify_30d", "notify_7d"))

    # Only the platform: the defaults.
    code, minimal = await api(http, server, "POST", base, json={"platform": "go"})
    assert code == 201, minimal
    assert (minimal["notify_on_new"], minimal["notify_90d"]) == (True, False)
    assert (minimal["notify_30d"], minimal["notify_7d"]) == (True, True)
    assert minimal["vendor"] == "" and minimal["version"] is None

    # Validation: 422 naming the field.
    other_token, other_org = await other_org_user(server)
    foreign = await webhook_channel(http, server, "http://127.0.0.1:9/x", token=other_token)
    for body, loc in [
        ({}, ["body", "platform"]),
        ({"platform": ""}, ["body", "platform"]),
        ({"platform": "../etc"}, ["body", "platform"]),
        ({"platform": "python", "notify_30d": "yes"}, ["body", "notify_30d"]),
        ({"platform": "python", "channel_ids": [channel, foreign]}, ["body", "channel_ids", 1]),
        ({"platform": "python", "channel_ids": [10**12]}, ["body", "channel_ids", 0]),
        ({"platform": "python", "channel_ids": ["1"]}, ["body", "channel_ids"]),
        ({"platform": "python", "version": "x" * 101}, ["body", "version"]),
    ]:
        code, err = await api(http, server, "POST", base, json=body)
        assert code == 422, (body, err)
        assert [e["loc"][: len(loc)] for e in err["detail"]] == [loc], (body, err)

    # Read, list (filters, total), change.
    path = f"{base}/{full['id']}"
    assert await api(http, server, "GET", path) == (200, full)
    async with http.get(
        server.base + base, headers=server.headers, params={"platform": "PostgreSQL"}
    ) as resp:
        assert resp.status == 200
        listed = await resp.json()
        assert [w["id"] for w in listed] == [full["id"]]
        assert resp.headers["X-Total-Count"] == "1"
    code, page = await api(http, server, "GET", f"{base}?limit=2")
    assert code == 200 and len(page) == 2
    code, changed = await api(
        http, server, "PUT", path, json={"version": "15", "notify_90d": False, "unknown": 1}
    )
    assert code == 200, changed
    assert changed["version"] == "15" and changed["notify_90d"] is False
    assert changed["resource_id"] == "db-primary" and changed["channel_ids"] == [channel]
    code, err = await api(http, server, "PUT", path, json={"channel_ids": [foreign]})
    assert code == 422 and err["detail"][0]["loc"] == ["body", "channel_ids", 0]

    # Another organisation: 404 everywhere; its own list does not show ours.
    for method, p in [
        ("GET", base),
        ("POST", base),
        ("GET", path),
        ("PUT", path),
        ("DELETE", path),
        ("GET", f"{path}/notices"),
    ]:
        code, _ = await api(http, server, method, p, token=other_token, json={"platform": "go"})
        assert code == 404, (method, p)
    code, theirs = await api(
        http, server, "GET", f"/api/organizations/{other_org}/lifecycle-watches", token=other_token
    )
    assert code == 200 and theirs == []
    # Our id under their organisation is not found either.
    code, _ = await api(
        http,
        server,
        "GET",
        f"/api/organizations/{other_org}/lifecycle-watches/{full['id']}",
        token=other_token,
    )
    assert code == 404

    # Roles: a VIEWER reads; configuring needs ADMIN.
    viewer, _ = await other_org_user(server, role="VIEWER", org_id=org)
    member, _ = await other_org_user(server, role="MEMBER", org_id=org)
    assert (await api(http, server, "GET", base, token=viewer))[0] == 200
    assert (await api(http, server, "GET", path, token=viewer))[0] == 200
    assert (await api(http, server, "GET", f"{path}/notices", token=viewer))[0] == 200
    for token in (viewer, member):
        assert (await api(http, server, "POST", base, token=token, json={"platform": "go"}))[
            0
        ] == 403
        assert (await api(http, server, "PUT", path, token=token, json={"version": "1"}))[0] == 403
        assert (await api(http, server, "DELETE", path, token=token))[0] == 403

    # Delete: gone, with its notices.
    for w in (full, zeroed, minimal):
        assert (await api(http, server, "DELETE", f"{base}/{w['id']}"))[0] == 204
    assert (await api(http, server, "GET", path))[0] == 404
    assert (await api(http, server, "GET", f"{path}/notices"))[0] == 404
    assert (await api(http, server, "DELETE", path))[0] == 404


# -- the pieces -----------------------------------------------------------------------------


async def test_feed_from_a_directory_or_one_file(tmp_path: Path) -> None:
    cycles = [
        {"cycle": "8.0", "eol": "2031-04-30", "latest": "8.0.1"},
        {"cycle": 5.7, "eol": True, "latest": "5.7.44"},
    ]
    (tmp_path / "mysql.json").write_text(json.dumps(cycles))
    for feed in (Feed(str(tmp_path)), Feed(tmp_path.as_uri())):
        assert await feed.product("mysql", None) == cycles
        with pytest.raises(FeedError):
            await feed.product("missing", None)
        with pytest.raises(FeedError):
            await feed.product("../mysql", None)
    whole = tmp_path / "all.json"
    whole.write_text(json.dumps({"mysql": cycles, "bad": {"cycle": "1"}}))
    feed = Feed(str(whole))
    assert await feed.product("mysql", None) == cycles
    for name in ("bad", "other"):
        with pytest.raises(FeedError):
            await feed.product(name, None)
    with pytest.raises(ValueError, match="unsupported feed"):
        Feed("ftp://example.test/feed")


def test_the_tracked_cycle_and_the_tightest_threshold() -> None:
    cycles = [{"cycle": "3.13"}, {"cycle": "3.11"}, {"cycle": "3.1"}, {"cycle": 2}]
    assert pick_cycle(cycles, None) == cycles[0]
    assert pick_cycle(cycles, "3.11") == cycles[1]
    assert pick_cycle(cycles, "3.11.4") == cycles[1]
    assert pick_cycle(cycles, "3.1.2") == cycles[2]
    assert pick_cycle(cycles, "2") == cycles[3]
    assert pick_cycle(cycles, "4.0") is None
    assert pick_cycle([], "3.11") is None

    today = dt.date(2026, 1, 1)
    flags = {"notify_90d": True, "notify_30d": True, "notify_7d": True}
    for days, expected in [
        (120, None),
        (90, "eol_90d"),
        (31, "eol_90d"),
        (30, "eol_30d"),
        (8, "eol_30d"),
        (7, "eol_7d"),
        (-5, "eol_7d"),
    ]:
        info = lifecycle_of({"cycle": "1", "eol": (today + dt.timedelta(days)).isoformat()}, today)
        assert info.days_left == days
        assert eol_notice(flags, info) == expected, days
    info = lifecycle_of({"cycle": "1", "eol": (today + dt.timedelta(5)).isoformat()}, today)
    assert eol_notice({**flags, "notify_7d": False}, info) == "eol_30d"
    assert eol_notice({"notify_90d": True}, info) == "eol_90d"
    assert eol_notice({}, info) is None
    for eol in (True, False, None, "soon"):
        info = lifecycle_of({"cycle": "1", "eol": eol}, today)
        assert info.days_left is None and eol_notice(flags, info) is None
        assert info.is_eol is (eol is True)
