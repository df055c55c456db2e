"""Route templates every area shares: the id path converter (`{check_id:ID}`: an id
beyond a BIGINT is no route, 404, not a database overflow) and the organisation prefix
(one spelling, as Falcon's router needs for routes that share a segment)."""

from __future__ import annotations

ID = "int(min=1, max=9223372036854775807)"
ORG = f"/api/organizations/{{org_id:{ID}}}"
# Heartbeat pings: public (the check's uuid is the secret), answered in plain text.
PING_PREFIX = "/api/ping/"
# Public status pages (JSON, feed, subscriptions) and their HTML side, by slug.
STATUS_PUBLIC_PREFIX = "/api/status-pages/public/"
STATUS_HTML_PREFIX = "/status/"
# Badges (by check uuid) and metrics (the metrics key is in the path).
BADGE_PREFIX = "/api/badges/"
METRICS_PREFIX = "/api/metrics/"
# Inbound events, authenticated by the integration key they carry (in the body, the
# path or an `Authorization: Bearer ik_…` header): the native route, PagerDuty Events v2,
# Alertmanager's and Grafana's webhooks. (`/api/events` itself, the live stream, is not.)
INBOUND_PREFIXES = (
    "/api/events/ingest",
    "/api/events/v2/",
    "/api/events/alertmanager",
    "/api/events/grafana",
)
# The confirmation link mailed to a new email contact method (the token is the secret).
CONTACT_VERIFY_PREFIX = "/api/contact-methods/verify/"
# Routes that need no token.
PUBLIC_PREFIXES = (
    *INBOUND_PREFIXES,
    CONTACT_VERIFY_PREFIX,
    PING_PREFIX,
    STATUS_PUBLIC_PREFIX,
    STATUS_HTML_PREFIX,
    BADGE_PREFIX,
    METRICS_PREFIX,
)
