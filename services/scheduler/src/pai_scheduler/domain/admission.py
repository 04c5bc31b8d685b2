"""Gang admission: a workload is admitted whole (its quota path and every pod placed) or not at all.

A try checks the quota tree first, then places every pod of the gang on the placement engine; on
any failure everything placed so far is released, so a gang never holds part of what it needs and
two gangs can never deadlock on each other's partial holdings. Per-model quota limits steer pods
off the models whose room is used up. A gang shape that found no placement is remembered until
capacity is freed, so a long queue of equal gangs costs one try.
"""

from __future__ import annotations

from collections.abc import Sequence

from pai_scheduler.domain.capacity import NodeInfo
from pai_scheduler.domain.outcomes import Failure, quota_failure
from pai_scheduler.domain.placement import Placement
from pai_scheduler.domain.queues import GroupQueues
from pai_scheduler.domain.quota import CPU, MEMORY, describe, gpu_model_key
from pai_scheduler.domain.resources import GPU_MILLI, PodRequest
from pai_scheduler.domain.workload import PodPlacement, PodSet, Workload


class GroupAdmission(GroupQueues):
    """Tries a gang against the group's quotas and nodes."""

    def try_admit(self, w: Workload, *, commit: bool = True) -> tuple[PodPlacement, ...] | Failure:
        """Admit `w` whole (quota and placement) or change nothing and say why not."""
        for ps in w.pod_sets:  # a pod no node could ever host: say so before anything else
            if not self._ever_fits_somewhere(ps):
                return Failure(
                    "NO_MATCHING_NODE",
                    f"no schedulable node can ever host a pod of {ps.name}",
                    {"pod_set": ps.name},
                )
        request = w.request()
        verdict = self.quotas.check(w.quota, request)
        if not verdict.fits:
            return quota_failure(verdict)
        headroom = self._model_headroom(w)
        key = tuple((ps.pod.shape, ps.count, ps.node_selector) for ps in w.pod_sets)
        if not headroom and key in self._failed:
            return self._failed[key]
        placed: list[tuple[PodRequest, Placement, PodPlacement]] = []
        failure: Failure | None = None
        for ps in w.pod_sets:
            pod = ps.pod
            base = self.selector_mask(ps.node_selector)
            for index in range(ps.count):
                mask = base
                blocked = (
                    [m for m, room in headroom.items() if room < ps.pod_gpu_milli] if pod.num_gpu else []
                )
                for m in blocked:
                    model_mask = self._model_masks.get(m)
                    if model_mask is not None:
                        mask = ~model_mask if mask is None else mask & ~model_mask
                p = self.placer.place(pod, mask)
                if p is None:
                    failure = self._placement_failure(w, ps, index, blocked)
                    break
                node = self.placer.nodes[self.placer.index_of(p.node)]
                model = node.gpu_models[p.gpu_ids[0]] if p.gpu_ids else ""
                if model in headroom:
                    headroom[model] -= ps.pod_gpu_milli
                placed.append((pod, p, PodPlacement(ps.name, index, p.node, p.gpu_ids, pod.gpu_milli, model)))
            if failure is not None:
                break
        if failure is not None or not commit:
            for pod, p, _ in reversed(placed):
                self.placer.release(pod, p)
            if failure is not None and not headroom and failure.code == "NO_PLACEMENT":
                self._failed[key] = failure
            return failure if failure is not None else tuple(pp for _, _, pp in placed)
        placements = tuple(pp for _, _, pp in placed)
        w.placements = placements
        self.quotas.charge(w.quota, w.usage())
        return placements

    def _model_headroom(self, w: Workload) -> dict[str, int]:
        """Per-model room left by per-model limits on the workload's quota path (limited models only)."""
        if not any(ps.pod_gpu_milli for ps in w.pod_sets):
            return {}
        models = {
            res.split("/", 1)[1]
            for spec in self.quotas.path(w.quota)
            for limits in (spec.max, spec.borrowing_limit)
            for res in limits
            if res.startswith("gpu/")
        }
        return {m: self.quotas.room(w.quota, gpu_model_key(m)) for m in sorted(models)}

    def _placement_failure(self, w: Workload, ps: PodSet, index: int, blocked: Sequence[str]) -> Failure:
        pod = ps.pod
        meta = {"pod_set": ps.name}
        allowed = set(ps.allowed_gpu_models) or {m for n in self.nodes.values() for m in n.gpu_models}
        if pod.num_gpu and blocked and allowed <= set(blocked):
            model = sorted(blocked)[0]
            spec = next(iter(self.quotas.path(w.quota)))
            return Failure(
                "QUOTA_MAX_REACHED",
                f"quota max reached for gpu/{model} in {spec.label}",
                {"quota": w.quota, "resource": f"gpu/{model}"},
            )
        models = "/".join(ps.allowed_gpu_models) if ps.allowed_gpu_models else "GPU"
        if ps.gpu_count:
            what = f"no node with {ps.gpu_count} free {models} card{'s' if ps.gpu_count > 1 else ''}"
            meta["resource"] = "gpu"
        elif ps.gpu_milli:
            what = f"no {models} card with {ps.gpu_milli / GPU_MILLI:g} GPU free"
            meta["resource"] = "gpu"
        else:
            what = f"no node with {describe(CPU, ps.cpu_milli)} and {describe(MEMORY, ps.memory_bytes)} free"
            meta["resource"] = "cpu"
        if index or len(w.pod_sets) > 1 or ps.count > 1:
            what += f" (gang: {index} of {ps.count} {ps.name} pods fit now, all are needed)"
        return Failure("NO_PLACEMENT", what, meta)

    def _ever_fits_somewhere(self, ps: PodSet) -> bool:
        ever = self._ever_fits.get(ps)
        if ever is None:
            ever = self._ever_fits[ps] = any(self._fits_empty(n, ps) for n in self.nodes.values())
        return ever

    @staticmethod
    def _fits_empty(n: NodeInfo, ps: PodSet) -> bool:
        if not n.schedulable or any(n.labels.get(k) != v for k, v in ps.node_selector):
            return False
        if ps.cpu_milli > n.cpu_milli or ps.memory_bytes > n.memory_bytes:
            return False
        if not (ps.gpu_count or ps.gpu_milli):
            return True
        usable = [m for m in n.gpu_models if not ps.allowed_gpu_models or m in ps.allowed_gpu_models]
        return len(usable) >= max(ps.gpu_count, 1)
