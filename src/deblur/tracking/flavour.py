"""A checkpoint logged as the pyfunc model (pyfunc.py, models-from-code) and registered:
its signature (any image size), pinned requirements and input example."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deblur import fsutil
from deblur.kinds import registered_name
from deblur.tracking import access, store

PACKAGE = Path(__file__).parent.parent  # the deblur package, shipped with the model as code


def model_signature():
    """Base64 image files in, base64 PNGs out (deblur.pyfunc), one string column each.

    Any image size goes through: a column of strings pins no height or width. The params
    are pyfunc.py's (tiles, and ``errors="rows"`` for `deblur batch`): MLflow drops any
    param a signature does not declare.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    column = Schema([ColSpec("string", "image")])
    params = ParamSchema(
        [
            # infer.TILE and OVERLAP (tracking imports nothing of inference; a test compares)
            ParamSpec("tile", "long", 1280),
            ParamSpec("overlap", "long", 32),
            ParamSpec("errors", "string", "raise"),
        ]
    )
    return ModelSignature(inputs=column, outputs=column, params=params)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{pkg}=={version(pkg)}"
        for pkg in ("torch", "numpy", "pandas", "pillow", "scikit-image", "pyyaml", "pydantic")
    ] + [f"mlflow=={version('mlflow')}"]


def _input_example():
    """A small image as the REST request carries it: what MLflow validates the model with."""
    import base64
    import io

    import pandas as pd
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode("ascii")]})


def _model_parts(checkpoint: str | os.PathLike) -> dict:
    return {
        "python_model": str(PACKAGE / "pyfunc.py"),  # models-from-code: nothing pickled
        "artifacts": {"checkpoint": str(checkpoint)},
        "code_paths": [str(PACKAGE)],
        "signature": model_signature(),
        "pip_requirements": _requirements(),
    }


def log_model(kind: str, checkpoint: str | os.PathLike):
    """Log the checkpoint as a pyfunc model in the active run and register a new version."""
    import mlflow

    info = mlflow.pyfunc.log_model(
        name="model",
        input_example=_input_example(),
        registered_model_name=registered_name(kind),
        **_model_parts(checkpoint),
    )
    return store.client().get_model_version(registered_name(kind), info.registered_model_version)


def save_model(checkpoint: str | os.PathLike, path: str | os.PathLike) -> Path:
    """The same MLflow model as log_model, saved to a local folder outside any run or
    registry: `deblur batch --model FILE.pt` scores a checkpoint through it."""
    import mlflow

    store.quiet_mlflow()  # "no input example": the signature is declared, by hand
    mlflow.pyfunc.save_model(path=str(path), **_model_parts(checkpoint))
    return Path(path)


def register_trained(kind: str, checkpoint: str | os.PathLike):
    """Log + register the checkpoint from inside the training run; tag it with its digest.

    The tag ties the version to the exact models/<kind>.pt file that `deblur evaluate`
    scores (the training state beside it, paths.train_state, stays out of the registry).
    """
    name = registered_name(kind)
    with access.acting(f"register a new version of {name}", "EDIT on the registered model"):
        mv = log_model(kind, Path(checkpoint))
    store.client().set_model_version_tag(
        registered_name(kind), mv.version, "checkpoint_sha256", fsutil.sha256(checkpoint)
    )
    return mv
