"""A person's paging settings and the pages that reach them: contact methods (validation,
values sealed at rest and masked in every answer, the limit), email verification by a
mailed link (a real SMTP server on loopback), notification rules, isolation between
users, and pages planned by `plan_pages` and delivered by the running server's outbox to
a real SMTP server and real webhook receivers, or suppressed when the incident was
acknowledged or resolved before the page came due."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import Server, call, other_org_user, server_store, wait_for
from notify_receivers import (
    SMTP_PASSWORD,
    SMTP_USER,
    TELEGRAM_TOKEN,
    Receivers,
    SmtpReceiver,
    mail_to,
    mails_to,
    settle,
    text_of,
)
from store_helpers import NOW, raw_fetch, store
from tocsin.notify.channels import message
from tocsin.paging.contacts import (
    MAX_METHODS,
    mask,
    normalize_value,
    page_summaries,
    plan_pages,
    schedule,
)
from tocsin.store import NotFoundError
from tocsin.store.base import Store
from tocsin.store.sql import SqlStore

__all__ = ["store"]  # the fixture

METHODS = "/api/profile/contact-methods"
RULES = "/api/profile/notification-rules"
# Values that must never come back whole, nor sit in the database in clear.
HOOK_SECRET = "hook-path-t0ken-9f8e7d"
SLACK_SECRET = "T000/B000/XXXXsecretXXXX"


# -- servers and receivers ----------------------------------------------------------------


def _start(path: Path, *args: str) -> Server:
    with pytest.MonkeyPatch.context() as mp:
        # Many calls from one address and token: the general budgets are tested elsewhere.
        mp.setenv("TOCSIN_RATE_LIMIT_PER_TOKEN", "0")
        mp.setenv("TOCSIN_RATE_LIMIT_PER_ADDRESS", "0")
        s = Server(path / "data")
        s.start(*args)
    return s


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without SMTP settings."""
    s = _start(tmp_path_factory.mktemp("profile-plain"))
    yield s
    s.kill()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def mail_server(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpReceiver) -> Iterator[Server]:
    """A server sending its own mails to `smtp` (whose throwaway CA is not trusted)."""
    url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{smtp.port}?starttls=1&tls_verify=0"
    s = _start(
        tmp_path_factory.mktemp("profile-mail"),
        "--smtp-url",
        url,
        "--smtp-from",
        "pager@example.test",
    )
    yield s
    s.kill()


@pytest.fixture
async def receivers() -> Any:
    r = Receivers()
    await r.start()
    yield r
    await r.stop()


# -- helpers ------------------------------------------------------------------------------


