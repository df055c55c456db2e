"""Secrets at rest: check passwords, channel credentials and tokens inside stored configs
are encrypted (Fernet: AES-128-CBC with HMAC-SHA256) with a key that never enters the
database: `TOCSIN_SECRET_KEY` from the environment, or `DATA_DIR/secret.key` created on
first start with mode 0600."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger("tocsin.encryption")

ENV_KEY = "TOCSIN_SECRET_KEY"
KEY_FILE = "secret.key"
PREFIX = "enc:v1:"

# Config keys whose string values are secrets, at any depth of a config object.
SECRET_KEYS = frozenset(
    {
        "auth_password",
        "auth_bearer_token",
        "db_password",
        "ftp_password",
        "client_secret",
        "password",
        "smtp_password",
        "token",
        "bot_token",
        "api_key",
        "routing_key",
        "integration_key",
        "secret",
        "webhook_url",
        "url_with_key",
    }
)

# Config keys holding a mapping whose every string value is a secret (request headers
# carry `Authorization` and API keys under names of the user's choosing).
SECRET_MAPS = frozenset({"headers", "http_headers", "api_scenario_secrets"})


class SecretKeyError(RuntimeError):
    """The key is missing, malformed, or does not decrypt what is stored."""


class SecretBox:
    """Encrypts and decrypts secret strings. Several keys (comma-separated in
    `TOCSIN_SECRET_KEY`) allow rotation: the first encrypts, any of them decrypts."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no encryption key given")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(
                f"invalid encryption key ({exc}); generate one with"
                " `python -c 'from cryptography.fernet import Fernet;"
                " print(Fernet.generate_key().decode())'`"
            ) from None

    @classmethod
    def generate(cls) -> SecretBox:
        return cls([Fernet.generate_key()])

    @classmethod
    def from_environment(cls, data_dir: Path) -> SecretBox:
        """The key from `TOCSIN_SECRET_KEY`, else from `DATA_DIR/secret.key`, created
        (0600) when neither exists."""
        env = os.environ.get(ENV_KEY, "").strip()
        if env:
            return cls([k.strip().encode() for k in env.split(",") if k.strip()])
        path = data_dir / KEY_FILE
        try:
            return cls([path.read_bytes().strip()])
        except FileNotFoundError:
            pass
        key = Fernet.generate_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once must not write two different keys.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls([path.read_bytes().strip()])
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
        log.warning("created the encryption key for secrets at rest: %s (keep a backup)", path)
        return cls([key])

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, value: str) -> str:
        if not value.startswith(PREFIX):
            return value  # written before encryption, or not a secret
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                f"a stored secret does not decrypt with the configured key ({ENV_KEY} or"
                f" {KEY_FILE}); was the key changed?"
            ) from None

    def seal(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `config` with every non-empty secret string encrypted."""
        return {k: self._seal_value(k, v) for k, v in config.items()}

    def unseal(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `config` with every encrypted string decrypted."""
        return {k: self._unseal_value(v) for k, v in config.items()}

    def _seal_value(self, key: str, value: Any) -> Any:
        if isinstance(value, dict):
            if key in SECRET_MAPS:
                return {k: self._seal_secret(v) for k, v in value.items()}
            return self.seal(value)
        if key in SECRET_KEYS and isinstance(value, str) and value and not value.startswith(PREFIX):
            return self.encrypt(value)
        return value

    def _seal_secret(self, value: Any) -> Any:
        if isinstance(value, str) and value and not value.startswith(PREFIX):
            return self.encrypt(value)
        return value

    def _unseal_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.unseal(value)
        if isinstance(value, str) and value.startswith(PREFIX):
            return self.decrypt(value)
        return value
