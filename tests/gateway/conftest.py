"""A real gateway for tests: auth in-process, the control plane in-process, a real Envoy process."""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from pai_auth.bootstrap import AuthApp, build
from pai_common.config import Settings
from pai_common.testing import NatsServer, api_key, free_port, wait_for_port
from pai_gateway.app import RunningControlPlane, descriptor_set, pai_services, serve
from pai_gateway.envoy import EnvoyProcess
from pai_gateway.model import GatewayConfig, Upstream

STANDIN = pathlib.Path(__file__).resolve().parents[2] / "gateway" / "tests" / "standin_upstream.py"


@dataclass
class Gateway:
    url: str  # http://127.0.0.1:PORT
    port: int
    admin_key: str
    auth: AuthApp
    plane: RunningControlPlane
    envoy: EnvoyProcess
    workdir: pathlib.Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def gateway(tmp_path: pathlib.Path, nats_server: NatsServer) -> AsyncIterator[Gateway]:
    key = api_key()
    settings = Settings(
        service="auth",
        home=tmp_path / "home",
        listen="127.0.0.1:0",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        database_schema="",
        nats_url=nats_server.url,
        auth_endpoint="",
        log_format="text",
    )
    async with build(settings, bootstrap_key=key) as auth:
        descriptors = descriptor_set()
        port = free_port()
        config = GatewayConfig(
            listen_port=port,
            upstreams=(Upstream("auth", (auth.address,)),),
            descriptor_set=descriptors,
            grpc_services=pai_services(descriptors),
            access_log_path=str(tmp_path / "access.log"),
        )
        async with serve(config) as plane:
            envoy = EnvoyProcess(tmp_path / "envoy", "gateway-test", plane.address, free_port())
            envoy.start()
            try:
                assert await plane.ads.wait_applied(plane.control.last_version, 20), (
                    envoy.log_path.read_text()[-3000:]
                )
                wait_for_port(port)
                yield Gateway(f"http://127.0.0.1:{port}", port, key, auth, plane, envoy, tmp_path)
            finally:
                envoy.stop()


@contextlib.contextmanager
def standins(*specs: tuple[str, str]) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """Stand-in upstream processes, one per (revision, replica); yields (address, process)."""
    started = []
    try:
        for revision, replica in specs:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, str(STANDIN), str(port), revision, replica],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            started.append((f"127.0.0.1:{port}", proc))
        for address, _ in started:
            wait_for_port(int(address.rsplit(":", 1)[1]))
        yield started
    finally:
        for _, proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
