"""The training options of the quality work: EMA, schedule, PSNR loss, precision, layout,
compile, and the part-way checkpoints of the quality curve (README, "Quality")."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deblur import config, paths
from deblur.errors import DeblurError
from deblur.metrics import psnr
from deblur.train import losses
from deblur.train.distributed import World
from deblur.train.ema import EMA
from deblur.train.loop import Trainer, autocast_dtype, warmup_cosine
from deblur.train.stage import curve_epochs

CPU = World(0, 1, torch.device("cpu"))


def fit(kind: str, params: config.Params, **options):
    """The training stage as cli.py calls it: the train section, the seed, the protocol."""
    from deblur.train.stage import run

    return run(kind, params.train, params.seed, params.preprocess.protocol, **options)


def trainer_for(kind: str, params: config.Params, world):
    """A Trainer over ``kind``'s own section of ``params``."""
    from deblur.train.loop import Trainer

    return Trainer(kind, getattr(params.train, kind), params.seed, world)


def test_ema_matches_a_hand_computed_average():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.5)
    expected = 1.0
    for t, weight in enumerate([3.0, 5.0, -1.0, 2.0]):
        with torch.no_grad():
            model.weight.fill_(weight)
        d = min(0.5, (1 + t) / (10 + t))  # 0.1, 0.1818, 0.25, 0.3077: then capped at 0.5
        expected = d * expected + (1 - d) * weight
        ema.update(model)
        assert float(ema.shadow.weight) == pytest.approx(expected, rel=1e-6)
    # Hand-computed: 0.1*1 + 0.9*3 = 2.8; 0.1818*2.8 + 0.8182*5 = 4.6; 0.25*4.6 - 0.75 = 0.4;
    # 0.3077*0.4 + 0.6923*2 = 1.5077
    assert float(ema.shadow.weight) == pytest.approx(1.5077, abs=1e-4)
    assert not ema.shadow.weight.requires_grad


def test_ema_state_round_trip():
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.9)
    ema.update(model)
    other = EMA(nn.Linear(2, 2), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    assert torch.equal(other.shadow.weight, ema.shadow.weight)


def test_warmup_cosine_schedule_by_hand():
    factor = warmup_cosine(warmup=4, total=14, floor=0.1)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)  # the decay starts at the peak
    assert factor(9) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos(pi/2) = 0
    assert factor(14) == pytest.approx(0.1)  # the floor at the last step
    assert warmup_cosine(0, 10, floor=0.0)(10) == pytest.approx(0.0)


def test_psnr_loss_is_minus_the_mean_psnr():
    gen = torch.Generator().manual_seed(0)
    sharp = torch.rand(2, 3, 9, 11, generator=gen)
    pred = (sharp + 0.05 * torch.randn(2, 3, 9, 11, generator=gen)).clamp(0, 1)
    by_hand = [
        10 * math.log10(1 / float(((p - s) ** 2).mean())) for p, s in zip(pred, sharp, strict=True)
    ]
    assert float(losses.psnr_loss(pred, sharp)) == pytest.approx(-sum(by_hand) / 2, rel=1e-5)
    # ...and agrees with the metric the results table uses, on the same float image.
    image = lambda t: t.permute(1, 2, 0).numpy()  # noqa: E731
    assert -float(losses.psnr_loss(pred[:1], sharp[:1])) == pytest.approx(
        psnr(image(pred[0]), image(sharp[0])), abs=1e-3
    )


def _trainer(kind: str, smoke_params, **train) -> Trainer:
    raw = smoke_params(epochs=1)
    raw["train"][kind].update(warmup_steps=0, steps_per_epoch=100, **train)
    return trainer_for(kind, config.parse(raw), CPU)


OPTIONS = [
    {"ema": 0.99},
    {"content_loss": "psnr"},
    {"channels_last": True},
    {"lr_floor": 0.0, "grad_clip": 0.05},
    {"precision": "fp32"},
    pytest.param({"compile": True}, marks=pytest.mark.slow),  # ~1 min of compiling
]


@pytest.mark.parametrize("kind", ["gan", "ae"])
@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: ",".join(o))
def test_every_option_trains_at_odd_sizes(kind, option, smoke_params):
    """Crops whose sides divide by no power of two: the padding path of both models."""
    trainer = _trainer(kind, smoke_params, **option)
    gen = torch.Generator().manual_seed(1)
    blur = torch.rand(2, 3, 37, 53, generator=gen)
    sharp = (blur + 0.1 * torch.rand(2, 3, 37, 53, generator=gen)).clamp(0, 1)
    before = [p.detach().clone() for p in trainer.shipped().parameters()]
    for _ in range(3):
        parts = trainer.step(blur, sharp)
    assert torch.isfinite(parts["loss"])
    shipped = trainer.shipped().eval()
    assert any(not torch.equal(a, b) for a, b in zip(before, shipped.parameters(), strict=True)), (
        "the shipped model never moved"
    )
    with torch.no_grad():
        out = shipped(blur[:1])
    assert out.shape == blur[:1].shape


