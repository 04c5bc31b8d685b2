"""`pai.dlc.v1.SweepService`: take the request, call one use case, map the answer."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.protobuf import empty_pb2

from pai.dlc.v1 import sweep_pb2, sweep_pb2_grpc
from pai_common import fieldmask, pagination
from pai_common.errors import bad_request
from pai_common.principal import principal
from pai_dlc.app.sweeps import NewSweep, SweepUseCases
from pai_dlc.domain.sweep import Sweep, SweepState, TrialState
from pai_dlc.mapping import sweeps as mapping

Ctx: TypeAlias = grpc.aio.ServicerContext
UPDATABLE = ("display_name", "description", "labels")


class SweepServicer(sweep_pb2_grpc.SweepServiceServicer):
    def __init__(self, sweeps: SweepUseCases) -> None:
        self.sweeps = sweeps

    async def CreateSweep(self, request: sweep_pb2.CreateSweepRequest, context: Ctx) -> sweep_pb2.Sweep:
        m = request.sweep
        new = NewSweep(mapping.sweep_spec_from(m.spec), m.display_name, m.description, dict(m.labels))
        sweep = await self.sweeps.create(
            request.parent, request.sweep_id, new, request_id=request.request_id, creator=principal().name,
            validate_only=request.validate_only,
        )  # fmt: skip
        return mapping.sweep_to(sweep)

    async def GetSweep(self, request: sweep_pb2.GetSweepRequest, context: Ctx) -> sweep_pb2.Sweep:
        return mapping.sweep_to(await self.sweeps.get(request.name))

    async def ListSweeps(
        self, request: sweep_pb2.ListSweepsRequest, context: Ctx
    ) -> sweep_pb2.ListSweepsResponse:
        if request.filter.strip():
            raise bad_request("filter", "filter is not supported yet; use `states`", "INVALID_FILTER")
        size = pagination.page_size(request.page_size)
        query = pagination.fingerprint(parent=request.parent, states=sorted(request.states))
        after = pagination.decode_token(request.page_token, query, str)
        states = [SweepState(s) for s in request.states]
        rows = await self.sweeps.page(request.parent.split("/")[1], after, size + 1, states)
        page = rows[:size]
        token = (
            pagination.PageToken(page[-1].name.rsplit("/", 1)[1], query).encode() if len(rows) > size else ""
        )
        return sweep_pb2.ListSweepsResponse(sweeps=[mapping.sweep_to(s) for s in page], next_page_token=token)

    async def UpdateSweep(self, request: sweep_pb2.UpdateSweepRequest, context: Ctx) -> sweep_pb2.Sweep:
        fields = fieldmask.paths(request.update_mask.paths, UPDATABLE)
        given = request.sweep

        def change(s: Sweep) -> None:
            fieldmask.assign(s, given, fields)

        return mapping.sweep_to(await self.sweeps.update(given.name, given.etag, change))

    async def DeleteSweep(self, request: sweep_pb2.DeleteSweepRequest, context: Ctx) -> empty_pb2.Empty:
        await self.sweeps.delete(request.name)
        return empty_pb2.Empty()

    async def StopSweep(self, request: sweep_pb2.StopSweepRequest, context: Ctx) -> sweep_pb2.Sweep:
        return mapping.sweep_to(await self.sweeps.stop(request.name))

    async def GetTrial(self, request: sweep_pb2.GetTrialRequest, context: Ctx) -> sweep_pb2.Trial:
        return mapping.trial_to(await self.sweeps.trial(request.name))

    async def ListTrials(
        self, request: sweep_pb2.ListTrialsRequest, context: Ctx
    ) -> sweep_pb2.ListTrialsResponse:
        states = {TrialState(s) for s in request.states}
        trials = [t for t in await self.sweeps.trials(request.parent) if not states or t.state in states]
        found, token = pagination.page(
            trials,
            request.page_size,
            request.page_token,
            parent=request.parent,
            states=sorted(request.states),
        )
        return sweep_pb2.ListTrialsResponse(
            trials=[mapping.trial_to(t) for t in found], next_page_token=token
        )
