"""Password hashing (argon2) and API tokens (random, shown once, stored as SHA-256)."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

TOKEN_PREFIX = "pat_"  # noqa: S105  (a public prefix, not a secret)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_password() -> str:
    return secrets.token_urlsafe(18)


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # APPSEC: tokens carry 256 bits of entropy, so a fast hash is enough here (no
    # dictionary to slow down); argon2 is for human-chosen passwords.
    return hashlib.sha256(token.encode()).hexdigest()
