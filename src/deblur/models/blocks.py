"""Building blocks shared by the generator and the autoencoder."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation)


def act() -> nn.Module:
    # Leaky so that a narrow CPU-sized model does not lose channels to dead ReLUs.
    return nn.LeakyReLU(0.2, inplace=True)


def zeroed(layer: nn.Conv2d) -> nn.Conv2d:
    """A layer that outputs zeros at init: the residual branch it ends starts switched off."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def level_widths(channels: int, n_down: int, cap: int) -> list[int]:
    """Width of each resolution level, full resolution first."""
    return [min(channels * 2**i, cap) for i in range(n_down + 1)]


def down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(c_in, c_out, stride=2), act())


def up(c_in: int, c_out: int) -> nn.Sequential:
    # Kernel 2, stride 2: every output pixel gets exactly one tap (no checkerboard overlap),
    # and it costs a quarter of a 3x3 conv at the higher resolution.
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 2, stride=2), act())


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right so height and width divide by ``multiple``.

    Reflection keeps the border statistics natural; an image smaller than the pad needed
    (where reflection is undefined) is padded by repeating its edge instead.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class ChannelAttention(nn.Module):
    """Squeeze-excitation: rescale each channel by a gate computed from all channels' means.

    The means are over the whole input, so tiled inference gives each tile its own gates;
    blending the tiles' overlaps hides the difference.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate(x.mean((2, 3))))[:, :, None, None]


class SpatialAttention(nn.Module):
    """CBAM's spatial gate: a per-pixel weight from the channel-wise mean and max."""

    def __init__(self, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(stats))


class ResBlock(nn.Module):
    """x + conv(act(conv(x))), optionally gated by channel then spatial attention.

    The last conv starts at zero, so every block starts as the identity: a deep stack then
    trains without normalisation layers (as in SkipInit/Fixup), which restoration networks
    avoid anyway because batch statistics wash out the image's own contrast (EDSR).
    With ``dilation`` > 1 only the first conv is dilated; the dense second conv fills in the
    pixels the dilated one skips (gridding).
    """

    def __init__(self, channels: int, dilation: int = 1, attention: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels, dilation=dilation),
            act(),
            zeroed(conv3x3(channels, channels)),
        )
        self.attention = (
            nn.Sequential(ChannelAttention(channels), SpatialAttention())
            if attention
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.body(x))


class Restorer(nn.Module):
    """Base of both deblurring models: residual learning on any image size.

    A subclass builds ``residual``, a network whose input sides are multiples of
    ``multiple``. ``forward`` takes NCHW floats in [0, 1] of any height and width and returns
    the same shape: input + residual, so an untrained model is the identity and training
    only has to learn the (sparse) difference between blurry and sharp. In eval mode the
    output is clamped to [0, 1]; in training it is not, so that no pixel loses its gradient.
    """

    multiple: int = 1

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = x + self.residual(pad_to_multiple(x, self.multiple))[..., :h, :w]
        return out if self.training else out.clamp(0, 1)


Level = Callable[[int, int], nn.Module]  # (channels in, channels out) -> one level


class UNet(Restorer):
    """The skeleton both models share: encoder levels down, a body, decoder levels up.

    Each decoder level's output is added to the encoder features of the same resolution
    (additive skips cost no parameters and carry the detail that the low levels lost).
    """

    def __init__(self, widths: list[int], encoder: Level, body: nn.Module, decoder: Level):
        super().__init__()
        self.multiple = 2 ** (len(widths) - 1)
        self.head = nn.Sequential(conv3x3(3, widths[0]), act())
        self.encoder = nn.ModuleList(encoder(a, b) for a, b in pairwise(widths))
        self.body = body
        self.decoder = nn.ModuleList(decoder(b, a) for a, b in pairwise(widths))
        self.tail = zeroed(conv3x3(widths[0], 3))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.head(x)]
        for level in self.encoder:
            skips.append(level(skips[-1]))
        y = self.body(skips.pop())
        for level in reversed(self.decoder):
            y = level(y) + skips.pop()
        return self.tail(y)
