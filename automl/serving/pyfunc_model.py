"""The MLflow entry point logged with every registered model ("models from code").

MLflow runs this file when the model is loaded: the network is a ``torch.export``
program and the preprocessing a JSON file, so loading unpickles nothing. The prediction
code travels beside it (``automl_serving.py``), so no automl installation is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc.model import PythonModel

try:  # the copy logged with the model, put on sys.path by MLflow
    from automl_serving import predict_frame
except ImportError:  # while automl itself logs the model
    from automl.serving.automl_serving import predict_frame


class ImageClassifier(PythonModel):
    def load_context(self, context: Any) -> None:
        self.preprocess = json.loads(Path(context.artifacts["preprocess"]).read_text())
        self.network = torch.export.load(context.artifacts["network"]).module()

    # ndarray is a hint MLflow accepts without deriving a schema from it.
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return predict_frame(self.network, self.preprocess, model_input)


mlflow.models.set_model(ImageClassifier())
