"""Export: a trained ticket as a plain SavedModel that TF Serving and ``mlflow models serve`` load.

:func:`export_saved_model` removes the tfmot wrappers (``strip_pruning``: the masks are already
multiplied into the weights, so the pruned entries are exact zeros), writes the model with one
signature, ``serving_default(images) -> {"logits": ...}``, into a temporary folder beside the
target and swaps it into place (an interrupted export never leaves a complete-looking folder), and
reports the weights' sizes. ``tf-awt run`` / ``tf-awt export`` call it.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
from typing import Iterable, Optional

import numpy as np

__all__ = ["export_saved_model", "ExportResult", "gzip_size"]


def gzip_size(arrays: Iterable[np.ndarray]) -> int:
    """Bytes of the arrays' raw bytes after gzip level 9 (the size a sparse model ships at without a sparse format)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as fh:
        for a in arrays:
            fh.write(np.ascontiguousarray(a).tobytes())
    return len(buf.getvalue())


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_saved_model` wrote.

    Attributes:
      path: the SavedModel folder.
      model: the stripped tf_keras model (no tfmot wrappers) that was saved.
      raw_bytes: bytes of its weights as float32 arrays.
      sparse_gzip_bytes: :func:`gzip_size` of its weights.
      zeros: fraction of exact zeros in its prunable weights.
    """

    path: str
    model: object
    raw_bytes: int
    sparse_gzip_bytes: int
    zeros: float


def export_saved_model(model, path: str, input_shape: Optional[tuple] = None) -> ExportResult:
    """Writes ``model`` (a ticket in tfmot wrappers, or a plain model) as a SavedModel at ``path``.

    Args:
      model: a tf_keras model with logit outputs.
      path: the folder to write (replaced if it exists; written beside it first).
      input_shape: one example's shape (default: the model's input shape without the batch).

    Returns:
      an :class:`ExportResult`. The signature is ``serving_default(images: float32[None, *input_shape])
      -> {"logits": float32[None, classes]}``.
    """
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.sparsity.keras import prune

    from tf_awt._files import atomic_directory
    from tf_awt.layer_rules import layer_rule, prunable_layers

    if input_shape is None:
        if not getattr(model, "inputs", None):
            raise ValueError("export_saved_model needs a built model with one input, or input_shape. You passed a model "
                             f"without inputs ({type(model).__name__}).")
        input_shape = tuple(model.inputs[0].shape[1:])
    if any(d is None or int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape must be positive integers. You passed: {tuple(input_shape)}")
    stripped = prune.strip_pruning(model)

    @tf.function(input_signature=[tf.TensorSpec((None, *input_shape), tf.float32, name="images")])
    def serving_default(images):
        return {"logits": stripped(images, training=False)}

    atomic_directory(path, lambda tmp: stripped.save(tmp, save_format="tf", include_optimizer=False,
                                                     signatures={"serving_default": serving_default}))
    weights = stripped.get_weights()
    kernels = [np.asarray(layer_rule(layer).weights(layer)[0]) for layer in prunable_layers(stripped)]
    total = sum(k.size for k in kernels)
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / total if total else 0.0
    return ExportResult(path=path, model=stripped, raw_bytes=int(sum(w.nbytes for w in weights)),
                        sparse_gzip_bytes=gzip_size(weights), zeros=float(zeros))
