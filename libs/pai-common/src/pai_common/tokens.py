"""Short-lived signed tokens: compact JWS with EdDSA (Ed25519), verified against a JWKS.

Auth signs; every other service verifies locally with the public keys from auth's JWKS
method, refetching when it meets an unknown key id (after a rotation).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

ISSUER = "pai-auth"
AUDIENCE = "pai"
LEEWAY_SECONDS = 5
MAX_LIFETIME_SECONDS = 3600  # no token lives longer, whatever key signed it


class InvalidToken(ValueError):
    """The token is malformed, badly signed, expired or not for us."""


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515)."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    """Inverse of `b64url`; raises InvalidToken on garbage."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise InvalidToken("malformed base64url") from exc


def looks_like_token(credential: str) -> bool:
    """Whether a credential has the shape of a compact JWS (three dot-separated parts)."""
    return credential.count(".") == 2 and not credential.startswith("pai_")


def sign(claims: Mapping[str, Any], key: Ed25519PrivateKey, kid: str) -> str:
    """A compact JWS of `claims` signed with `key`."""
    header = b64url(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": kid}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(dict(claims), separators=(",", ":"), sort_keys=True).encode())
    signature = key.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{b64url(signature)}"


def public_jwk(key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The RFC 8037 JWK of a public key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(raw),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except ValueError as exc:  # JSON or UTF-8 errors
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("malformed token")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), b64url_decode(parts[2])


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a token already verified elsewhere (for its expiry); never for decisions."""
    return _split(token)[1]


def verify(token: str, keys: Mapping[str, Ed25519PublicKey], now: float | None = None) -> dict[str, Any]:
    """The claims of a valid token; InvalidToken for anything else."""
    header, claims, signed, signature = _split(token)
    if header.get("alg") != "EdDSA":
        raise InvalidToken("unsupported algorithm")
    key = keys.get(str(header.get("kid")))
    if key is None:
        raise InvalidToken("unknown signing key")
    try:
        key.verify(signature, signed)
    except InvalidSignature as exc:
        raise InvalidToken("bad signature") from exc
    now = time.time() if now is None else now
    if claims.get("iss") != ISSUER or claims.get("aud") != AUDIENCE:
        raise InvalidToken("token not issued for pai")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, (int, float)) or now > exp + LEEWAY_SECONDS:
        raise InvalidToken("token expired")
    if not isinstance(iat, (int, float)) or exp - iat > MAX_LIFETIME_SECONDS or iat > now + LEEWAY_SECONDS:
        raise InvalidToken("token lifetime out of bounds")
    return claims


@dataclass
class _KeySet:
    keys: dict[str, Ed25519PublicKey]
    fetched_at: float


class TokenVerifier:
    """Verifies tokens locally with keys from a JWKS source, refetching on an unknown kid."""

    def __init__(
        self,
        fetch_jwks: Callable[[], Awaitable[list[Mapping[str, str]]]],
        min_refresh: float = 5.0,
    ) -> None:
        self._fetch = fetch_jwks
        self._min_refresh = min_refresh
        self._keys = _KeySet({}, 0.0)

    async def _refresh(self) -> None:
        if time.monotonic() - self._keys.fetched_at < self._min_refresh and self._keys.keys:
            return
        jwks = await self._fetch()
        keys = {
            jwk["kid"]: Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
            for jwk in jwks
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519"
        }
        self._keys = _KeySet(keys, time.monotonic())

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; InvalidToken otherwise."""
        header, _, _, _ = _split(token)
        if str(header.get("kid")) not in self._keys.keys:
            await self._refresh()
        return verify(token, self._keys.keys)
