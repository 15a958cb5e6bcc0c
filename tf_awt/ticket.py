"""A ticket: the masks found at initialization, the initialization θ0 itself, and how it was found.

The ticket is ``m ⊙ θ0``: :meth:`Ticket.to_model` rebuilds it as a tfmot-pruned model (masks in
``PruneLowMagnitude`` wrappers with a frozen :class:`~tf_awt.AWTSchedule`, weights θ0 with pruned
entries zero), ready for (adversarial) training with ``model.fit`` and ``UpdatePruningStep``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Dict, List, Mapping, Optional

import numpy as np

__all__ = ["Ticket"]


@dataclasses.dataclass(frozen=True)
class Ticket:
    """Masks per layer name, θ0, densities and the search history.

    Attributes:
      masks: layer name -> 0/1 array of that layer's kernel shape.
      initial_weights: θ0 as ``model.get_weights()`` of the plain (unwrapped) model.
      method: how the masks were found ("awt", "ntt", "random", "magnitude", "snip", "synflow").
      history: per-step search logs ("step", "loss", "target_distance", "kernel_distance", ...);
        empty for one-shot methods.
      config: the search settings (JSON-serializable).
      learned_weights: the student's weights at the end of the search (for ``rewind="learned"``),
        or None.
    """

    masks: Mapping[str, np.ndarray]
    initial_weights: List[np.ndarray]
    method: str = "awt"
    history: Mapping[str, List[float]] = dataclasses.field(default_factory=dict)
    config: Mapping[str, object] = dataclasses.field(default_factory=dict)
    learned_weights: Optional[List[np.ndarray]] = None

    @property
    def layer_density(self) -> Dict[str, float]:
        """Fraction of kept weights per masked layer."""
        return {name: float(np.mean(m)) for name, m in self.masks.items()}

    @property
    def density(self) -> float:
        """Fraction of kept weights over all masked kernels."""
        kept = sum(float(np.sum(m)) for m in self.masks.values())
        total = sum(m.size for m in self.masks.values())
        return kept / total if total else 1.0

    @property
    def num_kept(self) -> int:
        return int(sum(np.sum(m) for m in self.masks.values()))

    # ------------------------------------------------------------------ model
    def to_model(self, model, rewind: str = "init"):
        """The ticket as a tfmot-pruned copy of ``model`` (an architecture like the searched one).

        Args:
          model: a tf_keras model of the searched architecture (its weights are not used).
          rewind: "init" (default, the paper: train from θ0) or "learned" (start from the
            student's weights at the end of the search, as NTT's code does).
        """
        import tf_keras
        from tensorflow_model_optimization.python.core.sparsity.keras import prune

        from tf_awt.schedule import AWTSchedule

        if rewind not in ("init", "learned"):
            raise ValueError(f"rewind must be 'init' or 'learned'. You passed: {rewind!r}")
        weights = self.initial_weights if rewind == "init" else self.learned_weights
        if weights is None:
            raise ValueError("rewind='learned' needs a ticket that kept its learned weights (learned_weights is None).")
        plain = tf_keras.models.clone_model(model)
        plain.set_weights(weights)
        schedule = AWTSchedule.frozen_at(self.density)
        names = set(self.masks)

        def wrap(layer):
            if layer.name in names:
                return prune.prune_low_magnitude(layer, pruning_schedule=schedule)
            return layer

        pruned = tf_keras.models.clone_model(plain, clone_function=wrap)
        _copy_into_pruned(plain, pruned, self.masks)
        return pruned

    # ------------------------------------------------------------------ persistence
    def save(self, path: str) -> None:
        """Writes the ticket to ``path`` (.npz), atomically (temp file, then rename)."""
        arrays = {f"mask/{name}": np.asarray(m, np.float32) for name, m in self.masks.items()}
        arrays.update({f"init/{i:04d}": np.asarray(w) for i, w in enumerate(self.initial_weights)})
        if self.learned_weights is not None:
            arrays.update({f"learned/{i:04d}": np.asarray(w) for i, w in enumerate(self.learned_weights)})
        meta = {"method": self.method, "history": _jsonable(self.history), "config": _jsonable(self.config),
                "format": "tf_awt.Ticket/1"}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    @classmethod
    def load(cls, path: str) -> "Ticket":
        """Reads a ticket written by :meth:`save`; a file that is not one is a ValueError naming it."""
        try:
            data = np.load(path, allow_pickle=False)
            meta = json.loads(bytes(data["meta"]).decode())
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path} is not a tf_awt ticket file (.npz written by Ticket.save): {err}") from None
        if meta.get("format") != "tf_awt.Ticket/1":
            raise ValueError(f"{path} is not a tf_awt ticket file (format {meta.get('format')!r}).")
        masks = {k[len("mask/"):]: data[k] for k in data.files if k.startswith("mask/")}
        init = [data[k] for k in sorted(k for k in data.files if k.startswith("init/"))]
        learned_keys = sorted(k for k in data.files if k.startswith("learned/"))
        learned = [data[k] for k in learned_keys] if learned_keys else None
        return cls(masks=masks, initial_weights=init, method=meta["method"], history=meta["history"],
                   config=meta["config"], learned_weights=learned)


def _copy_into_pruned(plain, pruned, masks):
    """Copies the plain model's weights into the pruned clone, sets masks, zeroes pruned weights."""
    from tf_awt._layers import iter_layers, unwrap

    plain_layers = {layer.name: layer for layer in iter_layers(plain)}
    for layer in iter_layers(pruned):
        inner, mask_var = unwrap(layer)
        source = plain_layers[inner.name]
        for target, value in zip(inner.weights, source.weights):
            target.assign(value)
        if mask_var is not None:
            mask = np.asarray(masks[inner.name], mask_var.dtype.as_numpy_dtype)
            mask_var.assign(mask)
            inner.kernel.assign(inner.kernel * mask)
    for layer in iter_layers(pruned):
        if hasattr(layer, "pruning_step"):
            layer.pruning_step.assign(0)


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
