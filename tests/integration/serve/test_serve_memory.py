"""The server's idle memory: what a burst leaves on the heap goes back once the queue empties.

deblur.allocator keeps up to 1 GiB of freed heap for the next activation (the speed-up in
the README); the server calls allocator.release when its queue runs dry, so that reserve
lasts a burst, not the process.
"""

from __future__ import annotations

import subprocess
import sys

CODE = """
import numpy as np
from deblur import allocator

def anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

allocator.tune()
blocks = [np.ones(16 << 20, np.uint8) for _ in range(24)]  # below the mmap threshold: heap
del blocks
held = anon_mb()
assert allocator.release()
print(held, anon_mb())
"""


def test_release_hands_a_bursts_heap_back():
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120, check=True
    )
    held, released = map(float, out.stdout.split())
    assert held - released > 300  # of the 384 MB freed, kept by the trim threshold until now
