"""The MLflow model: a deblur checkpoint behind MLflow's pyfunc interface.

Logged as models-from-code (tracking.flavour.log_model hands MLflow this file's path): MLflow runs
this file when it loads the model, so nothing is pickled and no CloudPickle warning prints.

Input: a DataFrame with a string column ``image``, each cell an image file (PNG, JPEG,
WebP, BMP or TIFF) in base64; output: the same column holding each result as a base64 PNG,
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
"""

import base64
import binascii
import tempfile
import time
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from PIL import Image

from deblur import allocator, models
from deblur.data.images import png_bytes
from deblur.data.photo import Photo, read_photo
from deblur.errors import DeblurError
from deblur.infer import OVERLAP, TILE, deblur_image

COLUMN = "image"
# As the demo server: a header declaring more is refused before anything is decoded.
MAX_PIXELS = 24_000_000


def _bad(message: str):
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # a 400 over REST


def decode(text: str, row: int) -> Photo:
    """One base64 image file -> the Photo predict would read from it (deblur.data.photo)."""
    try:
        data = base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"row {row}: `{COLUMN}` is not base64; send base64 of the file") from None
    with tempfile.TemporaryDirectory(prefix="deblur-pyfunc-") as tmp:
        path = Path(tmp) / "image"
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:  # the header only
                    w, h = img.size
        except Exception:  # PIL raises many kinds for a file that is not an image
            raise _bad(f"row {row}: `{COLUMN}` is not an image file (or is too large)") from None
        if w * h > MAX_PIXELS:
            raise _bad(f"row {row}: {w}x{h} is over {MAX_PIXELS / 1e6:.0f} MP; downscale it")
        try:
            return read_photo(path)
        except DeblurError as exc:
            reason = str(exc).replace(f"image {path}", "the image").replace(str(path), "it")
            raise _bad(f"row {row}: {reason}") from None


class DeblurModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        allocator.tune()  # `mlflow models serve` runs this process, not deblur's CLI
        self.model = models.load(context.artifacts["checkpoint"])

    def _one(self, text: str, row: int, tile: int, overlap: int) -> str:
        photo = decode(text, row)
        sharp = deblur_image(self.model, photo.rgb, tile=tile, overlap=overlap)
        return base64.b64encode(png_bytes(photo.result(sharp), photo.icc)).decode("ascii")

    # pd.DataFrame hints: MLflow 3 checks them and infers nothing (the signature is explicit).
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        if COLUMN not in frame.columns:
            raise _bad(f"expected a string column `{COLUMN}` of base64 image files")
        params = params or {}
        tile, overlap = int(params.get("tile", TILE)), int(params.get("overlap", OVERLAP))
        if params.get("errors", "raise") != "rows":
            return pd.DataFrame(
                {COLUMN: [self._one(t, r, tile, overlap) for r, t in enumerate(frame[COLUMN])]}
            )
        out, errors, ms = [], [], []
        for row, text in enumerate(frame[COLUMN]):
            start = time.perf_counter()
            try:
                out.append(self._one(text, row, tile, overlap))
                errors.append("")
            except (MlflowException, DeblurError) as exc:
                out.append("")
                message = exc.message if isinstance(exc, MlflowException) else str(exc)
                errors.append(message.removeprefix(f"row {row}: "))
            ms.append((time.perf_counter() - start) * 1e3)
        return pd.DataFrame({COLUMN: out, "error": errors, "ms": ms})


mlflow.models.set_model(DeblurModel())
