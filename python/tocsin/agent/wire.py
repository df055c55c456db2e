"""What agents and the server exchange: result rows, batch bodies and their signature.

A batch body is `{"seq": n, "results": [row, …]}` as msgpack (JSON accepted), each row
a compact array (see `ROW_FIELDS`). The body is signed with HMAC-SHA256 keyed by the
SHA-256 of the agent's credential (what the server stores), sent as
`X-Tocsin-Signature: sha256=<hex>`: a body altered on the way is refused, and the
sequence number inside it cannot be changed to replay a batch as a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]
import orjson

from tocsin.models import RESULT_FIELDS, RESULT_TEXT_FIELDS, Result, Status, storable_text

AGENT_TOKEN_PREFIX = "agt_"  # noqa: S105  (public prefixes, not secrets)
REGISTRATION_TOKEN_PREFIX = "reg_"  # noqa: S105
SIGNATURE_HEADER = "X-Tocsin-Signature"
MSGPACK = "application/msgpack"
# The wire order of a row: the fields of the result record (tocsin.models.RESULT_FIELDS)
# but the source, which is the sending agent's. This order is the protocol agents
# speak, so it is written out here; every other layout is derived from the names.
ROW_FIELDS = (
    "check_id",
    "status",
    "started_at",
    "latency_ms",
    "due_at",
    "error_kind",
    "message",
    "status_code",
    "dns_ms",
    "connect_ms",
    "tls_ms",
    "first_byte_ms",
    "details_json",
)
if sorted(ROW_FIELDS) != sorted(f for f in RESULT_FIELDS if f != "source"):
    raise ImportError("ROW_FIELDS must be the result record's fields without the source")
# A field's position in a wire row.
AT = {name: i for i, name in enumerate(ROW_FIELDS)}
# Result.values() (record order) -> a wire row.
_RECORD_TO_ROW = operator.itemgetter(*(RESULT_FIELDS.index(f) for f in ROW_FIELDS))
# A wire row -> the record's fields after check_id and source (store order).
_ROW_TO_STORED = operator.itemgetter(*(AT[f] for f in RESULT_FIELDS[2:]))
# A wire row -> what the verdicts read: check, start, latency, status, kind, message.
_ROW_TO_VERDICT = operator.itemgetter(
    *(AT[f] for f in ("check_id", "started_at", "latency_ms", "status", "error_kind", "message"))
)
_STATUSES = {s.value: s for s in (Status.UP, Status.DOWN, Status.DEGRADED)}
MAX_ROWS = 50_000
# A status code is stored in a 32-bit column.
MAX_STATUS_CODE = 2**31 - 1


class BadBatchError(ValueError):
    def __init__(self, loc: list[str | int], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc


def signing_key(credential_hash: str) -> bytes:
    return credential_hash.encode()


def sign(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def signature_ok(key: bytes, body: bytes, header: str | None) -> bool:
    """Constant-time; compared as bytes (`compare_digest` refuses str with non-ASCII
    characters, which a client controls in the header)."""
    if header is None:
        return False
    given = header.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(sign(key, body).encode(), given)


def row(r: Result) -> list[Any]:
    return list(_RECORD_TO_ROW(r.values()))


def encode(seq: int, rows: Iterable[list[Any]]) -> bytes:
    data: bytes = msgpack.packb({"seq": seq, "results": list(rows)}, use_bin_type=True)
    return data


def decode(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The batch object; BadBatchError (with the location) when it is not one."""
    try:
        if content_type and "json" in content_type:
            # orjson: no recursion in Python on a deep document, and no unpaired
            # surrogate (which neither database can store) gets through.
            data = orjson.loads(body)
        else:
            data = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:
        raise BadBatchError([], f"undecodable body: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise BadBatchError([], "the body must be an object")
    return data


_INT, _FLOAT, _STR, _NONE = int, float, str, type(None)
_NUM = (_INT, _FLOAT)
_OPT_NUM = (_INT, _FLOAT, _NONE)
MAX_NUM = 1e15


@dataclass(slots=True)
class Batch:
    """A validated batch: its sequence number and its rows (`ROW_FIELDS` order)."""

    seq: int
    source: str
    rows: list[list[Any]]

    def store_rows(self, org_id: int) -> list[tuple[Any, ...]]:
        """The rows as the store writes them (`RESULT_COLUMNS` order)."""
        src = self.source
        stored = _ROW_TO_STORED
        return [(r[0], org_id, src, *stored(r)) for r in self.rows]

    def verdict_rows(self) -> list[tuple[int, float, float, str, str | None, str | None]]:
        """What the verdicts read: check, start, latency, status, error kind, message."""
        return [_ROW_TO_VERDICT(r) for r in self.rows]


def _well_formed(raw: list[Any], oldest: float, newest: float) -> bool:
    """Whether every row is valid, checked a column at a time (several times faster
    than row by row)."""
    width = len(ROW_FIELDS)
    if not raw:
        return True
    if not all(type(r) is list and len(r) == width for r in raw):
        return False
    cols = list(zip(*raw, strict=True))
    ids, statuses, started, latency, due, kinds, msgs, codes = cols[:8]
    if not all(type(x) is _INT for x in ids) or min(ids) < 1 or max(ids) >= 2**63:
        return False
    if not set(statuses) <= _STATUSES.keys():
        return False
    numeric = [(started, False), (latency, False), (due, True)]
    numeric += [(col, True) for col in cols[8:12]]
    for col, optional in numeric:
        allowed = _OPT_NUM if optional else _NUM
        if not all(type(x) in allowed for x in col):
            return False
        values = [x for x in col if x is not None] if optional else col
        # NaN compares false with itself; inf is above every limit.
        if values and (min(values) < 0 or max(values) > MAX_NUM or any(x != x for x in values)):
            return False
    if min(started) < oldest or max(started) > newest:
        return False
    if not all(type(x) in (_INT, _NONE) for x in codes):
        return False
    present = [c for c in codes if c is not None]
    if present and (min(present) < 0 or max(present) > MAX_STATUS_CODE):
        return False
    for col, limit in ((kinds, 100), (msgs, 2_000), (cols[12], 20_000)):
        if not all(x is None or (type(x) is _STR and len(x) <= limit) for x in col):
            return False
    return True


def _num(v: Any, loc: list[str | int], *, optional: bool = False) -> None:
    if v is None and optional:
        return
    if (
        isinstance(v, bool)
        or not isinstance(v, int | float)
        or not (0 <= v <= MAX_NUM)  # False for NaN
    ):
        raise BadBatchError(loc, "must be a non-negative number")


def _str(v: Any, loc: list[str | int], limit: int) -> None:
    if v is not None and (not isinstance(v, str) or len(v) > limit):
        raise BadBatchError(loc, f"must be a string of at most {limit} characters")


def _explain(raw: list[Any], oldest: float, newest: float) -> None:
    """Raise BadBatchError naming the first bad value."""
    for i, item in enumerate(raw):
        loc: list[str | int] = ["results", i]
        if not isinstance(item, list) or len(item) != len(ROW_FIELDS):
            raise BadBatchError(loc, f"must be an array of {len(ROW_FIELDS)} values")
        cid, status, started, latency, due, kind, msg, code, *phases, det = item
        if isinstance(cid, bool) or not isinstance(cid, int) or not 1 <= cid < 2**63:
            raise BadBatchError([*loc, 0], "must be a check id")
        if not isinstance(status, str) or status not in _STATUSES:
            raise BadBatchError([*loc, 1], "must be UP, DOWN or DEGRADED")
        _num(started, [*loc, 2])
        if not oldest <= started <= newest:
            raise BadBatchError([*loc, 2], "is too far in the past or the future")
        _num(latency, [*loc, 3])
        _num(due, [*loc, 4], optional=True)
        _str(kind, [*loc, 5], 100)
        _str(msg, [*loc, 6], 2_000)
        if type(code) not in (int, type(None)) or (
            code is not None and not 0 <= code <= MAX_STATUS_CODE
        ):
            raise BadBatchError([*loc, 7], "must be a status code")
        for j, x in enumerate(phases):
            _num(x, [*loc, 8 + j], optional=True)
        _str(det, [*loc, 12], 20_000)
    raise BadBatchError(["results"], "malformed results")


def parse(
    data: dict[str, Any], source: str, *, oldest: float = 0.0, newest: float = math.inf
) -> Batch:
    """The batch, its results attributed to `source`; a result that started before
    `oldest` or after `newest` is refused."""
    seq = data.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq < 2**63:
        raise BadBatchError(["seq"], "must be a positive integer")
    raw = data.get("results")
    if not isinstance(raw, list):
        raise BadBatchError(["results"], "must be an array")
    if len(raw) > MAX_ROWS:
        raise BadBatchError(["results"], f"at most {MAX_ROWS} results per batch")
    if not _well_formed(raw, oldest, newest):
        _explain(raw, oldest, newest)
    return Batch(seq, source, _storable(raw))


def _storable(raw: list[list[Any]]) -> list[list[Any]]:
    """The rows with U+0000 in their text as U+FFFD (as every result is stored, see
    `tocsin.models.storable_text`), and details that are not a JSON object left out: a
    probe's odd reply is kept, not refused (a refused batch would stay in the agent's
    spool), and cannot fail the store's write or a reader's parse."""
    text_at = [AT[f] for f in RESULT_TEXT_FIELDS]
    details_at = AT["details_json"]
    for r in raw:
        for i in text_at:
            value = r[i]
            if value is not None and "\x00" in value:
                r[i] = storable_text(value)
        details = r[details_at]
        if details is not None and not _json_object(details):
            r[details_at] = None  # readers parse it: it must be a JSON object
    return raw


def _json_object(text: str) -> bool:
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False
