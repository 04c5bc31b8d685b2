"""Authentication and authorization: credentials to principals, decisions, signed tokens, JWKS."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import pathlib
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from pai_auth import mapping
from pai_auth.db.uow import UnitOfWork, UnitOfWorkFactory
from pai_auth.domain import keys, policy
from pai_auth.domain.model import ApiKeyState, Principal, SigningKey, UserState
from pai_common import tokens
from pai_common.clock import utcnow

log = logging.getLogger(__name__)

DEFAULT_TOKEN_TTL = 300
MAX_TOKEN_TTL = 3600
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)  # at most one last-used write per key a minute
RECENT_SECONDS = 5.0  # how long a checked API key is trusted without looking again
TOKEN_REUSE_SECONDS = 60.0  # a minted token is handed out again while it is this fresh
KEY_REFRESH_SECONDS = 30.0  # how stale another replica's rotation may look when signing
UNKNOWN_KID_REFRESH_SECONDS = 5.0  # unknown key ids reload at most this often (no DoS by garbage kids)


class Denied(Exception):
    """A credential or permission was refused; `reason` is a DenialReason name."""

    def __init__(self, reason: str, message: str, principal: Principal | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.principal = principal


@dataclass(frozen=True)
class Grant:
    principal: Principal
    token: str = ""
    token_expire_time: dt.datetime | None = None


def _load_kek(path: pathlib.Path) -> Fernet:
    """The key that encrypts signing keys at rest; the database alone cannot sign tokens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Fernet(path.read_bytes().strip())
    except FileNotFoundError:
        key = Fernet.generate_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return Fernet(key)


