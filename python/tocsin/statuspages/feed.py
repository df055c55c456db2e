"""The Atom 1.0 feed of a status page (RFC 4287): its incidents (one entry each, updated
when resolved) and its maintenance (the occurrence under way or the next one), newest
first. Links are relative to the feed's own address (no Host header is trusted, so one
cached body serves everyone)."""

from __future__ import annotations

import re
from xml.sax.saxutils import escape as _xml_escape
from xml.sax.saxutils import quoteattr

from tocsin.statuspages.documents import (
    PublicIncidentJson,
    PublicMaintenanceJson,
    PublicPageJson,
)

ATOM_TYPE = "application/atom+xml; charset=utf-8"

# Characters XML 1.0 cannot hold at all (escaping does not help): dropped from names and
# descriptions that users typed.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape(text: str) -> str:
    return _xml_escape(_NOT_XML.sub("", text))


def _entry(entry_id: str, title: str, updated: str, published: str, link: str, text: str) -> str:
    return (
        "<entry>"
        f"<id>{escape(entry_id)}</id>"
        f"<title>{escape(title)}</title>"
        f"<updated>{escape(updated)}</updated>"
        f"<published>{escape(published)}</published>"
        f'<link rel="alternate" type="text/html" href={quoteattr(link)}/>'
        f'<summary type="text">{escape(text)}</summary>'
        "</entry>"
    )


def _incident(slug: str, i: PublicIncidentJson, link: str) -> tuple[str, str]:
    updated = i["resolved_at"] or i["started_at"]
    if i["resolved_at"]:
        title = f"Resolved: {i['title']}"
        text = f"{i['title']} from {i['started_at']} to {i['resolved_at']}."
    else:
        title = i["title"]
        text = f"{i['title']} since {i['started_at']} ({i['status'].lower()})."
    entry_id = f"urn:tocsin:status:{slug}:incident:{i['id']}"
    return updated, _entry(entry_id, title, updated, i["started_at"], link, text)


def _maintenance(slug: str, m: PublicMaintenanceJson, link: str) -> tuple[str, str]:
    state = "In progress" if m["in_progress"] else "Scheduled"
    title = f"{state} maintenance: {m['name']}"
    text = f"{m['name']} from {m['starts_at']} to {m['ends_at']}"
    if m["components"]:
        text += f", affecting {', '.join(m['components'])}"
    text += "." + (f" {m['description']}" if m["description"] else "")
    entry_id = f"urn:tocsin:status:{slug}:maintenance:{m['id']}:{m['starts_at']}"
    # Sorted by when it begins: the feed shows what is coming as news now.
    return m["starts_at"], _entry(entry_id, title, m["starts_at"], m["starts_at"], link, text)


def render_feed(
    page: PublicPageJson, incidents: list[PublicIncidentJson], *, self_url: str
) -> bytes:
    slug, link = page["slug"], page["url"]
    entries = [_incident(slug, i, link) for i in incidents]
    entries += [_maintenance(slug, m, link) for m in page["maintenance"]]
    entries.sort(key=lambda e: e[0], reverse=True)
    updated = entries[0][0] if entries else page["generated_at"]
    head = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<id>urn:tocsin:status:{escape(slug)}</id>"
        f"<title>{escape(page['name'])} status</title>"
        + (f"<subtitle>{escape(page['description'])}</subtitle>" if page["description"] else "")
        + f"<updated>{escape(updated)}</updated>"
        f"<author><name>{escape(page['name'])}</name></author>"
        f'<link rel="self" type="application/atom+xml" href={quoteattr(self_url)}/>'
        f'<link rel="alternate" type="text/html" href={quoteattr(link)}/>'
        "<generator>tocsin</generator>"
    )
    return (head + "".join(e for _, e in entries) + "</feed>").encode()
