"""The training loop both models share; the GAN adds a discriminator step to each batch.

One epoch = `steps_per_epoch` batches of random full-resolution crops from the loader it
is given, then a validation pass over held-out train scenes (never the test split). The
Trainer writes no file and logs nothing: train/stage.py does, on rank 0.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from deblur import device as devices
from deblur import models
from deblur.data.images import to_uint8
from deblur.errors import DeblurError
from deblur.infer import deblur_image
from deblur.metrics import mean_scores, score
from deblur.train import checkpoint, distributed, losses, preempt
from deblur.train.data import TrainData
from deblur.train.distributed import World
from deblur.train.ema import EMA

LOG_EVERY = 10  # steps per point of the per-step loss curve


def warmup_cosine(warmup: int, total: int, floor: float = 0.02):
    """LR multiplier: linear warm-up, then cosine decay to `floor` at the last step."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


_unwrap = models.unwrap


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training step, or None for float32.

    "auto" keeps a CPU in float32: bf16 rounds differently on CPUs with and without native
    support, and a CPU run's figures must reproduce on the next machine (deblur verify).
    """
    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cuda" and precision == "auto":  # pre-Ampere: float16 with loss scaling
        return torch.float16
    if device.type == "cpu" and devices.native_bf16():
        return torch.bfloat16
    raise DeblurError(
        f"precision bf16: this {device.type} has no native bfloat16 (AVX512-BF16 or AMX); "
        "set train precision to fp32 or auto"
    )


# What an epoch's row holds that a rerun changes: kept out of the history, the checkpoint
# and the plots (DVC outs), and in run-info and MLflow instead.
TIMINGS = ("seconds", "samples_per_s")


@dataclass
class State:
    """What changes while training and must survive an interruption. ``history`` (one row
    per epoch) holds no timings; ``timings`` (per epoch, and ``seconds`` in all) does and
    is no part of the checkpoint: --resume reads it from run-info."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    timings: list[dict[str, float]] = field(default_factory=list)
    # An epoch stopped part-way (train/preempt.py): its batches done, running sums, the
    # RNG state its loader was started from; None at an epoch boundary.
    partial: dict[str, Any] | None = None


