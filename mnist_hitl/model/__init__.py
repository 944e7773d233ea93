"""The deployed model: its files and pointer (one owner, :mod:`.pointer`), the TensorFlow-free predictor,
the registry's names and the follower that serves the registry's champion on a node with no shared disk.
"""

from mnist_hitl.model.pointer import (
    DEPLOYED_POINTER,
    Deployed,
    ModelFileError,
    ModelFiles,
    deployed_model,
    export_name,
    model_files,
    write_pointer,
)
from mnist_hitl.model.predictor import LoadedModel, Predictor, load_deployed, load_export, read_export

__all__ = [
    "DEPLOYED_POINTER",
    "Deployed",
    "LoadedModel",
    "ModelFileError",
    "ModelFiles",
    "Predictor",
    "deployed_model",
    "export_name",
    "load_deployed",
    "load_export",
    "model_files",
    "read_export",
    "write_pointer",
]
