"""The MLflow model: a deblur checkpoint behind MLflow's pyfunc interface.

Logged as models-from-code (tracking.flavour.log_model hands MLflow this file's path): MLflow runs
this file when it loads the model, so nothing is pickled and no CloudPickle warning prints.

Input: a DataFrame with a string column ``image``, each cell an image file (PNG, JPEG,
WebP, BMP or TIFF) in base64 (line breaks and spaces allowed: `base64` and Spark's
`base64()` wrap at 76); output: the same column holding each result as a base64 PNG.
Over REST, ``{"dataframe_records": [{"image": "<base64>"}]}`` -> ``{"predictions":
[{"image": "<base64 PNG>"}]}``. A 1280x720 frame is ~2 MB that way against ~30 MB as JSON
floats, which is why the tensor form (N x 3 x H x W floats) was dropped: a model has one
signature, and MLflow enforces it. Inference goes through infer.deblur_image, the path
`deblur predict` and the tables use.

Limits (docs/serving.md): a request holds at most ``MAX_ROWS`` rows and ``MAX_PIXELS``
in all, checked from the headers before anything is decoded (413 over REST). Under
`mlflow models serve` the work stops at the next tile once the server's request timeout
(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT) has passed: the client has had its 504 by then.
"""

import base64
import binascii
import os
import tempfile
import time
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import DEADLINE_EXCEEDED, INVALID_PARAMETER_VALUE
from PIL import Image

from deblur import allocator, models
from deblur.data.images import png_bytes, read_rgb, to_uint8
from deblur.data.photo import MAX_PIXELS
from deblur.errors import DeblurError
from deblur.infer import deblur_image

COLUMN = "image"
# Rows per request. With MAX_PIXELS in all, a full request is one 24 MP photo's work
# (docs/serving.md has its time), inside the scoring server's default 60 s timeout.
MAX_ROWS = 16
# What `mlflow models serve` sets in the process it serves from (scoring_server.init).
SERVING = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"
TIMEOUT = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"


def _bad(message: str):
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # a 400 over REST


class TooLarge(MlflowException):
    """A request over the caps: 413 over REST (MLflow has no error code for it)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    def get_http_status_code(self):
        return 413


class TimedOut(Exception):
    """Raised between tiles once the request's time is up."""


def _bytes(text, row: int) -> bytes:
    """A cell's base64 -> the file's bytes; whitespace and line breaks are ignored."""
    try:
        return base64.b64decode("".join(str(text).split()), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"row {row}: `{COLUMN}` is not base64; send base64 of the file") from None


def _size(path: Path, row: int) -> tuple[int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # the header only
                return img.size
    except Exception:  # PIL raises many kinds for a file that is not an image
        raise _bad(f"row {row}: `{COLUMN}` is not an image file (or is too large)") from None


def _decode(path: Path, row: int):
    """One image file -> uint8 HxWx3 RGB, upright, through the project's reader."""
    try:
        return read_rgb(path)
    except DeblurError as exc:
        raise _bad(f"row {row}: {str(exc).replace(str(path), 'the image')}") from None


def _deadline() -> float | None:
    """When this request's time is up (monotonic), under `mlflow models serve`; else None."""
    if os.environ.get(SERVING) != "true":
        return None
    try:
        return time.monotonic() + float(os.environ.get(TIMEOUT, "60"))
    except ValueError:
        return None


def check_rows(count: int) -> None:
    if count > MAX_ROWS:
        raise TooLarge(f"{count} rows in one request; at most {MAX_ROWS}: split it")


class DeblurModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        allocator.tune()  # `mlflow models serve` runs this process, not deblur's CLI
        self.model = models.load(context.artifacts["checkpoint"])

    # pd.DataFrame hints: MLflow 3 checks them and infers nothing (the signature is explicit).
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        deadline = _deadline()
        frame = pd.DataFrame(model_input)
        if COLUMN not in frame.columns:
            raise _bad(f"expected a string column `{COLUMN}` of base64 image files")
        check_rows(len(frame))
        with tempfile.TemporaryDirectory(prefix="deblur-pyfunc-") as tmp:
            files, total = [], 0
            for row, text in enumerate(frame[COLUMN]):  # every header before any decoding
                (path := Path(tmp) / f"{row}").write_bytes(_bytes(text, row))
                w, h = _size(path, row)
                if w * h > MAX_PIXELS:
                    raise TooLarge(
                        f"row {row}: {w}x{h} is over {MAX_PIXELS / 1e6:.0f} MP; downscale it"
                    )
                total += w * h
                files.append(path)
            if total > MAX_PIXELS:
                raise TooLarge(
                    f"{total / 1e6:.1f} MP in one request; at most {MAX_PIXELS / 1e6:.0f} MP "
                    "in all: send fewer or smaller images per request"
                )
            return pd.DataFrame({COLUMN: self._run(files, deadline)})

    def _run(self, files: list[Path], deadline: float | None) -> list[str]:
        def on_tile(done: int, total: int) -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimedOut

        out = []
        for row, path in enumerate(files):
            try:
                on_tile(0, 0)
                sharp = deblur_image(self.model, _decode(path, row), on_tile=on_tile)
            except TimedOut:
                raise MlflowException(
                    f"the request timed out ({TIMEOUT}); stopped at row {row} of {len(files)}",
                    error_code=DEADLINE_EXCEEDED,
                ) from None
            path.unlink()
            out.append(base64.b64encode(png_bytes(to_uint8(sharp))).decode("ascii"))
        return out


mlflow.models.set_model(DeblurModel())