class Trainer:
    """One model, its optimizer(s) and its state, from its own params section ``cfg``
    (train.gan or train.ae); ``data`` is None for a step-only trainer (deblur bench times
    ``step`` on tensors of its own)."""

    def __init__(self, kind: str, cfg, seed: int, world: World, data: TrainData | None = None):
        self.kind, self.cfg, self.seed, self.world, self.data = kind, cfg, seed, world, data
        self.device = world.device
        self.amp_dtype = autocast_dtype(self.cfg.precision, self.device)
        torch.manual_seed(seed)
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)

        self.arch = models.arch_config(kind, cfg)
        self.model = models.build(kind, self.arch).to(self.device)
        # NHWC lets cuDNN's tensor cores and oneDNN's blocked kernels skip layout changes.
        self.channels_last = self.device.type == "cuda" or self.cfg.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, self.cfg.ema) if self.cfg.ema > 0 else None
        total = self.cfg.epochs * self.cfg.steps_per_epoch
        self.opt, self.sched = self._optimizer(self.model, self.cfg.lr, (0.9, 0.99), total)
        self.content = losses.Content(self.cfg).to(self.device)
        self.disc = None
        if kind == "gan":
            self.adversarial = losses.adversarial(self.cfg.adversarial)
            self.disc = models.build_discriminator(self.cfg.discriminator).to(self.device)
            # The usual GAN betas: a low beta1 keeps the discriminator from overshooting.
            self.d_opt, self.d_sched = self._optimizer(
                self.disc, self.cfg.d_lr, (0.5, 0.999), total
            )
        # Only float16 needs loss scaling; bfloat16 has float32's exponent range.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.model, device_ids=ids)
            if self.disc is not None:
                self.disc = DDP(self.disc, device_ids=ids)
        # Compiled for the training step only: validation and the saved checkpoint use the
        # plain module, so a checkpoint never depends on a compiler being present.
        self.forward = torch.compile(self.model) if self.cfg.compile else self.model
        self.state = State()
        # Asked after every step; true (on any rank): stop after it (preempt.Stop).
        self.should_stop: Callable[[], bool] = lambda: False

    def _optimizer(self, module, lr, betas, total):
        opt = torch.optim.AdamW(
            module.parameters(), lr=lr, betas=betas, weight_decay=self.cfg.weight_decay
        )
        factor = warmup_cosine(self.cfg.warmup_steps, total, self.cfg.lr_floor)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def shipped(self) -> torch.nn.Module:
        """The model validation scores and the checkpoint holds: the average, where kept."""
        return self.ema.shadow if self.ema is not None else _unwrap(self.model)

    # ----------------------------------------------------------------- one batch

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _backward(self, loss, opt, module) -> None:
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(module.parameters(), self.cfg.grad_clip)
        self.scaler.step(opt)

    def _discriminator_step(self, fake, sharp) -> torch.Tensor:
        cfg = self.cfg
        with self._autocast():
            # One forward over real and fake together: DDP allows one forward per backward.
            logits = self.disc(torch.cat([sharp, fake.detach()]))
            real_logits, fake_logits = logits.chunk(2)
            loss = self.adversarial.d(real_logits, fake_logits)
        if self.adversarial.gradient_penalty:
            loss = loss + cfg.gp_weight * losses.gradient_penalty(
                _unwrap(self.disc), sharp, fake.detach()
            )
        self._backward(loss, self.d_opt, self.disc)
        self.d_sched.step()
        return loss.detach()

    def step(self, blur, sharp) -> dict[str, torch.Tensor]:
        blur = blur.to(self.device, non_blocking=True)
        sharp = sharp.to(self.device, non_blocking=True)
        if self.channels_last:
            blur = blur.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            out = self.forward(blur)
            loss = self.content(out.float(), sharp)
        parts = {"content": loss.detach()}
        if self.disc is not None and self.cfg.adv_weight > 0:
            parts["d_loss"] = self._discriminator_step(out, sharp)
            disc = _unwrap(self.disc)  # G's step needs D's gradient path, not its update
            disc.requires_grad_(False)
            with self._autocast():
                adv = self.adversarial.g(disc(out))
            disc.requires_grad_(True)
            loss = loss + self.cfg.adv_weight * adv
            parts["adv"] = adv.detach()
        if not distributed.all_finite(self.world, loss):
            raise FloatingPointError(self.state.step)
        self._backward(loss, self.opt, self.model)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(_unwrap(self.model))
        parts["loss"] = loss.detach()
        return parts

    # ----------------------------------------------------------------- one epoch

    def train_epoch(self, on_steps: Callable[[int, float], None] | None = None) -> dict[str, float]:
        """One pass over the loader; ``on_steps(step, mean loss)`` every LOG_EVERY steps."""
        epoch = self.state.epoch
        self.data.set_epoch(epoch)
        self.model.train()
        if self.disc is not None:
            self.disc.train()
        part = self.state.partial or {}
        self.state.partial = None
        sums: dict[str, float] = dict(part.get("sums", {}))
        recent: list[float] = list(part.get("recent", []))
        done = int(part.get("batches", 0))
        start = time.perf_counter() - float(part.get("seconds", 0.0))
        loader_rng = part.get("loader_rng", torch.get_rng_state())
        batches = self._batches(loader_rng, done)
        bar = tqdm(
            batches,
            total=self.cfg.steps_per_epoch,
            initial=done,
            desc=f"{self.kind} epoch {epoch + 1}/{self.cfg.epochs}",
            unit="batch",
            disable=not self.world.main,
            dynamic_ncols=True,
        )
        for blur, sharp in bar:
            parts = self.step(blur, sharp)
            self.state.step += 1
            done += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            recent.append(float(parts["loss"]))
            bar.set_postfix(loss=f"{recent[-1]:.4f}")
            if len(recent) == LOG_EVERY:
                self._report(recent, on_steps)
            if distributed.any_rank(self.world, self.should_stop()):
                bar.close()
                self.state.partial = {
                    "batches": done,
                    "sums": sums,
                    "recent": recent,
                    "seconds": time.perf_counter() - start,
                    "loader_rng": loader_rng,
                }
                raise preempt.Stop(self.state.step)
        if recent:
            self._report(recent, on_steps)
        seconds = time.perf_counter() - start
        n = self.cfg.steps_per_epoch
        row = {f"train_{k}" if k == "loss" else k: v / n for k, v in sums.items()}
        row.update(
            seconds=seconds,
            samples_per_s=n * self.cfg.batch_size * self.world.size / seconds,
            lr=self.opt.param_groups[0]["lr"],
        )
        return row

    def _batches(self, loader_rng: torch.Tensor, skip: int):
        """The epoch's batches from number ``skip`` on, exactly as an uninterrupted epoch
        draws them: the loader starts from the RNG state the epoch's loader started from
        (its iterator draws a seed), the crops are a function of (seed, epoch, index), and
        the RNG then continues where the stopped run left it."""
        now = torch.get_rng_state()
        torch.set_rng_state(loader_rng)
        batches = iter(self.data.loader)
        torch.set_rng_state(now if skip else torch.get_rng_state())
        return itertools.islice(batches, skip, None)

    def _report(self, recent: list[float], on_steps) -> None:
        """A point of the per-step loss curve: the mean of the last few steps, because one
        MLflow write per batch would make a SQLite tracking store the bottleneck of a fast
        GPU run."""
        if on_steps is not None:
            on_steps(self.state.step, sum(recent) / len(recent))
        recent.clear()

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        model = self.shipped().eval()
        scores = []
        for i in self.data.val_idx:
            blur, sharp = self.data.arrays.pair(i)
            # Scored as the 8-bit image a user gets, like `deblur evaluate` does.
            out = to_uint8(deblur_image(model, blur, device=self.device))
            scores.append(score(out, sharp))
        return {f"val_{k}": v for k, v in mean_scores(scores).items()}

    def blurry_baseline(self) -> dict[str, float]:
        """The held-out images' own score: what the model must beat."""
        scores = [score(*self.data.arrays.pair(i)) for i in self.data.val_idx]
        return {f"val_{k}_blurry": v for k, v in mean_scores(scores).items()}

    # ----------------------------------------------------------------- state

    def train_state(self) -> dict[str, Any]:
        state = {
            "epoch": self.state.epoch,
            "step": self.state.step,
            "history": self.state.history,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": torch.get_rng_state(),
            "partial": self.state.partial,
        }
        if self.ema is not None:  # the checkpoint holds the average: keep the raw weights too
            state.update(weights=_unwrap(self.model).state_dict(), ema=self.ema.state_dict())
        if self.disc is not None:
            state.update(
                discriminator=_unwrap(self.disc).state_dict(),
                d_optimizer=self.d_opt.state_dict(),
                d_scheduler=self.d_sched.state_dict(),
            )
        return state

    def restore(self, payload: dict[str, Any], timings: list[dict[str, float]] = ()) -> None:
        """Continue from a checkpoint (checkpoint.load_state); ``timings``: its epochs' rows
        of run-info, so the seconds run on from the interrupted run's."""
        train = payload["train"]
        if (self.ema is not None) != ("ema" in train):
            raise DeblurError(
                f"--resume: train.{self.kind}.ema was changed since the checkpoint; "
                "train without --resume"
            )
        _unwrap(self.model).load_state_dict(train.get("weights", payload["model"]))
        if self.ema is not None:
            self.ema.load_state_dict(train["ema"])
        self.opt.load_state_dict(train["optimizer"])
        self.sched.load_state_dict(train["scheduler"])
        torch.set_rng_state(train["rng"])
        if self.disc is not None:
            _unwrap(self.disc).load_state_dict(train["discriminator"])
            self.d_opt.load_state_dict(train["d_optimizer"])
            self.d_sched.load_state_dict(train["d_scheduler"])
        kept = [t for t in timings if t.get("epoch", 0) <= train["epoch"]]
        self.state = State(
            epoch=train["epoch"],
            step=train["step"],
            history=list(train["history"]),
            seconds=sum(t.get("seconds", 0.0) for t in kept),
            timings=kept,
            partial=train.get("partial"),
        )

    def save(self) -> None:
        """models/<kind>.pt and its training state, for evaluate and for --resume."""
        checkpoint.save(self.kind, self.shipped(), self.arch, self.train_state(), self.meta())

    def meta(self) -> dict[str, Any]:
        """What the checkpoint says of itself: nothing a rerun changes (timings: run-info)."""
        cfg = json.dumps({"seed": self.seed, **self.cfg.model_dump(mode="json")}, sort_keys=True)
        return {
            "params_hash": hashlib.sha256(cfg.encode()).hexdigest()[:12],
            "epochs": self.state.epoch,
            "steps": self.state.step,
        }
