"""The control plane's state: upstreams and endpoint routes in, validated snapshots out (debounced)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from pai_gateway import resources
from pai_gateway.ads import AggregatedDiscovery
from pai_gateway.model import EndpointRoute, GatewayConfig, InvalidRoute

log = logging.getLogger(__name__)


class ControlPlane:
    """Holds what the gateway should serve; every accepted change becomes one new snapshot."""

    def __init__(self, config: GatewayConfig, ads: AggregatedDiscovery, debounce: float = 0.05) -> None:
        self.config = config
        self.ads = ads
        self._debounce = debounce
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_version = ads.publish(resources.build(config))

    # changes ------------------------------------------------------------------------
    def set_route(self, route: EndpointRoute) -> None:
        """Add or replace an endpoint route; an invalid one is refused and changes nothing."""
        try:
            route.validate()
        except InvalidRoute as exc:
            self.ads.rejections.append(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {exc}")
            raise
        others = tuple(x for x in self.config.routes if (x.kind, x.name) != (route.kind, route.name))
        self._change(dataclasses.replace(self.config, routes=(*others, route)))

    def remove_route(self, kind: str, name: str) -> bool:
        kept = tuple(x for x in self.config.routes if (x.kind, x.name) != (kind, name))
        if len(kept) == len(self.config.routes):
            return False
        self._change(dataclasses.replace(self.config, routes=kept))
        return True

    def force(self, config: GatewayConfig) -> int:
        """Publish `config` as it is, skipping validation (tests of Envoy's own NACK path)."""
        self.config = config
        self.last_version = self.ads.publish(resources.build(config))
        return self.last_version

    def _change(self, config: GatewayConfig) -> None:
        self.config = config
        self._dirty.set()
        if self._task is None:  # not started: publish at once (tests, one-shot tools)
            self.last_version = self.ads.publish(resources.build(config))
            self._dirty.clear()

    async def flush(self) -> int:
        """Publish any pending change now; the snapshot version that holds it."""
        if self._dirty.is_set():
            self._dirty.clear()
            self.last_version = self.ads.publish(resources.build(self.config))
        return self.last_version

    # debounce loop ----------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-debounce")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._debounce)  # a burst of changes becomes one snapshot
            try:
                await self.flush()
            except Exception:  # the loop must outlive any one bad change
                log.exception("building the snapshot failed; keeping the last one")
