"""The two models by name: the one list every stage, table and page iterates over.

Adding a model kind starts here (docs/architecture.md, "A new model").
"""

from __future__ import annotations

from deblur.errors import DeblurError

KINDS = ("gan", "ae")
# How people read each kind: on the demo page, in the report and in the results table.
LABELS = {"gan": "GAN", "ae": "Autoencoder"}
# Registered model names in the MLflow model registry.
REGISTERED = {"gan": "deblur-gan", "ae": "deblur-ae"}


def check(kind: str) -> str:
    """``kind`` itself, or a one-line error naming the kinds there are."""
    if kind not in KINDS:
        raise DeblurError(f"unknown model '{kind}'; use one of: {', '.join(KINDS)}")
    return kind


def registered_name(kind: str) -> str:
    return REGISTERED[check(kind)]
