"""Reaching a person on their contact methods: the pages the outbox worker hands over
(rows whose payload kind is `page`, planned by `contacts.plan_pages`), the test message
of `POST /api/profile/contact-methods/{id}/test`, and the mail that verifies an email
method. Email goes through the server's own SMTP settings (as status page subscribers'
mails do), the other kinds through the outbox's `Sender` with a config made from the
method's value (docs/profile.md).

A page is sent only while its incident is still OPEN when it comes due: acknowledged or
resolved meanwhile, the row ends `suppressed` and nothing is sent."""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tocsin.notify.channels import Outcome, Sender, message, text
from tocsin.notify.subscribers import SmtpSettings
from tocsin.paging.contacts import (
    PAGE,
    VERIFY_TTL_S,
    check_info,
    incident_links,
    mask,
    sender_config,
)
from tocsin.store.base import Principal, Row, Store

log = logging.getLogger("tocsin.paging")

VERIFY_PATH = "/api/contact-methods/verify/"
NO_SMTP = "no SMTP server is configured for the server's own mails (--smtp-url / TOCSIN_SMTP_URL)"
# Why a page was not sent, by the incident's status when it came due.
SUPPRESSED = {
    "ACKNOWLEDGED": "acknowledged before this page",
    "RESOLVED": "resolved before this page",
}


@dataclass(slots=True)
class Suppressed(Outcome):
    """A page not sent because its incident moved on: the outbox row ends `suppressed`
    with `error` as the reason."""


@dataclass(slots=True)
class PageReads:
    """What a round of pages reads, read once for the whole round (`Pager.prefetch`)
    rather than four reads per page."""

    incidents: dict[int, Row] = field(default_factory=dict)
    methods: dict[int, Row] = field(default_factory=dict)
    principals: dict[int, Principal | None] = field(default_factory=dict)
    checks: dict[int, Row] = field(default_factory=dict)


