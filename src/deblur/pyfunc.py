"""The MLflow model: a deblur checkpoint behind MLflow's pyfunc interface.

Logged as models-from-code (tracking.flavour.log_model hands MLflow this file's path): MLflow runs
this file when it loads the model, so nothing is pickled and no CloudPickle warning prints.

Input: a DataFrame with a string column ``image``, each cell an image file (PNG, JPEG,
WebP, BMP or TIFF) in base64 (line breaks and spaces allowed: `base64` and Spark's
`base64()` wrap at 76); output: the same column holding each result as a base64 PNG,
the file's format kept as `deblur predict` keeps it (deblur.data.photo: gray, 16 bits,
alpha, ICC), so a result is the very file predict writes.
Over REST, ``{"dataframe_records": [{"image": "<base64>"}]}`` -> ``{"predictions":
[{"image": "<base64 PNG>"}]}``. A 1280x720 frame is ~2 MB that way against ~30 MB as JSON
floats, which is why the tensor form (N x 3 x H x W floats) was dropped: a model has one
signature, and MLflow enforces it. Inference goes through infer.deblur_image, the path
`deblur predict` and the tables use.

Params (declared in the signature, so MLflow passes them): ``tile`` and ``overlap`` as
predict's options; ``errors``: ``raise`` (the default: a bad row fails the request, a 400
over REST) or ``rows``, for `deblur batch`: a bad row gets an empty ``image`` and its
reason in an ``error`` column, beside ``ms`` per row, and the other rows are still scored.
A Spark job must not die of one corrupt file after retrying it four times.

Limits under `mlflow models serve` (docs/serving.md): a request holds at most
``MAX_ROWS`` rows and ``MAX_PIXELS`` in all, checked from the headers before anything is
decoded (413); an image over ``MAX_PIXELS`` is a 413 anywhere. Once the scoring server's
request timeout (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT) has passed, the work stops at the
next tile: the client has had its 504 by then.
"""

import base64
import binascii
import io
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
from deblur.data.images import png_bytes
from deblur.data.photo import MAX_PIXELS, Photo, read_photo
from deblur.errors import DeblurError
from deblur.infer import OVERLAP, TILE, deblur_image

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
    """A request or an image over the caps: 413 over REST (MLflow has no code for it)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    def get_http_status_code(self):
        return 413


class TimedOut(MlflowException):
    """The request's time is up: raised between tiles, and never turned into a row error."""

    def __init__(self, message: str):
        super().__init__(message, error_code=DEADLINE_EXCEEDED)


def _bytes(text, row: int) -> bytes:
    """A cell's base64 -> the file's bytes; whitespace and line breaks are ignored."""
    try:
        return base64.b64decode("".join(str(text).split()), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"row {row}: `{COLUMN}` is not base64; send base64 of the file") from None


def _size(data: bytes, row: int) -> tuple[int, int]:
    """(width, height) from the file's header; 413 over MAX_PIXELS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # the header only
                w, h = img.size
    except Exception:  # PIL raises many kinds for a file that is not an image
        raise _bad(f"row {row}: `{COLUMN}` is not an image file (or is too large)") from None
    if w * h > MAX_PIXELS:
        raise TooLarge(f"row {row}: {w}x{h} is over {MAX_PIXELS / 1e6:.0f} MP; downscale it")
    return w, h


def decode(text: str, row: int) -> Photo:
    """One base64 image file -> the Photo predict would read from it (deblur.data.photo)."""
    data = _bytes(text, row)
    _size(data, row)
    with tempfile.TemporaryDirectory(prefix="deblur-pyfunc-") as tmp:
        path = Path(tmp) / "image"
        path.write_bytes(data)
        try:
            return read_photo(path)
        except DeblurError as exc:
            reason = str(exc).replace(f"image {path}", "the image").replace(str(path), "it")
            raise _bad(f"row {row}: {reason}") from None


def check_request(texts) -> None:
    """The caps of a served request, from the headers alone: 413 beyond them."""
    if len(texts) > MAX_ROWS:
        raise TooLarge(f"{len(texts)} rows in one request; at most {MAX_ROWS}: split it")
    total = 0
    for row, text in enumerate(texts):
        w, h = _size(_bytes(text, row), row)
        total += w * h
    if total > MAX_PIXELS:
        raise TooLarge(
            f"{total / 1e6:.1f} MP in one request; at most {MAX_PIXELS / 1e6:.0f} MP in all: "
            "send fewer or smaller images per request"
        )


def _deadline() -> float | None:
    """When this request's time is up (monotonic), under `mlflow models serve`; else None."""
    if os.environ.get(SERVING) != "true":
        return None
    try:
        return time.monotonic() + float(os.environ.get(TIMEOUT, "60"))
    except ValueError:
        return None


class DeblurModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        allocator.tune()  # `mlflow models serve` runs this process, not deblur's CLI
        self.model = models.load(context.artifacts["checkpoint"])

    def _one(self, text: str, row: int, tile: int, overlap: int, deadline=None) -> str:
        def on_tile(done: int, total: int) -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimedOut(f"the request timed out ({TIMEOUT}); stopped at row {row}")

        on_tile(0, 0)
        photo = decode(text, row)
        sharp = deblur_image(self.model, photo.rgb, tile=tile, overlap=overlap, on_tile=on_tile)
        return base64.b64encode(png_bytes(photo.result(sharp), photo.icc)).decode("ascii")

    # pd.DataFrame hints: MLflow 3 checks them and infers nothing (the signature is explicit).
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        deadline = _deadline()
        frame = pd.DataFrame(model_input)
        if COLUMN not in frame.columns:
            raise _bad(f"expected a string column `{COLUMN}` of base64 image files")
        if deadline is not None:  # served over REST: the request's caps
            check_request(list(frame[COLUMN]))
        params = params or {}
        tile, overlap = int(params.get("tile", TILE)), int(params.get("overlap", OVERLAP))
        if params.get("errors", "raise") != "rows":
            texts = enumerate(frame[COLUMN])
            return pd.DataFrame(
                {COLUMN: [self._one(t, r, tile, overlap, deadline) for r, t in texts]}
            )
        out, errors, ms = [], [], []
        for row, text in enumerate(frame[COLUMN]):
            start = time.perf_counter()
            try:
                out.append(self._one(text, row, tile, overlap, deadline))
                errors.append("")
            except TimedOut:
                raise
            except (MlflowException, DeblurError) as exc:
                out.append("")
                message = exc.message if isinstance(exc, MlflowException) else str(exc)
                errors.append(message.removeprefix(f"row {row}: "))
            ms.append((time.perf_counter() - start) * 1e3)
        return pd.DataFrame({COLUMN: out, "error": errors, "ms": ms})


mlflow.models.set_model(DeblurModel())
