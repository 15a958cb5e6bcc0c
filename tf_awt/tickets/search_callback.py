"""The ticket search's Keras callback: per-step distances (and TensorBoard scalars), the rewind at the end."""
from __future__ import annotations

from typing import Dict, List, Optional

import tensorflow as tf
import tf_keras

from tf_awt.tickets.search import REWINDS, TicketSearch

__all__ = ["TicketSearchCallback"]


class TicketSearchCallback(tf_keras.callbacks.Callback):
    """Records the search's distances per step; at the end rewinds the student (the ticket).

    Args:
      rewind: "init" (default: θ0 ⊙ m, the paper) or "learned" (learned weights ⊙ m); None
        leaves the student as it is.
      log_dir: if given (default None), per-step scalars are written there as TensorBoard
        summaries (``search/target_distance``, ``search/kernel_distance``, ...).

    Attributes:
      history: dict of lists: "step", "loss", "target_distance", "kernel_distance",
        "weighted_kernel_distance", "mask_updates" (one entry per training step).
    """

    def __init__(self, rewind: Optional[str] = "init", log_dir: Optional[str] = None):
        super().__init__()
        if rewind is not None and rewind not in REWINDS:
            raise ValueError(f"rewind must be one of {REWINDS} or None. You passed: {rewind!r}")
        self.rewind = rewind
        self.log_dir = log_dir
        self.history: Dict[str, List[float]] = {}
        self._writer = None

    def on_train_begin(self, logs=None):
        if not isinstance(self.model, TicketSearch):
            raise ValueError(f"TicketSearchCallback needs a TicketSearch model. You passed: {type(self.model).__name__}")
        self.history = {key: [] for key in ("step", *self.model.step_values, "mask_updates")}
        self._writer = tf.summary.create_file_writer(self.log_dir) if self.log_dir else None

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self.history["step"].append(step)
        values = {name: float(v.numpy()) for name, v in self.model.step_values.items()}
        for name, value in values.items():
            self.history[name].append(value)
        self.history["mask_updates"].append(int(self.model.mask_updates.numpy()))
        if self._writer is not None:
            with self._writer.as_default(step=step):
                for name, value in values.items():
                    tf.summary.scalar(f"search/{name}", value)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
        if self.rewind is not None:
            self.model.rewind(self.rewind)
