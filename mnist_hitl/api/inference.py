"""The Open Inference Protocol v2 (KServe's): readiness, model metadata and inference on raw tensors.

Raw tensors are scored, not stored: they are not pictures a person drew, and they come
preprocessed already (MNIST-style 28x28, values 0-1).
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, HTTPException

from mnist_hitl.api.dependencies import CurrentWorkbench
from mnist_hitl.api.schemas import MAX_TENSOR_ROWS, MODEL_NAME, InferIn, InferOut, TensorOut, errors

router = APIRouter(tags=["open inference protocol"])


@router.get("/v2/health/ready", responses=errors(503))
async def v2_ready(workbench: CurrentWorkbench) -> dict:
    """Open Inference Protocol v2: ready when the model is."""
    workbench.refresh_model()
    return {"ready": True}


@router.get(f"/v2/models/{MODEL_NAME}", responses=errors(503))
async def v2_metadata(workbench: CurrentWorkbench) -> dict:
    """Open Inference Protocol v2 model metadata."""
    return {
        "name": MODEL_NAME,
        "versions": [workbench.model_version],
        "platform": "tflite",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    }


@router.post(f"/v2/models/{MODEL_NAME}/infer", response_model=InferOut, responses=errors(503))
async def v2_infer(body: InferIn, workbench: CurrentWorkbench) -> InferOut:
    """Probabilities for MNIST-style digits (FP32 ``[N, 28, 28]``, values 0-1); nothing is stored."""
    tensor = body.inputs[0]
    rows, height, width = tensor.shape
    if (height, width) != (28, 28) or not 1 <= rows <= MAX_TENSOR_ROWS:
        raise HTTPException(422, f"the input's shape must be [N, 28, 28] with 1 <= N <= {MAX_TENSOR_ROWS}")
    if len(tensor.data) != rows * 28 * 28:
        raise HTTPException(422, f"shape {tensor.shape} needs {rows * 784} values, got {len(tensor.data)}")
    digits = np.clip(np.asarray(tensor.data, dtype=np.float32).reshape(rows, 28, 28), 0.0, 1.0)
    probabilities, version = workbench.score_digits(digits)
    output = TensorOut(
        name="probabilities", shape=[rows, 10], datatype="FP32", data=probabilities.reshape(-1).astype(float).tolist()
    )
    return InferOut(model_name=MODEL_NAME, model_version=version, id=body.id, outputs=[output])
