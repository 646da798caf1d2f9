"""An exponential moving average of a model's weights: the model a short run ships.

Late in a short run the weights still jitter from batch to batch around a better point;
their average sits nearer to it, at the cost of a copy of the weights and one fused
multiply-add per parameter and step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow = d * shadow + (1 - d) * weights`` after every step, with d = min(decay,
    (1 + t) / (10 + t)) at update t: a plain average over the first updates, so the
    shadow does not remember the untrained initial weights for 1 / (1 - decay) steps."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def rate(self) -> float:
        t = self.updates
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.rate()
        self.updates += 1
        current = model.state_dict()
        for name, value in self.shadow.state_dict().items():
            if value.is_floating_point():
                value.lerp_(current[name].detach(), 1 - d)
            else:  # integer buffers (batch-norm counters) are copied, not averaged
                value.copy_(current[name])

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.shadow.load_state_dict(state["shadow"])
