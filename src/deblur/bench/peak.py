"""The machine's float32 limit, against which bench reports each path's share.

Two figures, and the peak is the higher: the fastest float32 product measured here
(numpy's BLAS, torch.mm, a oneDNN convolution) and the cores' own limit, vector lanes x
FMA units x clock x cores. A measured product alone is no limit: on an AVX-512 machine the
GAN's convolutions ran at 381 GFLOP/s against a best matmul of 244, "156% of peak".
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deblur.bench.timing import timed
from deblur.device import cpu_flags, cpuinfo_values

CPUINFO = Path("/proc/cpuinfo")
CPU_DIR = Path("/sys/devices/system/cpu")

# fp32 lanes of the widest vector unit a flag names, widest first (FMA came with AVX2).
VECTOR_LANES = (("avx512f", 16), ("avx2", 8), ("fma", 8), ("avx", 8), ("sse", 4))
# FMA units per core. /proc/cpuinfo does not say; two is what x86 cores with FMA have had
# since Haswell and Zen 2. Cores with fewer (a one-port AVX-512 Xeon Silver, Zen 1, Zen 4's
# AVX-512 in 256-bit halves) only get a limit above their own: shares read low, never >100%.
FMA_UNITS = 2
FLOP_PER_FMA = 2  # a multiply and an add


@dataclass(frozen=True)
class FmaLimit:
    """The cores' own float32 limit: every lane of every FMA unit busy every cycle."""

    isa: str  # the flag that gave the vector width
    lanes: int
    units: int
    ghz: float
    clock_from: str
    cores: int

    @property
    def gflops(self) -> float:
        return self.lanes * self.units * FLOP_PER_FMA * self.ghz * self.cores

    def describe(self) -> str:
        return (
            f"{self.lanes} fp32 lanes ({self.isa}) x {self.units} FMA units x {FLOP_PER_FMA} "
            f"FLOP x {self.ghz:.2f} GHz ({self.clock_from}) x {self.cores} cores"
        )


def vector_units(flags: frozenset[str] | set[str]) -> tuple[str, int, int] | None:
    """(flag, fp32 lanes, FMA units) of the widest vector unit the CPU flags name; None
    where they name none this knows (not x86: no limit claimed)."""
    for flag, lanes in VECTOR_LANES:
        if flag in flags:
            # Without FMA, a multiply pipe and an add pipe give the same 2 FLOP per lane
            # and cycle as one FMA unit.
            return flag, lanes, FMA_UNITS if "fma" in flags else 1
    return None


def clock_ghz(cpuinfo: Path = CPUINFO, cpu_dir: Path = CPU_DIR) -> tuple[float, str] | None:
    """(GHz, where it was read) of the fastest core, or None where nothing says.

    cpufreq's cpuinfo_max_freq is the turbo clock; without cpufreq (most VMs) cpuinfo's
    "cpu MHz" is the clock of the moment, often the base one: below what the cores reach,
    which the >100% guard in `raise_to_measured` is there for.
    """
    khz = []
    for path in Path(cpu_dir).glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            khz.append(int(path.read_text()))
        except (OSError, ValueError):
            continue
    if khz:
        return max(khz) / 1e6, "cpufreq max"
    mhz = []
    for value in cpuinfo_values("cpu MHz", cpuinfo):
        try:
            mhz.append(float(value))
        except ValueError:
            continue
    return (max(mhz) / 1e3, "cpuinfo MHz") if mhz else None


def usable_cores(threads: int, cpus: set[int], cpu_dir: Path = CPU_DIR) -> int:
    """The physical cores torch computes on.

    torch's intra-op threads do every measured path's arithmetic: cores beyond them sit
    idle, and threads beyond the CPUs this process may run on (its affinity: a container's
    cpuset, taskset) only take turns. Hyperthreads of one core share its FMA units, so
    siblings count once.
    """
    cores = set()
    for cpu in cpus:
        try:
            cores.add((Path(cpu_dir) / f"cpu{cpu}/topology/thread_siblings_list").read_text())
        except OSError:  # no topology: each CPU its own core
            cores.add(str(cpu))
    return min(threads, len(cores))


