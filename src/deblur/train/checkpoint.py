"""Training checkpoints: the model file, and beside it what `--resume` needs to continue
bit-for-bit (paths.train_state)."""

from __future__ import annotations

from typing import Any

import torch

from deblur import models, paths
from deblur.errors import DeblurError
from deblur.fsutil import atomic_path


def write(obj, path) -> None:
    """torch.save ``obj`` to ``path`` atomically, the same bytes for the same tensors.

    Through an open file, not the path: given a path, torch names the archive's folder
    after the file, and the atomic write's temporary name is random.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def save(kind: str, model, arch, train_state: dict[str, Any], meta: dict) -> None:
    """Write both files atomically: a crash mid-save leaves the previous good ones in place.

    The training state goes first and names the step it belongs to, so a crash between
    the two writes is caught by --resume instead of resuming mismatched weights. Both are
    DVC outs: ``meta`` and ``train_state`` hold nothing a rerun changes (no timings).
    """
    write({"kind": kind, "step": meta["steps"], "train": train_state}, paths.train_state(kind))
    payload = models.checkpoint_dict(kind, model, arch)
    payload["meta"] = meta
    write(payload, paths.checkpoint(kind))


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
