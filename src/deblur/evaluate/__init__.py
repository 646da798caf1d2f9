"""Metrics, the classical baseline and the tables of `deblur evaluate` (DESIGN.md protocol)."""

from deblur.evaluate.protocol import evaluate, run

__all__ = ["evaluate", "run"]
