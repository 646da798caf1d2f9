"""The reference study's autoencoder: progressive encoder, dilated bottleneck, attention decoder."""

from __future__ import annotations

from torch import nn

from deblur.config import AutoencoderConfig
from deblur.models.blocks import ResBlock, UNet, down, level_widths, up


class Autoencoder(UNet):
    """Blurry image -> sharp image, as input + a learned residual.

    Encoder: ``depth`` levels, each a stride-2 conv (width doubling up to ``max_channels``)
    and a residual block. Bottleneck: one residual block per entry of ``dilations``; a
    dilated 3x3 conv sees a (2d+1)-pixel window at the cost of a plain one, so together they
    cover the whole extent of a motion blur at low resolution. Decoder: at each level a
    residual block whose branch is gated by channel attention (which features matter) and
    spatial attention (where, e.g. on the blurred edges), then a stride-2 transposed conv,
    added to the encoder's features of the level above: the residual skip connections.
    The global skip (input + output) and zero-initialised tail come from Restorer/UNet.
    """

    def __init__(self, config: AutoencoderConfig):
        widths = level_widths(config.channels, config.depth, config.max_channels)

        def encoder(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(*down(c_in, c_out), ResBlock(c_out))

        def decoder(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(ResBlock(c_in, attention=config.attention), *up(c_in, c_out))

        bottleneck = nn.Sequential(*(ResBlock(widths[-1], dilation=d) for d in config.dilations))
        super().__init__(widths, encoder=encoder, body=bottleneck, decoder=decoder)
        self.config = config
