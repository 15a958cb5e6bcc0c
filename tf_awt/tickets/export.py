"""Export: a trained ticket as a plain SavedModel that TF Serving and ``mlflow models serve`` load.

:func:`export_saved_model` removes the tfmot wrappers (``strip_pruning``: the masks are already
multiplied into the weights, so the pruned entries are exact zeros), writes the model with one
signature, ``serving_default(images) -> {"logits": ...}``, into a temporary folder beside the
target and swaps it into place (an interrupted export never leaves a complete-looking folder), and
reports the weights' sizes. ``tf-awt run`` / ``tf-awt export`` call it.

The SavedModel keeps dense kernels full of zeros: it is small after gzip, but its inference costs
what the dense model's costs. :func:`export_tflite` writes a TensorFlow Lite flatbuffer whose
pruned kernels are stored in TFLite's sparse tensor format (``Optimize.EXPERIMENTAL_SPARSITY``), run
by sparse kernels (benchmarks/inference_bench.py: on the paper MLP at 5% density, batch 1, several
times faster than the dense model; numbers in docs/performance.md). Same logits up to float32
rounding; ``tf-awt run`` writes it as ``model.tflite`` beside ``saved_model/`` (``export.tflite``).

TensorFlow, tfmot and TFLite are imported inside the functions that use them (module-level imports
keep it TensorFlow-free).
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import os
from typing import Iterable, Optional

import numpy as np

from tf_awt import _internals

__all__ = ["export_saved_model", "export_tflite", "export_keras3", "export_run", "ExportResult", "gzip_size", "tflite_predict"]


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
      path: the SavedModel folder (None when a run wrote none: ``export.saved_model: false``).
      model: the stripped tf_keras model (no tfmot wrappers) that was saved.
      raw_bytes: bytes of its weights as float32 arrays.
      sparse_gzip_bytes: :func:`gzip_size` of its weights.
      zeros: fraction of exact zeros in its prunable weights.
    """

    path: Optional[str]
    model: object
    raw_bytes: int
    sparse_gzip_bytes: int
    zeros: float


def _input_shape(model, input_shape, caller: str) -> tuple:
    if input_shape is None:
        if not getattr(model, "inputs", None):
            raise ValueError(f"{caller} needs a built model with one input, or input_shape. You passed a model "
                             f"without inputs ({type(model).__name__}).")
        input_shape = tuple(model.inputs[0].shape[1:])
    if any(d is None or int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape must be positive integers. You passed: {tuple(input_shape)}")
    return tuple(int(d) for d in input_shape)


def _serving_function(stripped, input_shape):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, *input_shape), tf.float32, name="images")])
    def serving_default(images):
        return {"logits": stripped(images, training=False)}

    return serving_default


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
    from tf_awt._files import atomic_directory

    input_shape = _input_shape(model, input_shape, "export_saved_model")
    stripped = _internals.strip_pruning(model)
    serving_default = _serving_function(stripped, input_shape)
    atomic_directory(path, lambda tmp: stripped.save(tmp, save_format="tf", include_optimizer=False,
                                                     signatures={"serving_default": serving_default}))
    return _stripped_result(stripped, path)


def _stripped_result(stripped, path: Optional[str]) -> ExportResult:
    """The sizes of a stripped model's weights (what :func:`export_saved_model` reports)."""
    from tf_awt.engine.layer_rules import layer_rule, prunable_layers

    weights = stripped.get_weights()
    kernels = [np.asarray(layer_rule(layer).weights(layer)[0]) for layer in prunable_layers(stripped)]
    total = sum(k.size for k in kernels)
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / total if total else 0.0
    return ExportResult(path=path, model=stripped, raw_bytes=int(sum(w.nbytes for w in weights)),
                        sparse_gzip_bytes=gzip_size(weights), zeros=float(zeros))


def export_tflite(model, path: str, sparse: bool = True, input_shape: Optional[tuple] = None) -> int:
    """Writes ``model`` as a TensorFlow Lite flatbuffer at ``path``; returns its size in bytes.

    Args:
      model: a tf_keras model with logit outputs (a ticket in tfmot wrappers, or a plain model).
      path: the ``.tflite`` file to write (written to a temporary name beside it, then renamed).
      sparse: store the kernels in TFLite's sparse format (``Optimize.EXPERIMENTAL_SPARSITY``;
        default True); False writes the dense flatbuffer (the benchmark's baseline).
      input_shape: one example's shape (default: the model's input shape without the batch).

    The flatbuffer takes float32 ``images`` of shape ``(batch, *input_shape)`` (any batch: resize
    the interpreter's input) and returns the logits; :func:`tflite_predict` runs it.
    """
    import tensorflow as tf
    from tf_awt._files import atomic_write_bytes

    input_shape = _input_shape(model, input_shape, "export_tflite")
    stripped = _internals.strip_pruning(model)
    function = _serving_function(stripped, input_shape)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], stripped)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    blob = converter.convert()
    atomic_write_bytes(path, blob)
    return len(blob)


def tflite_predict(path: str, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """Logits of the flatbuffer at ``path`` for the batch ``x`` (float32), through TFLite's interpreter."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter announces its move to ai_edge_litert
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
    x = np.asarray(x, np.float32)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def export_keras3(model, path: str) -> int:
    """Writes ``model`` (tfmot wrappers are stripped) as a Keras 3 ``.keras`` file; returns its size in bytes.

    The model is converted by :func:`tf_awt.keras3.to_keras3` (same layers, names and weights) and
    saved to a temporary name beside ``path``, then renamed.
    """
    import tempfile

    from tf_awt._files import apply_umask
    from tf_awt.keras3 import to_keras3

    if not path.endswith(".keras"):
        raise ValueError(f"a Keras 3 file name ends in '.keras'. You passed: {path!r}")
    converted = to_keras3(_internals.strip_pruning(model))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".keras")
    os.close(handle)
    try:
        converted.save(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return os.path.getsize(path)


def export_run(model, directory: str, input_shape: tuple, dense_weights, config=None):
    """A run's exports in ``directory``: ``saved_model/``, ``model.tflite`` and ``model.keras`` as
    its :class:`~tf_awt.adversarial.phase_config.ExportConfig` says (default ``ExportConfig()``: the first two).

    Returns (the stripped model, sizes in bytes: ``raw_bytes``, ``dense_gzip_bytes`` of
    ``dense_weights``, ``sparse_gzip_bytes``, and ``tflite_bytes``/``keras3_bytes`` when written,
    the SavedModel's path or None)."""
    from tf_awt.adversarial.phase_config import ExportConfig

    config = config if config is not None else ExportConfig()
    if config.saved_model:
        result = export_saved_model(model, os.path.join(directory, "saved_model"), input_shape)
    else:
            result = _stripped_result(_internals.strip_pruning(model), None)
    sizes = {"raw_bytes": result.raw_bytes, "dense_gzip_bytes": gzip_size(dense_weights),
             "sparse_gzip_bytes": result.sparse_gzip_bytes}
    if config.tflite:
        sizes["tflite_bytes"] = export_tflite(model, os.path.join(directory, "model.tflite"), sparse=True,
                                              input_shape=input_shape)
    if config.keras3:
        sizes["keras3_bytes"] = export_keras3(result.model, os.path.join(directory, "model.keras"))
    return result.model, sizes, result.path
