"""The sweep runner's loop: one sweep that fails to step never holds up the others."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pai_dlc.app.sweep_steps import SweepRunner


class Sweeps:
    """The part of the sweep use cases the loop reads: the names of the running sweeps."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    @contextlib.asynccontextmanager
    async def _uow(self) -> AsyncIterator[Any]:
        class Uow:
            class sweeps:
                @staticmethod
                async def names_in_states(states: object) -> list[str]:
                    return list(self.names)

        yield Uow()

    def uows(self) -> Any:
        return self._uow()


class Runner(SweepRunner):
    def __init__(self, names: list[str], broken: str) -> None:
        super().__init__(Sweeps(names), None, 0.01, asyncio.Event())  # type: ignore[arg-type]
        self.broken, self.stepped = broken, []  # type: list[str]

    async def step(self, name: str) -> None:
        if name == self.broken:
            raise RuntimeError(f"{name} is broken")
        self.stepped.append(name)


async def test_a_failing_sweep_is_logged_once_and_the_others_still_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Runner(["workspaces/w/sweeps/a", "workspaces/w/sweeps/b"], broken="workspaces/w/sweeps/a")
    await runner.start()
    try:
        for _ in range(200):
            if runner.stepped.count("workspaces/w/sweeps/b") >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await runner.stop()
    assert runner.stepped.count("workspaces/w/sweeps/b") >= 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "step of workspaces/w/sweeps/a failed" in errors[0].getMessage()