def fma_limit(
    cpuinfo: Path = CPUINFO,
    cpu_dir: Path = CPU_DIR,
    threads: int | None = None,
    cpus: set[int] | None = None,
) -> FmaLimit | None:
    """This machine's FmaLimit, from its CPU flags, clock and cores; None where the flags or
    the clock cannot be read."""
    units = vector_units(cpu_flags(cpuinfo))
    clock = clock_ghz(cpuinfo, cpu_dir)
    if units is None or clock is None:
        return None
    threads = torch.get_num_threads() if threads is None else threads
    cpus = os.sched_getaffinity(0) if cpus is None else cpus
    isa, lanes, fma = units
    return FmaLimit(isa, lanes, fma, clock[0], clock[1], usable_cores(threads, cpus, cpu_dir))


def best_product(sizes: tuple[int, ...], conv: tuple[int, int], repeats: int) -> tuple[float, str]:
    """(GFLOP/s, how) of the fastest float32 product measured here.

    Every library at hand, at several sizes: on some CPUs numpy's OpenBLAS beats torch's
    MKL, and oneDNN's convolutions (what the models run) can outrun MKL's matmul.
    torch.nn.functional.linear is not tried: on the CPU it is torch.mm's addmm.
    """
    gen = np.random.default_rng(0)
    products = {}
    for n in sizes:
        a, b = (gen.random((n, n), dtype=np.float32) for _ in range(2))
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        products[f"torch.mm {n}x{n}"] = (partial(torch.mm, ta, tb), 2 * n**3)
        products[f"numpy {n}x{n}"] = (partial(np.matmul, a, b), 2 * n**3)
    channels, side = conv
    x = torch.from_numpy(gen.random((1, channels, side, side), dtype=np.float32))
    w = torch.from_numpy(gen.random((channels, channels, 3, 3), dtype=np.float32))
    x, w = (t.contiguous(memory_format=torch.channels_last) for t in (x, w))
    products[f"oneDNN conv 3x3 {channels}ch {side}x{side}"] = (
        partial(torch.nn.functional.conv2d, x, w, padding=1),
        2 * channels * channels * 9 * side * side,
    )
    best, how = 0.0, ""
    with torch.inference_mode():
        for name, (product, flop) in products.items():
            gflops = flop / timed(product, repeats) / 1e9
            if gflops > best:
                best, how = gflops, name
    return best, how


@dataclass(frozen=True)
class Peak:
    """The limit shares are taken of, and both figures it was chosen from."""

    gflops: float
    how: str
    gemm_gflops: float
    gemm_how: str
    fma_gflops: float | None
    fma_how: str
    raised: str | None = None  # the line saying a measured path beat both figures

    def fields(self) -> dict[str, Any]:
        """As bench's report keys: peak_gflops, peak_how, peak_gemm_gflops, ..."""
        return {f"peak_{key}": value for key, value in asdict(self).items()}


def combine(gemm_gflops: float, gemm_how: str, fma: FmaLimit | None) -> Peak:
    """The higher of the measured product and the FMA limit. Rounded as reported, so that
    a share worked out from the report is the share compared here."""
    gemm = round(gemm_gflops, 2)
    fma_gflops = round(fma.gflops, 2) if fma is not None else None
    fma_how = fma.describe() if fma is not None else "unknown: no CPU flags or clock to read"
    if fma_gflops is not None and fma_gflops >= gemm:
        return Peak(fma_gflops, "FMA limit", gemm, gemm_how, fma_gflops, fma_how)
    return Peak(gemm, f"measured {gemm_how}", gemm, gemm_how, fma_gflops, fma_how)


def raise_to_measured(peak: Peak, measured: dict[str, float]) -> Peak:
    """The peak, raised to the fastest measured path (name -> GFLOP/s) where one beat it,
    so that no share exceeds 100%. A path can only beat both figures when one is wrong:
    most likely the clock, read below the one the cores ran at."""
    if not measured:
        return peak
    name, top = max(measured.items(), key=lambda item: item[1])
    if top <= peak.gflops:
        return peak
    note = (
        f"peak raised from {peak.gflops:.1f} to {top:.1f} GFLOP/s: {name} ran faster than "
        "both figures (the clock read is likely below the one the cores ran at)"
    )
    return replace(peak, gflops=top, how=f"measured {name}", raised=note)


def share(gflops: float, peak: Peak) -> float:
    return round(gflops / peak.gflops, 3)
