"""The id path converter of every area's routes (`{check_id:ID}`): an id beyond a BIGINT
is no route (404), not a database overflow.

The identity routes that were here are split by resource: api/sessions.py (sign-in,
logout, the session cookie), api/users.py (`/api/users/…`: the caller's account, tokens,
notification preferences; user administration), api/organizations.py (organisations,
settings, usage, projects) and api/members.py (members and invitations); what they share
is api/identity_common.py."""

from __future__ import annotations

ID = "int(min=1, max=9223372036854775807)"
