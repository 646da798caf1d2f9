"""The training loop both models share; the GAN adds a discriminator step to each batch.

One epoch = `steps_per_epoch` batches of random full-resolution crops, then a validation
pass over held-out train scenes (never the test split), a row in plots/train_<kind>.csv,
a checkpoint, and the epoch's metrics in MLflow. Only rank 0 writes or logs.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from deblur import fsutil, models, paths, tracking
from deblur.data.dataset import CropDataset, PairStore, split_train_val
from deblur.errors import DeblurError
from deblur.train import checkpoint, distributed, losses
from deblur.train.distributed import World

LOG_EVERY = 10  # steps per point of the per-step loss curve in MLflow


def warmup_cosine(warmup: int, total: int, floor: float = 0.02):
    """LR multiplier: linear warm-up, then cosine decay to `floor` at the last step."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _unwrap(module):
    return module.module if isinstance(module, DDP) else module


@dataclass
class State:
    """What changes while training and must survive an interruption."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class Trainer:
    def __init__(self, kind: str, params, world: World):
        self.kind, self.params, self.world = kind, params, world
        self.cfg = getattr(params.train, kind)
        self.device = world.device
        self.amp = self.device.type == "cuda"
        torch.manual_seed(params.seed)
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)

        self.arch = models.arch_config(kind, params)
        self.model = models.build(kind, self.arch).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        total = self.cfg.epochs * self.cfg.steps_per_epoch
        self.opt, self.sched = self._optimizer(self.model, self.cfg.lr, (0.9, 0.99), total)
        self.content = losses.Content(self.cfg).to(self.device)
        self.disc = None
        if kind == "gan":
            self.disc = models.build_discriminator(self.cfg.discriminator).to(self.device)
            # The usual GAN betas: a low beta1 keeps the discriminator from overshooting.
            self.d_opt, self.d_sched = self._optimizer(
                self.disc, self.cfg.d_lr, (0.5, 0.999), total
            )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        if world.size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.model, device_ids=ids)
            if self.disc is not None:
                self.disc = DDP(self.disc, device_ids=ids)
        self._data()
        self.state = State()

    def _optimizer(self, module, lr, betas, total):
        opt = torch.optim.AdamW(
            module.parameters(), lr=lr, betas=betas, weight_decay=self.cfg.weight_decay
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(self.cfg.warmup_steps, total))
        return opt, sched

    def _data(self) -> None:
        protocol = self.params.preprocess.protocol
        store = PairStore(
            paths.PROCESSED, "train", kind=self.kind if protocol == "resize" else None
        )
        train_idx, val_idx = split_train_val(
            store, self.params.train.val_fraction, self.params.seed
        )
        per_epoch = self.cfg.steps_per_epoch * self.cfg.batch_size * self.world.size
        self.store, self.val_idx = store, list(val_idx)[: self.cfg.val_images]
        # Rotations and colour-channel swaps keep a camera-shake pair valid (the blur turns
        # with the image) and stop a small model from memorising the few training photos.
        self.dataset = CropDataset(
            store,
            train_idx,
            crop=self.cfg.crop,
            seed=self.params.seed,
            length=per_epoch,
            rotate=True,
            permute_channels=True,
        )
        self.sampler = (
            DistributedSampler(self.dataset, self.world.size, self.world.rank, shuffle=False)
            if self.world.size > 1
            else None
        )
        workers = self.params.train.num_workers
        self.loader = DataLoader(
            self.dataset,
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            shuffle=False,  # the dataset itself draws the random crops, per (seed, epoch, index)
            num_workers=workers,
            # Not persistent: a persistent worker keeps the copy of the dataset it started
            # with, so set_epoch never reached it and every epoch drew epoch 0's crops again.
            # A fresh worker per epoch costs a fork, well under a second per epoch.
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
        )

    # ----------------------------------------------------------------- one batch

    def _autocast(self):
        if not self.amp:
            return nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

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
            loss = losses.d_loss(cfg.adversarial, real_logits, fake_logits)
        if cfg.adversarial == "wgan-gp":
            loss = loss + cfg.gp_weight * losses.gradient_penalty(
                _unwrap(self.disc), sharp, fake.detach()
            )
        self._backward(loss, self.d_opt, self.disc)
        self.d_sched.step()
        return loss.detach()

    def step(self, blur, sharp) -> dict[str, torch.Tensor]:
        blur = blur.to(self.device, non_blocking=True)
        sharp = sharp.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            blur = blur.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            out = self.model(blur)
            loss = self.content(out.float(), sharp)
        parts = {"content": loss.detach()}
        if self.disc is not None and self.cfg.adv_weight > 0:
            parts["d_loss"] = self._discriminator_step(out, sharp)
            disc = _unwrap(self.disc)  # G's step needs D's gradient path, not its update
            disc.requires_grad_(False)
            with self._autocast():
                adv = losses.g_loss(self.cfg.adversarial, disc(out))
            disc.requires_grad_(True)
            loss = loss + self.cfg.adv_weight * adv
            parts["adv"] = adv.detach()
        if not distributed.all_finite(self.world, loss):
            raise FloatingPointError(self.state.step)
        self._backward(loss, self.opt, self.model)
        self.scaler.update()
        self.sched.step()
        parts["loss"] = loss.detach()
        return parts

    # ----------------------------------------------------------------- one epoch

    def train_epoch(self) -> dict[str, float]:
        epoch = self.state.epoch
        self.dataset.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.model.train()
        if self.disc is not None:
            self.disc.train()
        sums: dict[str, float] = {}
        start = time.perf_counter()
        bar = tqdm(
            self.loader,
            total=self.cfg.steps_per_epoch,
            desc=f"{self.kind} epoch {epoch + 1}/{self.cfg.epochs}",
            unit="batch",
            disable=not self.world.main,
            dynamic_ncols=True,
        )
        recent: list[float] = []
        for blur, sharp in bar:
            parts = self.step(blur, sharp)
            self.state.step += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            recent.append(float(parts["loss"]))
            bar.set_postfix(loss=f"{recent[-1]:.4f}")
            if self.world.main and len(recent) == LOG_EVERY:
                self._log_steps(recent)
        if self.world.main and recent:
            self._log_steps(recent)
        seconds = time.perf_counter() - start
        n = self.cfg.steps_per_epoch
        row = {f"train_{k}" if k == "loss" else k: v / n for k, v in sums.items()}
        row.update(
            seconds=seconds,
            samples_per_s=n * self.cfg.batch_size * self.world.size / seconds,
            lr=self.opt.param_groups[0]["lr"],
        )
        return row

    def _log_steps(self, recent: list[float]) -> None:
        """A point of the per-step loss curve: the mean of the last few steps, because one
        MLflow write per batch would make a SQLite store the bottleneck of a fast GPU run."""
        tracking.log_epoch({"step_loss": sum(recent) / len(recent)}, step=self.state.step)
        recent.clear()

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        from deblur.evaluate.metrics import score
        from deblur.infer import deblur_image, to_uint8

        model = _unwrap(self.model).eval()
        scores = []
        for i in self.val_idx:
            blur, sharp = self.store.pair(i)
            # Scored as the 8-bit image a user gets, like `deblur evaluate` does.
            out = to_uint8(deblur_image(model, blur, device=self.device))
            scores.append(score(out, sharp))
        psnr, ssim = np.mean(scores, axis=0)
        return {"val_psnr": float(psnr), "val_ssim": float(ssim)}

    def blurry_baseline(self) -> dict[str, float]:
        """The held-out images' own score: what the model must beat."""
        from deblur.evaluate.metrics import score

        scores = [score(*self.store.pair(i)) for i in self.val_idx]
        psnr, ssim = np.mean(scores, axis=0)
        return {"val_psnr_blurry": float(psnr), "val_ssim_blurry": float(ssim)}

    # ----------------------------------------------------------------- state

    def train_state(self) -> dict[str, Any]:
        state = {
            "epoch": self.state.epoch,
            "step": self.state.step,
            "seconds": self.state.seconds,
            "history": self.state.history,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": torch.get_rng_state(),
        }
        if self.disc is not None:
            state.update(
                discriminator=_unwrap(self.disc).state_dict(),
                d_optimizer=self.d_opt.state_dict(),
                d_scheduler=self.d_sched.state_dict(),
            )
        return state

    def restore(self, payload: dict[str, Any]) -> None:
        train = payload["train"]
        _unwrap(self.model).load_state_dict(payload["model"])
        self.opt.load_state_dict(train["optimizer"])
        self.sched.load_state_dict(train["scheduler"])
        torch.set_rng_state(train["rng"])
        if self.disc is not None:
            _unwrap(self.disc).load_state_dict(train["discriminator"])
            self.d_opt.load_state_dict(train["d_optimizer"])
            self.d_sched.load_state_dict(train["d_scheduler"])
        self.state = State(
            epoch=train["epoch"],
            step=train["step"],
            history=list(train["history"]),
            seconds=train["seconds"],
        )

    def save(self) -> None:
        meta = {
            "params_hash": self.params.section_hash("seed", "train"),
            "epochs": self.state.epoch,
            "steps": self.state.step,
        }
        checkpoint.save(
            self.kind,
            _unwrap(self.model),
            self.arch,
            self.train_state(),
            meta,
        )
        fsutil.write_text(
            plots_path(self.kind), pd.DataFrame(self.state.history).to_csv(index=False)
        )