class Client:
    """Calls as one user (`auth`: "admin" or a token), keeping every answer's raw text."""

    def __init__(self, http: aiohttp.ClientSession, server: Server, auth: str = "admin") -> None:
        self.http, self.server, self.auth = http, server, auth
        self.texts: list[str] = []

    async def __call__(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        token = self.server.token if self.auth == "admin" else self.auth
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.request(
            method, self.server.base + path, headers=headers, **kw
        ) as resp:
            raw = await resp.text()
            self.texts.append(raw)
            body = json.loads(raw) if resp.content_type == "application/json" else raw
            return resp.status, body

    async def create(self, kind: str, value: str, label: str = "", code: int = 201) -> Any:
        got, body = await self("POST", METHODS, json={"kind": kind, "value": value, "label": label})
        assert got == code, body
        return body

    async def user_id(self) -> int:
        code, me = await self("GET", "/api/users/me")
        assert code == 200, me
        return int(me["id"])


def locs(body: Any) -> list[list[Any]]:
    return [e["loc"] for e in body["detail"]]


def verify_link(msg: Message) -> str:
    m = re.search(r"http://\S+/api/contact-methods/verify/[A-Za-z0-9_-]+", text_of(msg))
    assert m is not None, text_of(msg)
    return m.group(0)


async def verified_email(client: Client, smtp: SmtpReceiver, address: str) -> int:
    """An email method of the client's, verified through the link mailed to it."""
    method = await client.create("email", address)
    assert method["verification"] == "sent", method
    link = verify_link(await mail_to(smtp, address, "Verify your contact method"))
    async with client.http.post(link) as resp:
        assert resp.status == 200, await resp.text()
    return int(method["id"])


async def org_of(client: Client) -> int:
    code, orgs = await client("GET", "/api/organizations/")
    assert code == 200, orgs
    return int(orgs[0]["id"])


def accepted(receivers: Receivers, kind: str) -> Any:
    """For `wait_for`: the accepted hits of `kind` so far."""

    async def found() -> Any:
        return receivers.accepted(kind)

    return found


async def opened_store(server: Server) -> Store:
    s = server_store(server)
    await s.open(migrate=False)
    return s


async def new_incident(s: Store, org: int, title: str, **fields: Any) -> dict[str, Any]:
    """An incident sent in by another tool (no check), written as the inbound side does."""
    now = time.time()
    row = await s.write_incident_change(
        org,
        None,
        {
            "kind": "inbound",
            "status": "OPEN",
            "severity": "critical",
            "title": title,
            "details": {"source": "db-1", "component": "disk"},
            "started_at": now,
            **fields,
        },
        event={"kind": "opened", "at": now},
    )
    assert row is not None
    return row


async def deliveries(s: Store, org: int, incident_id: int) -> list[dict[str, Any]]:
    return await s.select(
        "notification_deliveries", [org], where={"incident_id": incident_id}, limit=100
    )


# -- the rules without a server -----------------------------------------------------------


def test_values_are_validated_per_kind_and_masked() -> None:
    assert normalize_value("email", " Alice@Example.COM ") == "Alice@example.com"
    assert mask("email", "alice@example.com") == "a•••@example.com"
    url = f"https://hooks.example.com:8443/services/{SLACK_SECRET}"
    assert normalize_value("slack", url) == url
    assert mask("slack", url) == "https://hooks.example.com:8443/•••"
    tg = f"https://api.telegram.org/bot{TELEGRAM_TOKEN}/sendMessage?chat_id=42"
    assert normalize_value("telegram", tg) == tg
    assert mask("telegram", tg) == "https://api.telegram.org/•••"
    for kind, bad, why in [
        ("email", "not-an-address", "email address"),
        ("webhook", "ftp://example.com/x", "http"),
        ("webhook", "https://user:pw@example.com/x", "without credentials"),
        ("discord", "example.com/hook", "http"),
        ("telegram", "https://api.telegram.org/sendMessage?chat_id=1", "Bot API URL"),
        ("telegram", f"https://api.telegram.org/bot{TELEGRAM_TOKEN}/sendMessage", "chat_id"),
        ("teams", "   ", "empty"),
    ]:
        with pytest.raises(ValueError, match=why):
            normalize_value(kind, bad)


def test_a_schedule_follows_the_rules_or_pages_every_verified_method_at_once() -> None:
    rules = [
        {"contact_method_id": 3, "delay_minutes": 10},
        {"contact_method_id": 1, "delay_minutes": 5},
        {"contact_method_id": 9, "delay_minutes": 0},  # not verified: left out
        {"contact_method_id": 3, "delay_minutes": 2},  # one method once, at its earliest
    ]
    assert schedule(rules, [1, 2, 3]) == [(3, 2), (1, 5)]
    assert schedule([], [2, 1]) == [(1, 0), (2, 0)]
    # Rules that name no verified method: the default, not silence.
    assert schedule(rules[2:3], [4]) == [(4, 0)]
    assert schedule(rules, []) == []


def test_an_incident_without_a_check_reads_by_its_title() -> None:
    incident = {
        "id": 7,
        "check_id": None,
        "kind": "inbound",
        "severity": "critical",
        "title": "Disk full on db-1",
        "details": {"source": "db-1", "component": "disk"},
        "started_at": NOW,
    }
    m = message(event="opened", incident=incident, check=None, links={}, at=NOW)
    assert m["summary"] == "Incident: Disk full on db-1"
    assert m["target"] == "db-1 / disk" and m["status"] == "TRIGGERED"
    assert "None" not in json.dumps(m["summary"]) and "check" not in m["summary"]
    m = message(event="resolved", incident=incident, check=None, links={}, at=NOW)
    assert m["summary"] == "Resolved: Disk full on db-1"
    # A check's incident reads as before.
    checked = {**incident, "check_id": 3, "details": {}}
    m = message(event="opened", incident=checked, check={"name": "web"}, links={}, at=NOW)
    assert m["summary"] == "web is DOWN" and m["check_name"] == "web"


# -- the store, on both backends ----------------------------------------------------------


async def test_the_store_seals_values_verifies_by_token_and_keeps_rules(store: SqlStore) -> None:
    a = await store.create_user("a@x", "h")
    b = await store.create_user("b@x", "h")
    hook_url = f"https://hooks.example.com/{HOOK_SECRET}"
    hook = await store.create_contact_method(
        a,
        {"kind": "webhook", "value": hook_url, "label": "hook", "verified": True},
        limit=2,
    )
    assert hook is not None and hook["value"] == hook_url and hook["verified"] is True
    mail = await store.create_contact_method(
        a,
        {
            "kind": "email",
            "value": "alice@example.com",
            "verified": False,
            "verification_hash": "h1",
            "verification_sent_at": NOW,
        },
        limit=2,
    )
    assert mail is not None and mail["verified"] is False
    raw = await raw_fetch(store, "SELECT value FROM contact_methods ORDER BY id")
    assert all(str(r["value"]).startswith("enc:v1:") for r in raw)
    assert HOOK_SECRET not in str(raw) and "alice" not in str(raw)
    third = {"kind": "email", "value": "c@example.com", "verified": False}
    assert await store.create_contact_method(a, third, limit=2) is None  # the limit
    assert await store.create_contact_method(b, third, limit=2) is not None
    with pytest.raises(NotFoundError):
        await store.create_contact_method(10**9, third, limit=2)

    # Another user's ids are nobody's.
    assert await store.get_contact_method(b, hook["id"]) is None
    assert await store.update_contact_method(b, hook["id"], {"label": "x"}) is None
    assert not await store.delete_contact_method(b, hook["id"])
    assert (await store.renew_verification(b, mail["id"], "hx", NOW, resend_after=60)) == (
        None,
        0.0,
    )

    # Verification: the token, its age, once a minute, used once.
    found = await store.contact_method_by_token("h1", NOW - 10)
    assert found is not None and found["id"] == mail["id"]
    assert await store.contact_method_by_token("h1", NOW + 10) is None  # expired
    row, wait = await store.renew_verification(a, mail["id"], "h2", NOW + 20, resend_after=60)
    assert row is not None and wait == pytest.approx(40) and row["verification_hash"] == "h1"
    row, wait = await store.renew_verification(a, mail["id"], "h2", NOW + 61, resend_after=60)
    assert row is not None and wait == 0 and row["verification_hash"] == "h2"
    assert await store.verify_contact_method("h1", NOW, NOW + 70) is None  # replaced
    done = await store.verify_contact_method("h2", NOW, NOW + 70)
    assert done is not None and done["verified"] is True and done["verified_at"] == NOW + 70
    assert done["verification_hash"] is None
    assert await store.verify_contact_method("h2", NOW, NOW + 71) is None  # used up
    row, wait = await store.renew_verification(a, mail["id"], "h3", NOW + 200, resend_after=60)
    assert row is not None and row["verified"] is True and wait == 0
    verified = await store.list_contact_methods([a, b], verified_only=True)
    assert [m["id"] for m in verified] == [hook["id"], mail["id"]]
    assert len(await store.list_contact_methods([a, b])) == 3

    # Rules: replaced whole, only with the user's own methods, gone with their method.
    rules = await store.replace_notification_rules(a, [(mail["id"], 5), (hook["id"], 0)])
    assert [(r["contact_method_id"], r["delay_minutes"]) for r in rules] == [
        (hook["id"], 0),
        (mail["id"], 5),
    ]
    with pytest.raises(NotFoundError) as caught:
        await store.replace_notification_rules(b, [(hook["id"], 0)])
    assert caught.value.field == "notification_rules.0.contact_method_id"
    assert await store.list_notification_rules([b]) == []
    assert await store.delete_contact_method(a, hook["id"])
    left = await store.list_notification_rules([a, b])
    assert [(r["user_id"], r["contact_method_id"]) for r in left] == [(a, mail["id"])]


# -- the API ------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_contact_methods_crud_masked_everywhere_and_sealed_at_rest(
    server: Server, http: aiohttp.ClientSession
) -> None:
    me = Client(http, server)
    hook_url = f"http://127.0.0.1:9/{HOOK_SECRET}"
    slack_url = f"https://hooks.slack.com/services/{SLACK_SECRET}"
    tg_url = f"https://api.telegram.org/bot{TELEGRAM_TOKEN}/sendMessage?chat_id=987654321"
    mail = await me.create("email", "Alice.Pager@Example.com", "inbox")
    # No SMTP on this server: the method is kept, unverified, and the answer says why.
    assert mail["verification"] == "smtp_not_configured"
    assert mail["verified"] is False and mail["value"] == "A•••@example.com"
    assert mail["label"] == "inbox" and mail["verification_sent_at"] is None
    hook = await me.create("webhook", hook_url, "my hook")
    assert hook["verified"] is True and hook["verification"] == "verified"
    assert hook["value"] == "http://127.0.0.1:9/•••" and hook["verified_at"] is not None
    slack = await me.create("slack", slack_url)
    assert slack["value"] == "https://hooks.slack.com/•••"
    tg = await me.create("telegram", tg_url)
    assert tg["value"] == "https://api.telegram.org/•••" and tg["verified"] is True
    code, listed = await me("GET", METHODS)
    assert code == 200
    assert [m["id"] for m in listed] == [mail["id"], hook["id"], slack["id"], tg["id"]]
    assert {m["value"] for m in listed} == {
        "A•••@example.com",
        "http://127.0.0.1:9/•••",
        "https://hooks.slack.com/•••",
        "https://api.telegram.org/•••",
    }
    code, one = await me("GET", f"{METHODS}/{hook['id']}")
    assert code == 200 and one == {k: v for k, v in hook.items() if k != "verification"}

    # A new label; a new URL stays verified; a new address is unverified again.
    code, changed = await me("PATCH", f"{METHODS}/{hook['id']}", json={"label": "renamed"})
    assert code == 200 and changed["label"] == "renamed" and changed["value"] == hook["value"]
    code, changed = await me(
        "PATCH", f"{METHODS}/{hook['id']}", json={"value": f"http://127.0.0.2:9/{HOOK_SECRET}"}
    )
    assert code == 200 and changed["value"] == "http://127.0.0.2:9/•••" and changed["verified"]
    code, changed = await me("PATCH", f"{METHODS}/{mail['id']}", json={"value": "b@example.com"})
    assert code == 200, changed
    assert changed["value"] == "b•••@example.com" and changed["verified"] is False
    assert changed["verification"] == "smtp_not_configured"
    code, resent = await me("POST", f"{METHODS}/{mail['id']}/verify")
    assert code == 200 and resent["verification"] == "smtp_not_configured"

    code, profile = await me("GET", "/api/profile")
    assert code == 200, profile
    assert profile["email"] and profile["organizations"][0]["role"] == "OWNER"
    assert [m["id"] for m in profile["contact_methods"]] == [m["id"] for m in listed]
    assert profile["notification_rules"] == [] and "timezone" in profile

    # At rest: sealed, not one value in clear.
    raw = await raw_fetch(server_store(server), "SELECT kind, value FROM contact_methods")
    assert len(raw) == 4 and all(str(r["value"]).startswith("enc:v1:") for r in raw)
    for secret in (
        HOOK_SECRET,
        SLACK_SECRET,
        TELEGRAM_TOKEN,
        "b@example.com",
        "Alice.Pager",
        "987654321",
    ):
        assert secret not in str(raw)
        # ...and in no answer.
        assert not any(secret in t for t in me.texts), secret

    code, _ = await me("DELETE", f"{METHODS}/{slack['id']}")
    assert code == 204
    code, _ = await me("GET", f"{METHODS}/{slack['id']}")
    assert code == 404
    code, _ = await me("DELETE", f"{METHODS}/{slack['id']}")
    assert code == 404


