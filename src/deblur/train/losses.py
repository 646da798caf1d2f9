"""Training losses: content (L1 / Charbonnier + frequency), perceptual, adversarial.

The pixel losses and the adversarial losses are small named tables (PIXEL, ADVERSARIAL),
whose keys params.yaml's content_loss and adversarial accept (config.py lists the same
names; a test keeps them equal): a new loss is one entry plus its test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deblur.errors import DeblurError


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """A smooth L1: robust like L1, but differentiable at zero so late training stays stable."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def psnr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minus the batch's mean PSNR (dB, per image): the test metric itself, as a loss.

    Per image, so that a nearly solved crop (high PSNR) pulls as hard as a badly blurred
    one; a batch-wide MSE would let the hard crops dominate (HINet's PSNR loss).
    """
    mse = ((pred - target) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(mse + 1e-8).mean()


def frequency_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between spectra: pixel losses under-weight the high frequencies that blur removes."""
    # "ortho" keeps the spectrum on the pixels' scale, whatever the crop size.
    diff = torch.fft.rfft2(pred.float(), norm="ortho") - torch.fft.rfft2(
        target.float(), norm="ortho"
    )
    return diff.abs().mean()


class Perceptual(nn.Module):
    """VGG19 feature distance (up to relu3_4), from a local weights file only: nothing downloads."""

    def __init__(self, weights: str | Path):
        super().__init__()
        from torchvision.models import vgg19

        path = Path(weights)
        if not path.is_file():
            raise DeblurError(
                f"VGG weights {path} not found; set vgg_weights to a local vgg19 state-dict "
                "file or perceptual_weight to 0"
            )
        vgg = vgg19(weights=None)
        try:
            vgg.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError) as exc:
            raise DeblurError(f"{path} is not a VGG19 state dict; check vgg_weights") from exc
        self.features = vgg.features[:18].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        norm = lambda x: (x - self.mean) / self.std  # noqa: E731
        return F.l1_loss(self.features(norm(pred)), self.features(norm(target)))


PIXEL: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "charbonnier": charbonnier,
    "psnr": psnr_loss,
}


def _pick(table: dict, name: str, what: str):
    if name not in table:
        raise DeblurError(f"unknown {what} '{name}'; use one of: {', '.join(table)}")
    return table[name]


class Content(nn.Module):
    """Everything that compares the output with the sharp frame, weighted by the params."""

    def __init__(self, cfg):
        super().__init__()
        self.pixel = _pick(PIXEL, cfg.content_loss, "train content_loss")
        self.fft_weight = cfg.fft_weight
        self.perceptual_weight = cfg.perceptual_weight
        self.perceptual = Perceptual(cfg.vgg_weights) if cfg.perceptual_weight > 0 else None

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.pixel(pred, target)
        if self.fft_weight:
            loss = loss + self.fft_weight * frequency_l1(pred, target)
        if self.perceptual is not None:
            loss = loss + self.perceptual_weight * self.perceptual(pred, target)
        return loss


# The discriminator returns logits; each adversarial loss applies its own link to them.


def _bce_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # The seed's: sigmoid + binary cross-entropy, fused for stability.
    return F.binary_cross_entropy_with_logits(
        real, torch.ones_like(real)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def _bce_g(fake: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def _lsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake))


def _lsgan_g(fake: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(fake, torch.ones_like(fake))


def _wgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()  # the critic; its gradient penalty is added by the loop


def _wgan_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


@dataclass(frozen=True)
class Adversarial:
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (real, fake logits) -> D's loss
    g: Callable[[torch.Tensor], torch.Tensor]  # fake logits -> G's loss
    gradient_penalty: bool = False  # WGAN-GP's critic needs it to stay 1-Lipschitz


ADVERSARIAL = {
    "bce": Adversarial(_bce_d, _bce_g),
    "lsgan": Adversarial(_lsgan_d, _lsgan_g),
    "wgan-gp": Adversarial(_wgan_d, _wgan_g, gradient_penalty=True),
}


def adversarial(name: str) -> Adversarial:
    return _pick(ADVERSARIAL, name, "train gan adversarial loss")


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: keep the critic 1-Lipschitz along lines between real and generated images."""
    eps = torch.rand(real.size(0), 1, 1, 1, device=real.device)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
