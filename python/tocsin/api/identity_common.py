"""What the identity areas share (api/sessions.py, api/users.py, api/organizations.py,
api/members.py): the base of their request bodies and its field rules, the page size of
their lists, password hashing off the event loop, and the organisation path prefix."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from tocsin import schedules
from tocsin.api import query
from tocsin.security import burn_password_check, hash_password, verify_password

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# An organisation's routes; the segment must be the same in every area (Falcon's router).
PAGE_LIMIT = query.limit(100, 500)


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


def not_null(v: Any) -> Any:
    # Optional in the body, but an explicit null is not a value for these fields.
    if v is None:
        raise ValueError("may not be null")
    return v


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
