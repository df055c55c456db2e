"""Route templates every area shares: the id path converter (`{check_id:ID}`: an id
beyond a BIGINT is no route, 404, not a database overflow) and the organisation prefix
(one spelling, as Falcon's router needs for routes that share a segment)."""

from __future__ import annotations

ID = "int(min=1, max=9223372036854775807)"
ORG = f"/api/organizations/{{org_id:{ID}}}"
# Heartbeat pings: public (the check's uuid is the secret), answered in plain text.
PING_PREFIX = "/api/ping/"
# Routes that need no token.
PUBLIC_PREFIXES = (PING_PREFIX,)
