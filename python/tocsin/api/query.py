"""Query parameters, declared once: each parameter is an object that reads and validates
itself from a request (422 naming `["query", name]` when it is wrong) and describes
itself for the OpenAPI document. A resource lists what each responder takes in
`query_params = {"get": (LIMIT, OFFSET, …)}` (keys as in `body_models`).

What a parameter accepts and what its schema says are the same rule: an empty value is
no value (`allowEmptyValue`), integers are ASCII digits, times match `TIME_PATTERN`
before they are parsed, and choices are matched in any letter case (the schema's
pattern says so). Path parameters that need more than the route's converter (a choice
of words) are `PathChoice` objects, listed in `path_params` and checked by the
responder."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import falcon.asgi

from tocsin.api.errors import ValidationFailed, query_error

MAX_ID = 2**63 - 1
MAX_TEXT = 500
# At most 20 digits: beyond a BIGINT anyway, and int() of thousands is refused by Python.
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_NUMBER = r"-?[0-9]+(\.[0-9]+)?"
_YEAR = r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
# Days per month; 29 February of a common year is the one date it lets through.
_MONTH_DAY = (
    r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])"
    r"|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-9]))"
)
_DATE = f"{_YEAR}-{_MONTH_DAY}"
_CLOCK = r"([01][0-9]|2[0-3])(:[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?)?"
_OFFSET = r"(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)"
# What a time parameter accepts: Unix seconds, or an ISO 8601 date or date-time (UTC
# unless it has an offset). A valid JSON Schema (ECMA) pattern and a Python one alike.
TIME_PATTERN = rf"^({_NUMBER}|{_DATE}(T{_CLOCK}{_OFFSET}?)?)$"
_TIME = re.compile(TIME_PATTERN)
BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False}
_REGEX_SPECIAL = frozenset("\\^$.|?*+()[]{}")


def caseless(words: Sequence[str]) -> str:
    """A pattern matching exactly one of `words` in any letter case (JSON Schema patterns
    have no case-insensitive flag): `GET` becomes `[Gg][Ee][Tt]`."""

    def char(c: str) -> str:
        if c.isascii() and c.isalpha():
            return f"[{c.upper()}{c.lower()}]"
        return "\\" + c if c in _REGEX_SPECIAL else c

    return "^(" + "|".join("".join(char(c) for c in w) for w in words) + ")$"


class Param:
    name: str
    description: str

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def openapi(self) -> dict[str, Any]:
        # An empty value (`?status=`) is read as no value.
        out: dict[str, Any] = {
            "name": self.name,
            "in": "query",
            "schema": self.schema(),
            "allowEmptyValue": True,
        }
        if self.description:
            out["description"] = self.description
        return out

    def raw(self, req: falcon.asgi.Request) -> str | None:
        """The value as sent; None when absent or empty."""
        value = req.get_param(self.name)
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
        if not _INTEGER.fullmatch(raw):
            raise query_error(self.name, "Input should be a valid integer", "int_parsing")
        value = int(raw)
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


def choice_schema(choices: Sequence[str]) -> dict[str, Any]:
    """One of `choices` in any letter case: the enum for readers and client generators,
    the pattern for what is accepted."""
    return {
        "type": "string",
        "anyOf": [{"enum": list(choices)}, {"pattern": caseless(choices)}],
    }


@dataclass(frozen=True, slots=True)
class Text(Param):
    """Free text (surrounding whitespace removed; only whitespace is no value), or one
    of `choices` (matched case-insensitively, returned as given in `choices`)."""

    name: str
    description: str = ""
    choices: tuple[str, ...] = ()
    max_length: int = MAX_TEXT

    def schema(self) -> dict[str, Any]:
        if self.choices:
            return choice_schema(self.choices)
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
        raw = raw.strip()
        if not raw:
            return None
        if len(raw) > self.max_length:
            raise query_error(self.name, f"must be at most {self.max_length} characters")
        return raw


@dataclass(frozen=True, slots=True)
class Bool(Param):
    name: str
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return {
            "type": "boolean",
            "description": "`true` or `false`; `1` and `0` mean the same, in any letter case",
            "x-query-values": list(BOOL_WORDS),
        }

    def get(self, req: falcon.asgi.Request) -> bool | None:
        raw = self.raw(req)
        if raw is None:
            return None
        value = BOOL_WORDS.get(raw.lower())
        if value is None:
            raise query_error(self.name, "Input should be a valid boolean", "bool_parsing")
        return value


@dataclass(frozen=True, slots=True)
class Time(Param):
    """An ISO 8601 date-time or date (UTC unless it says otherwise), or Unix seconds."""

    name: str
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return {
            "type": "string",
            "pattern": TIME_PATTERN,
            "description": "Unix seconds, or an ISO 8601 date or date-time (UTC unless it"
            " has an offset), e.g. 2024-05-01T12:00:00Z; 29 February only in a leap year",
        }

    def get(self, req: falcon.asgi.Request) -> float | None:
        raw = self.raw(req)
        if raw is None:
            return None
        # A `+` in a query string arrives as a space unless it was encoded.
        raw = raw.replace(" ", "+")
        if not _TIME.fullmatch(raw):
            raise query_error(
                self.name, "must be an ISO 8601 date-time or Unix seconds", "datetime_parsing"
            )
        try:
            return float(raw)
        except ValueError:
            pass
        try:
            when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:  # 29 February of a common year
            raise query_error(
                self.name, "must be an ISO 8601 date-time or Unix seconds", "datetime_parsing"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()


@dataclass(frozen=True, slots=True)
class PathChoice:
    """A path parameter that is one of `choices` (exactly as given). The route's
    resource lists it in `path_params` so the document says so; the responder calls
    `check` (422 naming `["path", name]`)."""

    name: str
    choices: tuple[str, ...]
    description: str = ""

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "enum": list(self.choices)}
        if self.description:
            out["description"] = self.description
        return out

    def check(self, value: str) -> str:
        if value not in self.choices:
            raise ValidationFailed(
                [
                    {
                        "loc": ["path", self.name],
                        "msg": f"must be one of {', '.join(self.choices)}",
                        "type": "enum",
                    }
                ]
            )
        return value


def limit(default: int, most: int) -> Int:
    return Int("limit", default, 1, most, "page size")


OFFSET = Int("offset", 0, 0, 10**9, "rows to skip")
ORGANIZATION_ID = OptInt("organization_id", 1, MAX_ID, "only this organisation")


def parameters(params: Sequence[Param]) -> list[dict[str, Any]]:
    return [p.openapi() for p in params]
