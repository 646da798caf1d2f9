"""A device name from the command line -> a torch.device, the same for every command."""

from __future__ import annotations

from pathlib import Path

import torch

from deblur.errors import DeblurError


def resolve(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' -> this process's GPU under torchrun
    (``local_rank``); anything else as torch spells it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeblurError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise DeblurError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeblurError(f"device '{name}' asked for, but no CUDA GPU is visible; use cpu")
    return device


# CPU flags of native bfloat16 arithmetic. torch's own check (mkldnn bf16 "supported") is
# also true on plain AVX-512, where oneDNN emulates bfloat16 more slowly than float32 runs.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo_values(key: str, cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The value of every ``key : value`` line of /proc/cpuinfo (one per logical CPU); none
    where the file is missing (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return []
    values = []
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        # An exact key: "flags" must not also take the "vmx flags" line of newer kernels.
        if sep and name.strip() == key:
            values.append(value.strip())
    return values


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """This CPU's feature flags (avx2, fma, avx512f, ...); empty where there are none to
    read, so that no capability is claimed."""
    return frozenset(flag for value in cpuinfo_values("flags", cpuinfo) for flag in value.split())


def native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), from its flags."""
    return not cpu_flags(cpuinfo).isdisjoint(NATIVE_BF16_FLAGS)
