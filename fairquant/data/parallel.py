"""Work in chunks over worker processes, results in order: decoding faces into a store, rendering the generated
faces."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

CHUNK = 256  # images per decoding or rendering task

Task = TypeVar("Task")
Result = TypeVar("Result")


def in_chunks(items: Sequence, size: int = CHUNK) -> list[Sequence]:
    """``items`` cut into consecutive slices of ``size`` (the last one shorter)."""
    return [items[start:start + size] for start in range(0, len(items), size)]


def map_in_order(function: Callable[[Task], Result], tasks: Sequence[Task], workers: int) -> Iterator[Result]:
    """``function(task)`` for each task, in order: in this process when ``workers`` is 1 or there is only one
    task, else in up to ``workers`` processes with at most two tasks per worker in flight (bounded memory)."""
    if workers == 1 or len(tasks) < 2:
        for task in tasks:
            yield function(task)
        return
    with ProcessPoolExecutor(min(workers, len(tasks))) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.submit(function, task))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
