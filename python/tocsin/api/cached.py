"""Answering from the public cache (tocsin/statuspages/cache.py), for every public
document (status pages, their JSON and feed, badges): the validator, how long others
may keep it, a 304 for a client that has it, and the gzipped body for a client that
takes it."""

from __future__ import annotations

import falcon
import falcon.asgi

from tocsin.statuspages.cache import Cached


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header takes gzip (`gzip;q=0` refuses it)."""
    if not header:
        return False
    for item in header.lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def matches(header: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names this validator (or is `*`)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == etag for t in header.split(","))


def answer(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, entry: Cached, *, max_age: int
) -> None:
    gzipped = entry.gzipped is not None and accepts_gzip(req.get_header("Accept-Encoding"))
    etag = entry.gzip_etag if gzipped else entry.etag
    resp.set_header("ETag", etag)
    resp.set_header("Cache-Control", f"public, max-age={max_age}")
    resp.set_header("Vary", "Accept-Encoding")
    if matches(req.get_header("If-None-Match"), etag):
        resp.status = falcon.HTTP_304
        return
    resp.content_type = entry.content_type
    if gzipped:
        resp.set_header("Content-Encoding", "gzip")
        resp.data = entry.gzipped
    else:
        resp.data = entry.body
