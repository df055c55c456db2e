"""Notifications end to end over HTTP against `tocsin serve`, with real receivers on
loopback (tests/notify_receivers.py): channel CRUD, validation, masking and isolation;
a test call per type; an incident's open, acknowledge and resolve reaching every type
once; retries, outages, restarts, failures; maintenance; reminders; preferences."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import Server, Target, api, create_check, other_org_user, wait_for
from notify_receivers import (
    OPSGENIE_KEY,
    PD_ROUTING_KEY,
    SMTP_PASSWORD,
    SMTP_USER,
    TELEGRAM_TOKEN,
    WEBHOOK_SECRET,
    Receivers,
    SmtpReceiver,
    settle,
)

TYPES = ("slack", "discord", "teams", "telegram", "webhook", "pagerduty", "opsgenie", "email")


@pytest.fixture
def nserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A server whose retries and reminders are fast enough for a test."""
    monkeypatch.setenv("TOCSIN_NOTIFY_BACKOFF_S", "0.2")
    monkeypatch.setenv("TOCSIN_NOTIFY_POLL_S", "0.2")
    monkeypatch.setenv("TOCSIN_NOTIFY_REMINDER_TICK_S", "0.3")
    monkeypatch.setenv("TOCSIN_NOTIFY_MAX_ATTEMPTS", "4")
    # A killed server's claims expire soon (the lease outlasts the send timeout).
    monkeypatch.setenv("TOCSIN_NOTIFY_TIMEOUT_S", "2")
    monkeypatch.setenv("TOCSIN_NOTIFY_LEASE_S", "3")
    monkeypatch.setenv("TOCSIN_PUBLIC_URL", "https://tocsin.example.test")
    monkeypatch.setenv("TOCSIN_RATE_LIMIT_PER_TOKEN", "0")
    s = Server(tmp_path / "data")
    s.start()
    yield s
    s.kill()


@pytest.fixture
async def receivers() -> AsyncIterator[Receivers]:
    r = Receivers()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    s = SmtpReceiver()
    s.start()
    yield s
    s.stop()


def config_for(kind: str, r: Receivers, smtp: SmtpReceiver | None = None) -> dict[str, Any]:
    return {
        "slack": {"webhook_url": r.url("/slack/T0/B0/key")},
        "discord": {"webhook_url": r.url("/discord/1/key")},
        "teams": {"webhook_url": r.url("/teams/webhookb2/key")},
        "telegram": {"bot_token": TELEGRAM_TOKEN, "chat_id": -1001, "api_base_url": r.url()},
        "webhook": {"url": r.url("/webhook/in"), "secret": WEBHOOK_SECRET},
        "pagerduty": {"routing_key": PD_ROUTING_KEY, "api_base_url": r.url()},
        "opsgenie": {"api_key": OPSGENIE_KEY, "api_base_url": r.url()},
        "email": {
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port if smtp else 25,
            "security": "starttls",
            "tls_verify": False,  # the receiver's certificate is from a throwaway CA
            "smtp_username": SMTP_USER,
            "smtp_password": SMTP_PASSWORD,
            "from_address": "tocsin@example.test",
            "to_addresses": ["oncall@example.test"],
        },
    }[kind]


