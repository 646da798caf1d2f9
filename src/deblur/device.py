"""A device name from the command line -> a torch.device, the same for every command."""

from __future__ import annotations

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
