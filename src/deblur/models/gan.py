"""The seed's GAN: a residual encoder-decoder generator and a PatchGAN discriminator."""

from __future__ import annotations

import torch
from torch import nn

from deblur.config import DiscriminatorConfig, GeneratorConfig
from deblur.models.blocks import ResBlock, UNet, down, level_widths, up


class Generator(UNet):
    """Blurry image -> sharp image, as input + a learned residual.

    A 3x3 head, ``n_down`` levels of a stride-2 conv (width doubling up to
    ``max_channels``) and a residual block, ``n_res`` residual blocks at the lowest
    resolution, where a 3x3 conv spans 2**n_down pixels of the image and a long motion blur
    fits into a few of them, then levels of a residual block and a stride-2 transposed conv
    back up, each adding the encoder's features of its level, and a zero-initialised 3x3
    tail. No batch norm anywhere (see ResBlock).

    ``attention`` gates the lowest-level blocks with channel and spatial attention. The
    seed names its absence as a limitation of its GAN; measured here it is what lets the
    generator learn in a short CPU budget: camera shake blurs the whole frame alike, and
    the channel gate's global average is where that shared blur is seen.
    """

    def __init__(self, config: GeneratorConfig):
        widths = level_widths(config.channels, config.n_down, config.max_channels)

        def encoder(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(*down(c_in, c_out), ResBlock(c_out))

        def decoder(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(ResBlock(c_in), *up(c_in, c_out))

        body = nn.Sequential(
            *(ResBlock(widths[-1], attention=config.attention) for _ in range(config.n_res))
        )
        super().__init__(widths, encoder=encoder, body=body, decoder=decoder)
        self.config = config


class Discriminator(nn.Module):
    """PatchGAN (pix2pix): conv + batch norm + LeakyReLU, one real/fake score per patch.

    ``forward`` returns logits, not the reference study's sigmoid probabilities: the losses
    apply the sigmoid themselves (BCE-with-logits is the numerically safe form of sigmoid +
    BCE, and LSGAN/WGAN want the raw score).
    With n_layers=3 each score sees a 70x70 patch; inputs need sides >= 3 * 2**n_layers.
    """

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        c, n = config.channels, config.n_layers
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        c_in = c
        for i in range(1, n + 1):
            c_out = c * min(2**i, 8)
            # Batch norm follows, so the conv's bias would be cancelled by its mean.
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride=2 if i < n else 1, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 4, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