async def test_validation_names_the_field_and_the_limit_holds(
    plain: Server, http: aiohttp.ClientSession
) -> None:
    token, _ = await other_org_user(plain)
    me = Client(http, plain, token)
    cases = [
        ({"kind": "sms", "value": "+48123456789"}, ["body", "kind"]),
        ({"kind": "email", "value": "nobody"}, ["body", "value"]),
        ({"kind": "email"}, ["body", "value"]),
        ({"kind": "webhook", "value": "ftp://example.com/x"}, ["body", "value"]),
        ({"kind": "slack", "value": "https://u:p@hooks.slack.com/x"}, ["body", "value"]),
        ({"kind": "telegram", "value": "https://api.telegram.org/x"}, ["body", "value"]),
        ({"kind": "webhook", "value": "https://e.com/" + "x" * 2100}, ["body", "value"]),
        ({"kind": "teams", "value": "https://e.com/x", "label": "l" * 101}, ["body", "label"]),
    ]
    for body, loc in cases:
        code, answer = await me("POST", METHODS, json=body)
        assert code == 422, (body, answer)
        assert locs(answer) == [loc], (body, answer)
    first = await me.create("webhook", "https://example.com/0")
    code, answer = await me("PATCH", f"{METHODS}/{first['id']}", json={"value": "nope"})
    assert code == 422 and locs(answer) == [["body", "value"]]
    for i in range(1, MAX_METHODS):
        await me.create("webhook", f"https://example.com/{i}")
    code, answer = await me("POST", METHODS, json={"kind": "webhook", "value": "https://e.com/x"})
    assert code == 422 and answer["detail"][0]["type"] == "limit_reached", answer
    code, listed = await me("GET", METHODS)
    assert code == 200 and len(listed) == MAX_METHODS


