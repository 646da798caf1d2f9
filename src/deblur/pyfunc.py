"""The MLflow model: a deblur checkpoint behind MLflow's pyfunc interface.

Logged as models-from-code (tracking.log_model hands MLflow this file's path): MLflow runs
this file when it loads the model, so nothing is pickled and no CloudPickle warning prints.
Input: float32 (N, 3, H, W) in [0, 1], any H and W; output the same shape. Inference goes
through infer.deblur_image, the path `deblur predict` and the tables use.
"""

from __future__ import annotations

import mlflow
import numpy as np


class DeblurModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from deblur import allocator, models

        allocator.tune()  # `mlflow models serve` runs this process, not deblur's CLI
        self.model = models.load(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        from deblur.infer import deblur_image

        batch = np.asarray(model_input, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        out = [deblur_image(self.model, img.transpose(1, 2, 0)) for img in batch]
        return np.stack([o.transpose(2, 0, 1) for o in out]).astype(np.float32)


mlflow.models.set_model(DeblurModel())
