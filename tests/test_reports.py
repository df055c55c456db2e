"""Reports (`/api/reports/…`, tocsin/reports/): accepted at once (202), built in the
background from the rollup tiers, in JSON, CSV, HTML and PDF, by a real `tocsin serve`.
The figures are checked against values computed here from the rollups written through
the store; organisations see only their own reports and checks; a report a stopped
server had accepted is built after its restart."""

from __future__ import annotations

import csv
import io
import itertools
import math
import shutil
import sqlite3
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from helpers import Server, api, other_org_user, server_store, wait_for
from tocsin.figures import floor_ms, tier_plan
from tocsin.models import Rollup
from tocsin.store import Store
from tocsin.store.tables import ROLLUP_TIERS

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
LN_GAMMA = 0.020_000_666_706_669_05


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One SQLite server for the module (the tests make their own checks)."""
    s = Server(tmp_path_factory.mktemp("reports") / "data")
    s.start()
    yield s
    s.kill()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sketch(latencies_ms: list[float]) -> bytes:
    """The native latency sketch (rust_core/stats.rs) holding these samples."""
    counts: dict[int, int] = {}
    for ms in latencies_ms:
        i = math.ceil(math.log(ms) / LN_GAMMA)
        counts[i] = counts.get(i, 0) + 1
    return struct.pack("<I", 0) + b"".join(
        struct.pack("<hI", i, n) for i, n in sorted(counts.items())
    )


def minute(
    check_id: int, start_ms: int, *, up: int, down: int = 0, latency_ms: float, **kw: int
) -> Rollup:
    return Rollup(
        check_id=check_id,
        start_ms=start_ms,
        span_ms=MINUTE,
        runs_up=up,
        runs_down=down,
        runs_degraded=0,
        downtime_ms=kw.get("downtime_ms", 0),
        excluded_ms=0,
        incidents=kw.get("incidents", 0),
        sketch=sketch([latency_ms] * up),
    )


def fields(resp: Any) -> set[str]:
    return {e["loc"][1] for e in resp["detail"] if len(e["loc"]) > 1}


async def create(http: aiohttp.ClientSession, server: Server, **body: Any) -> dict[str, Any]:
    # A type the engine does not probe: only the rollups written here count.
    body = {"type": "mail", "host": "smtp.example.test", **body}
    code, check = await api(http, server, "POST", "/api/checks/", json=body)
    assert code == 200, check
    return dict(check)


async def backdate(server: Server, check_id: int, days: int) -> None:
    """The check has existed for `days` (figures ignore the time before a check)."""
    when = time.time() - days * 86_400
    args = list(server.extra)
    if "--database" in args:
        conn = await asyncpg.connect(args[args.index("--database") + 1])
        try:
            await conn.execute("UPDATE checks SET created_at = $1 WHERE id = $2", when, check_id)
        finally:
            await conn.close()
    else:
        with sqlite3.connect(server.data_dir / "tocsin.db") as db:
            db.execute("UPDATE checks SET created_at = ? WHERE id = ?", (when, check_id))


async def with_store(server: Server) -> Store:
    store = server_store(server)
    await store.open(migrate=False)
    return store


async def generate(
    http: aiohttp.ClientSession, server: Server, token: str | None = None, **body: Any
) -> dict[str, Any]:
    """Accept a report and wait until it is built."""
    async with http.post(
        server.base + "/api/reports/generate",
        json=body,
        headers={"Authorization": f"Bearer {token or server.token}"},
    ) as resp:
        accepted = await resp.json()
        assert resp.status == 202, accepted
        assert resp.headers["Location"] == f"/api/reports/{accepted['id']}"
    assert accepted["status"] == "pending" and accepted["download_url"] is None
    return await finished(http, server, accepted["id"], token)


async def finished(
    http: aiohttp.ClientSession, server: Server, report_id: int, token: str | None = None
) -> dict[str, Any]:
    async def done() -> Any:
        code, r = await api(http, server, "GET", f"/api/reports/{report_id}", token=token)
        assert code == 200, r
        return r if r["status"] in ("done", "failed") else None

    report: dict[str, Any] = await wait_for(done, timeout=60)
    assert report["status"] == "done", report
    return report


async def document(
    http: aiohttp.ClientSession, server: Server, report: dict[str, Any]
) -> tuple[str, str, bytes]:
    async with http.get(server.base + report["download_url"], headers=server.headers) as resp:
        assert resp.status == 200
        return resp.headers["Content-Type"], resp.headers["Content-Disposition"], await resp.read()


# -- 90 days of day rollups --------------------------------------------------------------

DOWN_DAYS = (3, 40, 77)
DOWN_MS = 45_000


async def seed_90_days(
    http: aiohttp.ClientSession, server: Server
) -> tuple[dict[str, Any], dict[str, Any], int, int]:
    """Two checks with a minute every day for the 90 days before today (UTC), check A
    down 45 s on three of them, and A's SLO; returns both checks and the period."""
    a = await create(http, server, name="db & cache <primary>")
    b = await create(http, server, name="web-front-eu")
    for c in (a, b):
        await backdate(server, c["id"], 100)
    today = int(time.time() * 1000) // DAY * DAY
    start = today - 90 * DAY
    rollups: list[Rollup] = []
    for d in range(90):
        noon = start + d * DAY + 12 * HOUR
        rollups.append(minute(a["id"], noon, up=4, latency_ms=100))
        rollups.append(minute(b["id"], noon, up=4, latency_ms=800))
        if d in DOWN_DAYS:
            rollups.append(
                minute(
                    a["id"],
                    noon + MINUTE,
                    up=1,
                    down=3,
                    latency_ms=100,
                    downtime_ms=DOWN_MS,
                    incidents=1,
                )
            )
    store = await with_store(server)
    try:
        await store.write_batch([], [], rollups)
        org = a["organization_id"]
        await store.insert(
            "slos",
            org,
            {"check_id": a["id"], "sli_type": "availability", "target_percentage": 99.99},
        )
        inside = (start + 40 * DAY + 12 * HOUR + MINUTE) / 1000
        for began, title in ((inside, "db down"), (inside - 100 * 86_400, "long ago")):
            await store.insert(
                "incidents",
                org,
                {
                    "check_id": a["id"],
                    "status": "RESOLVED",
                    "title": title,
                    "started_at": began,
                    "resolved_at": began + DOWN_MS / 1000,
                },
            )
    finally:
        await store.close()
    return a, b, start // 1000, today // 1000


