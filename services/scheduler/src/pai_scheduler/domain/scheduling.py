"""One resource group's scheduler: queues, gang admission against quota *and* placement, preemption.

`GroupScheduler.cycle(now)` is the decision function. It frees the resources of victims whose grace
deadline passed, then walks the quotas' queues, lowest weighted dominant share first; within a quota,
by priority then enqueue order, trying at most `lookahead` workloads that do not fit before it moves
on (so a small workload is admitted past a large one that cannot fit: no head-of-line blocking).

A try is a *decision*: the quota check up the tree, then every pod of the gang placed (`admission`).
A failed gang that may preempt searches victims and gives them notices (`preemption`). The layers of
a group's scheduler, each a module of its own and each building on the one before:

- `capacity.GroupCapacity`: the state, the nodes on the placement engine, reserve and release;
- `queues.GroupQueues`: tracked workloads, per-quota queues, the owner's lifecycle moves;
- `admission.GroupAdmission`: trying a gang whole;
- `preemption.GroupPreemption`: victims, notices, deadlines;
- `scheduling.GroupScheduler` (here): the cycle that decides.
"""

from __future__ import annotations

import datetime as dt
import heapq
from bisect import bisect_right

from pai_scheduler.domain.capacity import NodeInfo, Policy
from pai_scheduler.domain.outcomes import Changes, Failure
from pai_scheduler.domain.preemption import GroupPreemption
from pai_scheduler.domain.queues import queue_key
from pai_scheduler.domain.workload import State, Workload


