"""Settings from `PAI_*` environment variables, one optional TOML file, and one-machine defaults.

Precedence: environment, then the TOML file (`PAI_CONFIG`, default `$PAI_HOME/config.toml`),
then defaults. Service-specific keys live in a TOML table named after the service and in
`PAI_<SERVICE>_<KEY>` variables; shared keys are top level and `PAI_<KEY>`.
"""

from __future__ import annotations

import os
import pathlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORTS = {
    "auth": 50051,
    "scheduler": 50052,
    "dlc": 50053,
    "eas": 50054,
    "dsw": 50055,
    "lineage": 50056,
    "gateway": 50060,
}


class ConfigError(ValueError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    """Everything the chassis needs to run one service."""

    service: str
    home: pathlib.Path
    listen: str
    database_url: str
    database_schema: str
    nats_url: str
    auth_endpoint: str
    log_level: str = "INFO"
    log_format: str = "json"
    otel_exporter: str = "none"
    otel_endpoint: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> pathlib.Path:
        """The service's own directory under PAI_HOME."""
        return self.home / self.service

    def get(self, key: str, default: Any = None) -> Any:
        """A service-specific setting: `PAI_<SERVICE>_<KEY>`, else `[<service>] key`, else default."""
        env = os.environ.get(f"PAI_{self.service.upper()}_{key.upper()}")
        if env is not None:
            return env
        return self.extra.get(key, default)

    def endpoint_of(self, other: str) -> str:
        """Where this service calls `other`: its own `PAI_<SERVICE>_<OTHER>_ENDPOINT` setting, else
        the stack's `PAI_<OTHER>_ENDPOINT`, else `other`'s default port on this machine."""
        return str(
            self.get(f"{other}_endpoint")
            or os.environ.get(f"PAI_{other.upper()}_ENDPOINT")
            or f"127.0.0.1:{DEFAULT_PORTS[other]}"
        )


def _read_toml(path: pathlib.Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load(service: str, env: Mapping[str, str] | None = None) -> Settings:
    """Load the settings of `service` from the environment and the optional TOML file."""
    env = os.environ if env is None else env
    home = pathlib.Path(env.get("PAI_HOME") or "~/.pai").expanduser()
    config_path = pathlib.Path(env.get("PAI_CONFIG") or home / "config.toml").expanduser()
    file = _read_toml(config_path)
    section = file.get(service, {})
    if not isinstance(section, dict):
        raise ConfigError(f"[{service}] in {config_path} must be a table")
    prefix = f"PAI_{service.upper()}_"

    def pick(key: str, default: str, *, shared: bool = False) -> str:
        env_key = f"PAI_{key.upper()}" if shared else prefix + key.upper()
        if env_key in env:
            return env[env_key]
        value = (file if shared else section).get(key, default)
        return str(value)

    data_dir = home / service
    default_db = f"sqlite+aiosqlite:///{data_dir / (service + '.db')}"
    port = DEFAULT_PORTS.get(service, 0)
    return Settings(
        service=service,
        home=home,
        listen=pick("listen", f"127.0.0.1:{port}"),
        database_url=pick("database_url", default_db),
        database_schema=pick("database_schema", f"pai_{service}"),
        nats_url=pick("nats_url", "nats://127.0.0.1:4222", shared=True),
        auth_endpoint=pick("auth_endpoint", f"127.0.0.1:{DEFAULT_PORTS['auth']}", shared=True),
        log_level=pick("log_level", "INFO", shared=True).upper(),
        log_format=pick("log_format", "json", shared=True),
        otel_exporter=pick("otel_exporter", "none", shared=True),
        otel_endpoint=pick("otel_endpoint", "", shared=True),
        extra=section,
    )