def expected(apdex_t_ms: float = 500) -> dict[str, dict[str, Any]]:
    """The figures of the seeded checks, from the rollups as written."""
    total = 90 * 86_400.0
    down = len(DOWN_DAYS) * DOWN_MS / 1000
    incidents = len(DOWN_DAYS)
    runs_a = 90 * 4 + len(DOWN_DAYS) * 4
    good_a = 90 * 4 + len(DOWN_DAYS)  # successful runs, 100 ms: satisfied
    runs_b = 90 * 4  # 800 ms: tolerating (<= 4 T)
    sli = (total - down) / total
    a = {
        "total_s": total,
        "downtime_s": down,
        "uptime_pct": sli * 100,
        "incidents": incidents,
        "mttr_s": down / incidents,
        "mtbf_s": (total - down) / incidents,
        "runs": runs_a,
        "apdex": good_a / runs_a,
        "p95_ms": 100.0,
        "budget_remaining_pct": (1 - (1 - sli) / (1 - 0.9999)) * 100,
    }
    b = {
        "total_s": total,
        "downtime_s": 0.0,
        "uptime_pct": 100.0,
        "incidents": 0,
        "mttr_s": None,
        "mtbf_s": None,
        "runs": runs_b,
        "apdex": 0.5,
        "p95_ms": 800.0,
    }
    totals = {
        "checks": 2,
        "total_s": 2 * total,
        "downtime_s": down,
        "uptime_pct": (2 * total - down) * 100 / (2 * total),
        "incidents": incidents,
        "runs": runs_a + runs_b,
        "apdex": (a["apdex"] * runs_a + 0.5 * runs_b) / (runs_a + runs_b),
    }
    return {"a": a, "b": b, "totals": totals}


def close(got: Any, want: Any, relative: float = 1e-9) -> bool:
    """Equal but for the rounding of the answers (4 decimals) and `relative` error."""
    if want is None or got is None:
        return got is want
    return abs(got - want) <= 1e-4 + relative * abs(want)


def assert_figures(line: dict[str, Any], want: dict[str, Any]) -> None:
    for key, value in want.items():
        if key in ("budget_remaining_pct",):
            continue
        # Latency quantiles come from the sketch (about 2 % relative error).
        relative = 0.02 if key == "p95_ms" else 1e-9
        assert close(line[key], value, relative), (key, line[key], value)


