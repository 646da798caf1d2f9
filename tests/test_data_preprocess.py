"""preprocess -> PairStore -> CropDataset: exact pixels, both protocols, reproducible crops."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from deblur import config, paths
from deblur.data import manifest, preprocess
from deblur.data.dataset import CropDataset, PairStore, split_train_val
from deblur.data.images import read_rgb
from deblur.errors import DataError


@pytest.fixture
def processed(tiny_project, tiny_params):
    """tiny_project after validate's manifest (built directly: no GX) and preprocess."""
    table = manifest.build(paths.raw_dir("synthetic"), workers=1)
    paths.MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths.MANIFEST, index=False)
    preprocess.run(tiny_params.preprocess)
    return table


def test_store_returns_the_decoded_pixels(processed):
    for split in ("train", "test"):
        store = PairStore(split=split)
        rows = processed[processed["split"] == split].set_index("name")
        assert store.names == sorted(rows.index)
        assert store.scenes == [n.split("/")[0] for n in store.names]
        for i, name in enumerate(store.names):
            blur, sharp = store.pair(i)
            assert blur.dtype == np.uint8 and blur.shape == (48, 64, 3)
            assert np.array_equal(blur, read_rgb(rows.loc[name, "blur_path"]))
            assert np.array_equal(sharp, read_rgb(rows.loc[name, "sharp_path"]))


def test_store_pickles_without_its_pixels(processed):
    store = PairStore(split="train")
    store.pair(0)  # opens the memory maps
    blob = pickle.dumps(store)
    assert len(blob) < 48 * 64 * 3  # the arrays are reopened in the worker, not copied
    again = pickle.loads(blob)
    assert np.array_equal(again.pair(3)[1], store.pair(3)[1])


def test_resize_protocol(tiny_project, tiny_params, processed):
    params = config.parse(
        {**tiny_params.model_dump(by_alias=True), "preprocess": {"protocol": "resize"}}
    )
    preprocess.run(params.preprocess)
    gan, ae = PairStore(split="train", kind="gan"), PairStore(split="test", kind="ae")
    assert gan.pair(0)[0].shape == (448, 448, 3) and ae.pair(0)[1].shape == (224, 224, 3)
    assert PairStore(split="test").pair(0)[0].shape == (48, 64, 3)  # full-res test stays
    with pytest.raises(DataError, match="kind='gan' or kind='ae'"):
        PairStore(split="train")


def test_missing_store_says_what_to_run(project):
    with pytest.raises(DataError, match="run `deblur preprocess`"):
        PairStore(split="train")


def test_preprocess_needs_the_manifest(project, tiny_params):
    with pytest.raises(DataError, match="run `deblur validate` first"):
        preprocess.run(tiny_params.preprocess)


def test_split_train_val_holds_out_whole_scenes(processed):
    store = PairStore(split="train")
    train, val = split_train_val(store, 0.34, seed=0)
    train_scenes = {store.scenes[i] for i in train}
    val_scenes = {store.scenes[i] for i in val}
    assert train_scenes and val_scenes and not train_scenes & val_scenes
    assert sorted([*train, *val]) == list(range(len(store)))
    again = split_train_val(store, 0.34, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again, strict=True))
    assert len(split_train_val(store, 0.99, seed=0)[0]) > 0  # at least one scene each side


def test_crop_dataset_is_reproducible(processed):
    store = PairStore(split="train")
    data = CropDataset(store, range(len(store)), crop=32, seed=7, length=20, rotate=True)
    assert len(data) == 20
    blur, sharp = data[5]
    assert blur.shape == sharp.shape == (3, 32, 32) and blur.dtype == torch.float32
    assert float(blur.min()) >= 0.0 and float(blur.max()) <= 1.0
    assert torch.equal(data[5][0], blur)  # same seed, epoch, index: same crop
    data.set_epoch(1)
    assert not torch.equal(data[5][0], blur)
    data.set_epoch(0)
    assert torch.equal(data[5][1], sharp)


def test_crops_are_aligned(processed):
    store = PairStore(split="train")
    data = CropDataset(store, [0], crop=16, seed=1, flip=True)
    blur, sharp = store.pair(0)
    got_blur, got_sharp = (t.permute(1, 2, 0).numpy() * 255 for t in data[0])
    # Find where the sharp crop came from (up to flips) and check blur came from there too.
    for fy in (False, True):
        for fx in (False, True):
            b, s = blur[::-1] if fy else blur, sharp[::-1] if fy else sharp
            b, s = (b[:, ::-1], s[:, ::-1]) if fx else (b, s)
            for y in range(48 - 16 + 1):
                for x in range(64 - 16 + 1):
                    if np.allclose(s[y : y + 16, x : x + 16], got_sharp, atol=1e-3):
                        assert np.allclose(b[y : y + 16, x : x + 16], got_blur, atol=1e-3)
                        return
    raise AssertionError("crop not found in its source pair")


def test_small_images_are_padded(processed):
    store = PairStore(split="test")
    blur, sharp = CropDataset(store, [0], crop=80, seed=0)[0]
    assert blur.shape == sharp.shape == (3, 80, 80)


def test_workers_see_the_same_crops(processed):
    store = PairStore(split="train")
    data = CropDataset(store, range(len(store)), crop=24, seed=3, length=8)
    batches = [
        torch.cat([b for b, _ in torch.utils.data.DataLoader(data, batch_size=4, num_workers=n)])
        for n in (0, 2)
    ]
    assert torch.equal(*batches)


def test_index_table(processed):
    index = pd.read_csv(paths.PROCESSED / "train" / "index.csv")
    assert list(index.columns) == ["name", "scene", "offset", "height", "width"]
    assert (np.diff(index["offset"]) == 48 * 64 * 3).all()
