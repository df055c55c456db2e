"""Status pages against a real `tocsin serve`: the CRUD API (fields, validation naming
the field, unique slugs, the SysTeam clients' zero-value body, organisations kept
apart), and the public side by slug (overall status from real checks probing a real
local HTTP target, the cache dropped by a status change, ETag/304, the 90-day uptime
from the day rollups, the Atom feed read by a real feed parser, private pages 404).
Most tests share one server for the module; those marked both_backends get their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import feedparser  # type: ignore[import-untyped]
import pytest

from helpers import Server, Target, api, call, other_org_user, server_store, wait_for
from store_helpers import sketch
from tocsin.models import Rollup

PUBLIC = "/api/status-pages/public"


# The server's own counters (its operational metrics) show what a request read.
OPS_TOKEN = "status-pages-ops-token"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("status-pages") / "data")
    s.start("--operational-metrics-token", OPS_TOKEN)
    yield s
    s.kill()


_n = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_n)}-{time.monotonic_ns() % 1_000_000}"


async def new_check(http: aiohttp.ClientSession, server: Server, url: str, name: str) -> int:
    body = {"name": name, "type": "uptime", "url": url, "interval": 1, "timeout": 2}
    code, check = await api(http, server, "POST", "/api/checks/", json=body)
    assert code == 200, check
    return int(check["id"])


async def new_page(http: aiohttp.ClientSession, server: Server, **fields: Any) -> dict[str, Any]:
    body = {"name": "Acme", "slug": unique("acme"), **fields}
    code, page = await api(http, server, "POST", "/api/status-pages/", json=body)
    assert code == 200, page
    return page  # type: ignore[no-any-return]


def errors(body: Any) -> dict[str, str]:
    return {".".join(str(x) for x in e["loc"][1:]): e["msg"] for e in body["detail"]}


async def public(
    http: aiohttp.ClientSession, server: Server, path: str, **headers: str
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.get(server.base + path, headers=headers) as resp:
        if resp.content_type == "application/json":
            body: Any = await resp.json()
        else:
            body = await resp.read()
        return resp.status, body, resp


# -- the API -------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_a_page_is_created_read_listed_changed_and_deleted(
    server: Server, http: aiohttp.ClientSession
) -> None:
    db = await new_check(http, server, "http://127.0.0.1:9/", "pg-primary-eu")
    web = await new_check(http, server, "http://127.0.0.1:9/", "web-1")
    code, page = await api(
        http,
        server,
        "POST",
        "/api/status-pages/",
        json={
            "name": "Acme status",
            "slug": "acme",
            "description": "Our services",
            "logo_url": "https://example.com/logo.png",
            "components": [
                {"check_id": db, "name": "Database (EU)", "section": "Backend"},
                {"check_id": web, "section": "Frontend", "description": "the site"},
            ],
            "unknown": {"ignored": True},
        },
    )
    assert code == 200, page
    assert page["slug"] == "acme" and page["is_public"] is True
    assert page["check_ids"] == [db, web]
    assert page["components"][0] == {
        "check_id": db,
        "name": "Database (EU)",
        "section": "Backend",
        "description": "",
    }
    assert page["url"] == "/status/acme" and page["logo_url"] == "https://example.com/logo.png"
    assert {"id", "organization_id", "created_at", "updated_at"} <= set(page)

    code, got = await api(http, server, "GET", f"/api/status-pages/{page['id']}")
    assert code == 200 and got == page
    code, listed = await api(http, server, "GET", "/api/status-pages")
    assert code == 200 and [p["id"] for p in listed] == [page["id"]]

    # Only check_ids: the components follow, those that stay keep their display names.
    code, changed = await api(
        http,
        server,
        "PUT",
        f"/api/status-pages/{page['id']}",
        json={"check_ids": [db], "name": "Acme", "is_public": False, "logo_url": ""},
    )
    assert code == 200, changed
    assert changed["check_ids"] == [db] and changed["components"][0]["name"] == "Database (EU)"
    assert changed["name"] == "Acme" and changed["is_public"] is False
    assert changed["logo_url"] is None and changed["slug"] == "acme"

    code, _ = await api(http, server, "DELETE", f"/api/status-pages/{page['id']}")
    assert code == 204
    code, _ = await api(http, server, "GET", f"/api/status-pages/{page['id']}")
    assert code == 404


async def test_bad_fields_are_422_naming_the_field(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    cid = await new_check(http, shared, "http://127.0.0.1:9/", "x")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"slug": "Not A Slug"}, "slug"),
        ({"slug": "-edge"}, "slug"),
        ({"slug": "a" * 65}, "slug"),
        ({"logo_url": "javascript:alert(1)"}, "logo_url"),
        ({"logo_url": "ftp://example.com/x.png"}, "logo_url"),
        ({"is_public": "yes"}, "is_public"),
        ({"check_ids": ["1"]}, "check_ids"),
        ({"check_ids": [cid + 10_000]}, "check_ids"),
        ({"components": [{"check_id": cid}, {"check_id": cid}]}, "components.1.check_id"),
        ({"components": [{"name": "no check"}]}, "components.0.check_id"),
        ({"check_ids": [cid], "components": [{"check_id": cid + 10_000}]}, "check_ids"),
    ]
    for fields, field in cases:
        body = {"name": "Bad", "slug": unique("bad"), **fields}
        code, answer = await api(http, shared, "POST", "/api/status-pages/", json=body)
        assert code == 422, (fields, answer)
        assert field in errors(answer), (fields, answer)
    code, answer = await api(http, shared, "POST", "/api/status-pages/", json={"slug": "x"})
    assert code == 422 and "name" in errors(answer)


async def test_a_slug_is_unique_across_the_server(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    page = await new_page(http, shared)
    code, answer = await api(
        http, shared, "POST", "/api/status-pages/", json={"name": "Two", "slug": page["slug"]}
    )
    assert code == 422 and "slug" in errors(answer)
    # Another organisation cannot take it either.
    token, _ = await other_org_user(shared)
    code, answer = await call(
        http, shared, "POST", "/api/status-pages/", token, json={"name": "T", "slug": page["slug"]}
    )
    assert code == 422 and "slug" in errors(answer)
    # Renaming another page onto it.
    other = await new_page(http, shared)
    code, answer = await api(
        http, shared, "PUT", f"/api/status-pages/{other['id']}", json={"slug": page["slug"]}
    )
    assert code == 422 and "slug" in errors(answer)


async def test_the_systeam_zero_value_body_is_accepted(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    body = {
        "id": 0,
        "name": "Zero Values Inc.",
        "slug": "",
        "description": "",
        "is_public": True,
        "logo_url": "",
        "check_ids": [],
        "created_at": "",
        "updated_at": "",
        "organization_id": 0,
    }
    code, page = await api(http, shared, "POST", "/api/status-pages/", json=body)
    assert code == 200, page
    assert page["slug"].startswith("zero-values-inc")
    assert page["logo_url"] is None and page["check_ids"] == [] and page["components"] == []
    # The same zero values on a change keep the name and the slug.
    code, changed = await api(
        http, shared, "PUT", f"/api/status-pages/{page['id']}", json={**body, "name": ""}
    )
    assert code == 200, changed
    assert changed["name"] == "Zero Values Inc." and changed["slug"] == page["slug"]


async def test_organisations_are_kept_apart(shared: Server, http: aiohttp.ClientSession) -> None:
    mine = await new_check(http, shared, "http://127.0.0.1:9/", "mine")
    page = await new_page(http, shared, check_ids=[mine])
    token, _ = await other_org_user(shared)
    path = f"/api/status-pages/{page['id']}"
    assert (await call(http, shared, "GET", path, token))[0] == 404
    assert (await call(http, shared, "PUT", path, token, json={"name": "x"}))[0] == 404
    assert (await call(http, shared, "DELETE", path, token))[0] == 404
    code, listed = await call(http, shared, "GET", "/api/status-pages/", token)
    assert code == 200 and listed == []
    # Their page cannot show my check, by check_ids or by components.
    for fields, field in (
        ({"check_ids": [mine]}, "check_ids"),
        ({"components": [{"check_id": mine}]}, "components.0.check_id"),
    ):
        body = {"name": "Theirs", "slug": unique("theirs"), **fields}
        code, answer = await call(http, shared, "POST", "/api/status-pages/", token, json=body)
        assert code == 422 and field in errors(answer), answer
    # A viewer of my organisation reads but does not write.
    viewer, _ = await other_org_user(shared, role="VIEWER", org_id=page["organization_id"])
    assert (await call(http, shared, "GET", path, viewer))[0] == 200
    assert (await call(http, shared, "PUT", path, viewer, json={"name": "v"}))[0] == 403
    assert (await call(http, shared, "DELETE", path, viewer))[0] == 403
    assert (await api(http, shared, "GET", path))[1]["name"] == "Acme"


# -- the public side -----------------------------------------------------------------------


async def test_private_pages_and_unknown_slugs_are_404(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    page = await new_page(http, shared, is_public=False)
    for slug in (page["slug"], "no-such-page", "Bad%20Slug"):
        for suffix in ("", "/uptime", "/feed.atom"):
            code, body, _ = await public(http, shared, f"{PUBLIC}/{slug}{suffix}")
            assert code == 404, (slug, suffix, body)
            assert isinstance(body, dict) and body["detail"]
        code, body, resp = await public(http, shared, f"/status/{slug}")
        assert code == 404 and resp.content_type == "text/html"
        assert b"not found" in body
    # Made public, it is served at once (the edit dropped what was cached).
    code, _ = await api(
        http, shared, "PUT", f"/api/status-pages/{page['id']}", json={"is_public": True}
    )
    assert code == 200
    code, body, _ = await public(http, shared, f"{PUBLIC}/{page['slug']}")
    assert code == 200 and body["status"] == "OPERATIONAL"
    # And private again: 404 at once.
    await api(http, shared, "PUT", f"/api/status-pages/{page['id']}", json={"is_public": False})
    assert (await public(http, shared, f"/status/{page['slug']}"))[0] == 404


@pytest.mark.both_backends
async def test_an_outage_shows_at_once_and_the_answers_are_cached(
    server: Server, http: aiohttp.ClientSession, target: Target
) -> None:
    up = await new_check(http, server, target.url, "api-internal-1")
    down_later = await new_check(http, server, target.url + "status/200", "pg-primary-eu")
    page = await new_page(
        http,
        server,
        components=[
            {"check_id": up, "name": "API"},
            {"check_id": down_later, "name": "Database (EU)", "section": "Data"},
        ],
    )
    path = f"{PUBLIC}/{page['slug']}"

    async def status() -> str:
        code, body, _ = await public(http, server, path)
        assert code == 200, body
        shown = {c["check_id"]: c["status"] for c in body["components"]}
        return str(body["status"]) if set(shown.values()) == {"UP"} else ""

    assert await wait_for(status, timeout=20) == "OPERATIONAL"
    code, body, resp = await public(http, server, path)
    etag = resp.headers["ETag"]
    assert resp.headers["Cache-Control"].startswith("public, max-age=")
    assert [s["name"] for s in body["sections"]] == ["", "Data"]
    assert body["sections"][1]["components"][0]["name"] == "Database (EU)"
    # Nothing changed: the same document, and a conditional request is a bare 304.
    code, again, resp = await public(http, server, path)
    assert resp.headers["ETag"] == etag and again == body
    code, empty, resp = await public(http, server, path, **{"If-None-Match": etag})
    assert code == 304 and empty == b""

    # The database's target answers 500: DOWN, and the page says Outage well before
    # the cached copy would expire on its own.
    code, _ = await api(
        http,
        server,
        "PUT",
        f"/api/checks/{down_later}",
        json={
            "name": "pg-primary-eu",
            "type": "uptime",
            "url": target.url + "status/500",
            "interval": 1,
            "timeout": 2,
        },
    )
    assert code == 200

    async def outage() -> Any:
        _, body, _ = await public(http, server, path)
        return body if body["status"] == "OUTAGE" else None

    body = await wait_for(outage, timeout=20)
    shown = {c["check_id"]: c["status"] for c in body["components"]}
    assert shown == {up: "UP", down_later: "DOWN"}
    assert body["status_text"] == "Outage"

    async def incident() -> Any:
        body = (await public(http, server, path))[1]
        return body if body["incidents"] else None

    body = await wait_for(incident, timeout=20)
    assert body["incidents"][0]["component"] == "Database (EU)"
    assert "pg-primary-eu" not in str(body)  # the internal name is never shown
    code, _, resp = await public(http, server, path, **{"If-None-Match": etag})
    assert code == 200 and resp.headers["ETag"] != etag


async def test_the_feed_is_valid_atom_with_incidents_and_maintenance(
    shared: Server, http: aiohttp.ClientSession, target: Target
) -> None:
    cid = await new_check(http, shared, target.url + "status/503", "feed-check")
    page = await new_page(http, shared, name="Feed & <Co>", components=[{"check_id": cid}])
    feed_path = f"{PUBLIC}/{page['slug']}/feed.atom"

    async def with_incident() -> Any:
        code, body, resp = await public(http, shared, feed_path)
        assert code == 200 and resp.content_type == "application/atom+xml"
        parsed = feedparser.parse(body)
        return parsed if parsed.entries else None

    parsed = await wait_for(with_incident, timeout=20)
    assert parsed.version == "atom10" and not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.feed.title == "Feed & <Co> status"
    assert "Outage" in parsed.entries[0].title

    start = time.time() + 3 * 86_400
    code, window = await api(
        http,
        shared,
        "POST",
        "/api/maintenance/",
        json={"name": "Upgrade", "check_ids": [cid], "starts_at": start, "duration": 3600},
    )
    assert code == 200, window
    # The window book's change dropped the cached feed at once.
    code, body, _ = await public(http, shared, feed_path)
    parsed = feedparser.parse(body)
    titles = [e.title for e in parsed.entries]
    assert titles[0] == "Scheduled maintenance: Upgrade", titles
    updated = [e.updated_parsed for e in parsed.entries]
    assert updated == sorted(updated, reverse=True)
    code, summary, _ = await public(http, shared, f"{PUBLIC}/{page['slug']}")
    assert [m["name"] for m in summary["maintenance"]] == ["Upgrade"]
    assert summary["maintenance"][0]["in_progress"] is False

    # A window open now: the component shows Maintenance.
    code, _ = await api(
        http,
        shared,
        "POST",
        "/api/maintenance/",
        json={"name": "Now", "check_ids": [cid], "starts_at": time.time() - 60, "duration": 3600},
    )
    assert code == 200

    async def in_maintenance() -> Any:
        body = (await public(http, shared, f"{PUBLIC}/{page['slug']}"))[1]
        return body if body["components"][0]["status"] == "MAINTENANCE" else None

    body = await wait_for(in_maintenance, timeout=40)
    assert body["status"] == "MAINTENANCE" and body["maintenance"][0]["in_progress"] is True


@pytest.mark.both_backends
async def test_uptime_has_90_days_per_component_from_the_day_rollups(
    server: Server, http: aiohttp.ClientSession
) -> None:
    cid = await new_check(http, server, "http://127.0.0.1:9/", "rolled")
    await api(http, server, "PATCH", f"/api/checks/{cid}", json={"is_active": False})
    page = await new_page(http, server, components=[{"check_id": cid, "name": "Rolled"}])
    day = 86_400
    two_days_ago = (int(time.time()) // day - 2) * day
    store = server_store(server)
    await store.open(migrate=False)
    try:
        # The check existed before these days (the bars count no time before a check).
        async with store._write() as c:
            await c.execute(
                "UPDATE checks SET created_at = ? WHERE id = ?", two_days_ago - 3 * day, cid
            )
        minute = 60_000
        await store.write_batch(
            [],
            [],
            [
                # 30 s down, 10 minutes of maintenance, one incident.
                Rollup(cid, two_days_ago * 1000, minute, 1, 1, 0, 30_000, 0, 1, sketch((10, 1))),
                Rollup(
                    cid,
                    two_days_ago * 1000 + minute,
                    minute,
                    1,
                    0,
                    0,
                    0,
                    600_000,
                    0,
                    sketch((10, 1)),
                ),
            ],
        )
    finally:
        await store.close()
    code, body, resp = await public(http, server, f"{PUBLIC}/{page['slug']}/uptime")
    assert code == 200, body
    assert "ETag" in resp.headers
    assert body["days"] == 90 and len(body["components"]) == 1
    comp = body["components"][0]
    assert comp["name"] == "Rolled" and len(comp["days"]) == 90
    dates = [d["date"] for d in comp["days"]]
    assert dates == sorted(dates) and dates[-1] == time.strftime("%Y-%m-%d", time.gmtime())
    that = next(d for d in comp["days"] if d["date"] == dates[-3])
    total = day * 1000 - 600_000
    assert that["uptime"] == pytest.approx((total - 30_000) * 100 / total, abs=0.001)
    assert that["incidents"] == 1 and that["downtime_s"] == 30
    assert all(d["uptime"] is None for d in comp["days"][:-3])
    assert comp["uptime"] == pytest.approx(that["uptime"], abs=0.001)


async def test_concurrent_requests_share_one_answer(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    page = await new_page(http, shared)
    paths = [f"/status/{page['slug']}", f"{PUBLIC}/{page['slug']}"] * 20
    answers = await asyncio.gather(*(public(http, shared, p) for p in paths))
    assert {a[0] for a in answers} == {200}
    assert len({a[2].headers["ETag"] for a in answers}) == 2


async def store_reads(http: aiohttp.ClientSession, server: Server) -> int:
    headers = {"Authorization": f"Bearer {OPS_TOKEN}"}
    async with http.get(server.base + "/metrics", headers=headers) as resp:
        assert resp.status == 200
        text = await resp.text()
    [line] = [x for x in text.splitlines() if x.startswith("tocsin_store_reads_total ")]
    return int(float(line.split()[1]))


async def test_cached_answers_read_nothing_from_the_database(
    shared: Server, http: aiohttp.ClientSession
) -> None:
    page = await new_page(http, shared)
    slug = page["slug"]
    paths = [f"/status/{slug}", f"{PUBLIC}/{slug}", f"{PUBLIC}/{slug}/uptime"]
    paths.append(f"{PUBLIC}/{slug}/feed.atom")
    for path in paths:  # built once
        assert (await public(http, shared, path))[0] == 200
    # A build does read (so the counter sees these routes at all) ...
    before = await store_reads(http, shared)
    code, _ = await api(
        http, shared, "PUT", f"/api/status-pages/{page['id']}", json={"description": "x"}
    )
    assert code == 200
    between = await store_reads(http, shared)
    assert (await public(http, shared, paths[0]))[0] == 200
    after_build = await store_reads(http, shared)
    # (one of them: the metrics' own read of the outbox)
    assert after_build - between > 1
    # ... and 200 cached answers read nothing: what the server reads meanwhile on its
    # own (the outbox, the subscribers' watch; and each metrics read) stays far below
    # one read per answer.
    for _ in range(50):
        for path in paths:
            assert (await public(http, shared, path))[0] == 200
    after = await store_reads(http, shared)
    assert after - after_build < 20, (before, between, after_build, after)