async def test_a_90_day_report_in_every_format_adds_up_the_day_rollups(
    srv: Server, http: aiohttp.ClientSession
) -> None:
    a, b, start, end = await seed_90_days(http, srv)
    want = expected()
    body = {"check_ids": [a["id"], b["id"]], "from": start, "to": end, "name": "Q3 <review>"}

    report = await generate(http, srv, **body)
    assert report["format"] == "json" and report["check_ids"] == [a["id"], b["id"]]
    assert report["download_url"] == f"/api/reports/{report['id']}/document"
    doc = report["document"]
    # Whole days: only the day tier is read.
    assert doc["period"]["tiers"] == ["day"]
    assert doc["period"]["seconds"] == 90 * 86_400
    lines = {line["check_id"]: line for line in doc["checks"]}
    assert set(lines) == {a["id"], b["id"]}
    assert lines[a["id"]]["name"] == a["name"]
    assert_figures(lines[a["id"]], want["a"])
    assert_figures(lines[b["id"]], want["b"])
    slo = lines[a["id"]]["slo"]
    assert slo["sli_type"] == "availability" and slo["target_pct"] == 99.99
    assert close(slo["attained_pct"], want["a"]["uptime_pct"], 1e-9)
    assert close(slo["budget_remaining_pct"], want["a"]["budget_remaining_pct"])
    assert slo["met"] is (want["a"]["uptime_pct"] >= 99.99)
    assert lines[b["id"]]["slo"] is None
    assert_figures(doc["totals"], want["totals"])
    assert doc["totals"]["slos"] == 1
    # The incidents table: only the incident of the period.
    assert [i["title"] for i in doc["incidents"]] == ["db down"]
    assert doc["incidents"][0]["check_name"] == a["name"]

    # The same document downloaded.
    ctype, disposition, raw = await document(http, srv, report)
    assert ctype.startswith("application/json") and "report-" in disposition
    assert raw.startswith(b"{")

    # CSV: a header and one row per check, the same figures.
    report = await generate(http, srv, format="csv", **body)
    assert report["document"] is None and report["content_type"].startswith("text/csv")
    ctype, disposition, raw = await document(http, srv, report)
    assert ctype.startswith("text/csv") and disposition.startswith("attachment")
    assert report["size"] == len(raw)
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert [int(r["check_id"]) for r in rows] == [a["id"], b["id"]]
    row = rows[0]
    assert row["name"] == a["name"]
    assert close(float(row["uptime_pct"]), want["a"]["uptime_pct"], 1e-9)
    assert close(float(row["downtime_s"]), want["a"]["downtime_s"], 1e-9)
    assert int(row["incidents"]) == want["a"]["incidents"]
    assert close(float(row["mttr_s"]), want["a"]["mttr_s"], 1e-9)
    assert row["slo_target_pct"] == "99.99"
    assert rows[1]["mttr_s"] == "" and rows[1]["slo_met"] == ""

    # HTML: standalone, every check, escaped.
    report = await generate(http, srv, format="html", **body)
    ctype, _, raw = await document(http, srv, report)
    html = raw.decode()
    assert ctype.startswith("text/html")
    assert "db &amp; cache &lt;primary&gt;" in html and "<primary>" not in html
    assert "web-front-eu" in html and "Q3 &lt;review&gt;" in html
    assert "<style>" in html and "<link" not in html

    # PDF: the same page, rendered.
    report = await generate(http, srv, format="pdf", **body)
    ctype, disposition, raw = await document(http, srv, report)
    assert ctype == "application/pdf" and disposition.startswith("attachment")
    assert raw.startswith(b"%PDF")
    text = pdf_text(raw, srv.data_dir.parent)
    assert "web-front-eu" in text and "db & cache" in text

    # Listed newest first, without documents.
    code, page = await api(http, srv, "GET", "/api/reports/?limit=2")
    assert code == 200 and page["limit"] == 2 and page["total"] >= 4
    assert [r["format"] for r in page["reports"]] == ["pdf", "html"]
    assert all("document" not in r for r in page["reports"])
    code, rest = await api(http, srv, "GET", "/api/reports/?limit=2&offset=2")
    assert [r["format"] for r in rest["reports"]] == ["csv", "json"]