async def new_channel(
    http: aiohttp.ClientSession, server: Server, kind: str, config: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    body = {"name": f"{kind} alerts", "channel_type": kind, "config": config, **kw}
    code, ch = await api(http, server, "POST", "/api/notification-channels/", json=body)
    assert code == 201, ch
    return ch  # type: ignore[no-any-return]


async def deliveries(
    http: aiohttp.ClientSession, server: Server, query: str = ""
) -> list[dict[str, Any]]:
    code, body = await api(http, server, "GET", "/api/notifications/deliveries" + query)
    assert code == 200, body
    return body["deliveries"]  # type: ignore[no-any-return]


async def open_incident(http: aiohttp.ClientSession, server: Server, cid: int) -> dict[str, Any]:
    async def opened() -> Any:
        _, body = await api(http, server, "GET", f"/api/incidents?check_id={cid}&status=OPEN")
        return body["incidents"][0] if body["total"] else None

    return await wait_for(opened)  # type: ignore[no-any-return]


async def check_up(http: aiohttp.ClientSession, server: Server, cid: int, status: str) -> None:
    async def reached() -> bool:
        _, c = await api(http, server, "GET", f"/api/checks/{cid}")
        return bool(c["status"] == status)

    await wait_for(reached)


# -- channels as a resource ---------------------------------------------------------------


async def test_channel_crud_validation_masking_and_isolation(
    nserver: Server, http: aiohttp.ClientSession, receivers: Receivers, target: Target
) -> None:
    server = nserver
    check = await create_check(http, server, target.url)
    ch = await new_channel(
        http, server, "webhook", config_for("webhook", receivers), check_ids=[check["id"]]
    )
    assert ch["config"]["secret"] == "******" and ch["config"]["url"] == receivers.url(
        "/webhook/in"
    )
    assert ch["check_ids"] == [check["id"]] and ch["is_default"] is False
    slack = await new_channel(http, server, "slack", config_for("slack", receivers))
    assert slack["config"]["webhook_url"] == "******"
    cid = ch["id"]

    # Every path answers with and without the trailing slash; lists are bare arrays.
    for path in ("/api/notification-channels", "/api/notification-channels/"):
        code, listed = await api(http, server, "GET", path)
        assert code == 200 and [c["id"] for c in listed] == [cid, slack["id"]]
    code, listed = await api(http, server, "GET", "/api/notification-channels?channel_type=slack")
    assert [c["id"] for c in listed] == [slack["id"]]

    # Secrets: `******` keeps, "" clears (for a type where it is optional), a value sets.
    body = {"name": "renamed", "channel_type": "webhook", "config": {**ch["config"]}}
    code, got = await api(http, server, "PUT", f"/api/notification-channels/{cid}", json=body)
    assert code == 200 and got["name"] == "renamed" and got["config"]["secret"] == "******"
    assert got["check_ids"] == [check["id"]]
    code, got = await api(http, server, "POST", f"/api/notification-channels/{cid}/test")
    assert code == 200 and got["ok"] is True, got  # the kept secret still signs
    body["config"] = {**body["config"], "secret": ""}
    code, got = await api(http, server, "PUT", f"/api/notification-channels/{cid}", json=body)
    assert code == 200 and got["config"]["secret"] == ""
    code, got = await api(http, server, "POST", f"/api/notification-channels/{cid}/test")
    assert got["ok"] is False and got["status_code"] == 400  # the receiver wants a signature
    assert receivers.hits[-1].problem == "webhook: bad signature"

    # Validation names the field.
    email = config_for("email", receivers)
    slack_ok = {"webhook_url": "http://a"}
    bad: list[tuple[str, dict[str, Any], list[Any], dict[str, Any]]] = [
        ("carrier-pigeon", {}, ["channel_type"], {}),
        ("slack", slack_ok, ["name"], {"name": ""}),
        ("slack", {}, ["config", "webhook_url"], {}),
        ("pagerduty", {}, ["config", "routing_key"], {"config": None}),
        ("slack", {"webhook_url": "ftp://x"}, ["config", "webhook_url"], {}),
        ("webhook", {"url": "nope"}, ["config", "url"], {}),
        ("telegram", {"bot_token": "t"}, ["config", "chat_id"], {}),
        ("pagerduty", {}, ["config", "routing_key"], {}),
        ("opsgenie", {"api_key": "k", "api_base_url": "x"}, ["config", "api_base_url"], {}),
        ("email", {**email, "to_addresses": ["nope"]}, ["config", "to_addresses"], {}),
        ("email", {**email, "security": "ssl3"}, ["config", "security"], {}),
        ("email", {**email, "smtp_port": 0}, ["config", "smtp_port"], {}),
        ("slack", slack_ok, ["check_ids", 0], {"check_ids": [999]}),
    ]
    for kind, config, loc, extra in bad:
        body = {"name": "x", "channel_type": kind, "config": config, **extra}
        if body["config"] is None:
            del body["config"]  # a missing config is validated as {}
        loc = ["body", *loc]
        code, err = await api(http, server, "POST", "/api/notification-channels", json=body)
        assert code == 422, (body, err)
        assert loc in [e["loc"] for e in err["detail"]], (body, err)
    code, _ = await api(http, server, "POST", "/api/notification-channels", data=b"{nope")
    assert code == 400
    # Unknown fields are accepted and ignored; secrets at rest are checked in the store tests.
    code, extra = await api(
        http,
        server,
        "POST",
        "/api/notification-channels",
        json={
            "name": "x",
            "channel_type": "discord",
            "config": {"webhook_url": receivers.url("/discord/1/k"), "colour": "red"},
            "whatever": 1,
        },
    )
    assert code == 201 and "colour" not in extra["config"]

    # Another organisation cannot read, change, test or delete it, nor link it.
    token, _ = await other_org_user(server)
    for method, path in [
        ("GET", f"/api/notification-channels/{cid}"),
        ("PUT", f"/api/notification-channels/{cid}"),
        ("DELETE", f"/api/notification-channels/{cid}"),
        ("POST", f"/api/notification-channels/{cid}/test"),
        ("GET", f"/api/notification-channels/{cid}/deliveries"),
        ("POST", f"/api/checks/{check['id']}/test-alert"),
        ("GET", f"/api/checks/{check['id']}/notification-channels"),
    ]:
        kw: dict[str, Any] = {"json": {"name": "x", "channel_type": "slack", "config": {}}}
        code, _ = await api(
            http, server, method, path, token=token, **(kw if method == "PUT" else {})
        )
        assert code == 404, (method, path)
    code, theirs = await api(http, server, "GET", "/api/notification-channels", token=token)
    assert code == 200 and theirs == []
    code, theirs = await api(http, server, "GET", "/api/notifications/deliveries", token=token)
    assert theirs["total"] == 0
    hits = len(receivers.hits)
    # Their own check cannot be linked to our channel either.
    code, own = await api(
        http,
        server,
        "POST",
        "/api/checks/",
        token=token,
        json={"name": "t", "type": "uptime", "url": target.url, "interval": 60, "timeout": 2},
    )
    assert code == 200, own
    code, err = await api(
        http,
        server,
        "PUT",
        f"/api/checks/{own['id']}/notification-channels",
        token=token,
        json={"channel_ids": [cid]},
    )
    assert code == 422 and err["detail"][0]["loc"] == ["body", "channel_ids", 0]
    assert len(receivers.hits) == hits
    # A viewer of our organisation reads but does not manage channels.
    viewer, _ = await other_org_user(server, role="VIEWER", org_id=1)
    code, _ = await api(http, server, "GET", f"/api/notification-channels/{cid}", token=viewer)
    assert code == 200
    code, _ = await api(http, server, "DELETE", f"/api/notification-channels/{cid}", token=viewer)
    assert code == 403

    # The check side of the link.
    path = f"/api/checks/{check['id']}/notification-channels"
    code, links = await api(http, server, "PUT", path, json={"channel_ids": [slack["id"], cid]})
    assert code == 200 and links["channel_ids"] == sorted([slack["id"], cid])
    code, links = await api(http, server, "GET", path)
    assert links["channel_ids"] == sorted([slack["id"], cid])

    code, _ = await api(http, server, "DELETE", f"/api/notification-channels/{cid}")
    assert code == 204
    code, _ = await api(http, server, "DELETE", f"/api/notification-channels/{cid}/")
    assert code == 404
    code, links = await api(http, server, "GET", path)
    assert links["channel_ids"] == [slack["id"]]


async def test_a_test_call_reaches_each_type(
    nserver: Server, http: aiohttp.ClientSession, receivers: Receivers, smtp: SmtpReceiver
) -> None:
    for kind in TYPES:
        ch = await new_channel(http, nserver, kind, config_for(kind, receivers, smtp))
        code, got = await api(http, nserver, "POST", f"/api/notification-channels/{ch['id']}/test")
        assert code == 200, got
        assert got["ok"] is True, (kind, got, receivers.hits[-1:])
        assert got["channel_type"] == kind
    assert sorted({h.kind for h in receivers.accepted()}) == sorted(set(TYPES) - {"email"})
    assert all(h.accepted for h in receivers.hits), [h.problem for h in receivers.hits]
    (mail,) = smtp.mails
    assert mail.user == SMTP_USER and mail.recipients == ["oncall@example.test"]
    assert mail.message["Subject"].startswith("[tocsin] Test notification")
    (pd,) = receivers.accepted("pagerduty")
    assert pd.body["event_action"] == "trigger" and pd.body["payload"]["severity"] == "info"
    # A receiver that refuses is reported as it answered.
    ch = await new_channel(http, nserver, "slack", {"webhook_url": receivers.url("/slack/x")})
    receivers.fail(1, status=403)
    code, got = await api(http, nserver, "POST", f"/api/notification-channels/{ch['id']}/test")
    assert code == 200 and got["ok"] is False and got["status_code"] == 403
    # Nothing listening: an error, not a crash.
    dead = await new_channel(http, nserver, "slack", {"webhook_url": "http://127.0.0.1:9/x"})
    code, got = await api(http, nserver, "POST", f"/api/notification-channels/{dead['id']}/test")
    assert code == 200 and got["ok"] is False and got["error"]
    # No outbox rows for tests.
    assert await deliveries(http, nserver) == []


# -- incidents reach the channels -----------------------------------------------------------


async def test_incident_open_ack_resolve_reach_every_type_once(
    nserver: Server,
    http: aiohttp.ClientSession,
    receivers: Receivers,
    smtp: SmtpReceiver,
    target: Target,
) -> None:
    server = nserver
    check = await create_check(http, server, target.url, name="shop")
    cid = check["id"]
    channels = {}
    for kind in TYPES:
        # The email channel is an organisation default, the others are linked.
        linked = {} if kind == "email" else {"check_ids": [cid]}
        default = {"is_default": kind == "email"}
        cfg = config_for(kind, receivers, smtp)
        if kind == "email":
            # The admin's default preferences: no email on acknowledgements.
            cfg["to_addresses"] = ["admin@localhost"]
        channels[kind] = await new_channel(http, server, kind, cfg, **linked, **default)
    # A channel of the organisation neither linked nor default hears nothing.
    await new_channel(http, server, "slack", {"webhook_url": receivers.url("/slack/other")})
    code, got = await api(http, server, "POST", f"/api/checks/{cid}/test-alert")
    assert (
        code == 200 and len(got["results"]) == len(TYPES) and all(r["ok"] for r in got["results"])
    )
    receivers.hits.clear()
    smtp.mails.clear()
    await check_up(http, server, cid, "UP")

    await target.stop()
    inc = await open_incident(http, server, cid)
    await wait_for(lambda: _count(receivers, smtp, 7, 1))
    code, _ = await api(http, server, "POST", f"/api/checks/{cid}/incidents/{inc['id']}/ack")
    assert code == 200
    await wait_for(lambda: _count(receivers, smtp, 14, 1))  # email: no ack (preference default)
    await target.start()

    async def resolved() -> bool:
        return await _count(receivers, smtp, 21, 2)

    await wait_for(resolved)
    await settle(1.0)
    assert len(receivers.hits) == 21 and len(smtp.mails) == 2
    assert all(h.accepted for h in receivers.hits), [h.problem for h in receivers.hits]
    assert not any("/slack/other" in h.path for h in receivers.hits)

    webhooks = [h.body for h in receivers.accepted("webhook")]
    assert [w["event"] for w in webhooks] == ["opened", "acknowledged", "resolved"]
    opened = webhooks[0]["message"]
    assert opened["summary"] == "shop is DOWN" and opened["status"] == "DOWN"
    assert opened["check_id"] == cid and opened["incident_id"] == inc["id"]
    assert opened["sources"] == {"central": "DOWN"} and opened["error"] == "connect_refused"
    assert opened["since"] == inc["started_at"] and opened["target"] == target.url
    assert opened["check_link"] == f"https://tocsin.example.test/checks/{cid}"
    assert webhooks[1]["message"]["actor"] == "admin@localhost"
    assert webhooks[2]["message"]["summary"] == "shop has recovered"
    ids = {h.headers["X-Tocsin-Delivery"] for h in receivers.accepted("webhook")}
    assert len(ids) == 3

    pd = [h.body for h in receivers.accepted("pagerduty")]
    assert [p["event_action"] for p in pd] == ["trigger", "acknowledge", "resolve"]
    assert len({p["dedup_key"] for p in pd}) == 1
    assert pd[0]["payload"]["severity"] == "critical" and "shop" in pd[0]["payload"]["summary"]
    og = [h.path for h in receivers.accepted("opsgenie")]
    alias = f"tocsin-incident-{inc['id']}"
    assert og == [
        "/v2/alerts",
        f"/v2/alerts/{alias}/acknowledge?identifierType=alias",
        f"/v2/alerts/{alias}/close?identifierType=alias",
    ]
    slack = receivers.accepted("slack")[0].body
    assert slack["text"] == "shop is DOWN"
    assert any(
        f["title"] == "Error" and f["value"] == "connect_refused"
        for f in slack["attachments"][0]["fields"]
    )
    tg = receivers.accepted("telegram")[0].body
    assert tg["chat_id"] == "-1001" and "shop is DOWN" in tg["text"]
    assert "connect_refused" in tg["text"]
    subjects = [m.message["Subject"] for m in smtp.mails]
    assert subjects == ["[tocsin] shop is DOWN", "[tocsin] shop has recovered"]
    body = smtp.mails[0].message.get_payload()
    assert "Since: " + inc["started_at"] in body and "Sources: central DOWN" in body
    assert f"https://tocsin.example.test/checks/{cid}" in body

    rows = await deliveries(http, server, "?limit=200")
    assert len(rows) == 24  # 8 channels x 3 transitions (one email suppressed)
    assert sorted({r["status"] for r in rows}) == ["delivered", "suppressed"]
    (quiet,) = [r for r in rows if r["status"] == "suppressed"]
    assert quiet["event"] == "acknowledged" and "preferences" in quiet["last_error"]
    assert all(r["attempts"] == 1 for r in rows if r["status"] == "delivered")
    code, per = await api(
        http, server, "GET", f"/api/notification-channels/{channels['webhook']['id']}/deliveries"
    )
    assert code == 200 and per["total"] == 3
    assert [d["event"] for d in per["deliveries"]] == ["resolved", "acknowledged", "opened"]
    code, per = await api(http, server, "GET", "/api/notifications/deliveries?status=failed")
    assert per["total"] == 0


async def _count(receivers: Receivers, smtp: SmtpReceiver, http_hits: int, mails: int) -> bool:
    return len(receivers.accepted()) >= http_hits and len(smtp.mails) >= mails


async def test_a_receiver_failing_twice_gets_one_delivery_and_429_waits(
    nserver: Server, http: aiohttp.ClientSession, receivers: Receivers, target: Target
) -> None:
    check = await create_check(http, nserver, target.url)
    await new_channel(
        http, nserver, "webhook", config_for("webhook", receivers), check_ids=[check["id"]]
    )
    await check_up(http, nserver, check["id"], "UP")
    receivers.fail(2)
    await target.stop()
    await open_incident(http, nserver, check["id"])

    async def delivered() -> Any:
        rows = await deliveries(http, nserver, "?status=delivered")
        return rows[0] if rows else None

    row = await wait_for(delivered)
    await settle(1.0)
    assert row["attempts"] == 3 and row["event"] == "opened"
    assert [h.accepted for h in receivers.hits] == [False, False, True]

    # 429 with Retry-After: retried after it, delivered once.
    receivers.hits.clear()
    receivers.fail(1, status=429, retry_after="1")
    await target.start()

    async def resolved() -> Any:
        rows = await deliveries(http, nserver, "?status=delivered")
        return len(rows) == 2

    await wait_for(resolved)
    await settle(0.5)
    assert [h.accepted for h in receivers.hits] == [False, True]


async def test_failed_after_last_attempt_or_at_once_on_refusal(
    nserver: Server, http: aiohttp.ClientSession, receivers: Receivers, target: Target
) -> None:
    check = await create_check(http, nserver, target.url)
    hook = await new_channel(
        http, nserver, "webhook", config_for("webhook", receivers), check_ids=[check["id"]]
    )
    # Wrong secret: the receiver answers 400, which no retry can fix.
    await new_channel(
        http,
        nserver,
        "webhook",
        {"url": receivers.url("/webhook/in"), "secret": "wrong"},
        check_ids=[check["id"]],
    )
    await check_up(http, nserver, check["id"], "UP")
    receivers.fail(100, status=503)
    await target.stop()
    await open_incident(http, nserver, check["id"])

    async def failed() -> Any:
        rows = await deliveries(http, nserver, "?status=failed")
        return rows if len(rows) == 2 else None

    rows = await wait_for(failed)
    by_channel = {r["channel_id"]: r for r in rows}
    assert by_channel[hook["id"]]["attempts"] == 4  # TOCSIN_NOTIFY_MAX_ATTEMPTS
    assert by_channel[hook["id"]]["last_error"] == "HTTP 503"
    assert by_channel[hook["id"]]["response_code"] == 503
    assert not receivers.accepted()


async def test_receiver_down_then_restart_with_pending_delivers_once(
    nserver: Server, http: aiohttp.ClientSession, receivers: Receivers, target: Target
) -> None:
    check = await create_check(http, nserver, target.url)
    await new_channel(
        http, nserver, "webhook", config_for("webhook", receivers), check_ids=[check["id"]]
    )
    await check_up(http, nserver, check["id"], "UP")
    await receivers.stop()
    await target.stop()
    await open_incident(http, nserver, check["id"])

    async def retrying() -> Any:
        rows = await deliveries(http, nserver)
        return rows if rows and rows[0]["attempts"] >= 2 else None

    (row,) = await wait_for(retrying)
    assert row["status"] in ("pending", "sending") and row["last_error"]

    # The server dies (SIGKILL) with the delivery pending; the receiver comes back.
    nserver.kill()
    await receivers.start()
    nserver.start()

    async def delivered() -> Any:
        rows = await deliveries(http, nserver, "?status=delivered")
        return rows[0] if rows else None

    await wait_for(delivered)
    await settle(1.0)
    assert len(receivers.hits) == 1 and receivers.hits[0].accepted
    assert receivers.hits[0].body["event"] == "opened"
    assert len(await deliveries(http, nserver)) == 1


async def test_maintenance_suppresses(
    nserver: Server, http: aiohttp.ClientSession, receivers: Receivers, target: Target
) -> None:
    check = await create_check(http, nserver, target.url)
    cid = check["id"]
    await new_channel(http, nserver, "webhook", config_for("webhook", receivers), check_ids=[cid])
    await check_up(http, nserver, cid, "UP")
    await target.stop()
    inc = await open_incident(http, nserver, cid)
    await wait_for(lambda: _hits(receivers, 1))

    window = {"name": "upgrade", "starts_at": time.time() - 5, "duration": 3600, "check_ids": [cid]}
    code, w = await api(http, nserver, "POST", "/api/maintenance/", json=window)
    assert code == 200, w

    async def in_maintenance() -> bool:
        _, s = await api(http, nserver, "GET", f"/api/maintenance/check/{cid}/status")
        return bool(s.get("in_maintenance"))

    await wait_for(in_maintenance)
    code, _ = await api(http, nserver, "POST", f"/api/checks/{cid}/incidents/{inc['id']}/ack")
    assert code == 200
    await target.start()

    async def both() -> Any:
        rows = await deliveries(http, nserver, "?status=suppressed")
        return rows if len(rows) == 2 else None

    rows = await wait_for(both)
    assert sorted(r["event"] for r in rows) == ["acknowledged", "resolved"]
    assert all(r["last_error"] == "in maintenance" for r in rows)
    # Down again inside the window: no incident, nothing sent.
    await check_up(http, nserver, cid, "UP")
    await target.stop()
    await check_up(http, nserver, cid, "DOWN")
    await settle(1.0)
    assert len(receivers.hits) == 1
    assert len(await deliveries(http, nserver)) == 3


async def _hits(receivers: Receivers, n: int) -> bool:
    return len(receivers.accepted()) >= n


async def test_reminders_while_down_stop_on_ack_and_preferences_filter_email(
    nserver: Server,
    http: aiohttp.ClientSession,
    receivers: Receivers,
    smtp: SmtpReceiver,
    target: Target,
) -> None:
    check = await create_check(http, nserver, target.url)
    cid = check["id"]
    cfg = {**config_for("webhook", receivers), "reminder_interval_s": 1}
    await new_channel(http, nserver, "webhook", cfg, check_ids=[cid])
    # The admin does not want recovery emails; the other address is no user: it gets all.
    email_cfg = {
        **config_for("email", receivers, smtp),
        "to_addresses": ["admin@localhost", "oncall@example.test"],
    }
    await new_channel(http, nserver, "email", email_cfg, check_ids=[cid])
    code, _ = await api(
        http,
        nserver,
        "PUT",
        "/api/users/me/notification-preferences",
        json={"notify_on_recovery": False},
    )
    assert code == 200
    await check_up(http, nserver, cid, "UP")
    await target.stop()
    inc = await open_incident(http, nserver, cid)

    async def reminded() -> bool:
        events = [h.body["event"] for h in receivers.accepted("webhook")]
        return events.count("reminder") >= 2

    await wait_for(reminded)
    code, _ = await api(http, nserver, "POST", f"/api/checks/{cid}/incidents/{inc['id']}/ack")
    assert code == 200
    await wait_for(lambda: _webhook_event(receivers, "acknowledged"))
    await settle(2.5)
    events = [h.body["event"] for h in receivers.accepted("webhook")]
    assert events[-1] == "acknowledged", events  # no reminder after the acknowledgement
    keys = [h.headers["X-Tocsin-Delivery"] for h in receivers.accepted("webhook")]
    assert len(keys) == len(set(keys))
    await target.start()

    async def resolved_mail() -> bool:
        return any("recovered" in m.message["Subject"] for m in smtp.mails)

    await wait_for(resolved_mail)
    down = [m for m in smtp.mails if "is DOWN" in m.message["Subject"]]
    assert down and set(down[0].recipients) == {"admin@localhost", "oncall@example.test"}
    (up,) = [m for m in smtp.mails if "recovered" in m.message["Subject"]]
    assert up.recipients == ["oncall@example.test"]


async def _webhook_event(receivers: Receivers, event: str) -> bool:
    return any(h.body["event"] == event for h in receivers.accepted("webhook"))


@pytest.fixture
def pg_server(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("TOCSIN_NOTIFY_BACKOFF_S", "0.2")
    monkeypatch.setenv("TOCSIN_NOTIFY_POLL_S", "0.2")
    s = Server(tmp_path / "data")
    s.start("--database", pg_url)
    yield s
    s.kill()


async def test_on_postgresql_an_outage_is_delivered_once_after_retries(
    pg_server: Server, http: aiohttp.ClientSession, receivers: Receivers, target: Target
) -> None:
    check = await create_check(http, pg_server, target.url)
    cid = check["id"]
    await new_channel(
        http, pg_server, "pagerduty", config_for("pagerduty", receivers), check_ids=[cid]
    )
    await check_up(http, pg_server, cid, "UP")
    receivers.fail(2)
    await target.stop()
    inc = await open_incident(http, pg_server, cid)
    await target.start()

    async def both() -> Any:
        rows = await deliveries(http, pg_server, "?status=delivered")
        return rows if len(rows) == 2 else None

    rows = await wait_for(both)
    await settle(0.5)
    assert sorted(r["event"] for r in rows) == ["opened", "resolved"]
    pd = [h.body for h in receivers.accepted("pagerduty")]
    assert [p["event_action"] for p in pd] == ["trigger", "resolve"]
    assert {p["dedup_key"] for p in pd} == {f"tocsin-incident-{inc['id']}"}
    assert len(receivers.hits) == 4  # two refusals, then each transition once
