"""API key secrets: `pai_<prefix>_<secret>`, 32 random bytes, stored only as a SHA-256 hash.

The prefix is visible and indexes the lookup; the hash is compared in constant time. With
256 bits of entropy a fast hash is safe: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

PREFIX_ALPHABET = string.ascii_lowercase + string.digits
KEY_FORMAT = re.compile(r"^pai_(?P<prefix>[A-Za-z0-9]{8})_(?P<secret>[A-Za-z0-9_-]{43})$")


def generate() -> tuple[str, str]:
    """A new key as (prefix, full secret)."""
    prefix = "".join(secrets.choice(PREFIX_ALPHABET) for _ in range(8))
    body = secrets.token_urlsafe(32)  # 32 bytes -> 43 characters
    return prefix, f"pai_{prefix}_{body}"


def parse(secret: str) -> str | None:
    """The prefix of a well-formed key, or None."""
    match = KEY_FORMAT.match(secret)
    return match.group("prefix") if match else None


def digest(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, stored_digest: str) -> bool:
    """Constant-time comparison of a presented key with the stored hash."""
    return hmac.compare_digest(digest(secret), stored_digest)
