"""Where pai is and who we are: flags, then `PAI_*` variables, then `$PAI_HOME/credentials`.

The credentials file is TOML with `endpoint`, `api_key` and optionally `workspace`; `make up`
writes it and `pai login` updates it, keeping whatever else is in it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from pai_cli.errors import CliError

DEFAULT_WORKSPACE = "default"
NOT_LOGGED_IN = "not logged in: run `pai login` or `make up`"


def pai_home(env: Mapping[str, str]) -> Path:
    """`PAI_HOME`, default `~/.pai`."""
    return Path(env.get("PAI_HOME") or "~/.pai").expanduser()


def credentials_path(env: Mapping[str, str]) -> Path:
    """`$PAI_HOME/credentials`."""
    return pai_home(env) / "credentials"


def read_credentials(path: Path) -> dict[str, Any]:
    """The credentials file as a dict; empty when there is none."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise CliError(f"cannot read {path}: {error}") from error


def write_credentials(path: Path, values: Mapping[str, str]) -> None:
    """Set `values` in the credentials file, keeping its other keys; owner-only from the first byte."""
    document: tomlkit.TOMLDocument
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = tomlkit.document()
        document.add(tomlkit.comment("pai credentials (written by `pai login` / `make up`); keep private."))
    except (OSError, TOMLKitError) as error:
        raise CliError(f"cannot read {path}: {error}") from error
    for key, value in values.items():
        document[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed over it, so a reader never sees half a file and
    # the secret is never readable by others, not even for a moment.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
        os.write(fd, tomlkit.dumps(document).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Config:
    """Everything the CLI needs to know before it can call pai."""

    home: Path
    credentials_file: Path
    credentials: Mapping[str, Any]
    endpoint: str | None
    api_key: str | None
    workspace: str
    nats_url: str | None

    def require_login(self) -> tuple[str, str]:
        """Endpoint and API key, or the error that tells how to get them."""
        if not self.endpoint or not self.api_key:
            missing = " and ".join(
                what for what, value in (("endpoint", self.endpoint), ("API key", self.api_key)) if not value
            )
            raise CliError(
                f"{NOT_LOGGED_IN}\n  (no {missing} in --endpoint/--api-key, PAI_ENDPOINT/PAI_API_KEY"
                f" or {self.credentials_file})"
            )
        return self.endpoint, self.api_key


def load(
    endpoint: str | None = None,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Resolve each setting: the flag, then the environment, then the credentials file."""
    env = os.environ if env is None else env
    path = credentials_path(env)
    stored = read_credentials(path)
    return Config(
        home=pai_home(env),
        credentials_file=path,
        credentials=stored,
        endpoint=_first(endpoint, env.get("PAI_ENDPOINT"), stored.get("endpoint")),
        api_key=_first(api_key, env.get("PAI_API_KEY"), stored.get("api_key")),
        workspace=_first(env.get("PAI_WORKSPACE"), stored.get("workspace")) or DEFAULT_WORKSPACE,
        nats_url=_first(env.get("PAI_NATS_URL")),
    )


def _first(*values: object) -> str | None:
    for value in values:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