async def test_notification_rules_replace_validate_and_default(
    plain: Server, http: aiohttp.ClientSession
) -> None:
    token, _ = await other_org_user(plain)
    me = Client(http, plain, token)
    code, rules = await me("GET", RULES)
    assert code == 200 and rules == {"notification_rules": [], "uses_default": True}
    a = await me.create("webhook", "https://example.com/a")
    b = await me.create("email", "rules@example.com")  # unverified: a rule may still name it
    body = {
        "notification_rules": [
            {"contact_method_id": b["id"], "delay_minutes": 15},
            {"contact_method_id": a["id"]},
        ]
    }
    code, rules = await me("PUT", RULES, json=body)
    assert code == 200, rules
    assert rules["uses_default"] is False
    assert [(r["contact_method_id"], r["delay_minutes"]) for r in rules["notification_rules"]] == [
        (a["id"], 0),
        (b["id"], 15),
    ]
    code, again = await me("GET", RULES)
    assert code == 200 and again == rules
    code, profile = await me("GET", "/api/profile")
    assert code == 200 and profile["notification_rules"] == rules["notification_rules"]

    bad = [
        ([{"contact_method_id": a["id"], "delay_minutes": 1441}], [0, "delay_minutes"]),
        ([{"contact_method_id": a["id"], "delay_minutes": -1}], [0, "delay_minutes"]),
        ([{"contact_method_id": a["id"], "delay_minutes": "5"}], [0, "delay_minutes"]),
        ([{"delay_minutes": 5}], [0, "contact_method_id"]),
        ([{"contact_method_id": a["id"]}, {"contact_method_id": 10**12}], [1, "contact_method_id"]),
        (
            [{"contact_method_id": a["id"]}, {"contact_method_id": a["id"]}],
            [1, "contact_method_id"],
        ),
    ]
    for items, loc in bad:
        code, answer = await me("PUT", RULES, json={"notification_rules": items})
        assert code == 422, (items, answer)
        assert locs(answer) == [["body", "notification_rules", *loc]], answer
    code, answer = await me("PUT", RULES, json={})
    assert code == 422 and locs(answer) == [["body", "notification_rules"]]
    code, unchanged = await me("GET", RULES)
    assert unchanged == rules

    # Deleting a method takes its rules along; an empty list restores the default.
    code, _ = await me("DELETE", f"{METHODS}/{b['id']}")
    assert code == 204
    code, rules = await me("GET", RULES)
    assert [r["contact_method_id"] for r in rules["notification_rules"]] == [a["id"]]
    code, rules = await me("PUT", RULES, json={"notification_rules": []})
    assert code == 200 and rules == {"notification_rules": [], "uses_default": True}


