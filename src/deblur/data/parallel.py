"""Map a function over many images on every core, in order, behind one progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 8  # decoding PNGs stops scaling well before this on one disk
SMALL = 16  # below this many items a process pool costs more than it saves


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


def imap(
    fn: Callable[[T], R],
    items: Sequence[T],
    desc: str,
    unit: str = "it",
    workers: int | None = None,
    weight: int = 1,
) -> Iterator[R]:
    """Yield fn(item) for each item, in the items' order, ticking the bar ``weight`` per item.

    Results come back in order, so what the caller writes is the same bytes whatever the
    number of workers (default: one per core up to MAX_WORKERS, none for a few items).
    ``fn`` must be picklable (a module-level function or a partial of one).
    """
    if workers is None:
        workers = default_workers() if len(items) >= SMALL else 1
    bar = tqdm(total=len(items) * weight, desc=desc, unit=unit)
    with bar:
        if workers <= 1:
            results: Iterable[R] = map(fn, items)
            for result in results:
                bar.update(weight)
                yield result
            return
        chunk = max(1, len(items) // (workers * 8))
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(fn, items, chunksize=chunk):
                bar.update(weight)
                yield result
