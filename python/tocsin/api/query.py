"""Query parameters, declared once: each parameter is an object that reads and validates
itself from a request (422 naming `["query", name]` when it is wrong) and describes
itself for the OpenAPI document. A resource lists what each responder takes in
`query_params = {"get": (LIMIT, OFFSET, …)}` (keys as in `body_models`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import falcon.asgi

from tocsin.api.errors import query_error

MAX_ID = 2**63 - 1
MAX_TEXT = 500


class Param:
    name: str
    description: str

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "in": "query", "schema": self.schema()}
        if self.description:
            out["description"] = self.description
        return out

    def raw(self, req: falcon.asgi.Request) -> str | None:
        value = req.get_param(self.name)
        if value is None:
            return None
        value = value.strip()
        return value or None


@dataclass(frozen=True, slots=True)
class OptInt(Param):
    name: str
    lo: int
    hi: int
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}

    def get(self, req: falcon.asgi.Request) -> int | None:
        raw = self.raw(req)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise query_error(self.name, "Input should be a valid integer", "int_parsing") from None
        if not self.lo <= value <= self.hi:
            raise query_error(self.name, f"must be between {self.lo} and {self.hi}")
        return value


@dataclass(frozen=True, slots=True)
class Int(Param):
    name: str
    default: int
    lo: int
    hi: int
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi, "default": self.default}

    def get(self, req: falcon.asgi.Request) -> int:
        value = OptInt(self.name, self.lo, self.hi).get(req)
        return self.default if value is None else value


@dataclass(frozen=True, slots=True)
class Text(Param):
    """Free text, or one of `choices` (matched case-insensitively, returned as given in
    `choices`)."""

    name: str
    description: str = ""
    choices: tuple[str, ...] = ()
    max_length: int = MAX_TEXT

    def schema(self) -> dict[str, Any]:
        if self.choices:
            return {"type": "string", "enum": list(self.choices)}
        return {"type": "string", "maxLength": self.max_length}

    def get(self, req: falcon.asgi.Request) -> str | None:
        raw = self.raw(req)
        if raw is None:
            return None
        if self.choices:
            by_key = {c.lower(): c for c in self.choices}
            found = by_key.get(raw.lower())
            if found is None:
                raise query_error(self.name, f"must be one of {', '.join(self.choices)}", "enum")
            return found
        if len(raw) > self.max_length:
            raise query_error(self.name, f"must be at most {self.max_length} characters")
        return raw


@dataclass(frozen=True, slots=True)
class Bool(Param):
    name: str
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def get(self, req: falcon.asgi.Request) -> bool | None:
        raw = self.raw(req)
        if raw is None:
            return None
        if raw.lower() not in ("true", "false", "1", "0"):
            raise query_error(self.name, "Input should be a valid boolean", "bool_parsing")
        return raw.lower() in ("true", "1")


@dataclass(frozen=True, slots=True)
class Time(Param):
    """An ISO 8601 date-time or date (UTC unless it says otherwise), or Unix seconds."""

    name: str
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "description": "ISO 8601 date-time or Unix seconds"}

    def get(self, req: falcon.asgi.Request) -> float | None:
        raw = self.raw(req)
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            pass
        try:
            # A `+` in a query string may arrive as a space.
            when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
        except ValueError:
            raise query_error(
                self.name, "must be an ISO 8601 date-time or Unix seconds", "datetime_parsing"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()


def limit(default: int, most: int) -> Int:
    return Int("limit", default, 1, most, "page size")


OFFSET = Int("offset", 0, 0, 10**9, "rows to skip")
ORGANIZATION_ID = OptInt("organization_id", 1, MAX_ID, "only this organisation")


def parameters(params: Sequence[Param]) -> list[dict[str, Any]]:
    return [p.openapi() for p in params]
