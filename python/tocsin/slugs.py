"""Slugs: the lower-case names in URLs (organisations, teams, status pages)."""

from __future__ import annotations

import re
from typing import Final

# Lower-case letters and digits, inner hyphens, 1 to 64 characters.
SLUG_PATTERN: Final = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
SLUG_RE: Final = re.compile(SLUG_PATTERN)


def slugify(name: str) -> str:
    """`name` as a slug: letters and digits kept (lower-cased), every other run of
    characters one hyphen, at most 64 characters; "" when nothing is left."""
    out, dash = [], False
    for ch in name.lower():
        if "a" <= ch <= "z" or "0" <= ch <= "9":
            out.append(ch)
            dash = False
        elif out and not dash:
            out.append("-")
            dash = True
    return "".join(out).strip("-")[:64].strip("-")


def numbered(base: str, n: int) -> str:
    """The `n`th alternative of a taken slug (`base-2`, `base-3`…), within 64 characters."""
    suffix = f"-{n}"
    return base[: 64 - len(suffix)].rstrip("-") + suffix