def plots_path(kind: str):
    return paths.PLOTS / f"train_{kind}.csv"


def metrics_path(kind: str):
    return paths.METRICS / f"train_{kind}.json"


def logged_params(kind: str, params) -> dict[str, Any]:
    """What a training run depends on: its model's section, the split, the data source."""
    dump = params.model_dump(mode="json", by_alias=True)
    return {
        "seed": dump["seed"],
        "data": {"source": dump["data"]["source"], "name": dump["data"]["name"]},
        "preprocess": dump["preprocess"],
        "train": {
            "val_fraction": dump["train"]["val_fraction"],
            kind: dump["train"][kind],
        },
    }


def fit(
    kind: str,
    params,
    device: str = "auto",
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train `kind` to the end (or `stop_after` epochs, as an interruption would).

    Returns the final metrics written to metrics/train_<kind>.json.
    """
    world = distributed.init(device)
    try:
        if world.main:
            tracking.setup()  # an unreachable server should fail now, not after the data loads
        trainer = Trainer(kind, params, world)
        if resume:
            trainer.restore(checkpoint.load_state(kind))
        if world.main:
            with tracking.stage_run(
                f"train-{kind}", params, logged=logged_params(kind, params)
            ) as run:
                summary = _epochs(trainer, stop_after, run.info.run_id)
                if summary["complete"]:
                    mv = tracking.register_trained(kind, paths.checkpoint(kind))
                    summary["registered_version"] = int(mv.version)
                fsutil.write_json(metrics_path(kind), summary)
        else:
            summary = _epochs(trainer, stop_after, None)
        distributed.barrier(world)
        return summary
    finally:
        distributed.shutdown(world)


def _epochs(trainer: Trainer, stop_after: int | None, run_id: str | None) -> dict[str, Any]:
    cfg, world, state = trainer.cfg, trainer.world, trainer.state
    baseline = trainer.blurry_baseline() if world.main else {}
    if world.main:
        tracking.log_epoch(baseline, step=0)
        tracking.log_params({"model.params": models.count_params(_unwrap(trainer.model))})
    ran = 0
    while state.epoch < cfg.epochs and (stop_after is None or ran < stop_after):
        try:
            row = trainer.train_epoch()
        except FloatingPointError as exc:
            last = f"epoch {state.epoch}" if state.epoch else "none yet"
            raise DeblurError(
                f"train {trainer.kind}: loss is NaN/inf at step {exc.args[0]}; lower "
                f"train.{trainer.kind}.lr or raise grad_clip (last good checkpoint kept: {last})"
            ) from None
        state.epoch += 1
        ran += 1
        state.seconds += row["seconds"]
        if world.main:
            row.update(trainer.validate())
            row = {"epoch": state.epoch, "step": state.step, **row}
            state.history.append(row)
            trainer.save()
            tracking.log_epoch({k: v for k, v in row.items() if k != "epoch"}, step=state.epoch)
            tqdm.write(
                f"{trainer.kind} epoch {state.epoch}: loss {row['train_loss']:.4f}  "
                f"val PSNR {row['val_psnr']:.2f} dB (blurry {baseline['val_psnr_blurry']:.2f})  "
                f"SSIM {row['val_ssim']:.4f}  {row['samples_per_s']:.1f} samples/s"
            )
        distributed.barrier(world)
    last = state.history[-1] if state.history else {}
    summary = {
        "complete": state.epoch >= cfg.epochs,
        "epochs": state.epoch,
        "steps": state.step,
        "seconds": round(state.seconds, 2),
        "train_loss": last.get("train_loss"),
        "val_psnr": last.get("val_psnr"),
        "val_ssim": last.get("val_ssim"),
        "samples_per_s": last.get("samples_per_s"),
        "params": models.count_params(_unwrap(trainer.model)),
        "mlflow_run_id": run_id,
        "world_size": world.size,
        **baseline,
    }
    if world.main and run_id is not None:
        tracking.log_artifacts([plots_path(trainer.kind)])
    return summary