async def test_another_users_methods_are_not_found(
    plain: Server, http: aiohttp.ClientSession
) -> None:
    owner_token, _ = await other_org_user(plain)
    other_token, _ = await other_org_user(plain)
    owner, other = Client(http, plain, owner_token), Client(http, plain, other_token)
    hook = await owner.create("webhook", f"https://example.com/{HOOK_SECRET}")
    mail = await owner.create("email", "owner-only@example.com")
    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"label": "mine now"}),
        ("DELETE", "", None),
        ("POST", "/verify", None),
        ("POST", "/test", None),
    ]:
        for target in (hook, mail):
            code, answer = await other(method, f"{METHODS}/{target['id']}{suffix}", json=body)
            assert code == 404, (method, suffix, answer)
    code, answer = await other(
        "PUT", RULES, json={"notification_rules": [{"contact_method_id": hook["id"]}]}
    )
    assert code == 422 and locs(answer) == [["body", "notification_rules", 0, "contact_method_id"]]
    code, listed = await other("GET", METHODS)
    assert code == 200 and listed == []
    code, profile = await other("GET", "/api/profile")
    assert code == 200 and profile["contact_methods"] == []
    code, still = await owner("GET", f"{METHODS}/{hook['id']}")
    assert code == 200 and still["label"] == ""
    assert not any(HOOK_SECRET in t for t in owner.texts + other.texts)
    # Without a token: 401.
    code, _ = await call(http, plain, "GET", METHODS, None)
    assert code == 401