def pdf_text(pdf: bytes, scratch: Path) -> str:
    tool = shutil.which("pdftotext")
    # scripts/test.sh installs poppler-utils (TOCSIN_APT_EXTRA).
    assert tool is not None, "pdftotext (poppler-utils) is not installed"
    path = scratch / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(
        [tool, "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


async def test_a_project_or_the_whole_organisation_and_rolling_periods(
    srv: Server, http: aiohttp.ClientSession
) -> None:
    code, org = await api(http, srv, "GET", "/api/organizations/1")
    assert code == 200, org
    code, project = await api(
        http, srv, "POST", "/api/organizations/1/projects", json={"name": "reports-p"}
    )
    assert code == 201, project
    inside = await create(http, srv, name="in-project", project_id=project["id"])
    report = await generate(http, srv, project_id=project["id"], period="7d")
    assert report["check_ids"] == [inside["id"]] and report["project_id"] == project["id"]
    assert report["period"] == "7d"
    span = report["document"]["period"]
    assert span["seconds"] == 7 * 86_400
    # Whole days from the day tier; the ends (unless now is on an hour or minute
    # boundary) from the hour and minute tiers.
    assert "day" in span["tiers"] and set(span["tiers"]) <= {"day", "hour", "minute"}
    line = report["document"]["checks"][0]
    # A new check has no figures yet: nulls, not zeros.
    assert line["uptime_pct"] is None and line["runs"] == 0

    everything = await generate(http, srv, period="24h", format="csv")
    _, _, raw = await document(http, srv, everything)
    ids = {int(r["check_id"]) for r in csv.DictReader(io.StringIO(raw.decode()))}
    code, checks = await api(http, srv, "GET", "/api/checks/?limit=500")
    assert ids == {c["id"] for c in checks} and inside["id"] in ids

    # Deleted: gone from the list and the item.
    code, _ = await api(http, srv, "DELETE", f"/api/reports/{everything['id']}")
    assert code == 204
    assert (await api(http, srv, "GET", f"/api/reports/{everything['id']}"))[0] == 404
    assert (await api(http, srv, "DELETE", f"/api/reports/{everything['id']}"))[0] == 404


async def test_bad_input_is_a_422_naming_the_field(
    srv: Server, http: aiohttp.ClientSession
) -> None:
    check = await create(http, srv, name="validation")
    now = time.time()
    for body, field in [
        ({"period": "7x"}, "period"),
        ({"period": "401d"}, "period"),
        ({"period": "7d", "from": now - 3600}, "period"),
        ({"from": now - 60, "to": now - 3600}, "to"),
        ({"from": now - 3600, "to": now + 86_400}, "to"),
        ({"to": now}, "from"),
        ({"from": now - 500 * 86_400}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"from": True}, "from"),
        ({"format": "docx"}, "format"),
        ({"check_ids": []}, "check_ids"),
        ({"check_ids": ["a"]}, "check_ids"),
        ({"check_ids": [check["id"], 10**12]}, "check_ids"),
        ({"check_ids": [check["id"]], "project_id": 1}, "project_id"),
        ({"project_id": 10**12}, "project_id"),
        ({"org_id": 10**12}, "org_id"),
        ({"name": "x" * 201}, "name"),
    ]:
        code, resp = await api(http, srv, "POST", "/api/reports/generate", json=body)
        assert code == 422 and field in fields(resp), (body, resp)
    for path in ("/api/reports/?limit=0", "/api/reports/?offset=-1"):
        assert (await api(http, srv, "GET", path))[0] == 422
    assert (await api(http, srv, "GET", "/api/reports/999999"))[0] == 404
    assert (await api(http, srv, "GET", "/api/reports/999999/document"))[0] == 404


async def test_organisations_see_only_their_own_reports_and_checks(
    srv: Server, http: aiohttp.ClientSession
) -> None:
    mine = await create(http, srv, name="private-check")
    report = await generate(http, srv, check_ids=[mine["id"]], format="csv", period="1h")
    stranger, other_org = await other_org_user(srv)
    rid = report["id"]
    for path in (f"/api/reports/{rid}", f"/api/reports/{rid}/document"):
        assert (await api(http, srv, "GET", path, token=stranger))[0] == 404
    assert (await api(http, srv, "DELETE", f"/api/reports/{rid}", token=stranger))[0] == 404
    code, page = await api(http, srv, "GET", "/api/reports/", token=stranger)
    assert code == 200 and page["total"] == 0 and page["reports"] == []
    # Not over another organisation's checks, projects or organisation.
    for body, field in [
        ({"check_ids": [mine["id"]]}, "check_ids"),
        ({"project_id": mine["project_id"]}, "project_id"),
        ({"org_id": mine["organization_id"]}, "org_id"),
    ]:
        code, resp = await api(
            http, srv, "POST", "/api/reports/generate", token=stranger, json=body
        )
        assert code == 422 and fields(resp) == {field}, (body, resp)
    # Their own organisation's report holds none of ours.
    theirs = await generate(http, srv, stranger, period="24h")
    assert theirs["organization_id"] == other_org and theirs["check_ids"] == []
    assert theirs["document"]["checks"] == []

    # A viewer reads and downloads, but does not generate or delete.
    viewer, _ = await other_org_user(srv, role="VIEWER", org_id=mine["organization_id"])
    assert (await api(http, srv, "GET", f"/api/reports/{rid}", token=viewer))[0] == 200
    code, page = await api(http, srv, "GET", "/api/reports/", token=viewer)
    assert code == 200 and rid in [r["id"] for r in page["reports"]]
    code, _ = await api(http, srv, "GET", f"/api/reports/{rid}/document", token=viewer)
    assert code == 200
    code, _ = await api(
        http, srv, "POST", "/api/reports/generate", token=viewer, json={"period": "1h"}
    )
    assert code == 403
    assert (await api(http, srv, "DELETE", f"/api/reports/{rid}", token=viewer))[0] == 403


async def test_a_report_accepted_before_a_restart_is_built_after_it(
    srv: Server, http: aiohttp.ClientSession
) -> None:
    check = await create(http, srv, name="survives-restart")
    srv.stop()
    # What a server that stopped before building them leaves: one accepted, one begun.
    store = server_store(srv)
    await store.open(migrate=False)
    now = time.time()
    try:
        ids = []
        for status in ("pending", "running"):
            row = await store.insert(
                "reports",
                check["organization_id"],
                {
                    "name": f"left {status}",
                    "format": "csv",
                    "status": status,
                    "params": {"check_ids": [check["id"]], "from": now - 3600, "to": now},
                },
            )
            ids.append(row["id"])
    finally:
        await store.close()
    srv.start()
    for rid in ids:
        report = await finished(http, srv, rid)
        _, _, raw = await document(http, srv, report)
        assert "survives-restart" in raw.decode()


@pytest.mark.both_backends
async def test_reports_on_each_backend(server: Server, http: aiohttp.ClientSession) -> None:
    check = await create(http, server, name="both-backends")
    await backdate(server, check["id"], 5)
    today = int(time.time() * 1000) // DAY * DAY
    start = today - 3 * DAY
    rollups = [minute(check["id"], start + d * DAY, up=2, latency_ms=50) for d in range(3)]
    rollups.append(
        minute(
            check["id"],
            start + DAY + MINUTE,
            up=0,
            down=2,
            latency_ms=50,
            downtime_ms=MINUTE,
            incidents=1,
        )
    )
    store = await with_store(server)
    try:
        await store.write_batch([], [], rollups)
    finally:
        await store.close()
    # From the day tier (whole days); the period in ISO 8601.
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1000))
    report = await generate(
        http, server, check_ids=[check["id"]], **{"from": iso, "to": today / 1000}
    )
    line = report["document"]["checks"][0]
    total = 3 * 86_400
    assert line["total_s"] == total and line["downtime_s"] == 60
    assert close(line["uptime_pct"], (total - 60) * 100 / total, 1e-9)
    assert (line["incidents"], line["mttr_s"], line["runs"]) == (1, 60, 8)
    report = await generate(http, server, check_ids=[check["id"]], format="pdf", period="3d")
    _, _, raw = await document(http, server, report)
    assert raw.startswith(b"%PDF")
    stranger, _ = await other_org_user(server)
    assert (await api(http, server, "GET", f"/api/reports/{report['id']}", token=stranger))[
        0
    ] == 404