class AccessUseCases:
    def __init__(self, uow: UnitOfWorkFactory, kek_path: pathlib.Path) -> None:
        self._uow = uow
        self._kek = _load_kek(kek_path)
        self._signing: tuple[str, Ed25519PrivateKey] | None = None
        self._public: dict[str, Ed25519PublicKey] = {}
        self._retired: dict[str, dt.datetime | None] = {}
        self._loaded_at = 0.0
        # Successful key checks and minted tokens, remembered briefly: a gateway in front of a
        # busy endpoint asks about the same key many times a second. Any committed change in
        # this process forgets them at once; other replicas see changes within RECENT_SECONDS.
        self._recent: dict[str, tuple[float, Principal]] = {}
        self._lookups: dict[str, asyncio.Future[Principal]] = {}
        self._tokens: dict[tuple[str, bool, tuple[tuple[str, str], ...]], tuple[str, dt.datetime]] = {}

    # signing keys ----------------------------------------------------------------
    async def load_keys(self) -> None:
        """Load signing keys, creating the first one on first start."""
        async with self._uow() as uow:
            keys = await uow.repo.signing_keys()
            if not keys:
                await uow.repo.add_signing_key(self._new_key())
                await uow.commit()
                keys = await uow.repo.signing_keys()
            self._install(keys)
        self._loaded_at = time.monotonic()

    async def _refresh_keys(self, older_than: float) -> None:
        """Reload keys at most every `older_than` seconds: another replica may have rotated."""
        if time.monotonic() - self._loaded_at >= older_than:
            await self.load_keys()

    def _new_key(self) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return SigningKey(
            kid=uuid.uuid4().hex[:16],
            public_key=private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            private_key_encrypted=self._kek.encrypt(raw),
            create_time=utcnow(),
            retire_time=None,
        )

    def _install(self, keys: Sequence[SigningKey]) -> None:
        active = next(k for k in keys if k.retire_time is None)
        private = Ed25519PrivateKey.from_private_bytes(self._kek.decrypt(active.private_key_encrypted))
        self._signing = (active.kid, private)
        self._public = {k.kid: Ed25519PublicKey.from_public_bytes(k.public_key) for k in keys}
        self._retired = {k.kid: k.retire_time for k in keys}

    async def rotate(self) -> str:
        """Sign with a new key from now on; old keys verify until their tokens have expired."""
        key = self._new_key()
        kid = key.kid
        async with self._uow() as uow:
            await uow.repo.add_signing_key(key)
            await uow.repo.retire_signing_keys(kid, utcnow())
            await uow.outbox.add(mapping.signing_key_rotated(kid))
            await uow.commit()
            self._install(await uow.repo.signing_keys())
        self._loaded_at = time.monotonic()
        return kid

    def _live_keys(self) -> dict[str, Ed25519PublicKey]:
        """Keys that may have signed a token still alive: the active one and those retired recently.

        A key retired longer ago than the longest token lifetime verifies nothing, even in auth.
        """
        horizon = utcnow() - dt.timedelta(seconds=MAX_TOKEN_TTL + tokens.LEEWAY_SECONDS)
        live = {}
        for kid, key in self._public.items():
            retired = self._retired.get(kid)
            if retired is None or retired > horizon:
                live[kid] = key
        return live

    def jwks(self) -> list[dict[str, str]]:
        """The public keys of `_live_keys`, as JWKs."""
        return [tokens.public_jwk(key, kid) for kid, key in self._live_keys().items()]

    async def issue_token(
        self, principal: Principal, ttl: int = DEFAULT_TOKEN_TTL
    ) -> tuple[str, dt.datetime]:
        """A signed token for a principal authenticated by an API key (never by another token)."""
        await self._refresh_keys(KEY_REFRESH_SECONDS)
        assert self._signing is not None, "load_keys() runs at start"
        kid, key = self._signing
        now = int(time.time())
        ttl = min(max(ttl or DEFAULT_TOKEN_TTL, 1), MAX_TOKEN_TTL)
        claims = {
            "iss": tokens.ISSUER,
            "aud": tokens.AUDIENCE,
            "sub": principal.name,
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_hex(8),
            "padm": principal.platform_admin,
            "roles": principal.roles,
        }
        return tokens.sign(claims, key, kid), dt.datetime.fromtimestamp(now + ttl, dt.UTC)

    # authentication ---------------------------------------------------------------
    async def authenticate(self, credential: str) -> Principal:
        """The principal behind an API key or a signed token; Denied otherwise."""
        if not credential:
            raise Denied("CREDENTIAL_MISSING", "no credential presented")
        if tokens.looks_like_token(credential):
            return await self._from_token(credential)
        prefix = keys.parse(credential)
        if prefix is None:
            raise Denied("CREDENTIAL_INVALID", "the credential is not a pai API key or token")
        digest = keys.digest(credential)
        hit = self._recent.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        # One lookup per key at a time: when a remembered check expires under load, every
        # concurrent request for that key waits for the same lookup instead of stampeding SQLite.
        running = self._lookups.get(digest)
        if running is not None:
            return await asyncio.shield(running)
        lookup = asyncio.get_running_loop().create_future()
        self._lookups[digest] = lookup
        try:
            principal = await self._lookup_key(credential, prefix, digest)
        except asyncio.CancelledError:
            lookup.cancel()
            raise
        except Exception as error:
            lookup.set_exception(error)
            lookup.exception()  # retrieved here; waiters re-raise it themselves
            raise
        else:
            lookup.set_result(principal)
            return principal
        finally:
            del self._lookups[digest]

    async def _lookup_key(self, credential: str, prefix: str, digest: str) -> Principal:
        now = utcnow()
        async with self._uow() as uow:
            key = await uow.repo.api_key_by_prefix(prefix)
            if key is None or not keys.matches(credential, key.secret_hash):
                raise Denied("CREDENTIAL_INVALID", "unknown API key")
            state = key.state(now)
            if state != ApiKeyState.ACTIVE:
                raise Denied("CREDENTIAL_INVALID", f"the API key is {state.value.lower()}")
            principal = await self._principal(uow, key.owner)
            if key.last_used_time is None or now - key.last_used_time > LAST_USED_RESOLUTION:
                await uow.repo.touch_api_key(key.uid, now)
                await uow.commit()
        until = time.monotonic() + RECENT_SECONDS
        if key.expire_time is not None:
            until = min(until, time.monotonic() + (key.expire_time - now).total_seconds())
        if len(self._recent) > 10_000:
            self._recent.clear()
        self._recent[digest] = (until, principal)
        return principal

    def forget(self) -> None:
        """Drop remembered authentications and tokens: something about principals changed."""
        self._recent.clear()
        self._tokens.clear()

    async def _from_token(self, token: str) -> Principal:
        """The principal a token names. Its claims hold until it expires (at most MAX_TOKEN_TTL)."""
        try:
            claims = tokens.verify(token, self._live_keys())
        except tokens.InvalidToken as exc:
            if str(exc) != "unknown signing key":
                raise Denied("CREDENTIAL_INVALID", f"invalid token: {exc}") from exc
            await self._refresh_keys(UNKNOWN_KID_REFRESH_SECONDS)  # another replica may have rotated
            try:
                claims = tokens.verify(token, self._live_keys())
            except tokens.InvalidToken as again:
                raise Denied("CREDENTIAL_INVALID", f"invalid token: {again}") from again
        roles = claims.get("roles")
        return Principal(
            name=str(claims.get("sub", "")),
            platform_admin=bool(claims.get("padm")),
            roles={str(k): str(v) for k, v in roles.items()} if isinstance(roles, dict) else {},
        )

    async def _principal(self, uow: UnitOfWork, owner: str) -> Principal:
        if owner.startswith("users/"):
            user = await uow.repo.get_user(owner.split("/")[1])
            if user is None:
                raise Denied("CREDENTIAL_INVALID", "the key's user no longer exists")
            if user.state != UserState.ACTIVE:
                raise Denied("PRINCIPAL_DISABLED", f"{owner} is disabled")
            roles = {f"workspaces/{m.workspace_id}": m.role for m in await uow.repo.memberships_of(user.id)}
            return Principal(owner, user.platform_admin, roles)
        parts = owner.split("/")
        account = await uow.repo.get_service_account(parts[1], parts[3])
        if account is None:
            raise Denied("CREDENTIAL_INVALID", "the key's service account no longer exists")
        return Principal(owner, False, {f"workspaces/{account.workspace_id}": account.role})

    # authorization ------------------------------------------------------------------
    async def authorize(
        self,
        credential: str,
        scope: int,
        permission: str,
        resource: str,
        issue_token: bool = False,
    ) -> Grant:
        """Authenticate, then decide on the permission alone (never on existence)."""
        principal = await self.authenticate(credential)
        if scope == 0:
            raise Denied("RULE_MISSING", "the method declares no authorization rule", principal)
        decision = policy.decide(principal, scope, permission, resource)
        if not decision.allowed:
            raise Denied("PERMISSION_MISSING", decision.message, principal)
        if not issue_token:
            return Grant(principal)
        if tokens.looks_like_token(credential):
            # A token is forwarded as it is, never renewed: revoking the key behind it, or
            # disabling its user, takes effect when it expires.
            return Grant(principal, credential, _expiry(credential))
        cache_key = (principal.name, principal.platform_admin, tuple(sorted(principal.roles.items())))
        cached = self._tokens.get(cache_key)
        if (
            cached is not None
            and (cached[1] - utcnow()).total_seconds() > DEFAULT_TOKEN_TTL - TOKEN_REUSE_SECONDS
        ):
            return Grant(principal, cached[0], cached[1])
        token, expires = await self.issue_token(principal)
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[cache_key] = (token, expires)
        return Grant(principal, token, expires)


def _expiry(token: str) -> dt.datetime | None:
    exp = tokens.unverified_claims(token).get("exp")
    return dt.datetime.fromtimestamp(exp, dt.UTC) if isinstance(exp, (int, float)) else None
