"""Sweeps and their trials, on the caller's connection and transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from pai.dlc.v1 import sweep_pb2
from pai_common.clock import utcnow
from pai_common.errors import Aborted, AlreadyExists
from pai_dlc.db.rows import SweepRow, TrialRow
from pai_dlc.domain.sweep import Sweep, SweepState, Trial
from pai_dlc.mapping import sweeps as mapping

SWEEPS: sa.Table = SweepRow.__table__  # type: ignore[assignment]
TRIALS: sa.Table = TrialRow.__table__  # type: ignore[assignment]


def _key(name: str) -> tuple[str, str]:
    parts = name.split("/")
    return parts[1], parts[3]


def _sweep(row: sa.Row[Any]) -> Sweep:
    return mapping.sweep_from(
        sweep_pb2.Sweep.FromString(row.sweep), version=row.version, request_id=row.request_id
    )


def _stored(s: Sweep) -> bytes:
    message = mapping.sweep_to(s)
    message.etag = ""
    return message.SerializeToString(deterministic=True)


class SweepRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, name: str) -> Sweep | None:
        ws, sid = _key(name)
        row = (
            await self.conn.execute(sa.select(SWEEPS).where(SWEEPS.c.workspace == ws, SWEEPS.c.id == sid))
        ).first()
        return _sweep(row) if row else None

    async def by_request_id(self, request_id: str) -> Sweep | None:
        row = (await self.conn.execute(sa.select(SWEEPS).where(SWEEPS.c.request_id == request_id))).first()
        return _sweep(row) if row else None

    async def names_in_states(self, states: Sequence[SweepState]) -> list[str]:
        rows = await self.conn.execute(
            sa.select(SWEEPS.c.workspace, SWEEPS.c.id)
            .where(SWEEPS.c.state.in_([s.name for s in states]))
            .order_by(SWEEPS.c.create_time)
        )
        return [f"workspaces/{ws}/sweeps/{sid}" for ws, sid in rows]

    async def page(
        self, workspace: str, *, after: str | None, limit: int, states: Sequence[SweepState] = ()
    ) -> list[Sweep]:
        q = sa.select(SWEEPS).where(SWEEPS.c.workspace == workspace)
        if states:
            q = q.where(SWEEPS.c.state.in_([s.name for s in states]))
        if after is not None:
            q = q.where(SWEEPS.c.id > after)
        return [_sweep(r) for r in await self.conn.execute(q.order_by(SWEEPS.c.id).limit(limit))]

    async def insert(self, s: Sweep) -> None:
        ws, sid = _key(s.name)
        now = utcnow()
        try:
            await self.conn.execute(
                sa.insert(SWEEPS).values(
                    workspace=ws, id=sid, uid=s.uid, request_id=s.request_id, state=s.state.name,
                    sweep=_stored(s), create_time=now, update_time=now, version=1,
                )
            )  # fmt: skip
        except sa_exc.IntegrityError:  # the name or the request id is taken (maybe by a concurrent create)
            raise AlreadyExists("SWEEP_ALREADY_EXISTS", f"{s.name} already exists", sweep=s.name) from None
        s.version = 1

    async def save(self, s: Sweep) -> None:
        ws, sid = _key(s.name)
        s.update_time = utcnow()
        result = await self.conn.execute(
            sa.update(SWEEPS)
            .where(SWEEPS.c.workspace == ws, SWEEPS.c.id == sid, SWEEPS.c.version == s.version)
            .values(state=s.state.name, sweep=_stored(s), update_time=s.update_time, version=s.version + 1)
        )
        if result.rowcount != 1:
            raise Aborted("CONCURRENT_MODIFICATION", f"{s.name} changed meanwhile; retry")
        s.version += 1

    async def delete(self, s: Sweep) -> None:
        ws, sid = _key(s.name)
        await self.conn.execute(sa.delete(SWEEPS).where(SWEEPS.c.workspace == ws, SWEEPS.c.id == sid))
        await self.conn.execute(sa.delete(TRIALS).where(TRIALS.c.sweep_uid == s.uid))

    async def trials(self, s: Sweep) -> list[Trial]:
        rows = await self.conn.execute(
            sa.select(TRIALS.c.trial).where(TRIALS.c.sweep_uid == s.uid).order_by(TRIALS.c.seq)
        )
        return [mapping.trial_from(sweep_pb2.Trial.FromString(data)) for (data,) in rows]

    async def put_trial(self, s: Sweep, seq: int, trial: Trial, *, new: bool) -> None:
        data = mapping.trial_to(trial).SerializeToString(deterministic=True)
        if new:
            await self.conn.execute(sa.insert(TRIALS).values(sweep_uid=s.uid, seq=seq, trial=data))
        else:
            await self.conn.execute(
                sa.update(TRIALS).where(TRIALS.c.sweep_uid == s.uid, TRIALS.c.seq == seq).values(trial=data)
            )