@pytest.mark.parametrize(
    ("start", "end", "finest"),
    [
        (5 * MINUTE + 7, 3 * DAY + 5 * HOUR + 17 * MINUTE + 3, "minute"),
        (DAY, 91 * DAY, "hour"),
        (123_456_789, 123_456_789 + 90 * DAY, "hour"),
        (10 * MINUTE, 50 * MINUTE, "minute"),
    ],
)
def test_a_period_is_covered_once_by_the_coarsest_tiers(start: int, end: int, finest: str) -> None:
    plan = tier_plan(start, end, ROLLUP_TIERS, finest)
    step = ROLLUP_TIERS[finest]
    # Contiguous, from the finest tier's floor of `start` to that of `end`.
    assert plan[0][1] == floor_ms(start, step) and plan[-1][2] == floor_ms(end, step)
    assert all(a[2] == b[1] for a, b in itertools.pairwise(plan))
    for tier, since, until in plan:
        span = ROLLUP_TIERS[tier]
        assert since % span == 0 and until % span == 0 and since < until
    # The coarsest tier in the middle, finer ones only at the two ends.
    tiers = [tier for tier, _, _ in plan]
    coarsest = max(tiers, key=ROLLUP_TIERS.__getitem__)
    assert tiers.count(coarsest) == 1
    assert all(tiers.count(t) <= 2 for t in tiers)
    if end - start > 2 * DAY:
        assert "day" in tiers
