"""Environment variables set for one block and put back afterwards (MLflow reads its
settings from the environment at each request, so a scoped setting is a scoped variable)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def scoped(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ inside the block; restore (or remove) them after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
