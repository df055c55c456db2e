"""Password hashing (argon2), API tokens (random, shown once, stored as SHA-256) and
session tokens (JWT, HS256) signed with a key kept in the data directory."""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import re
import secrets
import time
from pathlib import Path
from typing import TypeGuard

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

TOKEN_PREFIX = "pat_"  # noqa: S105  (a public prefix, not a secret)

SESSION_KEY_FILE = "jwt.key"
SESSION_TTL = 24 * 3600.0
_SESSION_ALGORITHM = "HS256"
_SESSION_KEY_BYTES = 32
# The largest id the store holds (a signed 64-bit integer).
MAX_ID = 2**63 - 1
_SUB = re.compile(r"[1-9][0-9]{0,18}")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def burn_password_check(password: str) -> None:
    """Spend the time of one password verification, for an unknown user: a wrong email
    then costs as much as a wrong password and does not tell which accounts exist."""
    verify_password(_dummy_hash(), password)


def new_password() -> str:
    return secrets.token_urlsafe(18)


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # APPSEC: tokens carry 256 bits of entropy, so a fast hash is enough here (no
    # dictionary to slow down); argon2 is for human-chosen passwords.
    return hashlib.sha256(token.encode()).hexdigest()


def session_key(data_dir: Path) -> bytes:
    """The key sessions are signed with: `DATA_DIR/jwt.key`, 32 random bytes created
    (0600) on first use. APPSEC: kept out of the database, so a leaked database (or
    backup) cannot mint sessions."""
    path = data_dir / SESSION_KEY_FILE
    for _ in range(50):
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            pass
        else:
            if len(key) >= _SESSION_KEY_BYTES:
                return key
            # Another process has created the file and not yet written it.
            time.sleep(0.01)
            continue
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        key = secrets.token_bytes(_SESSION_KEY_BYTES)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key
    raise RuntimeError(f"{path} is shorter than {_SESSION_KEY_BYTES} bytes; remove it")


def password_stamp(password_hash: str) -> str:
    """A short digest of the password hash carried in sessions: changing the password
    ends every session issued before."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def issue_session(
    key: bytes, user_id: int, stamp: str, *, ttl: float = SESSION_TTL, now: float | None = None
) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"sub": str(user_id), "iat": issued, "exp": issued + int(ttl), "pwd": stamp}
    return jwt.encode(claims, key, algorithm=_SESSION_ALGORITHM)


def read_session(key: bytes, token: str) -> tuple[int, str] | None:
    """(user id, password stamp) of a valid, unexpired session; None otherwise."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[_SESSION_ALGORITHM],
            options={"require": ["sub", "exp", "iat"]},
        )
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
        return None
    # APPSEC: the claims are checked as strictly as any input: a user id is the decimal
    # string of an id the store can hold (1 … 2**63-1), never a number, a sign, spaces
    # or digits with underscores that int() would take.
    sub, stamp = claims.get("sub"), claims.get("pwd", "")
    if not isinstance(sub, str) or not _SUB.fullmatch(sub) or not isinstance(stamp, str):
        return None
    # A session lives SESSION_TTL at most: one that claims longer was not issued here.
    iat, exp = claims.get("iat"), claims.get("exp")
    if not (_number(iat) and _number(exp) and 0 < exp - iat <= SESSION_TTL):
        return None
    user_id = int(sub)
    if user_id > MAX_ID:
        return None
    return user_id, stamp


def _number(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def same_stamp(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
