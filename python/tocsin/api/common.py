"""Helpers every API resource uses: the caller, their role in an organisation, query
parameters, timestamps."""

from __future__ import annotations

import falcon
import falcon.asgi

from tocsin.api.errors import field_error, query_error
from tocsin.store.base import ROLES, Principal
from tocsin.timestamps import iso

__all__ = [
    "int_param",
    "iso",
    "opt_int_param",
    "principal",
    "require_role",
    "writable_org",
]


def opt_int_param(req: falcon.asgi.Request, name: str, lo: int, hi: int) -> int | None:
    raw = req.get_param(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise query_error(name, "Input should be a valid integer", "int_parsing") from None
    if not lo <= value <= hi:
        raise query_error(name, f"must be between {lo} and {hi}")
    return value


def int_param(req: falcon.asgi.Request, name: str, default: int, lo: int, hi: int) -> int:
    value = opt_int_param(req, name, lo, hi)
    return default if value is None else value


def principal(req: falcon.asgi.Request) -> Principal:
    p: Principal = req.context.principal
    return p


def writable_org(p: Principal, requested: int | None) -> int:
    if requested is None:
        org = p.default_org_id
        if org is None:
            raise falcon.HTTPForbidden(description="you belong to no organisation")
        requested = org
    role = p.roles.get(requested)
    if role is None:
        # NOTE: a foreign organisation is reported as missing, not forbidden, so ids
        # of other organisations cannot be probed.
        raise field_error("org_id", "organisation not found")
    if role == "VIEWER":
        raise falcon.HTTPForbidden(description="viewers cannot change checks")
    return requested


def require_role(p: Principal, org_id: int, role: str) -> None:
    """At least `role` in `org_id` (OWNER > ADMIN > MEMBER > VIEWER). A foreign
    organisation is reported as missing (404), never as forbidden, so ids of other
    organisations cannot be probed."""
    have = p.roles.get(org_id)
    if have is None:
        raise falcon.HTTPNotFound(description="Organization not found")
    if ROLES.index(have) > ROLES.index(role):
        raise falcon.HTTPForbidden(description=f"this needs the {role} role or higher")
