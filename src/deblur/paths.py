"""The paths of the DAG, as fixed by DESIGN.md; relative to the project root (DVC's cwd)."""

from pathlib import Path

DATA = Path("data")
RAW = DATA / "raw"
MANIFEST = DATA / "manifest.csv"
PROCESSED = DATA / "processed"
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")
FIGURES = REPORTS / "figures"
EXPECTATIONS = Path("pipeline") / "expectations"


def raw_dir(name: str) -> Path:
    return RAW / name


def checkpoint(kind: str) -> Path:
    return MODELS / f"{kind}.pt"


def train_state(kind: str) -> Path:
    """What `deblur train --resume` continues from: optimizer, scheduler, RNG, history.

    Kept out of the checkpoint so that loading a model for inference reads the weights
    alone: the optimizer state made models/*.pt 3x larger and its loading 5x slower.
    """
    return MODELS / f"{kind}.train.pt"
