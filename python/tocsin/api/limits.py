"""Input limits in one place: how large and how deep a JSON document may be, and which
text no field may hold. Every JSON body, query string and path goes through these
before a handler sees it, so both database backends receive the same text: PostgreSQL
cannot store U+0000 (SQLite can), and neither can store a lone UTF-16 surrogate as
UTF-8. Integer ids are bounded where they are declared (`schemas.Id`)."""

from __future__ import annotations

import re
from typing import Any

import orjson

# Request bodies of the JSON API (agents' result batches have their own, larger cap).
MAX_BODY = 1 << 20
# Nesting of a JSON document: API bodies are a few levels deep; 32 leaves room for
# clients' free-form settings objects. The parser itself stops at 1,024 (orjson's
# fixed limit) without recursion in Python, so a deep document never reaches a
# RecursionError.
MAX_DEPTH = 32
# Characters a text field may not hold: NUL and the surrogate code points.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The JSON escapes that can produce one of them.
_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


class InputError(ValueError):
    """Input refused before any handler: `loc` is where (e.g. ["body", "name"])."""

    def __init__(self, loc: list[str | int], msg: str, kind: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg
        self.kind = kind


def text_problem(text: str) -> str | None:
    """Why a text cannot be accepted, or None."""
    m = _UNSTORABLE.search(text)
    if m is None:
        return None
    char = m.group()
    if char == "\x00":
        return "must not contain the NUL character (U+0000)"
    return f"must not contain the unpaired surrogate U+{ord(char):04X}"


class MalformedJson(ValueError):
    """Not JSON at all (or deeper than the parser goes): a 400."""


def parse_json(data: bytes) -> Any:
    """A JSON document, checked: MalformedJson if it is not one (NaN, Infinity and lone
    surrogates included) or is nested deeper than MAX_DEPTH; InputError at the first
    string or key that cannot be stored."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():
            raise MalformedJson(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        raise MalformedJson(str(exc)) from None
    # PERF: raw control characters and surrogates are not valid JSON text, so a string
    # can only hold one through a \u escape; without such an escape only the depth of
    # the containers is walked.
    check_tree(doc, ["body"], texts=_ESCAPE.search(data) is not None)
    return doc


def check_tree(doc: Any, root: list[str | int], *, texts: bool = True) -> None:
    """Depth and text of a decoded document, without recursion (a deep document
    cannot exhaust the stack here). Paths are built only for an error."""
    # (value, depth, trail): a trail is (parent trail, key), None at the root.
    stack: list[tuple[Any, int, Any]] = [(doc, 0, None)]
    while stack:
        value, depth, trail = stack.pop()
        if isinstance(value, str):
            if not texts:
                continue
            problem = text_problem(value)
            if problem is not None:
                raise InputError(_loc(root, trail), problem, "string_unstorable")
        elif isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise MalformedJson(f"JSON nested deeper than {MAX_DEPTH} levels")
            for key, item in value.items():
                if texts and isinstance(key, str) and (problem := text_problem(key)) is not None:
                    raise InputError(
                        _loc(root, (trail, key)), f"key {problem}", "string_unstorable"
                    )
                if isinstance(item, dict | list) or (texts and isinstance(item, str)):
                    stack.append((item, depth + 1, (trail, key)))
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise MalformedJson(f"JSON nested deeper than {MAX_DEPTH} levels")
            stack.extend(
                (item, depth + 1, (trail, i))
                for i, item in enumerate(value)
                if isinstance(item, dict | list) or (texts and isinstance(item, str))
            )


def _loc(root: list[str | int], trail: Any) -> list[str | int]:
    keys: list[str | int] = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    return [*root, *reversed(keys)]
