"""Weighted fair queueing by cost, between calls: small calls are not starved behind large ones.

Every queued item belongs to a flow (one RPC: its `services.backends.deadline.CallScope`) and
has a cost (the batcher's cells, rows x width). The queue hands items out in order of their
virtual finish tags, as WF2Q+ does (Bennett and Zhang, "Hierarchical packet fair queueing
algorithms", 1996)::

    start  = max(V, the flow's previous finish tag)
    finish = start + cost

where the virtual time V advances, per item served, by its cost divided by the number of flows
with queued work (each flow's share of a fair server), and never lags behind the smallest start
tag queued. So:

- a new small call is tagged from V, and goes ahead of the later parts of a large call queued
  before it (whose finish tags add up all its earlier parts), even behind hundreds of them;
- a flow's tags grow with the work it has queued, and V reaches any given tag after finitely
  many items, so no item waits forever, whatever keeps arriving (a bounded wait, unlike
  shortest-first);
- flows of equal demand are served round-robin, each in its own arrival order.
"""

from __future__ import annotations

import heapq
import itertools
import weakref
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class _Flow:
    __slots__ = ("finish", "queued")

    def __init__(self) -> None:
        self.finish = 0.0  # the finish tag of the flow's newest item
        self.queued = 0  # its items still in the queue


class Entry(Generic[T]):
    """One queued item with its tags; `queued` is False once it is popped or removed."""

    __slots__ = ("item", "cost", "start", "finish", "seq", "flow", "queued")

    def __init__(self, item: T, cost: float, start: float, seq: int, flow: _Flow) -> None:
        self.item = item
        self.cost = cost
        self.start = start
        self.finish = start + cost
        self.seq = seq
        self.flow = flow
        self.queued = True

    def __lt__(self, other: Entry[T]) -> bool:
        return (self.finish, self.seq) < (other.finish, other.seq)


class FairQueue(Generic[T]):
    """Items of several flows, handed out fairly by cost.

    A flow is any weak-referenceable object (the batcher uses the call's scope); its tags are
    kept while the object lives, so a call that queues its parts one after another is still
    one flow. `None` makes every item its own flow.

    Example::

        q = FairQueue()
        q.push(big_call, "big-1", cost=4096); q.push(big_call, "big-2", cost=4096)
        q.push(small_call, "small", cost=10)
        [q.pop().item for _ in range(3)]   # ["small", "big-1", "big-2"] (tags 10, 4096, 8192)
    """

    def __init__(self) -> None:
        self._heap: list[Entry[T]] = []
        self._flows: weakref.WeakKeyDictionary[object, _Flow] = weakref.WeakKeyDictionary()
        self._seq = itertools.count()
        self._active = 0  # flows with queued items
        self._size = 0  # live entries
        self.queued_cost = 0.0  # their total cost
        self.virtual_time = 0.0

    def __len__(self) -> int:
        return self._size

    def _flow(self, key: object | None) -> _Flow:
        if key is None:
            return _Flow()
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = _Flow()
        return flow

    def finish_tags(self, key: object | None, costs: list[float]) -> list[float]:
        """The finish tags items of these costs would get if `key` queued them now (no change)."""
        flow = self._flows.get(key) if key is not None else None
        tag = max(self.virtual_time, flow.finish if flow is not None else 0.0)
        tags = []
        for cost in costs:
            tag += cost
            tags.append(tag)
        return tags

    def push(self, key: object | None, item: T, cost: float) -> Entry[T]:
        """Queue `item` of `cost` (>= 0) for flow `key`; return its entry (for `remove`)."""
        flow = self._flow(key)
        entry = Entry(item, float(cost), max(self.virtual_time, flow.finish), next(self._seq), flow)
        flow.finish = entry.finish
        if flow.queued == 0:
            self._active += 1
        flow.queued += 1
        self._size += 1
        self.queued_cost += entry.cost
        heapq.heappush(self._heap, entry)
        return entry

    def peek(self) -> Entry[T] | None:
        """The entry `pop` would return, or None when the queue is empty."""
        while self._heap and not self._heap[0].queued:
            heapq.heappop(self._heap)  # removed earlier
        return self._heap[0] if self._heap else None

    def pop(self) -> Entry[T]:
        """Take the entry with the smallest finish tag and advance the virtual time.

        Raises IndexError when the queue is empty."""
        entry = self.peek()
        if entry is None:
            raise IndexError("pop from an empty FairQueue")
        self.virtual_time += entry.cost / max(1, self._active)
        heapq.heappop(self._heap)
        self._unqueue(entry)
        smallest_start = min((e.start for e in self._heap if e.queued), default=None)
        if smallest_start is not None and smallest_start > self.virtual_time:
            self.virtual_time = smallest_start
        return entry

    def remove(self, entry: Entry[T]) -> bool:
        """Drop a queued entry (its call was cancelled); False if it had already left the queue."""
        if not entry.queued:
            return False
        self._unqueue(entry)
        return True

    def _unqueue(self, entry: Entry[T]) -> None:
        entry.queued = False
        entry.flow.queued -= 1
        if entry.flow.queued == 0:
            self._active -= 1
        self._size -= 1
        self.queued_cost = self.queued_cost - entry.cost if self._size else 0.0  # no float drift when empty

    def ahead_of(self, tag: float) -> Iterator[Entry[T]]:
        """The queued entries that leave before an item tagged `tag` would."""
        return (e for e in self._heap if e.queued and e.finish <= tag)

    def drain(self) -> list[T]:
        """Remove and return every queued item."""
        items = [e.item for e in sorted(e for e in self._heap if e.queued)]
        for e in self._heap:
            if e.queued:
                self._unqueue(e)
        self._heap.clear()
        return items
