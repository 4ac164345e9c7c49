"""A bare FastAPI app doing irisserve's job: one pydantic model (the artifact's features, each a JSON
number, extra keys refused, Iris's > 0 kept), an ``async def`` handler, one ONNX Runtime session on one
thread (as irisserve's), ``response_model``. No metrics, logs, limits or range flags. About twenty lines,
as a user would write it."""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, create_model

folder = Path(os.environ.get("IRISSERVE_MODEL_DIR", "models/iris/1.0.0"))
manifest = json.loads((folder / "manifest.json").read_text())
names = [feature["name"] for feature in manifest["features"]]
fields: dict[str, Any] = {
    f"f{i}": (float, Field(alias=feature["name"], gt=feature.get("exclusive_minimum")))
    for i, feature in enumerate(manifest["features"])
}
Row = create_model("Row", __config__=ConfigDict(extra="forbid"), **fields)
# One thread, as irisserve's session: ORT's default pool (a spinning thread per core) cost this app a third to a half
# of its throughput at 8 clients on 2 cores, so the ratio would have measured that setting, not the serving stack.
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
outputs = manifest["onnx"]["outputs"]
output = outputs.get("probabilities") or outputs["prediction"]
targets = manifest["targets"]


class Answer(BaseModel):
    prediction: str | float
    confidence: float | None = None


app = FastAPI()


@app.post("/predict", response_model=Answer)
async def predict(row: Row) -> Answer:
    result = session.run([output], {"input": np.asarray([list(row.__dict__.values())], dtype=np.float32)})[0][0]
    if "probabilities" in outputs:
        best = int(result.argmax())
        return Answer(prediction=targets[best], confidence=float(result[best]))
    return Answer(prediction=float(result.reshape(-1)[0]))  # a regressor answers [N, 1]
