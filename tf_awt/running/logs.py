"""Quiet TensorFlow for the Python API: :func:`quiet`, what ``tf-awt`` does for its own output.

Importing tf_awt changes nothing in the environment; a program that wants TensorFlow's C++ log
lines (oneDNN, CUDA probing, ``absl::InitializeLog``), its Python warnings (retracing, AutoGraph)
and tfmot's gone calls ``tf_awt.quiet()`` once, before anything imports TensorFlow::

    import tf_awt
    tf_awt.quiet()          # then use tf_awt (and TensorFlow) as usual
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

__all__ = ["quiet"]

_LIBRARIES = ("tensorflow", "tf_keras", "tensorflow_model_optimization")


def quiet() -> None:
    """Silences TensorFlow's log lines: sets ``TF_CPP_MIN_LOG_LEVEL`` and ``ABSL_MIN_LOG_LEVEL`` to 3
    (unless already set), imports TensorFlow, tf_keras and tfmot with file descriptor 2 sent to
    /dev/null (TensorFlow 2.21 writes its load-time lines before it reads the level), and sets
    TensorFlow's Python logger to ERROR. Called after TensorFlow was imported, only the last step
    has an effect. Errors raised by TensorFlow are not affected."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                for name in _LIBRARIES:
                    importlib.import_module(name)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    sys.modules["tensorflow"].get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
