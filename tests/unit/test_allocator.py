"""The allocator setting: activations stop costing a page fault per 4 KiB after warm-up."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Page faults of three 720p forward passes of a small GAN, after two warm-up passes.
FORWARDS = """
import resource, sys, torch
from deblur import allocator, models
if sys.argv[1] == "tuned":
    print(allocator.tune(), file=sys.stderr)
torch.manual_seed(0)
model = models.build("gan", {"channels": 8, "max_channels": 16, "n_down": 2, "n_res": 1})
x = torch.rand(1, 3, 720, 1280)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.inference_mode():
    model.eval()(x)
    model(x)
    start = faults()
    for _ in range(3):
        model(x)
print(faults() - start)
"""


def faults(mode: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", FORWARDS, mode], capture_output=True, text=True, check=True
    )
    return int(proc.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_process_reuses_freed_memory():
    default = faults("default")
    assert default > 10_000  # glibc maps and unmaps every big activation, page by page
    assert faults("tuned") < default / 4  # the heap keeps them for the next pass


def test_tune_says_what_it_did_and_runs_once():
    from deblur import allocator

    first = allocator.tune()
    assert first is allocator.tune()  # cached: mallopt runs once per process
    if sys.platform.startswith("linux") and "glibc" in " ".join(platform.libc_ver()):
        assert first.startswith("glibc mmap threshold 64 MiB")
    else:
        assert first.startswith("untouched")
