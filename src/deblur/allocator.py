"""Keep glibc from handing big tensors' memory back to the kernel after every layer.

PyTorch has no caching allocator on the CPU: each activation is a malloc. glibc serves
requests above its mmap threshold with a fresh mmap, which the kernel then fills page by
page (a page fault per 4 KiB), and gives shrinking heap memory back at once. A 1280x720
forward pass of the default GAN took tens of thousands of page faults that way; with the
thresholds below it takes none and runs markedly faster, for somewhat more peak memory
(README, "Speed"). `deblur bench` reports the setting next to its numbers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt(3) parameters and the values set: activations up to 64 MiB (a 16-channel 720p
# map is 59 MiB) come from the heap, and up to 1 GiB of freed heap is kept for reuse.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD, TRIM_THRESHOLD = 64 << 20, 1 << 30


@functools.cache
def tune() -> str:
    """Set the thresholds once per process where libc is glibc; say what was done."""
    if not sys.platform.startswith("linux"):
        return f"untouched ({sys.platform} allocator)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return "untouched (libc without mallopt)"
    if (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1
        or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1
    ):
        return "untouched (mallopt refused the thresholds)"
    return f"glibc mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim {TRIM_THRESHOLD >> 20} MiB"


def release() -> bool:
    """Hand freed heap back to the kernel now (glibc's malloc_trim); False where unsupported.

    The trim threshold above keeps up to 1 GiB per malloc arena for the next request; a
    server going idle calls this so that reserve does not outlive the burst that built it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False
