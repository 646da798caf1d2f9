"""The machine's float32 limit, against which bench reports each path's share."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from deblur.bench.timing import timed


def peak_gflops(sizes: tuple[int, ...], repeats: int) -> tuple[float, str]:
    """(GFLOP/s, how) of the fastest float32 matrix product this machine runs: the limit.

    Both of the BLAS libraries at hand, at several sizes: on some CPUs numpy's OpenBLAS
    beats torch's MKL, and oneDNN's convolutions can outrun MKL's matmul, so one library's
    figure is not the machine's peak.
    """
    gen = np.random.default_rng(0)
    best, how = 0.0, ""
    for n in sizes:
        a, b = (gen.random((n, n), dtype=np.float32) for _ in range(2))
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        products = {"torch.mm": partial(torch.mm, ta, tb), "numpy": partial(np.matmul, a, b)}
        for name, product in products.items():
            gflops = 2 * n**3 / timed(product, repeats) / 1e9
            if gflops > best:
                best, how = gflops, f"{name} {n}x{n}"
    return best, how
