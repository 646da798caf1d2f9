"""The models: any image size in and out, identity at init, sizes, checkpoints, `deblur info`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deblur import config, models
from deblur.errors import ConfigError, DeblurError

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "pipeline" / "profiles"
from deblur.kinds import KINDS  # noqa: E402

# Small but complete: every block type is there (several levels, dilations, attention).
TINY = {
    "gan": {"channels": 8, "max_channels": 16, "n_down": 2, "n_res": 2},
    "ae": {"channels": 8, "max_channels": 16, "depth": 2, "dilations": [1, 2]},
}


def default(kind: str):
    return models.build(
        kind, models.arch_config(kind, getattr(config.load(ROOT / "params.yaml").train, kind))
    )


def blurry_pair(side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    sharp = F.avg_pool2d(torch.rand(2, 3, side, side), 3, 1, 1)  # some texture, in [0, 1]
    blur = F.avg_pool2d(sharp, (1, 9), 1, (0, 4), count_include_pad=False)  # horizontal motion
    return blur, sharp


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(133, 201), (17, 23)])
def test_any_size_comes_back_the_same_size(kind, size):
    model = default(kind)
    x = torch.rand(1, 3, *size)
    for train in (True, False):
        model.train(train)
        with torch.no_grad():
            assert model(x).shape == x.shape


@pytest.mark.parametrize("kind", KINDS)
def test_untrained_model_is_the_identity(kind):
    x = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(default(kind).eval()(x), x)


def test_eval_output_is_clamped_to_unit_range():
    model = models.build("gan", TINY["gan"])
    torch.nn.init.normal_(model.tail.weight)  # a trained model can overshoot
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert model.train()(x).abs().max() > 1
        out = model.eval()(x)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("kind, target", [("gan", 8.1e6), ("ae", 10.3e6)])
def test_seed_paper_profile_has_the_seed_sizes(kind, target):
    params = config.load(PROFILES / "seed-paper.yaml")
    with torch.device("meta"):  # shapes only: no 10M-parameter init on the CPU
        model = models.build(kind, models.arch_config(kind, getattr(params.train, kind)))
    assert models.count_params(model) == pytest.approx(target, rel=0.03)


@pytest.mark.parametrize("kind", KINDS)
def test_a_few_steps_lower_the_l1_loss_and_train_every_weight(kind):
    torch.manual_seed(0)
    model = models.build(kind, TINY[kind]).train()
    blur, sharp = blurry_pair()
    target = 0.8 * sharp + 0.15  # deblur, plus a tone change: a residual far from zero
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(10):
        loss = F.l1_loss(model(blur), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    # The zeroed layers open up after a step or two; then every weight gets a gradient.
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_discriminator_scores_patches():
    disc = models.build_discriminator({"channels": 8, "n_layers": 3})
    x = torch.rand(2, 3, 64, 64)
    assert disc(x).shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6


def test_build_rejects_unknown_kind_and_bad_config():
    with pytest.raises(DeblurError, match="unknown model 'vae'"):
        models.build("vae", {})
    with pytest.raises(ConfigError, match="n_res"):
        models.build("gan", {"n_res": -1})


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_round_trip_without_params(kind, tmp_path):
    torch.manual_seed(0)
    model = models.build(kind, TINY[kind])
    for p in model.parameters():  # away from the identity, so the weights matter
        p.data.add_(0.05 * torch.randn_like(p))
    path = tmp_path / f"{kind}.pt"
    torch.save(models.checkpoint_dict(kind, model, TINY[kind]), path)

    payload = torch.load(path, weights_only=True)
    assert payload["format"] == 1 and payload["kind"] == kind
    loaded = models.load(path)
    assert not loaded.training and type(loaded) is type(model)
    x = torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_load_rejects_what_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(DeblurError, match="notes.pt is not a readable checkpoint"):
        models.load(text)
    other = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(DeblurError, match="weights.pt is not a deblur checkpoint"):
        models.load(other)
    with pytest.raises(DeblurError, match="missing.pt not found"):
        models.load(tmp_path / "missing.pt")


def test_load_rejects_weights_that_do_not_fit_the_arch(tmp_path):
    model = models.build("gan", TINY["gan"])
    payload = models.checkpoint_dict("gan", model, TINY["gan"])
    payload["arch"]["n_res"] = 3
    torch.save(payload, tmp_path / "gan.pt")
    with pytest.raises(DeblurError, match="does not match its architecture"):
        models.load(tmp_path / "gan.pt")


def test_macs_count_a_conv_per_pixel():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1))
    assert models.macs_per_megapixel(conv) == 1_000_000 * 3 * 8 * 9


def test_info_json_matches_the_models():
    out = subprocess.run(
        [sys.executable, "-m", "deblur", "info", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    info = json.loads(out)
    assert set(info) == {"gan", "ae"}
    for kind in KINDS:
        model = default(kind)
        assert info[kind]["params"] == models.count_params(model)
        assert info[kind]["macs_per_mp"] == models.macs_per_megapixel(model)
    params = config.load(ROOT / "params.yaml")
    disc = models.build_discriminator(params.train.gan.discriminator)
    assert info["gan"]["discriminator_params"] == models.count_params(disc)