async def test_an_email_method_is_verified_by_the_mailed_link(
    mail_server: Server, smtp: SmtpReceiver, http: aiohttp.ClientSession
) -> None:
    token, _ = await other_org_user(mail_server)
    me = Client(http, mail_server, token)
    address = "verify-me@example.test"
    method = await me.create("email", address, "work")
    assert method["verification"] == "sent" and method["verified"] is False
    assert method["verification_sent_at"] is not None
    mail = await mail_to(smtp, address, "Verify your contact method")
    assert mail["From"] == "pager@example.test"
    link = verify_link(mail)
    assert link.startswith(mail_server.base + "/api/contact-methods/verify/")

    # Another link within a minute: 429, with when to ask again.
    path = f"{METHODS}/{method['id']}/verify"
    async with http.post(
        mail_server.base + path, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 429, await r.text()
        assert 1 <= int(r.headers["Retry-After"]) <= 60

    # Opening the link (as a mail scanner would) only shows a button.
    async with http.get(link) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
        assert 'method="post"' in page and "v•••@example.test" in page and address not in page
        assert resp.headers["Cache-Control"] == "no-store"
    code, still = await me("GET", f"{METHODS}/{method['id']}")
    assert code == 200 and still["verified"] is False
    for wrong in (link[:-3] + "xyz", mail_server.base + "/api/contact-methods/verify/short"):
        async with http.post(wrong) as resp:
            assert resp.status == 404
        async with http.get(wrong) as resp:
            assert resp.status == 404
    async with http.post(link) as resp:
        assert resp.status == 200 and "Contact method verified" in await resp.text()
    code, done = await me("GET", f"{METHODS}/{method['id']}")
    assert code == 200 and done["verified"] is True and done["verified_at"] is not None
    async with http.post(link) as resp:
        assert resp.status == 404  # used up
    code, answer = await me("POST", path)
    assert code == 409, answer

    # A new address is verified again, by a new link to it.
    moved = "moved@example.test"
    code, changed = await me("PATCH", f"{METHODS}/{method['id']}", json={"value": moved})
    assert code == 200, changed
    assert changed["verified"] is False and changed["verification"] == "sent"
    assert changed["value"] == "m•••@example.test"
    verify_link(await mail_to(smtp, moved, "Verify your contact method"))
    assert len(mails_to(smtp, address)) == 1
    assert not any(address in t or moved in t for t in me.texts)


async def test_a_test_page_goes_to_the_method(
    mail_server: Server, smtp: SmtpReceiver, http: aiohttp.ClientSession, receivers: Receivers
) -> None:
    token, _ = await other_org_user(mail_server)
    me = Client(http, mail_server, token)
    hook = await me.create("webhook", receivers.url(f"/hook/{HOOK_SECRET}"), "phone bridge")
    code, out = await me("POST", f"{METHODS}/{hook['id']}/test")
    assert code == 200, out
    assert out == {
        "contact_method_id": hook["id"],
        "kind": "webhook",
        "ok": True,
        "status_code": 200,
        "error": None,
    }
    hit = receivers.accepted("hook")[-1]
    assert hit.body["event"] == "test" and "phone bridge" in hit.body["message"]["summary"]
    address = "test-page@example.test"
    mail_id = await verified_email(me, smtp, address)
    code, out = await me("POST", f"{METHODS}/{mail_id}/test")
    assert code == 200 and out["ok"] is True, out
    await mail_to(smtp, address, "Test notification")
    unverified = await me.create("email", "unverified-test@example.test")
    code, _ = await me("POST", f"{METHODS}/{unverified['id']}/test")
    assert code == 409
    # A receiver that is down: the outcome says so, without the URL's secret path.
    dead = await me.create("slack", f"http://127.0.0.1:1/{SLACK_SECRET}")
    code, out = await me("POST", f"{METHODS}/{dead['id']}/test")
    assert code == 200 and out["ok"] is False and out["error"], out
    assert SLACK_SECRET not in json.dumps(out)


async def test_pages_reach_verified_methods_through_the_outbox(
    mail_server: Server, smtp: SmtpReceiver, http: aiohttp.ClientSession, receivers: Receivers
) -> None:
    server = mail_server
    admin = Client(http, server)
    me, org = await admin.user_id(), await org_of(admin)
    address = "paged@example.test"
    email_id = await verified_email(admin, smtp, address)
    hook = await admin.create("webhook", receivers.url(f"/hook/{HOOK_SECRET}"))
    slack = await admin.create("slack", receivers.url("/slack/page"))
    tg = await admin.create(
        "telegram", receivers.url(f"/bot{TELEGRAM_TOKEN}/sendMessage?chat_id=987654321")
    )
    never = await admin.create("email", "never-verified@example.test")
    # Someone outside the organisation, with a verified method: never paged about it.
    outsider_token, _ = await other_org_user(server)
    outsider = Client(http, server, outsider_token)
    await outsider.create("webhook", receivers.url("/outsider/hook"))
    outsider_id = await outsider.user_id()

    s = await opened_store(server)
    try:
        incident = await new_incident(s, org, "Disk full on db-1")
        now = time.time()
        key = "{incident}:r0:s1"
        rows = await plan_pages(s, incident, [me, outsider_id, me], at=now, key=key)
        planned = {r["payload"]["contact_method_id"] for r in rows}
        assert planned == {email_id, hook["id"], slack["id"], tg["id"]}  # `never` is not
        assert all(
            r["dedup_key"] == f"page:{key}:{me}:{r['payload']['contact_method_id']}" for r in rows
        )
        assert all(r["channel_id"] is None and r["next_attempt_at"] == now for r in rows)
        assert rows[0]["payload"]["message"]["summary"] == "Incident: Disk full on db-1"
        assert HOOK_SECRET not in json.dumps(rows) and address not in json.dumps(rows)
        summaries = page_summaries(rows)
        assert {(p["user_id"], p["kind"], p["at"]) for p in summaries} == {
            (me, kind, now) for kind in ("email", "webhook", "slack", "telegram")
        }
        # Written twice (a retried step): the dedup keys make each page once.
        await s.write_incident_change(org, int(incident["id"]), {}, deliveries=rows)
        await s.write_incident_change(org, int(incident["id"]), {}, deliveries=rows)

        page = await mail_to(smtp, address, "Disk full on db-1")
        body = text_of(page)
        assert "db-1 / disk" in body and "Severity: critical" in body
        assert f"/inbound-incidents/{incident['id']}/ack" in body
        hit = (await wait_for(accepted(receivers, "hook")))[0]
        assert hit.body["event"] == "opened"
        assert hit.body["message"]["summary"] == "Incident: Disk full on db-1"
        assert hit.body["message"]["incident_id"] == incident["id"]
        await wait_for(accepted(receivers, "slack"))
        await wait_for(accepted(receivers, "telegram"))

        async def all_delivered() -> bool:
            found = await deliveries(s, org, int(incident["id"]))
            return len(found) == 4 and all(d["status"] == "delivered" for d in found)

        await wait_for(all_delivered)
        await settle(1.5)
        assert len(receivers.accepted("hook")) == 1 and not receivers.accepted("outsider")
        assert len(mails_to(smtp, "never-verified@example.test")) == 1  # its link only
        assert len([m for m in mails_to(smtp, address) if "Disk full" in str(m["Subject"])]) == 1

        # Rules: only the methods they name, each after its delay.
        code, _ = await admin(
            "PUT",
            RULES,
            json={
                "notification_rules": [
                    {"contact_method_id": hook["id"], "delay_minutes": 0},
                    {"contact_method_id": email_id, "delay_minutes": 10},
                    {"contact_method_id": never["id"], "delay_minutes": 0},
                ]
            },
        )
        assert code == 200
        later = await plan_pages(s, incident, [me], at=now, key="{incident}:r0:s2", step={"n": 2})
        assert [(r["payload"]["contact_method_id"], r["next_attempt_at"]) for r in later] == [
            (hook["id"], now),
            (email_id, now + 600),
        ]
        assert later[0]["payload"]["message"]["event"] == "escalated"
        assert later[0]["payload"]["step"] == {"n": 2}
    finally:
        await s.close()


async def test_pages_of_incidents_that_moved_on_are_suppressed(
    mail_server: Server, smtp: SmtpReceiver, http: aiohttp.ClientSession, receivers: Receivers
) -> None:
    server = mail_server
    token, org = await other_org_user(server)
    me = Client(http, server, token)
    uid = await me.user_id()
    await me.create("webhook", receivers.url("/hook/moved-on"))
    gone = await me.create("webhook", receivers.url("/hook/deleted"))
    s = await opened_store(server)
    try:
        acked = await new_incident(s, org, "Acknowledged in time")
        resolved = await new_incident(s, org, "Resolved in time")
        still = await new_incident(s, org, "Still open")
        # Due in a few seconds; meanwhile two incidents move on and a method goes.
        due = time.time() + 3
        for inc in (acked, resolved, still):
            rows = await plan_pages(s, inc, [uid], at=due, key="{incident}:r0:s1")
            assert len(rows) == 2
            await s.write_incident_change(org, int(inc["id"]), {}, deliveries=rows)
        now = time.time()
        await s.write_incident_change(
            org,
            int(acked["id"]),
            {"status": "ACKNOWLEDGED", "acknowledged_at": now, "acknowledged_by": uid},
        )
        await s.write_incident_change(
            org, int(resolved["id"]), {"status": "RESOLVED", "resolved_at": now}
        )
        code, _ = await me("DELETE", f"{METHODS}/{gone['id']}")
        assert code == 204

        async def settled(incident: dict[str, Any]) -> list[dict[str, Any]] | None:
            found = await deliveries(s, org, int(incident["id"]))
            done = all(d["status"] not in ("pending", "sending") for d in found)
            return sorted(found, key=lambda d: d["payload"]["contact_method_id"]) if done else None

        for inc, why in ((acked, "acknowledged"), (resolved, "resolved")):
            found = await wait_for(lambda inc=inc: settled(inc), timeout=30)
            assert [d["status"] for d in found] == ["suppressed", "suppressed"]
            assert {d["last_error"] for d in found} == {f"{why} before this page"}
        found = await wait_for(lambda: settled(still), timeout=30)
        assert [(d["status"], d["last_error"]) for d in found] == [
            ("delivered", None),
            ("failed", "the contact method was deleted"),
        ]
        hits = receivers.accepted("hook")
        assert [h.body["message"]["summary"] for h in hits] == ["Incident: Still open"]
        assert hits[0].path == "/hook/moved-on"
    finally:
        await s.close()