def test_ema_ships_the_average_and_resume_keeps_the_raw_weights(smoke_params):
    trainer = _trainer("ae", smoke_params, ema=0.9)
    blur = torch.rand(2, 3, 32, 32)
    for _ in range(3):
        trainer.step(blur, blur.flip(-1))
    raw = trainer.model.state_dict()
    shipped = trainer.shipped().state_dict()
    assert any(not torch.equal(raw[k], shipped[k]) for k in raw)  # an average, not a copy
    state = trainer.train_state()
    resumed = _trainer("ae", smoke_params, ema=0.9)
    resumed.restore({"model": shipped, "train": state})
    assert all(torch.equal(resumed.model.state_dict()[k], raw[k]) for k in raw)
    assert resumed.ema.updates == 3
    without = _trainer("ae", smoke_params)
    with pytest.raises(DeblurError, match="ema was changed"):
        without.restore({"model": shipped, "train": state})


def test_precision_auto_is_fp32_on_a_cpu_and_bf16_needs_native_support(monkeypatch):
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    monkeypatch.setattr("deblur.device.native_bf16", lambda *a: False)
    with pytest.raises(DeblurError, match="no native bfloat16"):
        autocast_dtype("bf16", cpu)
    monkeypatch.setattr("deblur.device.native_bf16", lambda *a: True)
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    # A GPU without bf16 (pre-Ampere): auto falls back to float16, an explicit bf16 refuses.
    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype("auto", gpu) is torch.float16
    with pytest.raises(DeblurError, match="no native bfloat16"):
        autocast_dtype("bf16", gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("bf16", gpu) is torch.bfloat16


def test_curve_shares_fall_on_epochs_before_the_last():
    cfg = config.parse({"train": {"gan": {"epochs": 8, "curve": [0.5, 0.25]}}}).train.gan
    assert cfg.curve == (0.25, 0.5)
    assert curve_epochs(cfg) == {2: 25, 4: 50}
    odd = config.parse({"train": {"gan": {"epochs": 3, "curve": [0.25, 0.5]}}}).train.gan
    assert curve_epochs(odd) == {1: 33, 2: 67}  # the nearest epoch; its true share
    assert curve_epochs(config.parse({"train": {"gan": {"epochs": 1}}}).train.gan) == {}
    with pytest.raises(config.ConfigError, match="between 0 and 1"):
        config.parse({"train": {"ae": {"curve": [1.0]}}})


def test_training_keeps_the_curve_checkpoints(trained_project, smoke_params):
    from deblur import models

    raw = smoke_params(epochs=4)
    raw["train"]["ae"]["curve"] = [0.25, 0.5]
    fit("ae", config.parse(raw), device="cpu")
    kept = sorted(p.name for p in paths.curve_dir("ae").iterdir())
    assert kept == ["25.pt", "50.pt"]
    quarter = torch.load(paths.curve_checkpoint("ae", 25), weights_only=True)
    final = torch.load(paths.checkpoint("ae"), weights_only=True)
    assert quarter["meta"]["steps"] * 4 == final["meta"]["steps"]
    assert "seconds" not in final["meta"]  # a DVC out: nothing a rerun changes
    assert models.load(paths.curve_checkpoint("ae", 50)) is not None
    # A fresh run forgets the last run's part-way checkpoints.
    raw["train"]["ae"].update(epochs=1)
    fit("ae", config.parse(raw), device="cpu")
    assert list(paths.curve_dir("ae").iterdir()) == []


def test_torchrun_with_one_process_trains_through_ddp(smoke_params, monkeypatch):
    """What `torchrun --nproc_per_node 1` sets up: a process group of one, and DDP."""
    from servers import free_port
    from torch.nn.parallel import DistributedDataParallel

    from deblur.train import distributed

    env = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**env, "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    world = distributed.init("cpu")
    try:
        assert world.distributed and world.size == 1
        raw = smoke_params(epochs=1)
        trainer = trainer_for("ae", config.parse(raw), world)
        assert isinstance(trainer.model, DistributedDataParallel)
        blur = torch.rand(2, 3, 32, 32)
        assert torch.isfinite(trainer.step(blur, blur.flip(-1))["loss"])
    finally:
        distributed.shutdown(world)
    assert not torch.distributed.is_initialized()
