"""Training throughput: samples per second through the real Trainer.step, and the GFLOP/s
that makes."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from deblur.bench.timing import Sizes, timed
from deblur.config import Params
from deblur.train.distributed import World
from deblur.train.loop import Trainer


def bench_train(kind: str, params: Params, sizes: Sizes, repeats: int) -> dict[str, Any]:
    """Samples per second of Trainer.step: forward, losses, backward, AdamW (and, for the
    GAN, the discriminator's step), on random tensors of the profile's crop and batch."""
    cfg = getattr(params.train, kind)
    crop, batch = (
        (min(cfg.crop, 64), min(cfg.batch_size, 2)) if sizes.quick else (cfg.crop, cfg.batch_size)
    )
    # The Trainer seeds torch and turns on deterministic algorithms, as training does:
    # measure under them, then give the process its own settings back.
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with torch.random.fork_rng():
            # No data: the step alone, on tensors of its own.
            cpu = World(rank=0, size=1, device=torch.device("cpu"))
            trainer = Trainer(kind, cfg, params.seed, cpu)
            gen = torch.Generator().manual_seed(0)
            blur, sharp = (torch.rand(batch, 3, crop, crop, generator=gen) for _ in range(2))
            # Counted, not estimated as 3x the forward: the GAN's step also runs the
            # discriminator forward and backward, twice. One more step, outside the timing.
            with FlopCounterMode(display=False) as counter:
                trainer.step(blur, sharp)
            flop = counter.get_total_flops()
            seconds = timed(lambda: trainer.step(blur, sharp), repeats)
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    return {
        "samples_per_s": round(batch / seconds, 2),
        "step_ms": round(seconds * 1e3, 1),
        "gflop_per_step": round(flop / 1e9, 3),
        "gflops": round(flop / seconds / 1e9, 2),
        "batch_size": batch,
        "crop": crop,
        "how": "Trainer.step on random tensors (no data loading); FLOP of its convolutions "
        "and matrix products, forward and backward, as torch's FlopCounterMode counts them",
    }
