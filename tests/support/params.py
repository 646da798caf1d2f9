"""Params small enough to render, validate and preprocess in a second or two."""

from __future__ import annotations

TINY = {
    "seed": 0,
    "data": {
        "synthetic": {
            "train_scenes": 3,
            "test_scenes": 2,
            "pairs_per_scene": 2,
            "height": 48,
            "width": 64,
            "frames": 5,
            "noise": 0.002,  # at 48x64 some crops are smooth enough for noise to rival blur
        }
    },
    "validate": {"min_train_pairs": 2, "min_test_pairs": 2},
    "train": {"val_fraction": 0.34},
}
