"""Status page email subscriptions end to end: a real `tocsin serve` with `--smtp-url`
pointing at a real SMTP server on loopback (STARTTLS and AUTH, tests/notify_receivers.py),
a check on a real target. Double opt-in, the mails of incidents and maintenance windows
through the outbox, unsubscribing (a GET changes nothing, a POST does), nothing twice,
nothing across organisations."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import Server, Target, api, call, create_check, other_org_user, server_store, wait_for
from notify_receivers import (
    SMTP_PASSWORD,
    SMTP_USER,
    SmtpReceiver,
    mail_to,
    mails_to,
    settle,
    text_of,
)


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def mail_server(
    tmp_path: Path,
    database_args: tuple[str, ...],
    smtp: SmtpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Server]:
    """`tocsin serve` sending its own mails to `smtp` (the receiver's throwaway CA is not
    trusted: tls_verify=0)."""
    monkeypatch.setenv("TOCSIN_SUBSCRIBERS_TICK_S", "0.5")
    s = Server(tmp_path / "data")
    url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{smtp.port}?starttls=1&tls_verify=0"
    s.start(*database_args, "--smtp-url", url, "--smtp-from", "status@example.test")
    yield s
    s.kill()


# -- helpers ------------------------------------------------------------------------------


def html_of(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            raw = part.get_payload(decode=True)
            assert isinstance(raw, bytes)
            return raw.decode()
    raise AssertionError("no text/html part")


def link(msg: Message, what: str) -> str:
    m = re.search(rf"http://\S+/{what}\?token=[A-Za-z0-9._-]+", text_of(msg))
    assert m is not None, text_of(msg)
    return m.group(0)


async def new_page(server: Server, org_id: int, slug: str, check_ids: list[int]) -> int:
    """A public status page written straight into the server's database (the status
    pages API is not what these tests are about)."""
    store = server_store(server)
    await store.open(migrate=False)
    try:
        row = await store.insert(
            "status_pages",
            org_id,
            {
                "name": f"Status of {slug}",
                "slug": slug,
                "description": "",
                "is_public": True,
                "logo_url": None,
                "check_ids": check_ids,
                "components": [{"check_id": check_ids[0], "name": "Web <frontend>"}],
            },
        )
    finally:
        await store.close()
    return int(row["id"])


async def subscribe(http: aiohttp.ClientSession, server: Server, slug: str, email: str) -> Any:
    code, body = await call(
        http,
        server,
        "POST",
        f"/api/status-pages/public/{slug}/subscribe",
        None,
        json={"email": email},
    )
    assert code == 202, body
    assert body == {"status": "pending_confirmation"}
    return body


async def check_status(http: aiohttp.ClientSession, server: Server, check_id: int) -> str:
    code, check = await api(http, server, "GET", f"/api/checks/{check_id}")
    assert code == 200, check
    return str(check["status"])


async def org_of(http: aiohttp.ClientSession, server: Server) -> int:
    code, orgs = await api(http, server, "GET", "/api/organizations/")
    assert code == 200, orgs
    return int(orgs[0]["id"])


# -- tests --------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_subscriber_hears_of_incidents_and_maintenance_until_unsubscribed(
    mail_server: Server, smtp: SmtpReceiver, http: aiohttp.ClientSession, target: Target
) -> None:
    server = mail_server
    check = await create_check(http, server, target.url)
    await wait_for(lambda: _is(http, server, check["id"], "UP"), timeout=30)
    org = await org_of(http, server)
    page_id = await new_page(server, org, "acme", [check["id"]])
    who, lazy = "reader@example.test", "lazy@example.test"

    await subscribe(http, server, "acme", who)
    await subscribe(http, server, "acme", lazy)  # never confirms
    confirm = await mail_to(smtp, who, "Confirm your subscription")
    assert confirm["From"] == "status@example.test"
    assert "List-Unsubscribe" not in confirm
    assert "<frontend>" not in html_of(confirm)  # HTML is escaped (and the page's name)
    url = link(confirm, "confirm")
    assert url.startswith(server.base + "/status/acme/confirm?token=")
    # A second subscribe within minutes: the same answer, no second mail.
    await subscribe(http, server, "acme", who)
    # Opening the link (as a mail scanner would) only shows a button.
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page_html = await resp.text()
        assert "Confirm your subscription" in page_html and 'method="post"' in page_html
    # A wrong token confirms nothing.
    async with http.post(url[:-3] + "xyz") as resp:
        assert resp.status == 404
    async with http.post(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert "You are subscribed" in await resp.text()
    # Subscribing again once confirmed: the same answer, no mail.
    await subscribe(http, server, "acme", who)

    # DOWN: incident opened; UP: resolved.
    await target.stop()
    opened = await mail_to(smtp, who, "Incident")
    body = text_of(opened)
    assert "Web <frontend>" in body and "acme" in body
    assert "&lt;frontend&gt;" in html_of(opened)
    assert opened["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = link(opened, "unsubscribe")
    assert opened["List-Unsubscribe"] == f"<{unsubscribe}>"
    await target.start()
    await mail_to(smtp, who, "Resolved")

    # A window over the check: scheduled at once, started when it opens.
    starts = time.time() + 2
    code, window = await api(
        http,
        server,
        "POST",
        "/api/maintenance",
        json={
            "name": "DB upgrade",
            "check_ids": [check["id"]],
            "starts_at": starts,
            "duration": 600,
        },
    )
    assert code == 200, window
    await mail_to(smtp, who, "Scheduled maintenance: DB upgrade")
    started = await mail_to(smtp, who, "Maintenance started: DB upgrade")
    assert "DB upgrade" in text_of(started)

    # The page is renamed and made private: the links already sent still unsubscribe.
    code, _ = await api(
        http,
        server,
        "PUT",
        f"/api/status-pages/{page_id}",
        json={"slug": "acme-renamed", "is_public": False},
    )
    assert code == 200
    # Unsubscribe: a GET (what mail clients prefetch) only shows the button.
    async with http.get(unsubscribe) as resp:
        assert resp.status == 200
        page = await resp.text()
        assert "<form" in page and 'method="post"' in page
        assert "/status/acme-renamed/unsubscribe?token=" in page
    async with http.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}) as resp:
        assert resp.status == 200
        assert "You are unsubscribed" in await resp.text()
    # Once gone, the token names nobody, and no public page has the old slug: a second
    # click, like a forged token, is the page's 404 (it tells nothing either way).
    async with http.post(unsubscribe) as resp:
        assert resp.status == 404
    async with http.post(unsubscribe[:-4] + "abcd") as resp:
        assert resp.status == 404

    before = len(mails_to(smtp, who))
    code, _ = await api(http, server, "DELETE", f"/api/maintenance/{window['id']}")
    assert code == 204
    await target.stop()
    await wait_for(lambda: _is(http, server, check["id"], "DOWN"), timeout=30)
    await settle(4)
    assert len(mails_to(smtp, who)) == before

    # Each mail once; the unconfirmed address got its confirmation and nothing else.
    subjects = Counter(str(m["Subject"]) for m in mails_to(smtp, who))
    assert all(n == 1 for n in subjects.values()), subjects
    assert len(subjects) == 5, subjects
    assert [str(m["Subject"]) for m in mails_to(smtp, lazy)] == [
        "Confirm your subscription to Status of acme"
    ]


async def _is(http: aiohttp.ClientSession, server: Server, check_id: int, status: str) -> bool:
    return await check_status(http, server, check_id) == status


async def test_html_form_validation_and_other_organisations(
    mail_server: Server, smtp: SmtpReceiver, http: aiohttp.ClientSession, target: Target
) -> None:
    server = mail_server
    org = await org_of(http, server)
    check = await create_check(http, server, target.url)
    await new_page(server, org, "mine", [check["id"]])

    # Bad addresses: 422 naming the field; unknown pages: 404.
    for bad in ["nope", "a@b", "", "x@y.z\u0000", 5, None, "a" * 300 + "@example.test"]:
        code, body = await call(
            http,
            server,
            "POST",
            "/api/status-pages/public/mine/subscribe",
            None,
            json={"email": bad},
        )
        assert code == 422, (bad, body)
        assert body["detail"][0]["loc"][-1] == "email", body
    code, _ = await call(
        http,
        server,
        "POST",
        "/api/status-pages/public/nothing-here/subscribe",
        None,
        json={"email": "a@example.test"},
    )
    assert code == 404

    # The HTML form.
    form = f"{server.base}/status/mine/subscribe"
    async with http.post(form, data={"email": "not an address"}) as resp:
        assert resp.status == 422
        assert resp.content_type == "text/html"
    async with http.post(form, data={"email": "Form@Example.TEST"}) as resp:
        assert resp.status == 200
        assert "Check your inbox" in await resp.text()
    confirm = await mail_to(smtp, "Form@example.test", "Confirm your subscription")
    async with http.post(link(confirm, "confirm")) as resp:
        assert resp.status == 200

    # Another organisation's check, even listed on this organisation's page (written
    # straight into the database), is never told to this page's subscribers.
    token, other_org = await other_org_user(server)
    code, theirs = await call(
        http,
        server,
        "POST",
        "/api/checks/",
        token,
        json={
            "name": "theirs",
            "type": "uptime",
            "url": target.url + "status/500",
            "interval": 1,
            "timeout": 2,
        },
    )
    assert code == 200, theirs
    await new_page(server, org, "mine-too", [theirs["id"]])
    await new_page(server, other_org, "theirs", [theirs["id"]])
    async with http.post(
        f"{server.base}/status/mine-too/subscribe", data={"email": "form@example.test"}
    ) as resp:
        assert resp.status == 200
    confirm = await mail_to(smtp, "form@example.test", "Status of mine-too")
    async with http.post(link(confirm, "confirm")) as resp:
        assert resp.status == 200

    async def incident_opened() -> bool:
        code, page = await call(
            http, server, "GET", f"/api/incidents?check_id={theirs['id']}", token
        )
        return code == 200 and page["total"] > 0

    await wait_for(incident_opened, timeout=30)
    await settle(4)
    assert [m for m in mails_to(smtp, "form@example.test") if "Incident" in str(m["Subject"])] == []
