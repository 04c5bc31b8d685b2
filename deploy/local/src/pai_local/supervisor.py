"""The single-machine stack: NATS and each service as its own supervised process."""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from pai_local import banner, stack_file
from pai_local.children import OutputSink
from pai_local.console import Console
from pai_local.credentials import Bootstrap, prepare_credentials
from pai_local.health import grpc_serving, http_ok
from pai_local.nats import EmbeddedNats, NatsNotFound
from pai_local.ports import (
    LOOPBACK,
    can_connect,
    choose_address,
    dial_address,
    free_port,
    port_is_free,
    split_address,
)
from pai_local.settings import AUTH, CALLERS, SCHEDULER, Settings, endpoint_var, listen_var
from pai_local.supervised import ChildConfig, SupervisedChild

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StartupError(RuntimeError):
    """The stack cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class ServicePlan:
    """Where one service listens and where its output goes."""

    name: str
    module: str
    probe: str
    listen: str  # what the service binds
    address: str  # what clients dial
    log: Path


class Stack:
    """Runs NATS (unless external) and the chosen services until SIGINT/SIGTERM."""

    def __init__(self, settings: Settings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console(["nats", *settings.services])
        self._stop = asyncio.Event()
        self._signals = 0
        self._lock: IO[str] | None = None
        self._nats_plan: EmbeddedNats | None = None
        self._plans: dict[str, ServicePlan] = {}
        self._bootstrap: Bootstrap | None = None
        self._nats: SupervisedChild | None = None
        self._services: dict[str, SupervisedChild] = {}
        self._stack_file_open = False

    @property
    def nats_url(self) -> str:
        if self._nats_plan is not None:
            return self._nats_plan.url
        assert self.settings.nats_url is not None  # one of the two is always set
        return self.settings.nats_url

    async def run(self) -> int:
        """Start everything, keep it running until a signal, stop it all; the exit code."""
        try:
            self._prepare()
        except (StartupError, OSError) as error:  # OSError: PAI_HOME not writable, and the like
            self.console.say(f"error: {error}")
            self._release_lock()
            return 1
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._supervise()
        finally:
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)
            self._stack_file_open = False
            stack_file.remove(self.settings.stack_file)
            self._release_lock()
        self.console.say("stopped")
        return 0

    def request_stop(self) -> None:
        """Stop the stack as if it got SIGTERM (for callers that embed it)."""
        self._stop.set()

    # -- preparing: everything that can fail before a process starts --------------------------

    def _prepare(self) -> None:
        settings = self.settings
        for directory in (settings.home, settings.log_dir, settings.run_dir):
            # PAI_HOME holds the credentials and the databases: private by default.
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._take_lock()
        for name in settings.services:
            module = settings.specs[name].module
            if importlib.util.find_spec(module.partition(".")[0]) is None:
                raise StartupError(f"service {name}: module {module} is not installed (run `make install`)")
        if settings.nats_url is None:
            try:
                self._nats_plan = EmbeddedNats.plan(settings.nats_store_dir)
            except NatsNotFound as error:
                raise StartupError(str(error)) from None
        self._plans = dict(self._plan_services())
        if AUTH in self._plans:
            self._bootstrap = prepare_credentials(
                settings.credentials_file,
                settings.home / AUTH,
                # The CLI goes through the gateway when it runs, as every client should.
                self._plans["envoy" if "envoy" in self._plans else AUTH].address,
                os.environ.get("PAI_BOOTSTRAP_ADMIN_KEY"),
            )
            if self._bootstrap.warning:
                self.console.say(f"warning: {self._bootstrap.warning}")

    def _take_lock(self) -> None:
        path = self.settings.run_dir / "supervisor.lock"
        lock = path.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StartupError(
                f"another pai-local already runs with PAI_HOME={self.settings.home} "
                f"(see {self.settings.stack_file})"
            ) from None
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _plan_services(self) -> Iterator[tuple[str, ServicePlan]]:
        taken: set[int] = set()
        for name in self.settings.services:
            spec = self.settings.specs[name]
            listen = self.settings.listen.get(name)
            if listen is None:
                listen = choose_address(spec.default_port if spec.default_port not in taken else 0)
                while split_address(listen)[1] in taken:
                    listen = f"{LOOPBACK}:{free_port()}"
            try:
                address = dial_address(listen)
            except ValueError as error:
                raise StartupError(f"{listen_var(name)}: {error}") from None
            taken.add(split_address(listen)[1])
            log = self.settings.log_dir / f"{name}.log"
            yield name, ServicePlan(name, spec.module, spec.probe, listen, address, log)

    # -- running -------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        ready_for_services: asyncio.Event | None = None
        tasks: list[asyncio.Task[None]] = []
        if self._nats_plan is not None:
            self._nats = self._child_for_nats(self._nats_plan)
            ready_for_services = self._nats.first_attempt_done
            tasks.append(self._watch(self._nats.run(), "nats"))
        else:
            await self._check_external_nats()
        for name, plan in self._plans.items():
            child = self._child_for_service(plan)
            self._services[name] = child
            # Services start once NATS answers, and after auth, since they verify callers with it.
            after = ready_for_services
            if name != AUTH and AUTH in self._services:
                after = self._services[AUTH].first_attempt_done
            tasks.append(self._watch(child.run(after), name))
        self._stack_file_open = True
        self._write_stack_file()
        startup = asyncio.create_task(self._announce_when_started())
        try:
            await self._stop.wait()
        finally:
            startup.cancel()
            # Services first, so they can flush to NATS on their way out; NATS last.
            await asyncio.gather(*(child.stop() for child in self._services.values()))
            if self._nats is not None:
                await self._nats.stop()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _watch(self, supervision: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run one child's supervision; if it ever fails (a bug here), stop the whole stack."""

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                self.console.say(f"error: supervising {name} failed: {task.exception()!r}; stopping")
                self._stop.set()

        task = asyncio.create_task(supervision, name=f"supervise-{name}")
        task.add_done_callback(done)
        return task

    def _child_for_nats(self, plan: EmbeddedNats) -> SupervisedChild:
        config = ChildConfig(
            name="nats",
            argv=plan.argv(),
            env={**os.environ, "PAI_HOME": str(self.settings.home)},
            # nats-server is chatty; its log is in the file, and its tail is shown if it dies.
            sink=OutputSink(self.settings.log_dir / "nats.log", echo=None),
            probe=plan.ready,
            start_timeout=self.settings.start_timeout,
            stop_timeout=self.settings.stop_timeout,
            describe_ready=f" at {plan.url}",
        )
        return SupervisedChild(config, self.console, on_change=self._write_stack_file)

    def _child_for_service(self, plan: ServicePlan) -> SupervisedChild:
        config = ChildConfig(
            name=plan.name,
            argv=[sys.executable, "-m", plan.module],
            env=self._service_env(plan),
            sink=OutputSink(plan.log, echo=lambda text: self.console.line(plan.name, text)),
            probe=_probe(plan),
            start_timeout=self.settings.start_timeout,
            stop_timeout=self.settings.stop_timeout,
            describe_ready=f" at {plan.address}",
            preflight=lambda: _port_in_use(plan),
        )
        return SupervisedChild(config, self.console, on_change=self._write_stack_file)

    def _service_env(self, plan: ServicePlan) -> dict[str, str]:
        env = dict(os.environ)
        # The admin key is for auth alone.
        env.pop("PAI_BOOTSTRAP_ADMIN_KEY", None)
        env.update(
            {
                "PAI_HOME": str(self.settings.home),
                "PAI_NATS_URL": self.nats_url,
                "PAI_SERVICE_NAME": plan.name,
                listen_var(plan.name): plan.listen,
                # Output reaches the log and the terminal as it is written, not when a buffer fills.
                "PYTHONUNBUFFERED": "1",
            }
        )
        for other in self._plans.values():
            env[endpoint_var(other.name)] = other.address
        if plan.name == AUTH and self._bootstrap is not None and self._bootstrap.api_key:
            # auth ignores it once bootstrapped; passing it always keeps credentials and auth in step.
            env["PAI_BOOTSTRAP_ADMIN_KEY"] = self._bootstrap.api_key
        if plan.name == SCHEDULER and AUTH in self._plans:
            # auth's first start makes workspace `default`: on one machine it may use all of it, so a
            # new user's first job needs no quota step (the scheduler adds it only to a group with none).
            env.setdefault("PAI_SCHEDULER_DEFAULT_QUOTA_WORKSPACE", "default")
        if plan.name in CALLERS and self._bootstrap is not None and self._bootstrap.api_key:
            # Services that call other services on their own behalf (dlc asks the scheduler for
            # capacity and reports how jobs end) act as the platform admin on one machine.
            env.setdefault(f"PAI_{plan.name.upper()}_API_KEY", self._bootstrap.api_key)
        return env

    async def _check_external_nats(self) -> None:
        first = urlsplit(self.nats_url.split(",")[0].strip())
        host, port = first.hostname or LOOPBACK, first.port or 4222
        if await can_connect(host, port):
            self.console.say(f"using NATS at {self.nats_url} (PAI_NATS_URL)")
        else:
            self.console.say(f"warning: NATS at {self.nats_url} (PAI_NATS_URL) does not answer yet")

    async def _announce_when_started(self) -> None:
        children = [*([self._nats] if self._nats else []), *self._services.values()]
        await asyncio.gather(*(child.first_attempt_done.wait() for child in children))
        banner.print_banner(self.console, self._banner_facts())

    def _banner_facts(self) -> banner.Facts:
        services = [
            banner.ServiceLine(name, plan.address, plan.log, self._services[name].ever_ready)
            for name, plan in self._plans.items()
        ]
        return banner.Facts(
            nats_url=self.nats_url,
            nats_embedded=self._nats_plan is not None,
            nats_ready=self._nats.ever_ready if self._nats else True,
            nats_store=self.settings.nats_store_dir,
            services=services,
            credentials=self.settings.credentials_file if AUTH in self._plans else None,
            new_admin_key=self._bootstrap.api_key if self._bootstrap and self._bootstrap.created else None,
        )

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            self.console.say(f"{sig.name}: stopping (again to kill at once)")
            self._stop.set()
            return
        self.console.say(f"{sig.name} again: killing everything now")
        for child in [*self._services.values(), *([self._nats] if self._nats else [])]:
            child.kill_now()

    def _write_stack_file(self) -> None:
        if not self._stack_file_open:
            return
        stack_file.write_json_atomically(self.settings.stack_file, self._stack_document())

    def _stack_document(self) -> dict[str, Any]:
        services = {
            name: {
                "address": plan.address,
                "probe": plan.probe,
                "pid": self._services[name].pid if name in self._services else None,
                "restarts": self._services[name].restarts if name in self._services else 0,
                "state": str(self._services[name].state) if name in self._services else "pending",
                "log": str(plan.log),
            }
            for name, plan in self._plans.items()
        }
        nats = self._nats
        return {
            "nats_url": self.nats_url,
            "nats_monitor_url": self._nats_plan.monitor_url if self._nats_plan else None,
            "supervisor_pid": os.getpid(),
            "services": services,
            "nats_pid": nats.pid if nats else None,
            "nats_state": str(nats.state) if nats else None,
            "nats_restarts": nats.restarts if nats else 0,
            "pai_home": str(self.settings.home),
        }


def _port_in_use(plan: ServicePlan) -> str | None:
    """A warning when something else already listens where the service is about to."""
    host, port = split_address(plan.listen)
    try:
        free = port_is_free(port, host or "0.0.0.0")
    except OSError:  # a host name we cannot bind to here: let the service say what is wrong
        return None
    return None if free else f"{plan.listen} is in use by another process; {plan.name} cannot listen there"


def _probe(plan: ServicePlan) -> Callable[[], Awaitable[bool]]:
    """The readiness check a service declares: the gRPC health service, or an HTTP path."""
    if plan.probe.startswith("http:"):
        url = f"http://{plan.address}{plan.probe.removeprefix('http:')}"
        return lambda: http_ok(url)
    return lambda: grpc_serving(plan.address)
