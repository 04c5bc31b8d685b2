"""The quota tree of one resource group: guarantees, caps, borrowing, lending and fair share.

Resources are keyed `cpu` (milli-cores), `memory` (bytes), `gpu` (milli-GPUs, every model) and
`gpu/<model>` (milli-GPUs of one model). Each quota has per-resource limits, where a missing key
means "no limit of its own": `min` (guaranteed, default 0), `max` (cap), `borrowing_limit` (how far
above `min` it may go), `lending_limit` (how much of its unused `min` others may borrow).

Semantics (hierarchical cohorts, as Kueue's, with the resource group's capacity at the root):
- `usage(q)` is what the workloads charged to q and its descendants hold.
- A quota's *effective* usage towards its parent is `max(usage, reserved)`, where `reserved` is the
  part of its `min` it does not lend (`min - lending_limit`): lent-out guarantees are idle capacity
  others may borrow, reserved ones are not.
- Admitting a request at q needs, at q and every ancestor a: `usage(a) + r <= max(a)` and
  `usage(a) + r <= min(a) + borrowing_limit(a)`; and at every parent p (the root's pool is the group's
  capacity, an inner quota's pool its `max`): the children's effective usage plus r fits the pool.
- Borrowed capacity is reclaimable: a quota within its `min` may take back what its siblings hold
  above theirs, never taking any of them below its own `min` (see `scheduling`).
- Fair share: siblings' dominant share (largest usage/capacity ratio over resources) over weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from pai_common.errors import FailedPrecondition

Amounts = dict[str, int]

CPU, MEMORY, GPU = "cpu", "memory", "gpu"


def gpu_model_key(model: str) -> str:
    return f"gpu/{model}"


def add(a: Mapping[str, int], b: Mapping[str, int], sign: int = 1) -> Amounts:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + sign * v
    return out


def describe(resource: str, amount: int) -> str:
    """An amount for people: `4 gpu/A100`, `2.5 cpu`, `16 GiB memory`."""
    if resource == MEMORY:
        return f"{amount / 2**30:g} GiB memory"
    if resource == CPU:
        return f"{amount / 1000:g} cpu"
    return f"{amount / 1000:g} {resource}"


@dataclass
class QuotaSpec:
    """A quota's settings (what an admin writes)."""

    name: str  # resourceGroups/{rg}/quotas/{id}
    parent: str = ""  # a quota name in the same group; empty = a top-level quota
    workspace: str = ""  # workspaces/{id}; workloads of that workspace are charged here
    min: Amounts = field(default_factory=dict)
    max: Amounts = field(default_factory=dict)
    borrowing_limit: Amounts = field(default_factory=dict)
    lending_limit: Amounts = field(default_factory=dict)
    weight: int = 1
    held: bool = False
    reclaim: str = "ANY"  # NEVER | LOWER_PRIORITY | ANY: may it reclaim its min from borrowers
    within_quota: str = "LOWER_PRIORITY"  # NEVER | LOWER_PRIORITY: may it preempt its own workloads

    @property
    def label(self) -> str:
        """How reasons name the quota: its workspace when it has one."""
        if self.workspace:
            return f"workspace {self.workspace.removeprefix('workspaces/')}"
        return f"quota {self.name.rsplit('/', 1)[-1]}"

    def reserved(self, resource: str) -> int:
        lo = self.min.get(resource, 0)
        lend = self.lending_limit.get(resource)
        return 0 if lend is None else max(0, lo - lend)  # no lending limit: lends all of it


@dataclass(frozen=True, slots=True)
class Check:
    """One quota's verdict on one resource of a request."""

    quota: str
    resource: str
    requested: int
    admitted: int
    min: int
    max: int | None
    available: int
    fits: bool
    code: str  # "" | QUOTA_MAX_REACHED | QUOTA_BORROWING_EXHAUSTED | EXCEEDS_LIMITS | QUOTA_HELD
    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    fits: bool
    code: str = ""
    message: str = ""
    quota: str = ""
    resource: str = ""
    checks: tuple[Check, ...] = ()


FITS = Verdict(True)


