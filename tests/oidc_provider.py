"""A small OpenID Connect provider on loopback for the tests: the discovery document,
a JWKS with a real RSA signing key (and its X.509 certificate, `x5c`, with the validity
a test asks for), and a token endpoint for the client-credentials grant (HTTP Basic or
form client authentication) that answers a signed JWT."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
import time
from typing import Any

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from helpers import free_port


def _b64u(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class OidcProvider:
    def __init__(
        self,
        *,
        client_id: str = "monitor",
        client_secret: str = "monitor-secret",  # noqa: S107  a test provider's
        key_valid_days: float = 365,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.port = free_port()
        self.client_id = client_id
        self.client_secret = client_secret
        self.ssl = ssl_context
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tocsin test signing key")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=key_valid_days))
            .sign(self.key, hashes.SHA256())
        )
        self.tokens_issued = 0
        self.issuer_override: str | None = None
        self.hide: set[str] = set()
        self._runner: web.AppRunner | None = None

    @property
    def issuer(self) -> str:
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://localhost:{self.port}"

    async def discovery(self, request: web.Request) -> web.Response:
        doc = {
            "issuer": self.issuer_override or self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
        }
        for key in self.hide:
            doc.pop(key, None)
        return web.json_response(doc)

    async def jwks(self, request: web.Request) -> web.Response:
        numbers = self.key.public_key().public_numbers()
        der = self.cert.public_bytes(serialization.Encoding.DER)
        jwk: dict[str, Any] = {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": "k1",
            "n": _b64u(numbers.n),
            "e": _b64u(numbers.e),
            "x5c": [base64.b64encode(der).decode()],
        }
        return web.json_response({"keys": [jwk]})

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if (client_id, secret) != (self.client_id, self.client_secret):
            return web.json_response({"error": "invalid_client"}, status=401)
        self.tokens_issued += 1
        now = int(time.time())
        token = jwt.encode(
            {"iss": self.issuer, "sub": client_id, "aud": client_id, "iat": now, "exp": now + 300},
            self.key,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 300})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_post("/token", self.token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
