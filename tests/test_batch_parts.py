"""`deblur batch`'s parts that need no JVM: the model's rows mode, settings, plan, writer."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_models import random_image, save_tiny

from deblur import infer
from deblur.batch import plan, session
from deblur.batch.write import local_path, write_results
from deblur.tracking import flavour


def b64_png(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_the_signature_declares_the_tiling_the_pipeline_uses():
    params = {p.name: p.default for p in flavour.model_signature().params.params}
    assert params == {"tile": infer.TILE, "overlap": infer.OVERLAP, "errors": "raise"}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    import mlflow

    root = tmp_path_factory.mktemp("saved")
    save_tiny(ckpt := root / "gan.pt", "gan")
    return mlflow.pyfunc.load_model(str(flavour.save_model(ckpt, root / "model")))


def test_rows_mode_turns_a_bad_row_into_an_error_and_scores_the_rest(loaded):
    from mlflow.exceptions import MlflowException

    rgba = np.dstack([random_image(20, 28, 1), np.full((20, 28), 77, np.uint8)])
    frame = pd.DataFrame({"image": [b64_png(rgba), "not base64!", b64_png(random_image(9, 9))]})
    got = loaded.predict(frame, params={"errors": "rows"})
    assert list(got.columns) == ["image", "error", "ms"]
    assert got["error"].tolist()[0] == "" and got["error"].tolist()[2] == ""
    assert "not base64" in got["error"][1] and got["image"][1] == ""
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(got["image"][0]))))
    assert out.shape == (20, 28, 4) and (out[..., 3] == 77).all()  # alpha kept, as predict
    with pytest.raises(MlflowException, match="row 1"):  # the REST default is unchanged
        loaded.predict(frame)


def test_tile_params_reach_the_tiling(loaded):
    frame = pd.DataFrame({"image": [b64_png(random_image(40, 60, 3))]})
    whole = loaded.predict(frame)["image"][0]
    tiled = loaded.predict(frame, params={"tile": 32, "overlap": 8})["image"][0]
    assert whole != tiled


def test_settings_keep_spark_on_loopback_and_base64_unbroken(tmp_path):
    conf = session.settings("local[2]", tmp_path / "l.properties", "sqlite:///x.db", {})
    assert conf["spark.master"] == "local[2,4]"  # retries, as on a cluster
    assert conf["spark.sql.chunkBase64String.enabled"] == "false"
    assert int(conf["spark.sql.execution.arrow.maxRecordsPerBatch"]) <= 4
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.executorEnv.MLFLOW_TRACKING_URI"] == "sqlite:///x.db"
    remote = session.settings("yarn", tmp_path / "l.properties", "http://t", {"a.b": "1"})
    assert "spark.driver.host" not in remote and remote["a.b"] == "1"
    assert session.with_retries("local[*]") == "local[*,4]"
    assert session.with_retries("spark://h:7077") == "spark://h:7077"
    with pytest.raises(Exception, match="KEY=VALUE"):
        session.parse_conf(["spark.executor.memory"])


def test_plan_skips_what_is_written(tmp_path):
    for name in ("a", "b"):
        Image.fromarray(random_image(8, 8)).save(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"done")
    todo = plan.plan([tmp_path], out, recursive=False, overwrite=False)
    assert [p.name for p in todo.done] == ["a.png"] and [p.name for p in todo.todo] == ["b.png"]
    redo = plan.plan([tmp_path], out, recursive=False, overwrite=True)
    assert len(redo.todo) == 2 and not redo.done


class _Box:
    def __init__(self, value):
        self.value = value


def test_the_writer_renames_into_place_and_reports_each_row(tmp_path):
    target = tmp_path / "sub" / "a.png"
    batch = pd.DataFrame(
        {
            "path": [f"file:{tmp_path}/a b.png", f"file:{tmp_path}/bad.png"],
            "image": [base64.b64encode(b"png bytes").decode(), ""],
            "error": ["", "the image cannot be decoded"],
            "ms": [5.0, 1.0],
        }
    )
    where = {f"{tmp_path}/a b.png": str(target), f"{tmp_path}/bad.png": str(tmp_path / "x.png")}
    (rows,) = list(write_results(iter([batch]), _Box(where)))
    assert rows["status"].tolist() == ["written", "failed"]
    assert target.read_bytes() == b"png bytes" and not (tmp_path / "x.png").exists()
    assert local_path("file:/a/b%20c.png") == "/a/b c.png"
    assert local_path("file:/a/b c.png") == "/a/b c.png"
