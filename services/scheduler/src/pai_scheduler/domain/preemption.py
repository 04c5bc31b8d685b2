"""Preemption: which admitted workloads make room for a gang that does not fit, and their notices.

Victims are ranked spot first, then borrowers above their `min`, then lower priority, newest first;
only the victims the gang really needs are kept. A victim gets a grace deadline and keeps its
resources until then; the preemptor waits (WAITING_FOR_PREEMPTION) and is tried first once they
are gone, while others that could take what is freed for it wait behind it (QUEUED_BEHIND).

No preemption loops: a victim is always spot, lower priority, or in a quota above its `min` while the
preemptor's side is within its `min`; none of these relations can hold in reverse. Reclaiming never
takes a quota on the victim's side of the tree below its `min`.
"""

from __future__ import annotations

import datetime as dt

from pai_scheduler.domain.admission import GroupAdmission
from pai_scheduler.domain.outcomes import Changes, Failure
from pai_scheduler.domain.workload import Preemption, State, Workload


class GroupPreemption(GroupAdmission):
    """Finds victims for a gang, gives notices, and frees the victims' resources at their deadline."""

    MAX_CANDIDATES = 1024  # victims considered per preemption search, best ranked first

    def find_victims(self, w: Workload, failure: Failure) -> list[Workload]:
        """The fewest victims (best first) whose removal lets `w` in; empty when none would.

        Candidates are released in rank order and the gang is tried at exponentially spaced counts
        (1, 2, 4, ...); the shortest sufficient prefix is then found by bisection, and every victim
        in it the gang does not need is given back. So a search costs O(log n + victims) gang
        trials, not one per candidate. A search that found nothing is not repeated until capacity
        is taken or freed.
        """
        if self._no_victims.get(w.name) == self._epoch:
            return []
        epoch, dirty = self._epoch, self._all_dirty
        trial = _Trial(self, w)
        known_short, enough = self._grow(trial, failure)
        victims = self._shrink(trial, known_short, enough) if enough else []
        trial.release_prefix(0)
        self._failed.clear()
        self._epoch, self._all_dirty = epoch, dirty  # the search itself changed nothing
        if not victims:
            self._no_victims[w.name] = epoch
        return victims

    def _grow(self, trial: _Trial, failure: Failure) -> tuple[int, int]:
        """Release candidates in rank order, trying the gang at 1, 2, 4, ... of them: a count known
        to be too few, and one known to be enough (0: none is)."""
        w = trial.w
        path = [s.name for s in self.quotas.path(w.quota)]
        known_short, enough, checkpoint = 0, 0, 1
        for c in self._candidates(w, failure)[: self.MAX_CANDIDATES]:
            # asked as each candidate comes up: the ones released before it changed the usage
            if c.quota != w.quota and not self._keeps_min(c, path):
                continue
            trial.removed.append(c)
            trial.release_prefix(len(trial.removed))
            if len(trial.removed) == checkpoint:
                if trial.fits():
                    enough = len(trial.removed)
                    break
                known_short, checkpoint = len(trial.removed), 2 * checkpoint
        else:
            if len(trial.removed) > known_short and trial.fits():
                enough = len(trial.removed)
        return known_short, enough

    def _shrink(self, trial: _Trial, known_short: int, enough: int) -> list[Workload]:
        """The shortest sufficient prefix (by bisection) less every victim the gang does not need;
        every candidate holds its resources again afterwards."""
        while enough - known_short > 1:
            middle = (known_short + enough) // 2
            trial.release_prefix(middle)
            if trial.fits():
                enough = middle
            else:
                known_short = middle
        trial.release_prefix(enough)
        victims = trial.removed[:enough]
        for c in reversed(victims[:-1]):  # give back every victim the gang does not need
            self._reserve(c)
            if trial.fits():
                victims.remove(c)
            else:
                self._release(c)
        for c in victims:  # the search changes nothing: the preemption does, with notices
            self._reserve(c)
        trial.released = 0
        trial.removed = [c for c in trial.removed if c not in victims]
        return victims

    def _candidates(self, w: Workload, failure: Failure) -> list[Workload]:
        """Admitted workloads `w` may preempt, best victims first."""
        request = w.request()
        q = self.quotas.specs[w.quota]
        own_max = failure.code == "QUOTA_MAX_REACHED" and failure.metadata.get("quota") == w.quota
        path = [s.name for s in self.quotas.path(w.quota)]
        out: list[tuple[tuple[int, int, int, int], Workload]] = []
        # per other quota: may `w` reclaim from it, and is that quota itself above its min (the
        # answers depend on the quota, not the candidate, so each is worked out once per search)
        reclaim: dict[str, tuple[bool, bool]] = {}
        for name in self._holders:
            c = self.workloads[name]
            if c.state != State.ADMITTED or c is w:
                continue
            spot_first = c.preemptible and not w.preemptible
            if c.quota == w.quota:
                if q.within_quota == "NEVER" or not (spot_first or c.priority < w.priority):
                    continue
                if w.preemptible and not c.preemptible:
                    continue  # spot never preempts on-demand work, whatever the priorities
                borrower = False
            else:
                if own_max or q.reclaim == "NEVER" or (w.preemptible and not c.preemptible):
                    continue
                if q.reclaim == "LOWER_PRIORITY" and c.priority >= w.priority:
                    continue
                verdict = reclaim.get(c.quota)
                if verdict is None:
                    side_c, side_q = self._sides(c.quota, path)
                    managed = [self.quotas.guaranteed(s, request) for s in side_q or ()]
                    allowed = bool(side_q) and all(managed) and self.quotas.borrowing(side_c, managed[-1])
                    own = allowed and self.quotas.borrowing(c.quota, managed[-1])  # its own quota over min
                    verdict = reclaim[c.quota] = (allowed, own)
                if not verdict[0]:
                    continue
                borrower = verdict[1]
            rank = (0 if spot_first else 1, 0 if borrower else 1, c.priority, -c.admit_seq)
            out.append((rank, c))
        out.sort(key=lambda e: e[0])
        return [c for _, c in out]

    def _sides(self, other: str, path: list[str]) -> tuple[str, list[str] | None]:
        """The children of the lowest common ancestor on `other`'s side and the quotas of `path`
        (bottom-up) below it."""
        other_path = [s.name for s in self.quotas.path(other)]
        common = set(path) & set(other_path)
        below_other = [n for n in other_path if n not in common]
        below_mine = [n for n in path if n not in common]
        return below_other[-1], below_mine or None

    def _keeps_min(self, c: Workload, path: list[str]) -> bool:
        """Reclaiming `c` must take no quota on its side of the tree (its own up to the child of the
        common ancestor) below its `min` in any resource."""
        mine = set(path)
        for spec in self.quotas.path(c.quota):
            if spec.name in mine:
                break
            used = self.quotas.usage[spec.name]
            for res, v in c.usage().items():
                lo = spec.min.get(res, 0)
                if used.get(res, 0) >= lo and used.get(res, 0) - v < lo:
                    return False
        return True

    def _preempt(self, victims: list[Workload], w: Workload, now: dt.datetime, changes: Changes) -> None:
        """Give `victims` their notices for `w`: PREEMPTING, holding on until a grace deadline."""
        for v in victims:
            grace = v.grace_seconds or self.policy.default_grace
            grace = min(grace, self.policy.max_grace)
            reason = "PRIORITY" if v.quota == w.quota else "QUOTA_RECLAIM"
            kind = "spot workload" if v.preemptible else "workload"
            why = (
                f"{kind} preempted for higher-priority {w.name}"
                if reason == "PRIORITY"
                else f"{kind} preempted to reclaim borrowed capacity for {self.quotas.specs[w.quota].label}"
            )
            v.transition(State.PREEMPTING)
            v.preemption = Preemption(reason, why, w.name, now, now + dt.timedelta(seconds=grace))
            changes.preempting.append(v)

    def drain(self, node_id: str, now: dt.datetime) -> list[Workload]:
        """Give every workload placed on `node_id` a preemption notice (NODE_DRAINED)."""
        victims = []
        for name in sorted(self._holders):
            v = self.workloads[name]
            if v.state == State.ADMITTED and any(p.node == node_id for p in v.placements):
                grace = min(v.grace_seconds or self.policy.default_grace, self.policy.max_grace)
                v.transition(State.PREEMPTING)
                why = f"node {node_id} is being drained"
                v.preemption = Preemption("NODE_DRAINED", why, "", now, now + dt.timedelta(seconds=grace))
                victims.append(v)
        return victims

    def next_deadline(self) -> dt.datetime | None:
        """The soonest grace deadline of a workload being preempted."""
        deadlines = [
            w.preemption.deadline
            for name in self._holders
            if (w := self.workloads[name]).state == State.PREEMPTING and w.preemption is not None
        ]
        return min(deadlines, default=None)

    def expire(self, now: dt.datetime, changes: Changes) -> None:
        """Victims whose grace deadline passed lose their resources: PREEMPTED."""
        for name in sorted(self._holders):
            v = self.workloads[name]
            if v.state == State.PREEMPTING and v.preemption and v.preemption.deadline <= now:
                self._release(v)
                v.transition(State.PREEMPTED)
                changes.preempted.append(v)

    def _holding(self, name: str, preemptor: str = "") -> bool:
        """Whether victim `name` still holds what it was preempted for (by `preemptor`)."""
        v = self.workloads.get(name)
        if v is None or v.state != State.PREEMPTING or v.preemption is None:
            return False
        return not preemptor or v.preemption.preemptor == preemptor

    def _blocked_by(self, w: Workload) -> Workload | None:
        """A waiting preemptor whose freed capacity `w` must not take (or a preemption loop starts):
        `w` is one it could preempt, or in a quota it reclaims from and above its guarantee."""
        for name in self._waiting:
            p = self.workloads.get(name)
            if p is None or p is w or p.state != State.PENDING:
                continue
            if w.quota == p.quota:
                if w.priority < p.priority or (w.preemptible and not p.preemptible):
                    return p
                continue
            victim_quotas = {self.workloads[v].quota for v in p.victims if v in self.workloads}
            if w.quota in victim_quotas and not self.quotas.guaranteed(w.quota, w.request()):
                return p
        return None


class _Trial:
    """The candidates a victim search has taken out so far, and whether the gang fits without them."""

    def __init__(self, group: GroupPreemption, w: Workload) -> None:
        self.group, self.w = group, w
        self.removed: list[Workload] = []
        self.released = 0  # removed[:released] are released now

    def fits(self) -> bool:
        return not isinstance(self.group.try_admit(self.w, commit=False), Failure)

    def release_prefix(self, k: int) -> None:
        """Have exactly removed[:k] released."""
        while self.released < k:
            self.group._release(self.removed[self.released])
            self.released += 1
        while self.released > k:
            self.released -= 1
            self.group._reserve(self.removed[self.released])
