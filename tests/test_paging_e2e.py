"""Paging end to end with the real senders: Debian's Prometheus Alertmanager fires an
alert into tocsin through its webhook receiver (authenticated by an integration key), the
inbound incident opens and escalates to whoever the on-call schedule has on call, by
email (a real aiosmtpd, after the address was verified by the link mailed to it) and by
webhook; when Alertmanager resolves the alert, the incident closes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from helpers import Server, api, call, free_port, other_org_user, wait_for
from notify_receivers import SMTP_PASSWORD, SMTP_USER, SmtpReceiver, text_of
from paging_helpers import Receiver

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def server(tmp_path: Path, smtp: SmtpReceiver) -> Iterator[Server]:
    s = Server(tmp_path / "data")
    url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{smtp.port}?starttls=1&tls_verify=0"
    s.start("--smtp-url", url, "--smtp-from", "pager@example.test")
    yield s
    s.kill()


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    runner = await r.start()
    yield r
    await runner.cleanup()


@contextlib.contextmanager
def alertmanager(tmp_path: Path, tocsin: Server, key: str) -> Iterator[str]:
    """Alertmanager with one webhook receiver: tocsin, the key as its bearer token."""
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: tocsin\n"
        "  group_by: ['alertname']\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: tocsin\n"
        "    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{tocsin.port}/api/events/alertmanager\n"
        "        send_resolved: true\n"
        "        http_config:\n"
        "          authorization:\n"
        "            type: Bearer\n"
        f"            credentials: {key}\n"
    )
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


async def post_alert(http: aiohttp.ClientSession, am: str, *, ends: dt.datetime) -> None:
    alert = {
        "labels": {"alertname": "DiskFull", "severity": "critical", "instance": "srv01"},
        "annotations": {"summary": "Disk full on srv01"},
        "startsAt": (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat(),
        "endsAt": ends.isoformat(),
        "generatorURL": "http://prometheus.example/graph",
    }
    deadline = time.monotonic() + 30
    while True:  # Alertmanager may still be starting
        try:
            async with http.post(f"{am}/api/v2/alerts", json=[alert]) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, "Alertmanager did not take the alert"
        await asyncio.sleep(0.2)


async def test_alertmanager_fires_into_an_incident_that_pages_the_on_call_person_then_resolves(
    server: Server,
    http: aiohttp.ClientSession,
    smtp: SmtpReceiver,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    code, orgs = await api(http, server, "GET", "/api/organizations/")
    org = int(orgs[0]["id"])

    # The on-call person: an email address (verified by its link) and a webhook.
    token, _ = await other_org_user(server, role="MEMBER", org_id=org)
    code, me = await call(http, server, "GET", "/api/profile", token)
    assert code == 200, me
    email = me["email"]
    for kind, value in (("email", email), ("webhook", receiver.url("phone"))):
        code, method = await call(
            http,
            server,
            "POST",
            "/api/profile/contact-methods",
            token,
            json={"kind": kind, "value": value, "label": kind},
        )
        assert code == 201, method

    async def confirmation() -> str | None:
        for mail in smtp.mails:
            if email in mail.recipients:
                body = text_of(mail.message)
                m = re.search(r"http://\S+/api/contact-methods/verify/[A-Za-z0-9._~-]+", body)
                if m:
                    return m.group(0)
        return None

    verify = await wait_for(confirmation, timeout=30)
    async with http.get(verify) as resp:  # a page with a button (mail scanners only GET)
        assert resp.status == 200, await resp.text()
    async with http.post(verify) as resp:
        assert resp.status == 200, await resp.text()
    code, methods = await call(http, server, "GET", "/api/profile/contact-methods", token)
    assert code == 200 and all(m["verified"] for m in methods), methods

    # On call now, paged by the key's policy.
    code, sched = await api(
        http,
        server,
        "POST",
        f"/api/organizations/{org}/oncall-schedules",
        json={"name": "primary", "participants": [me["id"]], "start": "2020-01-01"},
    )
    assert code == 201, sched
    code, policy = await api(
        http,
        server,
        "POST",
        f"/api/organizations/{org}/escalation-policies",
        json={
            "name": "page on-call",
            "steps": [{"delay_minutes": 10, "targets": [{"type": "schedule", "id": sched["id"]}]}],
        },
    )
    assert code == 201, policy
    code, key = await api(
        http,
        server,
        "POST",
        f"/api/organizations/{org}/integration-keys",
        json={"name": "alertmanager", "escalation_policy_id": policy["id"]},
    )
    assert code == 201, key

    with alertmanager(tmp_path, server, key["key"]) as am:
        await post_alert(http, am, ends=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))

        async def opened() -> Any:
            code, page = await api(
                http, server, "GET", f"/api/organizations/{org}/inbound-incidents"
            )
            assert code == 200, page
            return next((i for i in page["incidents"] if i["status"] == "OPEN"), None)

        incident = await wait_for(opened, timeout=60)
        assert incident["title"] == "Disk full on srv01"
        assert incident["severity"] == "critical"
        assert incident["integration_key_id"] == key["id"]

        # Paged by email and webhook.
        async def paged_by_mail() -> bool:
            return any(
                email in m.recipients and "Disk full on srv01" in str(m.message["Subject"])
                for m in smtp.mails
            )

        await wait_for(paged_by_mail, timeout=30)
        await wait_for(lambda: _has(receiver, "phone"), timeout=30)
        code, tl = await api(
            http,
            server,
            "GET",
            f"/api/organizations/{org}/incidents/inbound/{incident['id']}/timeline",
        )
        assert code == 200, tl
        (escalated,) = [e for e in tl["timeline"] if e["kind"] == "escalated"]
        assert sorted(p["kind"] for p in escalated["detail"]["pages"]) == ["email", "webhook"]
        assert {p["user_id"] for p in escalated["detail"]["pages"]} == {me["id"]}

        # Alertmanager resolves it.
        await post_alert(http, am, ends=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))

        async def resolved() -> Any:
            code, row = await api(
                http,
                server,
                "GET",
                f"/api/organizations/{org}/inbound-incidents/{incident['id']}",
            )
            assert code == 200, row
            row = row.get("incident", row)
            return row if row["status"] == "RESOLVED" else None

        closed = await wait_for(resolved, timeout=60)
        assert closed["escalation"]["next_at"] is None


async def _has(receiver: Receiver, name: str) -> bool:
    return bool(receiver.of(name))
