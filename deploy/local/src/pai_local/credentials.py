"""The bootstrap admin key and `$PAI_HOME/credentials`, which the `pai` CLI reads."""

from __future__ import annotations

import os
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError

# auth's API key format: `pai_<8-char lookup prefix>_<32 random bytes, base64url, unpadded>`.
API_KEY_PATTERN = re.compile(r"^pai_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}$")
_PREFIX_ALPHABET = string.ascii_letters + string.digits


def generate_admin_key() -> str:
    """A new API key in auth's format."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
    return f"pai_{prefix}_{secrets.token_urlsafe(32)}"


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by the owner only, from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the tmp file may have existed with a looser mode
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Bootstrap:
    """The outcome of preparing the credentials file before auth starts."""

    api_key: str | None  # passed to auth as PAI_BOOTSTRAP_ADMIN_KEY; None: pass nothing
    created: bool  # a new key: print it once
    warning: str | None = None


def prepare_credentials(path: Path, auth_home: Path, endpoint: str, env_key: str | None) -> Bootstrap:
    """Keep or create the admin key, and point `endpoint` at auth's current address.

    Written before auth starts, so that a key auth bootstraps with is never lost.
    """
    if path.exists():
        return _update_endpoint(path, endpoint)
    if auth_home.exists():
        # auth already has its admin; a key made up now would not work.
        return Bootstrap(
            None,
            created=False,
            warning=f"{path} is missing and auth was initialised before: "
            "use `pai login` with an API key you have",
        )
    key = env_key.strip() if env_key and env_key.strip() else generate_admin_key()
    if not API_KEY_PATTERN.match(key):
        return Bootstrap(None, created=False, warning="PAI_BOOTSTRAP_ADMIN_KEY is not a pai API key; ignored")
    document = tomlkit.document()
    document.add(tomlkit.comment("Written by `make up` (pai-local); the pai CLI reads it."))
    document.add("endpoint", endpoint)
    document.add("api_key", key)
    write_private(path, tomlkit.dumps(document))
    return Bootstrap(key, created=True)


def _update_endpoint(path: Path, endpoint: str) -> Bootstrap:
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except (OSError, TOMLKitError) as error:
        return Bootstrap(None, created=False, warning=f"cannot read {path}: {error}; left as it is")
    key = document.get("api_key")
    if document.get("endpoint") != endpoint:
        # tomlkit keeps whatever else is in the file (comments, a profile `pai login` added).
        document["endpoint"] = endpoint
        write_private(path, tomlkit.dumps(document))
    elif path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return Bootstrap(str(key) if isinstance(key, str) else None, created=False)