class GroupScheduler(GroupPreemption):
    """The scheduling state of one resource group: nodes, quotas, workloads, queues."""

    def cycle(self, now: dt.datetime) -> Changes:
        """One scheduling pass over the queues (at most `policy.budget` decisions)."""
        changes = Changes()
        self.expire(now, changes)
        self._maybe_refresh_policy()
        budget = self.policy.budget
        tried: set[str] = set()
        # preemptors whose victims are gone go first, so no one else takes what was freed for them
        nominated = [
            w
            for name in self._waiting
            if (w := self.workloads[name]).state == State.PENDING
            and not any(self._holding(v, w.name) for v in w.victims)
        ]
        for w in sorted(nominated, key=queue_key):
            budget -= 1
            tried.add(w.name)
            self._decide(w, now, changes, preempt=True)
        budget = self._walk_queues(now, changes, tried, budget)
        changes.decisions = self.policy.budget - budget
        self._mark_behind(tried, changes)
        return changes

    def _walk_queues(self, now: dt.datetime, changes: Changes, tried: set[str], budget: int) -> int:
        """Go on with the pass over the queues, fairest share first, while `budget` lasts; what is
        left of it."""
        if self._pass is None:  # start a pass over the queues that something changed for
            quotas = self.queues if self._all_dirty else self._dirty_quotas
            self._pass = {q: (None, 0) for q in quotas if self.queues.get(q)}
            self._all_dirty = False
            self._dirty_quotas = set()
        progress = self._pass
        for q in [q for q in progress if q not in self.quotas.specs]:  # deleted meanwhile
            del progress[q]
        # a quota's progress is the queue key of the last workload tried (not a position, which
        # removals ahead of it would shift), so the pass resumes right after it
        heap = [(self.quotas.dominant_share(q), q) for q in progress]
        heapq.heapify(heap)
        while heap and budget > 0:
            _, q = heapq.heappop(heap)
            after, failures = progress[q]
            queue = self.queues.get(q, [])
            pos = 0 if after is None else bisect_right(queue, after, key=lambda e: e[0])
            if pos >= len(queue):
                del progress[q]
                continue
            key, w = queue[pos]
            if w.name in tried:
                progress[q] = (key, failures)
                heapq.heappush(heap, (self.quotas.dominant_share(q), q))
                continue
            budget -= 1
            tried.add(w.name)
            if self._decide(w, now, changes, preempt=failures == 0):
                heapq.heappush(heap, (self.quotas.dominant_share(q), q))  # dequeued: resume after `after`
            elif failures + 1 < self.policy.lookahead:
                progress[q] = (key, failures + 1)
                heapq.heappush(heap, (self.quotas.dominant_share(q), q))
            else:
                del progress[q]
        if heap:  # the budget ran out: the pass goes on next cycle where it stopped
            changes.more = True
        else:
            # the pass is over; another one only if something changed meanwhile (an admission
            # here makes reasons given before it stale, so that counts)
            self._pass = None
            changes.more = self._all_dirty or bool(self._dirty_quotas)
        return budget

    def _decide(self, w: Workload, now: dt.datetime, changes: Changes, *, preempt: bool) -> bool:
        """Try `w`; on failure maybe preempt; record the outcome. True when admitted."""
        if w.victims and any(self._holding(v, w.name) for v in w.victims):
            return False  # still waiting for its victims: nothing new to decide
        blocker = self._blocked_by(w) if self._waiting else None
        if blocker is not None:
            previous = w.pending_code
            why = f"capacity is being freed for {blocker.name}, which goes first"
            if w.set_pending("QUEUED_BEHIND", why, {"ahead_count": "1", "preemptor": blocker.name}):
                changes.reasons.append((w, previous))
            self._unevaluated.discard(w.name)
            return False
        result = self.try_admit(w)
        if not isinstance(result, Failure):
            self._admitted(w, now, changes)
            return True
        previous = w.pending_code
        failure = result
        victims: list[Workload] = []
        if (
            preempt
            and self.policy.preemption
            and failure.code in ("NO_PLACEMENT", "QUOTA_BORROWING_EXHAUSTED", "QUOTA_MAX_REACHED")
        ):
            victims = self.find_victims(w, failure)
        if victims:
            self._preempt(victims, w, now, changes)
            spot = sum(1 for v in victims if v.preemptible)
            kind = "spot workload" if spot == len(victims) else "workload"
            n = len(victims)
            failure = Failure(
                "WAITING_FOR_PREEMPTION",
                f"waiting for preemption of {n} {kind}{'s' if n > 1 else ''}",
                {"victim_count": str(n)},
            )
        if victims:
            self._waiting.add(w.name)
        elif w.name in self._waiting:
            self._waiting.discard(w.name)
            self._all_dirty = True  # it no longer holds anything back
        self._unevaluated.discard(w.name)
        names = tuple(v.name for v in victims)
        if w.set_pending(failure.code, failure.message, dict(failure.metadata), names):
            changes.reasons.append((w, previous))
        return False

    def _admitted(self, w: Workload, now: dt.datetime, changes: Changes) -> None:
        """`w` was placed whole (`try_admit` committed): it leaves its queue, ADMITTED."""
        self._dequeue(w)
        w.transition(State.ADMITTED)
        w.admit_time = now
        self._admit_seq += 1
        w.admit_seq = self._admit_seq
        self._holders.add(w.name)
        self._epoch += 1
        self._all_dirty = True
        self._no_victims.pop(w.name, None)
        w.clear_pending()
        self._waiting.discard(w.name)
        self._unevaluated.discard(w.name)
        changes.admitted.append(w)

    def _mark_behind(self, tried: set[str], changes: Changes) -> None:
        """Workloads never evaluated yet learn what they wait behind (once, to avoid churn)."""
        for name in sorted(self._unevaluated - tried):
            w = self.workloads[name]
            ahead = self.queue_position(w) - 1
            w.set_pending(
                "QUEUED_BEHIND", f"{ahead} workloads ahead in the queue", {"ahead_count": str(ahead)}
            )
            changes.reasons.append((w, "NOT_EVALUATED"))
        self._unevaluated.clear()


__all__ = ["Changes", "GroupScheduler", "NodeInfo", "Policy"]  # what the tests and benchmarks take from here
