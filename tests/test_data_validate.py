"""The validate stage: the manifest, the GX suites, and failures that name their files."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from deblur import paths
from deblur.data import manifest, validate
from deblur.data.images import read_rgb, write_png
from deblur.errors import DataError


def _fail(params, capsys) -> str:
    with pytest.raises(DataError, match="failed .* expectation"):
        validate.run(params.validate_, params.data.name)
    return capsys.readouterr().err


def test_good_dataset_passes(tiny_project, tiny_params):
    validate.run(tiny_params.validate_, tiny_params.data.name)
    table = pd.read_csv(paths.MANIFEST)
    assert len(table) == 10
    assert set(table["split"]) == {"train", "test"}
    assert table["blur_path"].str.startswith("data/raw/synthetic/").all()
    assert table[["twin_exists", "blur_decodes", "sharp_decodes", "size_match"]].all().all()
    assert (table[["width", "height", "channels"]] == [64, 48, 3]).all().all()

    stats = json.loads((paths.METRICS / "data.json").read_text())
    assert stats["pairs"] == 10
    assert stats["train"]["pairs"] == 6 and stats["test"]["pairs"] == 4
    assert 20 < stats["test"]["psnr_blur"] < 40
    assert stats["test"]["sharp_lapvar"] > stats["test"]["blur_lapvar"]


def test_truncated_and_mismatched_files_are_named(tiny_project, tiny_params, capsys):
    raw = paths.raw_dir("synthetic")
    truncated = sorted(raw.rglob("train/*/sharp/*.png"))[0]
    truncated.write_bytes(truncated.read_bytes()[:200])
    mismatched = sorted(raw.rglob("test/*/blur/*.png"))[-1]
    write_png(mismatched, read_rgb(mismatched)[:40])
    orphan = sorted(raw.rglob("test/*/sharp/*.png"))[0]
    orphan.with_name("000099.png").write_bytes(orphan.read_bytes())

    err = _fail(tiny_params, capsys)
    assert "every sharp image decodes" in err and str(truncated.as_posix()) in err
    assert "truncated" in err or "cannot" in err or "broken" in err.lower()
    assert "same size" in err and mismatched.as_posix() in err
    assert "sharp twin" in err and "000099.png" in err
    assert "Traceback" not in err
    assert not paths.MANIFEST.exists()  # a failing dataset leaves no manifest to build on


def test_too_few_pairs_and_shared_scenes(tiny_project, tiny_params, capsys):
    raw = paths.raw_dir("synthetic")
    scene = sorted((raw / "train").iterdir())[0]
    shutil.copytree(scene, raw / "test" / scene.name)  # leaks a train scene into test
    params = tiny_params.model_copy(
        update={"validate_": tiny_params.validate_.model_copy(update={"min_train_pairs": 50})}
    )
    err = _fail(params, capsys)
    assert "train: the split holds at least" in err and "observed 6, expected at least 50" in err
    assert "no scene appears in both train and test" in err and scene.name in err


def test_manifest_marks_a_corrupt_file(tmp_path, _tiny_raw):
    raw = tmp_path / "raw"
    shutil.copytree(_tiny_raw, raw)
    bad = sorted(raw.rglob("blur/*.png"))[0]
    bad.write_bytes(b"not a png at all")
    table = manifest.build(raw, project=tmp_path, workers=1).set_index("blur_path")
    row = table.loc[bad.relative_to(tmp_path).as_posix()]
    assert row["blur_decodes"] == False  # noqa: E712 - a numpy bool
    assert row["sharp_decodes"] == True  # noqa: E712
    assert pd.isna(row["size_match"]) and pd.isna(row["sharper"])


def test_bad_suite_file_is_a_clear_error(tiny_project, tiny_params):
    suite = paths.EXPECTATIONS / "manifest.json"
    spec = json.loads(suite.read_text())
    spec["expectations"][0]["kwargs"] = {"colum": "split"}
    suite.write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"manifest.json: expectation #1 .* is invalid"):
        validate.run(tiny_params.validate_, tiny_params.data.name)


def test_empty_raw_folder(project, tiny_params):
    with pytest.raises(DataError, match="run `deblur download`"):
        validate.run(tiny_params.validate_, tiny_params.data.name)


def test_imported_folder_failures_name_the_users_files_and_the_fix(project, _tiny_raw, capsys):
    from deblur import config
    from deblur.data import download
    from tests.conftest import TINY

    own = project.parent / "my-dataset"
    shutil.copytree(_tiny_raw, own)
    truncated = sorted(own.rglob("train/*/sharp/*.png"))[0]
    truncated.write_bytes(truncated.read_bytes()[:200])
    small = sorted(own.rglob("test/*/sharp/*.png"))[-1]  # the sharp side is the wrong one
    write_png(small, read_rgb(small)[:40])
    swapped = sorted((own / "train").iterdir())[-1]  # blur/ and sharp/ swapped: 2 of 10 pairs
    (swapped / "blur").rename(swapped / "tmp")
    (swapped / "sharp").rename(swapped / "blur")
    (swapped / "tmp").rename(swapped / "sharp")
    leaked = sorted((own / "train").iterdir())[0]
    shutil.copytree(leaked, own / "test" / leaked.name)
    data = {"source": "folder", "name": "mine", "folder": str(own)}
    params = config.parse({**TINY, "data": {**TINY["data"], **data}})
    download.run(params.data, params.seed)
    capsys.readouterr()

    with pytest.raises(DataError) as raised:
        validate.run(params.validate_, params.data.name)
    err = capsys.readouterr().err
    message = str(raised.value)
    assert str(own.resolve()) in message and "dvc repro" in message
    assert "data/raw" not in err, "a failing row names the user's file, not the copy"

    def block(title: str) -> str:
        start = err.index(title)
        end = err.find("FAILED", start + 1)
        return err[start : end if end > 0 else None]

    decode = block("every sharp image decodes")
    assert str(truncated.resolve()) in decode and "fix: replace the sharp file" in decode
    size = block("same size")
    row = next(line for line in size.splitlines() if str(small.resolve()) in line)
    blur_twin = small.parent.parent / "blur" / small.name
    assert str(blur_twin.resolve()) in row, "both sides of a wrong pair are named"
    assert "blur size 64x48" in row and "sharp size 64x40" in row
    assert "fix: " in size
    leak = block("no scene appears in both train and test")
    assert str((own / "test" / leaked.name).resolve()) in leak
    assert str((own / "train" / leaked.name).resolve()) in leak
    assert "fix: keep each scene in one split" in leak
    sharper = block("sharp is sharper than blur")
    assert str(swapped.resolve()) in sharper and "blur sharpness" in sharper
    assert "sharp sharpness" in sharper and "not swapped" in sharper
