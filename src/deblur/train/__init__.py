"""`deblur train gan|ae`: the loop, losses, checkpoints and torchrun setup."""

from deblur.train.loop import fit


def run(kind: str, params, device: str = "auto", resume: bool = False) -> dict:
    return fit(kind, params, device=device, resume=resume)


__all__ = ["fit", "run"]
