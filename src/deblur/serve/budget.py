"""The server's folder: how many uploads are received at once, and how much disk its
uploads and results may hold.

Each upload being received holds a slot and is counted at the full upload cap until it
is done (its size is not known before), and every file in the folder counts as it is. An
upload that would not fit, or finds no free slot, is refused with 503 and Retry-After
before a byte of its body is read; the queue (queue.py) bounds the work, this bounds the
disk, so a client withholding its last byte holds one slot for ``body_timeout_s`` at most.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path

from deblur.serve.uploads import UploadError, megabytes


def disk_use(folder: Path) -> int:
    """Bytes of the files under ``folder`` (the folder is small: a few files per job)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with suppress(OSError):  # removed meanwhile
                total += os.stat(os.path.join(root, name)).st_size
    return total


class Budget:
    def __init__(
        self,
        folder: Path,
        slots: int,
        disk_bytes: int,
        upload_bytes: int,
        retry_s: Callable[[], int],
    ):
        self.folder, self.slots, self.disk_bytes = folder, slots, disk_bytes
        self.upload_bytes, self.retry_s = upload_bytes, retry_s
        self.lock = threading.Lock()
        self.receiving = 0
        self.refused = 0

    def _busy(self, message: str) -> UploadError:
        self.refused += 1
        wait = max(1, math.ceil(self.retry_s()))
        return UploadError(
            503, f"{message}; try again in about {wait} s", headers={"Retry-After": str(wait)}
        )

    def check(self) -> None:
        """Raise the 503 an upload would get now."""
        with self.lock:
            self._check()

    def _check(self) -> None:
        if self.receiving >= self.slots:
            raise self._busy(f"the server is receiving {self.receiving} uploads, the most it takes")
        held = disk_use(self.folder) + self.receiving * self.upload_bytes
        if held + self.upload_bytes > self.disk_bytes:
            raise self._busy(
                f"the server's folder is full ({megabytes(held)} of {megabytes(self.disk_bytes)} "
                "held by uploads and results, serve.disk_mb)"
            )

    @contextmanager
    def slot(self):
        """Hold an upload slot while its body is received, or raise the 503."""
        with self.lock:
            self._check()
            self.receiving += 1
        try:
            yield
        finally:
            with self.lock:
                self.receiving -= 1