class Pager:
    """Sends pages, test messages and verification mails to contact methods."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        *,
        smtp: SmtpSettings | None = None,
        public_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._sender = sender
        self.smtp = smtp
        self.public_url = (public_url or "http://localhost:8080").rstrip("/")
        self.timeout = timeout

    # -- links ---------------------------------------------------------------------------

    def verify_url(self, token: str) -> str:
        return f"{self.public_url}{VERIFY_PATH}{urllib.parse.quote(token)}"

    def incident_url(self, incident: Mapping[str, Any]) -> str:
        """Where a person sees the incident: its check, or the inbound incident."""
        check_id = incident.get("check_id")
        if check_id is not None:
            return f"{self.public_url}/checks/{check_id}"
        org = incident["organization_id"]
        return f"{self.public_url}/api/organizations/{org}/inbound-incidents/{incident['id']}"

    def ack_url(self, incident: Mapping[str, Any]) -> str:
        """The API route that acknowledges the incident (a POST with a token)."""
        check_id = incident.get("check_id")
        if check_id is not None:
            return f"{self.public_url}/api/checks/{check_id}/incidents/{incident['id']}/ack"
        return self.incident_url(incident) + "/ack"

    # -- the outbox worker's side ---------------------------------------------------------

    async def prefetch(self, rows: Sequence[Row]) -> PageReads:
        """The incidents, contact methods, people and checks of a round's page rows, in
        a few reads (what `deliver` would otherwise read for each page)."""
        reads = PageReads()
        pages = [r for r in rows if (r["payload"] or {}).get("kind") == PAGE]
        if not pages:
            return reads
        incident_ids = {
            int(i)
            for r in pages
            if (i := r.get("incident_id") or r["payload"].get("incident_id")) is not None
        }
        for inc in await self._store.incidents_by_id(incident_ids):
            reads.incidents[int(inc["id"])] = inc
        users = sorted({int(r["payload"]["user_id"]) for r in pages})
        for m in await self._store.list_contact_methods(users):
            reads.methods[int(m["id"])] = m
        for uid in users:
            reads.principals[uid] = await self._store.principal_for_user(uid)
        by_org: dict[int, set[int]] = {}
        for inc in reads.incidents.values():
            if inc.get("check_id") is not None:
                by_org.setdefault(int(inc["organization_id"]), set()).add(int(inc["check_id"]))
        for org, check_ids in by_org.items():
            for check in await self._store.get_checks([org], check_ids):
                reads.checks[int(check["id"])] = check
        return reads

    async def deliver(self, row: Row, reads: PageReads | None = None) -> Outcome:
        """Send one page row (payload kind `page`), unless its incident is no longer open
        (`Suppressed`) or its contact method cannot take it (a final failure). `reads`:
        what `prefetch` read for the round this row is in."""
        payload = row["payload"] or {}
        if payload.get("kind") != PAGE:
            return Outcome(False, error="not a page", retry=False)
        org = int(row["organization_id"])
        incident_id = row.get("incident_id") or payload.get("incident_id")
        incident: Row | None = None
        if incident_id is not None and reads is not None:
            incident = reads.incidents.get(int(incident_id))
            if incident is not None and int(incident["organization_id"]) != org:
                incident = None
        elif incident_id is not None:
            incident = await self._store.get("incidents", [org], int(incident_id))
        if incident is None:
            return Outcome(False, error="the incident was deleted", retry=False)
        status = str(incident["status"])
        if status != "OPEN":
            return Suppressed(False, error=SUPPRESSED.get(status, f"the incident is {status}"))
        user_id, method_id = int(payload["user_id"]), int(payload["contact_method_id"])
        if reads is not None:
            method = reads.methods.get(method_id)
            if method is not None and int(method["user_id"]) != user_id:
                method = None
        else:
            method = await self._store.get_contact_method(user_id, method_id)
        if method is None:
            return Outcome(False, error="the contact method was deleted", retry=False)
        if not method["verified"]:
            return Outcome(False, error="the contact method is not verified", retry=False)
        # Planned minutes ago (or a day): whoever left the organisation since is not paged.
        if reads is not None and user_id in reads.principals:
            p = reads.principals[user_id]
        else:
            p = await self._store.principal_for_user(user_id)
        if p is None or org not in p.roles:
            return Outcome(
                False,
                error="the user is no longer an active member of the incident's organisation",
                retry=False,
            )
        event = str((payload.get("message") or {}).get("event") or "opened")
        check_id = incident.get("check_id")
        check: Row | None = None
        if check_id is not None:
            check = (
                reads.checks.get(int(check_id))
                if reads is not None
                else await self._store.get_check([org], int(check_id))
            )
        m = message(
            event=event,
            incident=incident,
            check=check_info(check),
            links=incident_links(incident, self.public_url),
            at=time.time(),
        )
        return await self.send(method, m, str(row["dedup_key"]), incident=incident)

    # -- sending --------------------------------------------------------------------------

    async def send(
        self,
        method: Mapping[str, Any],
        m: Mapping[str, Any],
        key: str,
        *,
        incident: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Send message `m` to a contact method; never raises."""
        kind = str(method["kind"])
        if kind == "email":
            subject = f"[tocsin] {m['summary']}"
            return await self.mail(str(method["value"]), subject, self._page_text(m, incident))
        config = sender_config(kind, str(method["value"]))
        out = await self._sender.send(kind, config, m, key, response=False)
        if out.error:
            # The value is the secret (a URL with a token in it): never in what is stored.
            out.error = out.error.replace(str(method["value"]), mask(kind, str(method["value"])))
        return out

    def _page_text(self, m: Mapping[str, Any], incident: Mapping[str, Any] | None) -> str:
        lines = [text(m), "", f"Severity: {m.get('severity')}"]
        if incident is not None and incident.get("id") is not None:
            lines += [
                f"Incident: {self.incident_url(incident)}",
                "",
                "To acknowledge it (and stop the escalation), POST to",
                f"  {self.ack_url(incident)}",
                "with your API token, or acknowledge it in tocsin.",
            ]
        return "\n".join(lines) + "\n"

    async def test(self, method: Mapping[str, Any], actor: str | None = None) -> Outcome:
        """A test message to a contact method (nothing is stored)."""
        now = time.time()
        m = message(
            event="test",
            incident={
                "id": None,
                "check_id": None,
                "severity": "info",
                "started_at": now,
                "title": "Test page",
                "cause": "This is a test page sent from tocsin; no action is needed.",
                "sources": {},
            },
            check={"name": method.get("label") or f"your {method['kind']} contact method"},
            links={},
            at=now,
            actor=actor,
        )
        return await self.send(method, m, f"test:{method['id']}:{int(now * 1000)}")

    async def send_verification(self, user: Mapping[str, Any], address: str, token: str) -> Outcome:
        """The mail with the link that verifies an email contact method."""
        hours = int(VERIFY_TTL_S // 3600)
        body = (
            f"The tocsin account {user['email']} added this address as a contact method"
            " for paging: alerts about incidents will be sent here once it is verified.\n\n"
            f"To verify it, open this link within {hours} hours and confirm:\n\n"
            f"{self.verify_url(token)}\n\n"
            "If you did not expect this, ignore this mail: nothing is sent to an address"
            " that is not verified.\n"
        )
        return await self.mail(address, "Verify your contact method for tocsin paging", body)

    async def mail(self, to: str, subject: str, body: str) -> Outcome:
        """One plain-text mail with the server's SMTP settings; never raises."""
        smtp = self.smtp
        if smtp is None:
            return Outcome(False, error=NO_SMTP, retry=False)
        out = await smtp.send(to, subject, body, send_timeout=self.timeout)
        if out.error:
            # A refusal may quote the address: what is stored shows it masked, as reads do.
            out.error = out.error.replace(to, mask("email", to))
        return out
