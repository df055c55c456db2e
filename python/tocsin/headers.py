"""Request headers a user configures (a check's `http_headers`, a webhook channel's
`headers`), validated once for every place that sends them: names are HTTP tokens,
values hold no CR, LF, NUL or other control character (a header value with a line
break would inject headers of its own)."""

from __future__ import annotations

import re
from typing import Any

MAX_HEADERS = 50
MAX_NAME = 100
MAX_VALUE = 8192
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Visible characters, spaces and tabs (RFC 9110 field-value); no other control.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def valid_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers unchanged, or ValueError naming the first bad one."""
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    for name, value in headers.items():
        if len(name) > MAX_NAME or not _NAME.fullmatch(name):
            raise ValueError(f"bad header name {name!r}")
        if len(value) > MAX_VALUE:
            raise ValueError(f"the value of header {name} is longer than {MAX_VALUE} characters")
        if _BAD_VALUE.search(value):
            raise ValueError(f"the value of header {name} holds a line break or control character")
    return headers


def merge_masked(sent: dict[str, Any], stored: dict[str, str], mask: str) -> dict[str, Any]:
    """Headers sent back over stored ones whose values are answered masked: a value
    equal to `mask` keeps the stored value (dropped if there is none), `""` removes the
    header, anything else replaces it."""
    out: dict[str, Any] = {}
    for name, value in sent.items():
        if value == mask:
            if name in stored:
                out[name] = stored[name]
        elif value != "":
            out[name] = value
    return out
