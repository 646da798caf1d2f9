"""The MLflow model: a deblur checkpoint behind MLflow's pyfunc interface.

Logged as models-from-code (tracking.flavour.log_model hands MLflow this file's path): MLflow runs
this file when it loads the model, so nothing is pickled and no CloudPickle warning prints.

Input: a DataFrame with a string column ``image``, each cell an image file (PNG, JPEG,
WebP, BMP or TIFF) in base64; output: the same column holding each result as a base64 PNG.
Over REST, ``{"dataframe_records": [{"image": "<base64>"}]}`` -> ``{"predictions":
[{"image": "<base64 PNG>"}]}``. A 1280x720 frame is ~2 MB that way against ~30 MB as JSON
floats, which is why the tensor form (N x 3 x H x W floats) was dropped: a model has one
signature, and MLflow enforces it. Inference goes through infer.deblur_image, the path
`deblur predict` and the tables use.
"""

import base64
import binascii
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from PIL import Image

from deblur import allocator, models
from deblur.data.images import png_bytes, read_rgb, to_uint8
from deblur.errors import DeblurError
from deblur.infer import deblur_image

COLUMN = "image"
# As the demo server: a header declaring more is refused before anything is decoded.
MAX_PIXELS = 24_000_000


def _bad(message: str):
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # a 400 over REST


def decode(text: str, row: int):
    """One base64 image file -> uint8 HxWx3 RGB, upright, through the project's reader."""
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
            return read_rgb(path)
        except DeblurError as exc:
            raise _bad(f"row {row}: {str(exc).replace(str(path), 'the image')}") from None


class DeblurModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        allocator.tune()  # `mlflow models serve` runs this process, not deblur's CLI
        self.model = models.load(context.artifacts["checkpoint"])

    # pd.DataFrame hints: MLflow 3 checks them and infers nothing (the signature is explicit).
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        if COLUMN not in frame.columns:
            raise _bad(f"expected a string column `{COLUMN}` of base64 image files")
        out = []
        for row, text in enumerate(frame[COLUMN]):
            sharp = deblur_image(self.model, decode(text, row))
            out.append(base64.b64encode(png_bytes(to_uint8(sharp))).decode("ascii"))
        return pd.DataFrame({COLUMN: out})


mlflow.models.set_model(DeblurModel())
