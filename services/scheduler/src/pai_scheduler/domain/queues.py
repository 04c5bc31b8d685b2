"""A resource group's workloads and their queues: one per quota, by priority then enqueue order.

The moves of a workload's lifecycle that the owner or an admin makes (track, requeue, finish,
reprioritise, forget) live here; the scheduler's own moves (admit, preempt) live in `scheduling`
and `preemption`.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, insort

from pai_scheduler.domain.capacity import GroupCapacity, QueueKey
from pai_scheduler.domain.workload import State, Workload


def queue_key(w: Workload) -> QueueKey:
    """Where `w` stands in its quota's queue: higher priority first, then enqueue order."""
    return (-w.priority, w.seq, w.name)


class GroupQueues(GroupCapacity):
    """The group's tracked workloads and the per-quota queues of the pending ones."""

    def add(self, w: Workload) -> None:
        """Track a workload (new, or loaded from the store); a holding one is placed where it was."""
        self.workloads[w.name] = w
        self._admit_seq = max(self._admit_seq, w.admit_seq)
        if w.victims:
            self._waiting.add(w.name)
        for ps in w.pod_sets:
            self._shape_counts[ps.pod] += ps.count
        if w.state == State.PENDING:
            self._enqueue(w)
        elif w.holds:
            self._reserve_or_orphan(w)

    def forget(self, w: Workload) -> None:
        """Stop tracking a workload (finished or deleted); free what it holds."""
        if w.name in self.workloads:
            if w.state == State.PENDING:
                self._dirty_quotas.add(w.quota)  # the ones behind it move up
            self._dequeue(w)
            if w.holds:
                self._release(w)
            del self.workloads[w.name]
        if w.name in self._waiting:
            self._all_dirty = True  # what it held back may go now
        self._waiting.discard(w.name)
        self._unevaluated.discard(w.name)
        self._no_victims.pop(w.name, None)

    def reprioritise(self, w: Workload, priority: int) -> None:
        """Change `w`'s priority, moving it in its queue when it waits in one."""
        pending = w.state == State.PENDING and w.name in self.workloads
        if pending:
            self._dequeue(w)
        w.priority = priority
        if pending:
            self._enqueue(w)

    def queue_position(self, w: Workload) -> int:
        """`w`'s 1-based place in its quota's queue; 0 when it is not queued."""
        if w.state != State.PENDING:
            return 0
        queue = self.queues.get(w.quota, [])
        i = bisect_left(queue, queue_key(w), key=lambda e: e[0])
        return i + 1 if i < len(queue) and queue[i][1] is w else 0

    def requeue(self, w: Workload, now: dt.datetime, seq: int | None = None) -> State:
        """The owner gives the placement back (or acts on a preemption): back to PENDING, at its old
        place in the queue, or with `seq` behind everything queued since."""
        previous = w.transition(State.PENDING)
        if seq is not None:
            w.seq, w.enqueue_time = seq, now
        if previous in (State.ADMITTED, State.PREEMPTING):
            self._release(w)
        w.placements, w.preemption, w.requeue_count = (), None, w.requeue_count + 1
        w.set_pending("NOT_EVALUATED", "requeued; not evaluated by the scheduler yet")
        self._waiting.discard(w.name)
        self._enqueue(w)
        return previous

    def finish(self, w: Workload, outcome: str, message: str, now: dt.datetime) -> State:
        """`w` is done (by its owner's word): FINISHED with `outcome`, whatever it held freed."""
        previous = w.state
        self.forget(w)
        w.transition(State.FINISHED)
        w.outcome, w.finish_message, w.finish_time = outcome, message, now
        w.clear_pending()
        return previous

    def _enqueue(self, w: Workload) -> None:
        self._dirty_quotas.add(w.quota)
        if w.pending_code == "NOT_EVALUATED":
            self._unevaluated.add(w.name)
        insort(self.queues.setdefault(w.quota, []), (queue_key(w), w), key=lambda e: e[0])

    def _dequeue(self, w: Workload) -> None:
        queue = self.queues.get(w.quota, [])
        key = queue_key(w)
        i = bisect_left(queue, key, key=lambda e: e[0])
        if i < len(queue) and queue[i][1] is w:
            del queue[i]
