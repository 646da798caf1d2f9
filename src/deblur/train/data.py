"""What a Trainer reads: the training crops' loader and the held-out validation images."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from deblur import paths
from deblur.data.dataset import CropDataset, PairStore, split_train_val
from deblur.train.distributed import World


@dataclass
class TrainData:
    dataset: CropDataset
    sampler: DistributedSampler | None
    loader: DataLoader
    store: PairStore  # the train split, for the validation images
    val_idx: list[int]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)


def build(kind: str, train, protocol: str, seed: int, world: World) -> TrainData:
    """data/processed's train split -> random crops for ``kind``, split by scene for validation.

    ``train`` is params' train section, ``protocol`` preprocess.protocol.
    """
    cfg = getattr(train, kind)
    store = PairStore(paths.PROCESSED, "train", kind=kind if protocol == "resize" else None)
    train_idx, val_idx = split_train_val(store, train.val_fraction, seed)
    per_epoch = cfg.steps_per_epoch * cfg.batch_size * world.size
    # Rotations and colour-channel swaps keep a camera-shake pair valid (the blur turns
    # with the image) and stop a small model from memorising the few training photos.
    dataset = CropDataset(
        store,
        train_idx,
        crop=cfg.crop,
        seed=seed,
        length=per_epoch,
        rotate=True,
        permute_channels=True,
    )
    sampler = (
        DistributedSampler(dataset, world.size, world.rank, shuffle=False)
        if world.size > 1
        else None
    )
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        shuffle=False,  # the dataset itself draws the random crops, per (seed, epoch, index)
        num_workers=train.num_workers,
        # Not persistent: a persistent worker keeps the copy of the dataset it started
        # with, so set_epoch never reached it and every epoch drew epoch 0's crops again.
        # A fresh worker per epoch costs a fork, well under a second per epoch.
        persistent_workers=False,
        pin_memory=world.device.type == "cuda",
        drop_last=True,
    )
    return TrainData(dataset, sampler, loader, store, list(val_idx)[: cfg.val_images])
