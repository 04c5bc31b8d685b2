"""Settings of the single-machine stack, read from `PAI_*` environment variables."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service: `python -m <module>`, preferably on `default_port`."""

    module: str
    default_port: int  # 0: any free port
    probe: str = "grpc"  # "grpc" (the health service) or "http:<path>" (GET answers 200)


# Every service the stack knows how to run; `PAI_SERVICES` picks which of them start.
SERVICES: Mapping[str, ServiceSpec] = {
    "auth": ServiceSpec(module="pai_auth", default_port=50051),
    "scheduler": ServiceSpec(module="pai_scheduler", default_port=50052),
    "dlc": ServiceSpec(module="pai_dlc", default_port=50053),
    "eas": ServiceSpec(module="pai_eas", default_port=50054),
    "dsw": ServiceSpec(module="pai_dsw", default_port=50055),
    "lineage": ServiceSpec(module="pai_lineage", default_port=50056),
    # The gateway: the xDS control plane, and Envoy as its own process so that it keeps serving
    # while the control plane restarts. Envoy is ready once the control plane configured /healthz.
    "gateway": ServiceSpec(module="pai_gateway", default_port=50060),
    "envoy": ServiceSpec(module="pai_gateway.envoy", default_port=8080, probe="http:/healthz"),
}

# Only what is implemented starts by default; auth first, since every other service asks it.
DEFAULT_SERVICES: tuple[str, ...] = ("auth", "scheduler", "lineage", "dlc", "gateway", "envoy")
AUTH = "auth"
SCHEDULER = "scheduler"
# Services that call other pai services as themselves, not only for a user's request.
CALLERS: tuple[str, ...] = ("dlc",)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class SettingsError(ValueError):
    """A setting has a value the stack cannot use."""


def listen_var(service: str) -> str:
    """The environment variable that holds a service's listen address."""
    return f"PAI_{service.upper()}_LISTEN"


def endpoint_var(service: str) -> str:
    """The environment variable that tells other services where a service listens."""
    return f"PAI_{service.upper()}_ENDPOINT"


def parse_extra_services(value: str) -> dict[str, ServiceSpec]:
    """Parse `name=module[:port],...`, which adds to or replaces entries of SERVICES."""
    specs: dict[str, ServiceSpec] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, target = item.partition("=")
        module, _, port_text = target.partition(":")
        name, module = name.strip(), module.strip()
        if not sep or not _NAME.match(name) or not _MODULE.match(module):
            raise SettingsError(f"PAI_LOCAL_EXTRA_SERVICES: expected name=module[:port], got {item!r}")
        try:
            port = int(port_text) if port_text.strip() else 0
        except ValueError:
            raise SettingsError(f"PAI_LOCAL_EXTRA_SERVICES: bad port in {item!r}") from None
        if not 0 <= port <= 65535:
            raise SettingsError(f"PAI_LOCAL_EXTRA_SERVICES: bad port in {item!r}")
        specs[name] = ServiceSpec(module=module, default_port=port)
    return specs


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name}: expected seconds, got {text!r}") from None
    if value <= 0:
        raise SettingsError(f"{name}: must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything `pai_local up` needs to know before it starts anything."""

    home: Path
    nats_url: str | None  # an external NATS to use; None starts an embedded one
    services: tuple[str, ...]
    specs: Mapping[str, ServiceSpec]
    listen: Mapping[str, str]  # explicit PAI_<SVC>_LISTEN addresses
    start_timeout: float = 60.0
    stop_timeout: float = 10.0

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        home: str | None = None,
        services: str | None = None,
        nats_url: str | None = None,
    ) -> Settings:
        """Read the settings; arguments that are not None (command-line flags) win over the env.

        Like the services, it also reads `nats_url` and `[<service>] listen` from the optional
        config file (`PAI_CONFIG`, default `$PAI_HOME/config.toml`); the environment wins.
        """
        env = os.environ if env is None else env
        home_path = Path(home or env.get("PAI_HOME", "").strip() or "~/.pai").expanduser().absolute()
        file = _config_file(env, home_path)
        specs = {**SERVICES, **parse_extra_services(env.get("PAI_LOCAL_EXTRA_SERVICES", ""))}
        names = _service_list(services if services is not None else env.get("PAI_SERVICES"))
        unknown = [name for name in names if name not in specs]
        if unknown:
            known = ", ".join(sorted(specs))
            raise SettingsError(f"unknown service(s) {', '.join(unknown)}; known: {known}")
        listen: dict[str, str] = {}
        for name in names:
            section = file.get(name)
            value = env.get(listen_var(name), "").strip() or (
                str(section.get("listen", "")).strip() if isinstance(section, dict) else ""
            )
            if value:
                listen[name] = value
        if nats_url is None:
            nats_url = env.get("PAI_NATS_URL", "").strip() or str(file.get("nats_url", ""))
        return cls(
            home=home_path,
            nats_url=nats_url.strip() or None,
            services=names,
            specs=specs,
            listen=listen,
            start_timeout=_positive_float(env, "PAI_LOCAL_START_TIMEOUT", 60.0),
            stop_timeout=_positive_float(env, "PAI_LOCAL_STOP_TIMEOUT", 10.0),
        )

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def stack_file(self) -> Path:
        return self.run_dir / "stack.json"

    @property
    def credentials_file(self) -> Path:
        return self.home / "credentials"

    @property
    def nats_store_dir(self) -> Path:
        return self.home / "nats"


def _config_file(env: Mapping[str, str], home: Path) -> dict[str, Any]:
    path = Path(env.get("PAI_CONFIG", "").strip() or home / "config.toml").expanduser()
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"config file {path}: {error}") from None


def _service_list(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_SERVICES
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for name in (item.strip() for item in items):
        if name and name not in names:
            names.append(name)
    # auth first: the others are started once it answers, because they verify callers with it.
    return tuple(sorted(names, key=lambda name: name != AUTH))
