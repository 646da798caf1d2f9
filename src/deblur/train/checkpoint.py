"""Training checkpoints: the model file, and beside it what `--resume` needs to continue
bit-for-bit (paths.train_state)."""

from __future__ import annotations

from typing import Any

import torch

from deblur import models, paths
from deblur.errors import DeblurError
from deblur.fsutil import atomic_path


def save(kind: str, model, arch, train_state: dict[str, Any], meta: dict) -> None:
    """Write both files atomically: a crash mid-save leaves the previous good ones in place.

    The training state goes first and names the step it belongs to, so a crash between
    the two writes is caught by --resume instead of resuming mismatched weights.
    """
    with atomic_path(paths.train_state(kind)) as tmp:
        torch.save({"kind": kind, "step": meta["steps"], "train": train_state}, tmp)
    payload = models.checkpoint_dict(kind, model, arch)
    payload["meta"] = meta
    with atomic_path(paths.checkpoint(kind)) as tmp:
        torch.save(payload, tmp)


def load_state(kind: str) -> dict[str, Any]:
    """The checkpoint with its training state under "train", for Trainer.restore."""
    model_file, state_file = paths.checkpoint(kind), paths.train_state(kind)
    for path in (model_file, state_file):
        if not path.is_file():
            raise DeblurError(f"--resume: no {path}; train without --resume first")
    payload = torch.load(model_file, map_location="cpu", weights_only=True)
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    if payload.get("kind") != kind or state.get("kind") != kind:
        raise DeblurError(
            f"--resume: {model_file} is not a resumable {kind} checkpoint; train without --resume"
        )
    if state.get("step") != payload.get("meta", {}).get("steps"):
        raise DeblurError(
            f"--resume: {state_file} is from another step than {model_file} (an interrupted "
            "save?); train without --resume"
        )
    payload["train"] = state["train"]
    return payload