class QuotaTree:
    """The quotas of one resource group with their usage, against the group's capacity."""

    def __init__(self, capacity: Mapping[str, int] | None = None) -> None:
        self.capacity: Amounts = dict(capacity or {})
        self.specs: dict[str, QuotaSpec] = {}
        self.children: dict[str, list[str]] = {"": []}
        self.usage: dict[str, Amounts] = {"": {}}
        self.by_workspace: dict[str, list[str]] = {}

    # ---- structure ---------------------------------------------------------------------------

    def validate(self, spec: QuotaSpec, replacing: str | None = None) -> None:
        """FAILED_PRECONDITION, with the reason the API gives, when `spec` (new, or replacing the quota
        of that name) breaks the tree."""
        if spec.parent and spec.parent not in self.specs:
            raise FailedPrecondition(
                "PARENT_QUOTA_NOT_FOUND", f"parent quota {spec.parent} does not exist", quota=spec.name
            )
        for res, lo in spec.min.items():
            hi = spec.max.get(res)
            if hi is not None and lo > hi:
                raise FailedPrecondition(
                    "QUOTA_MIN_EXCEEDS_MAX", f"min {describe(res, lo)} is above max", quota=spec.name
                )
        if spec.parent:
            self._check_against_parent(spec, replacing)
        if replacing:
            self._check_against_children(spec, replacing)
        if spec.workspace:
            for other in self.by_workspace.get(spec.workspace, []):
                if other != replacing and other != spec.name:
                    raise FailedPrecondition(
                        "WORKSPACE_QUOTA_ALREADY_EXISTS",
                        f"{spec.workspace} already has quota {other} in this resource group",
                        quota=spec.name,
                    )

    def _check_against_parent(self, spec: QuotaSpec, replacing: str | None) -> None:
        """A child's max stays within its parent's; the children's mins add up to at most its min."""
        parent = self.specs[spec.parent]
        for res, hi in spec.max.items():
            phi = parent.max.get(res)
            if phi is not None and hi > phi:
                raise FailedPrecondition(
                    "QUOTA_MAX_EXCEEDS_PARENT",
                    f"max {describe(res, hi)} is above the parent's max",
                    quota=spec.name,
                )
        siblings = [self.specs[c] for c in self.children.get(spec.parent, []) if c != replacing]
        for res, lo in spec.min.items():
            pmin = parent.min.get(res)
            total = lo + sum(s.min.get(res, 0) for s in siblings)
            if pmin is not None and total > pmin:
                raise FailedPrecondition(
                    "QUOTA_MIN_EXCEEDS_PARENT",
                    f"the children's min of {res} ({describe(res, total)}) would exceed the parent's "
                    f"min ({describe(res, pmin)})",
                    quota=spec.name,
                )

    def _check_against_children(self, spec: QuotaSpec, replacing: str) -> None:
        """A new version of a quota keeps room for its children's mins and maxes."""
        children = [self.specs[c] for c in self.children.get(replacing, [])]
        for res, lo in spec.min.items():
            total = sum(c.min.get(res, 0) for c in children)
            if total > lo:
                raise FailedPrecondition(
                    "QUOTA_MIN_EXCEEDS_PARENT",
                    f"the children's min of {res} ({describe(res, total)}) would exceed this min",
                    quota=spec.name,
                )
        for child in self.children.get(replacing, []):
            c = self.specs[child]
            for res, hi in c.max.items():
                mine = spec.max.get(res)
                if mine is not None and hi > mine:
                    raise FailedPrecondition(
                        "QUOTA_MAX_EXCEEDS_PARENT",
                        f"child {child} has a larger max of {res}",
                        quota=spec.name,
                    )

    def put(self, spec: QuotaSpec) -> None:
        """Add or replace a quota (validated by the caller); usage is kept on replace."""
        old = self.specs.get(spec.name)
        if old is not None:
            if old.workspace:
                self.by_workspace[old.workspace].remove(old.name)
            self.children[old.parent].remove(old.name)
        self.specs[spec.name] = spec
        self.children.setdefault(spec.name, [])
        self.children.setdefault(spec.parent, []).append(spec.name)
        self.children[spec.parent].sort()
        self.usage.setdefault(spec.name, {})
        if spec.workspace:
            self.by_workspace.setdefault(spec.workspace, []).append(spec.name)

    def remove(self, name: str) -> None:
        spec = self.specs.pop(name)
        self.children[spec.parent].remove(name)
        del self.children[name]
        del self.usage[name]
        if spec.workspace:
            self.by_workspace[spec.workspace].remove(name)

    def path(self, name: str) -> Iterator[QuotaSpec]:
        """The quota and its ancestors, bottom-up."""
        while name:
            spec = self.specs[name]
            yield spec
            name = spec.parent

    def subtree(self, name: str) -> Iterator[str]:
        yield name
        for child in self.children.get(name, []):
            yield from self.subtree(child)

    # ---- usage -------------------------------------------------------------------------------

    def charge(self, quota: str, amounts: Mapping[str, int], sign: int = 1) -> None:
        """Add (or with sign=-1 remove) an admitted workload's amounts along its path."""
        for spec in self.path(quota):
            self.usage[spec.name] = add(self.usage[spec.name], amounts, sign)
        self.usage[""] = add(self.usage[""], amounts, sign)

    def effective(self, name: str, resource: str, extra: int = 0) -> int:
        return max(self.usage[name].get(resource, 0) + extra, self.specs[name].reserved(resource))

    def check(self, quota: str, request: Mapping[str, int]) -> Verdict:
        """Whether `request` can be admitted at `quota` now; the first failing check explains why."""
        checks: list[Check] = []
        verdict = FITS
        for spec in self.path(quota):
            if spec.held:
                return Verdict(False, "QUOTA_HELD", f"{spec.label} is on hold", spec.name)
        for res, r in request.items():
            if r <= 0:
                continue
            for spec in self.path(quota):
                used = self.usage[spec.name].get(res, 0)
                lo = spec.min.get(res, 0)
                hi = spec.max.get(res)
                room = _room(self, spec, res)
                code, message = "", ""
                if hi is not None and r > hi:
                    code = "EXCEEDS_LIMITS"
                    message = f"request of {describe(res, r)} exceeds the max of {spec.label}"
                elif r > room:
                    if hi is not None and used + r > hi:
                        code = "QUOTA_MAX_REACHED"
                        message = f"quota max reached for {res} in {spec.label}"
                    else:
                        code = "QUOTA_BORROWING_EXHAUSTED"
                        message = f"no idle {res} to borrow for {spec.label}"
                checks.append(Check(spec.name, res, r, used, lo, hi, max(room, 0), not code, code, message))
                if code and verdict.fits:
                    verdict = Verdict(False, code, message, spec.name, res)
            cap = self.capacity.get(res, 0)
            free = cap - self.usage[""].get(res, 0)
            if r > cap:
                message = f"request of {describe(res, r)} exceeds the resource group's capacity"
                checks.append(Check("", res, r, cap - free, 0, cap, 0, False, "EXCEEDS_LIMITS", message))
                if verdict.fits or verdict.code != "EXCEEDS_LIMITS":
                    verdict = Verdict(False, "EXCEEDS_LIMITS", message, "", res)
            elif r > free:
                # the group is simply full: a placement matter (and maybe preemption), not a quota one
                message = f"not enough free {res}: {describe(res, r)} requested, {describe(res, free)} free"
                checks.append(Check("", res, r, cap - free, 0, cap, free, False, "NO_CAPACITY", message))
                if verdict.fits or verdict.code == "QUOTA_BORROWING_EXHAUSTED":
                    verdict = Verdict(False, "NO_CAPACITY", message, "", res)
        return Verdict(
            verdict.fits, verdict.code, verdict.message, verdict.quota, verdict.resource, tuple(checks)
        )

    def room(self, quota: str, resource: str) -> int:
        """How much of `resource` could still be admitted at `quota` (borrowing included)."""
        return min((_room(self, s, resource) for s in self.path(quota)), default=0)

    def guaranteed(self, name: str, request: Mapping[str, int]) -> list[str]:
        """The requested resources `name` has a guarantee for, if its usage plus `request` stays within
        its `min` in every one of them; empty otherwise (nothing to reclaim with)."""
        spec = self.specs[name]
        used = self.usage[name]
        managed = [r for r, v in request.items() if v > 0 and spec.min.get(r, 0) > 0]
        if all(used.get(r, 0) + request[r] <= spec.min[r] for r in managed):
            return managed
        return []

    def borrowing(self, name: str, resources: Iterable[str]) -> bool:
        """Whether `name` holds more than its `min` of any of `resources`."""
        spec = self.specs[name]
        used = self.usage[name]
        return any(used.get(r, 0) > spec.min.get(r, 0) for r in resources)

    def dominant_share(self, name: str) -> float:
        """The largest share of the group's capacity the quota's subtree holds, over its weight."""
        share = 0.0
        for res, used in self.usage[name].items():
            cap = self.capacity.get(res, 0)
            if cap > 0 and used > 0 and "/" not in res:
                share = max(share, used / cap)
        weight = self.specs[name].weight
        return share / weight if weight > 0 else (float("inf") if share else 0.0)


def _room(tree: QuotaTree, spec: QuotaSpec, res: str) -> int:
    """What `spec` may still take of `res` by its own limits and its parent's pool."""
    used = tree.usage[spec.name].get(res, 0)
    room = 1 << 62
    hi = spec.max.get(res)
    if hi is not None:
        room = min(room, hi - used)
    borrow = spec.borrowing_limit.get(res)
    if borrow is not None:
        room = min(room, spec.min.get(res, 0) + borrow - used)
    # the parent's pool: the group's capacity at the top, the parent's max (if any) below
    parent = spec.parent
    pool = tree.capacity.get(res, 0) if not parent else tree.specs[parent].max.get(res)
    if pool is not None:
        # the children's effective usage with this one grown by r must fit: siblings + used + r <= pool
        # (workloads are charged to leaf quotas, so an inner quota's usage is its children's)
        siblings = sum(tree.effective(c, res) for c in tree.children[parent] if c != spec.name)
        room = min(room, pool - siblings - used)
    return room
