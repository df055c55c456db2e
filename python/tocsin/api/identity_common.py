"""What the identity areas share (api/sessions.py, api/users.py, api/organizations.py,
api/members.py): the base of their request bodies and its field rules, the roles, the
page size of their lists, timestamps that are never null, and password hashing off the
event loop."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from tocsin import schedules
from tocsin.api import query
from tocsin.api.schemas import EMAIL_PATTERN
from tocsin.security import burn_password_check, hash_password, verify_password

_EMAIL = re.compile(EMAIL_PATTERN)
PAGE_LIMIT = query.limit(100, 500)
# An organisation member's role (tocsin.store.base.ROLES), strongest first.
Role = Literal["OWNER", "ADMIN", "MEMBER", "VIEWER"]
_ROLES: dict[str, Role] = {r: r for r in get_args(Role)}


def role(value: str) -> Role:
    """A stored role, typed (KeyError for what the store never holds)."""
    return _ROLES[value]


def valid_email(v: str) -> str:
    v = v.strip().lower()
    if not _EMAIL.match(v):
        raise ValueError("must be an email address")
    return v


def time_zone(v: str) -> str:
    try:
        schedules.time_zone(v)
    except ValueError as exc:
        raise ValueError(getattr(exc, "reason", str(exc))) from None
    return v


# The default of an update's optional field: it marks the field as left out (`changes`
# holds only what was sent); typed Any so the field's type can say that null is not a
# value a client may send.
LEFT_OUT: Any = None


class Body(BaseModel):
    # Clients send more fields than a route uses: unknown ones are ignored.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    def changes(self) -> dict[str, Any]:
        return self.model_dump(include=self.model_fields_set)


async def new_password_hash(password: str) -> str:
    # PERF: argon2 takes tens of milliseconds of CPU; off the event loop.
    return await asyncio.to_thread(hash_password, password)


async def password_ok(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        await asyncio.to_thread(burn_password_check, password)
        return False
    return await asyncio.to_thread(verify_password, password_hash, password)
