"""The resume state a stopped training continues from without `--resume` by hand.

Written by rank 0 at every epoch end (so a SIGKILL loses at most the epoch in flight) and
when training stops early (SIGTERM, a tracking server gone for good), into
paths.resume_dir: outside the stage's DVC outs, which `dvc repro` deletes before it runs
the stage. It holds the weights, the training state (mid-epoch too) and the copies of the
quality curve, and is used only when its fingerprint, the training params and the bytes of
data/processed, is today's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from deblur import models, paths
from deblur.fsutil import atomic_path

STATE = "state.pt"


def fingerprint(logged: dict[str, Any]) -> str:
    """The training params and data/processed's bytes, hashed: what a resume must match."""
    digest = hashlib.sha256(json.dumps(logged, sort_keys=True).encode())
    root = paths.PROCESSED
    for file in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []:
        digest.update(str(file.relative_to(root)).encode())
        with file.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def save(trainer, mark: str) -> Path:
    """The Trainer's weights and state, tagged with ``mark`` (the fingerprint)."""
    home = paths.resume_dir(trainer.kind)
    home.mkdir(parents=True, exist_ok=True)
    payload = models.checkpoint_dict(trainer.kind, trainer.shipped(), trainer.arch)
    payload.update(
        fingerprint=mark,
        train=trainer.train_state(),
        meta=trainer.meta(),
        timings=trainer.state.timings,  # run-info's, which a DVC rerun does not keep
    )
    with atomic_path(home / STATE) as tmp:
        torch.save(payload, tmp)
    return home


def keep_curve(kind: str, checkpoint: Path) -> None:
    """A part-way checkpoint of the quality curve, kept for a resumed run to put back."""
    (paths.resume_dir(kind) / "curve").mkdir(parents=True, exist_ok=True)
    with atomic_path(paths.resume_dir(kind) / "curve" / checkpoint.name) as tmp:
        shutil.copyfile(checkpoint, tmp)


def load(kind: str, mark: str) -> tuple[dict[str, Any] | None, str]:
    """(payload for Trainer.restore, "") or (None, why there is nothing to resume)."""
    file = paths.resume_dir(kind) / STATE
    if not file.is_file():
        return None, ""
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file: training from scratch is the safe answer
        return None, f"{file} is unreadable"
    if payload.get("kind") != kind or payload.get("fingerprint") != mark:
        return None, f"{file} was made with other params or data"
    return payload, ""


def put_back_curve(kind: str) -> None:
    """The curve copies the stopped run made (DVC deleted its outs) back in models/curve."""
    saved = paths.resume_dir(kind) / "curve"
    for file in sorted(saved.glob("*.pt")) if saved.is_dir() else []:
        shutil.copyfile(file, paths.curve_dir(kind) / file.name)


def clear(kind: str) -> None:
    shutil.rmtree(paths.resume_dir(kind), ignore_errors=True)
