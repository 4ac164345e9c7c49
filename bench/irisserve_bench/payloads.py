"""What the benchmark posts, all from the served model's manifest: the example row, the same row as an Open
Inference Protocol (V2) tensor, and a batch of rows spread across the features' training ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irisserve.core.artifact import read_manifest
from irisserve.core.spec import ModelSpec
from irisserve.v2.codec import INPUT_NAME

# Weyl sequences (k * an irrational, mod 1) fill [0, 1) evenly without a random generator: the same batch every run.
GOLDEN = 0.6180339887498949
EDGE = 0.01  # keep clear of each range's ends, so an exclusive minimum (Iris's > 0) never bites
DECIMALS = 4


def model_spec(model_dir: Path) -> ModelSpec:
    return ModelSpec.from_manifest(read_manifest(model_dir))


def example_row(model_dir: Path) -> dict[str, Any]:
    """The served model's example row, from its manifest: what every single-row request posts."""
    return model_spec(model_dir).example


def v2_infer_path(spec: ModelSpec) -> str:
    return f"/v2/models/{spec.name}/infer"


def v2_infer_request(spec: ModelSpec) -> dict[str, Any]:
    """The example row as one ``[1, n]`` FP32 tensor, the shape a KServe or Triton client sends."""
    row = list(spec.example.values())
    return {"inputs": [{"name": INPUT_NAME, "shape": [1, len(row)], "datatype": "FP32", "data": row}]}


def batch_request(spec: ModelSpec, rows: int) -> dict[str, Any]:
    """``{"instances": [...]}`` with ``rows`` rows, each feature walking its training range on its own sequence."""
    instances = []
    for i in range(rows):
        instances.append({
            feature.name: round(feature.minimum + (feature.maximum - feature.minimum) * _spread(i, j), DECIMALS)
            for j, feature in enumerate(spec.features)
        })
    return {"instances": instances}


def _spread(i: int, j: int) -> float:
    """A fraction in [EDGE, 1 - EDGE): row ``i``'s point on feature ``j``'s sequence (a different step per feature)."""
    fraction = ((i + 1) * (GOLDEN + j * 0.1377)) % 1.0
    return EDGE + fraction * (1.0 - 2 * EDGE)
