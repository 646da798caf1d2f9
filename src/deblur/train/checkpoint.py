"""Training checkpoints: the model file plus what `--resume` needs to continue bit-for-bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deblur import models
from deblur.errors import DeblurError
from deblur.fsutil import atomic_path


def save(path: Path, kind: str, model, arch, train_state: dict[str, Any], meta: dict) -> None:
    """Write atomically: a crash mid-save leaves the previous good checkpoint in place."""
    payload = models.checkpoint_dict(kind, model, arch)
    payload["train"] = train_state
    payload["meta"] = meta
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_slim(path: Path, full: Path) -> None:
    """The model alone (no optimizer state): what the registry and users download."""
    payload = torch.load(full, map_location="cpu", weights_only=True)
    payload.pop("train", None)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: Path, kind: str) -> dict[str, Any]:
    if not path.is_file():
        raise DeblurError(f"--resume: no checkpoint at {path}; train without --resume first")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("kind") != kind or "train" not in payload:
        raise DeblurError(
            f"--resume: {path} is not a resumable {kind} checkpoint; train without --resume"
        )
    return payload
