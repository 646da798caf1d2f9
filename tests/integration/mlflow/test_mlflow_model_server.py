"""A registered model behind `mlflow models serve`, over HTTP, with image files.

The REST request is a string column of base64 image files, ``{"dataframe_records":
[{"image": ...}]}``; the answer ``{"predictions": [{"image": <base64 PNG>}]}``
(deblur.pyfunc; mlflow/pyfunc/scoring_server).
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.servers import free_port, running
from support.tiny_models import random_image, save_tiny

from deblur import infer, pyfunc
from deblur.data.images import to_uint8
from deblur.tracking import flavour, runs, store

BIN = Path(sys.executable).parent
START_TIMEOUT = 120  # importing mlflow and torch in a fresh process, on a busy machine


def encode(image: np.ndarray, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


@pytest.fixture(scope="module")
def registered_store(tmp_path_factory):
    """deblur-gan v1 @champion in a fresh SQLite tracking store, from a tiny checkpoint.

    -> (the store's folder, the model, what logging it printed). Registering takes
    seconds: once for the module.
    """
    root = tmp_path_factory.mktemp("registry")
    log = root / "register.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        model = save_tiny(ckpt := root / "models" / "gan.pt", "gan")
        # What MLflow prints while logging (its warnings go to its logger and to stderr).
        import logging

        handler = logging.FileHandler(log)
        logging.getLogger("mlflow").addHandler(handler)
        try:
            with runs.stage_run("train-gan", {"seed": 0}):
                mv = flavour.register_trained("gan", ckpt)
        finally:
            logging.getLogger("mlflow").removeHandler(handler)
        store.client().set_registered_model_alias("deblur-gan", "champion", mv.version)
    return root, model, log.read_text()


@pytest.fixture
def champion(registered_store, monkeypatch):
    """The store as this test's cwd and tracking URI, with no models/ to fall back on."""
    root, model, _ = registered_store
    monkeypatch.chdir(root / "models")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return model


def invoke(url: str, records: list[dict]) -> tuple[int, dict]:
    body = json.dumps({"dataframe_records": records}).encode()
    req = urllib.request.Request(
        url + "/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_demo_page_serves_the_champion(champion):
    from deblur.serve.models import find_model

    served = find_model("gan", torch.device("cpu"))
    assert served.source == "deblur-gan v1 @champion (MLflow registry)"
    image = random_image(29, 31)
    np.testing.assert_array_equal(
        infer.deblur_image(served.model, image), infer.deblur_image(champion, image)
    )
    assert find_model("ae", torch.device("cpu")).model is None  # no champion, no models/ae.pt


def test_the_model_is_logged_from_code_with_nothing_pickled(champion, registered_store):
    import mlflow

    printed = registered_store[2]
    assert "pickle" not in printed.lower(), printed
    local = Path(mlflow.artifacts.download_artifacts("models:/deblur-gan@champion"))
    assert not list(local.rglob("*.pkl"))
    info = mlflow.models.get_model_info("models:/deblur-gan@champion")
    assert info.signature.inputs.input_names() == ["image"]
    assert info.signature.outputs.input_names() == ["image"]


def test_champion_serves_image_files(champion, registered_store):
    root = registered_store[0]
    log = root / f"serve-{os.getpid()}.log"  # a file, not a pipe nobody drains
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/deblur-gan@champion"]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # mlflow execs `uvicorn` by name: the venv's, as an activated venv would find it.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    with running(cmd, url, "/ping", log, timeout=START_TIMEOUT, env=env, cwd=root):
        # 24x32 is the logged input example's size; 37x53 is not, nor a multiple of 4.
        images = [random_image(24, 32, 1), random_image(37, 53, 2)]
        records = [{"image": encode(images[0])}, {"image": encode(images[1], "JPEG")}]
        status, answer = invoke(url, records)
        assert status == 200, answer
        got = [decode(row["image"]) for row in answer["predictions"]]
        want = [to_uint8(infer.deblur_image(champion, images[0]))]
        np.testing.assert_array_equal(got[0], want[0])  # the one inference path
        assert got[1].shape == (37, 53, 3)

        status, answer = invoke(url, [{"image": "not base64!"}])
        assert status == 400
        assert "row 0: `image` is not base64" in answer["message"]
        bomb = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
        status, answer = invoke(url, [{"image": bomb}])
        assert status == 400 and "row 0: `image` is not an image file" in answer["message"]

        # The `base64` tool's and Spark's output: lines of 76 with CRLF.
        plain = encode(images[0])
        wrapped = "\r\n".join(plain[i : i + 76] for i in range(0, len(plain), 76))
        status, answer = invoke(url, [{"image": wrapped}])
        assert status == 200, answer
        np.testing.assert_array_equal(decode(answer["predictions"][0]["image"]), want[0])

        small = encode(random_image(8, 8))
        status, answer = invoke(url, [{"image": small}] * (pyfunc.MAX_ROWS + 1))
        assert status == 413 and f"at most {pyfunc.MAX_ROWS}: split it" in answer["message"]


# ------------------------------------------------------------- the caps, in this process


@pytest.fixture
def served_model(tmp_path, monkeypatch):
    """deblur.pyfunc's model on a tiny checkpoint, as `mlflow models serve` would run it."""
    model = pyfunc.DeblurModel()
    model.model = save_tiny(tmp_path / "gan.pt", "gan")
    monkeypatch.setenv(pyfunc.SERVING, "true")
    return model


def zeros_png(h: int, w: int) -> str:
    """A large but tiny-to-send image (zeros compress to nothing)."""
    from deblur.data.images import png_bytes

    return base64.b64encode(png_bytes(np.zeros((h, w, 3), np.uint8))).decode()


def test_a_request_over_the_megapixel_cap_is_413_before_decoding(served_model):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    side = int((pyfunc.MAX_PIXELS / 2) ** 0.5) + 8  # each row under the cap, both over it
    frame = pd.DataFrame({"image": [zeros_png(side, side)] * 2})
    with pytest.raises(MlflowException, match=r"MP in one request; at most 24 MP") as err:
        served_model.predict(None, frame)
    assert err.value.get_http_status_code() == 413


def test_base64_with_line_breaks_and_spaces_is_accepted(served_model):
    import pandas as pd

    image = random_image(24, 32)
    plain = encode(image)
    wrapped = " \n".join(plain[i : i + 76] for i in range(0, len(plain), 76)) + "\n"
    out = served_model.predict(None, pd.DataFrame({"image": [plain, wrapped]}))
    assert out["image"][0] == out["image"][1]


def test_work_stops_once_the_request_has_timed_out(served_model, monkeypatch):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv(pyfunc.TIMEOUT, "0.05")  # over before the first row's tiles end
    rows = [encode(random_image(600, 800, seed=s)) for s in range(4)]
    with pytest.raises(MlflowException, match=r"timed out.*stopped at row 0") as err:
        served_model.predict(None, pd.DataFrame({"image": rows}))
    assert err.value.get_http_status_code() == 504
