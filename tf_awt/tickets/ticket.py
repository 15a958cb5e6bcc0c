"""A ticket: the masks found at initialization, the initialization θ0 itself, and how it was found.

The ticket is ``m ⊙ θ0``: :meth:`Ticket.to_model` rebuilds it as a tfmot-pruned model (masks in
``PruneLowMagnitude`` wrappers with a frozen :class:`~tf_awt.tickets.pruning_schedule.AWTSchedule`, weights θ0 with pruned
entries zero), ready for (adversarial) training with ``model.fit`` and ``UpdatePruningStep``.

TensorFlow and tfmot are imported inside the functions that use them, so a ticket file loads and a
recipe is checked without TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Mapping, Optional

import numpy as np

__all__ = ["Ticket", "RESCALES"]

from tf_awt._options import RESCALES  # noqa: E402  (the allowed names live in one place)


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
    def to_model(self, model, rewind: str = "init", rescale: str = "none"):
        r"""The ticket as a tfmot-pruned copy of ``model`` (an architecture like the searched one).

        Args:
          model: a tf_keras model of the searched architecture (its weights are not used), or a
            Keras 3 one: the result is then its tf_keras twin in tfmot wrappers (tfmot has no Keras 3
            wrappers); ``tf_awt.keras3.to_keras3(strip_pruning(trained))`` converts it back.
          rewind: "init" (default, the paper: train from θ0) or "learned" (start from the
            student's weights at the end of the search, as NTT's code does).
          rescale: "none" (default) or "fan_in": the kept weights of every output unit j of a
            masked layer are multiplied by :math:`\sqrt{n / k_j}` (n the unit's fan-in, k_j its kept
            inputs), so that for i.i.d. zero-mean inputs its pre-activation variance equals the
            dense layer's (signal-preserving initialization of a sparse ticket).

        A model of another architecture is refused (:meth:`check_fits`).
        """
        if rescale not in RESCALES:
            raise ValueError(f"rescale must be one of {RESCALES}. You passed: {rescale!r}")
        import tf_keras

        from tf_awt.keras3 import as_tf_keras

        model = as_tf_keras(model)  # a Keras 3 model: the ticket is its tf_keras twin in tfmot wrappers

        from tf_awt.tickets.pruning_schedule import AWTSchedule

        if rewind not in ("init", "learned"):
            raise ValueError(f"rewind must be 'init' or 'learned'. You passed: {rewind!r}")
        weights = self.initial_weights if rewind == "init" else self.learned_weights
        if weights is None:
            raise ValueError("rewind='learned' needs a ticket that kept its learned weights (learned_weights is None).")
        self.check_fits(model)
        from tf_awt.engine.layer_rules import clone_wrapping

        plain = tf_keras.models.clone_model(model)
        plain.set_weights(weights)
        pruned = clone_wrapping(plain, list(self.masks), AWTSchedule.frozen_at(self.density))
        _copy_into_pruned(plain, pruned, self.masks, rescale)
        return pruned

    def check_fits(self, model) -> None:
        """Raises a ValueError saying how ``model``'s architecture differs from the ticket's.

        Checks that every mask names a layer of ``model`` with a kernel of the mask's shape, and
        that θ0 has as many arrays as ``model.get_weights()``, with the same shapes.
        """
        import tf_keras

        from tf_awt.engine._layers import iter_layers, unwrap

        if not isinstance(model, tf_keras.Model):
            raise ValueError(f"model must be a tf_keras.Model. You passed: {type(model).__module__}.{type(model).__name__}")
        kernels = {}
        for layer in iter_layers(model):
            inner, _ = unwrap(layer)
            if getattr(inner, "kernel", None) is not None:
                kernels[inner.name] = tuple(inner.kernel.shape)
        missing = sorted(set(self.masks) - set(kernels))
        if missing:
            raise ValueError(f"the ticket masks layers {missing} that model {model.name!r} does not have (its layers with "
                             f"kernels: {sorted(kernels)}): the ticket was found on another architecture")
        for name, mask in self.masks.items():
            if tuple(np.shape(mask)) != kernels[name]:
                raise ValueError(f"the ticket's mask for layer {name!r} has shape {tuple(np.shape(mask))}, the model's "
                                 f"kernel has shape {kernels[name]}: the ticket was found on another architecture")
        shapes = [tuple(w.shape) for w in model.get_weights()]
        mine = [tuple(np.shape(w)) for w in self.initial_weights]
        if len(shapes) != len(mine):
            raise ValueError(f"the ticket holds {len(mine)} initial weight arrays, model {model.name!r} has {len(shapes)}: "
                             "the ticket was found on another architecture")
        for i, (a, b) in enumerate(zip(mine, shapes)):
            if a != b:
                raise ValueError(f"the ticket's initial weight array {i} has shape {a}, the model's has shape {b}: the "
                                 "ticket was found on another architecture")

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
        from tf_awt._files import atomic_write_with

        atomic_write_with(path, lambda fh: np.savez_compressed(fh, **arrays))

    @classmethod
    def load(cls, path: str, model=None) -> "Ticket":
        """Reads a ticket written by :meth:`save`; a file that is not one is a ValueError naming it.

        Args:
          path: the .npz file.
          model: optional: a model the ticket must fit (:meth:`check_fits`; default None).
        """
        import zipfile

        from tf_awt._files import npz_error_cause

        if not os.path.isfile(path):
            raise ValueError(f"ticket file {path} does not exist")
        try:
            data = np.load(path, allow_pickle=False)
            meta = json.loads(bytes(data["meta"]).decode())
            if not isinstance(meta, dict):
                raise ValueError("its metadata is not a mapping")
            masks = {k[len("mask/"):]: data[k] for k in data.files if k.startswith("mask/")}
            init = [data[k] for k in sorted(k for k in data.files if k.startswith("init/"))]
            learned_keys = sorted(k for k in data.files if k.startswith("learned/"))
            learned = [data[k] for k in learned_keys] if learned_keys else None
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a tf_awt ticket file (.npz written by Ticket.save): {npz_error_cause(err)}") from None
        if meta.get("format") != "tf_awt.Ticket/1":
            raise ValueError(f"{path} is not a tf_awt ticket file (format {meta.get('format')!r}).")
        for name, mask in masks.items():
            if not np.isin(mask, (0, 1)).all():
                raise ValueError(f"{path} is corrupt: the mask of layer {name!r} holds values other than 0 and 1")
        if not init or not masks:
            raise ValueError(f"{path} is corrupt: it holds {len(masks)} masks and {len(init)} initial weight arrays")
        if any(not np.all(np.isfinite(w)) for w in init):
            raise ValueError(f"{path} is corrupt: its initial weights hold non-finite values")
        ticket = cls(masks=masks, initial_weights=init, method=meta.get("method", "awt"), history=meta.get("history", {}),
                     config=meta.get("config", {}), learned_weights=learned)
        if model is not None:
            try:
                ticket.check_fits(model)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        return ticket


def fan_in_scale(mask: np.ndarray) -> np.ndarray:
    """Per output unit (last axis) sqrt(fan-in / kept inputs), 0 for a unit with none kept."""
    flat = np.asarray(mask, np.float64).reshape(-1, np.shape(mask)[-1])
    kept = flat.sum(axis=0)
    return np.where(kept > 0, np.sqrt(flat.shape[0] / np.maximum(kept, 1)), 0.0)


def _copy_into_pruned(plain, pruned, masks, rescale: str = "none"):
    """Copies the plain model's weights into the pruned clone, sets masks, zeroes pruned weights."""
    from tf_awt.engine._layers import iter_layers, unwrap

    plain_layers = {layer.name: layer for layer in iter_layers(plain)}
    for layer in iter_layers(pruned):
        inner, mask_var = unwrap(layer)
        source = plain_layers[inner.name]
        for target, value in zip(inner.weights, source.weights):
            target.assign(value)
        if mask_var is not None:
            mask = np.asarray(masks[inner.name], mask_var.dtype.as_numpy_dtype)
            mask_var.assign(mask)
            kernel = inner.kernel * mask
            if rescale == "fan_in":
                kernel = kernel * fan_in_scale(mask).astype(mask.dtype)
            inner.kernel.assign(kernel)
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


def find_dense(model, data, config, options) -> Ticket:
    """The ``find`` of method ``dense`` (:mod:`tf_awt.tickets.methods`): every weight kept, at density 1."""
    from tf_awt.engine.layer_rules import prunable_layers

    masks = {layer.name: np.ones(layer.kernel.shape, np.float32) for layer in prunable_layers(model)}
    return Ticket(masks=masks, initial_weights=model.get_weights(), method="dense",
                  config=dataclasses.replace(config, density=1.0).get_config())
