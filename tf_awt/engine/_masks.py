"""Resolution and validation of weight masks (private).

A mask set maps a layer's name to a 0/1 array of the shape of that layer's kernel. Masks given
explicitly take precedence over the mask held by a tfmot ``PruneLowMagnitude`` wrapper; a wrapped
layer with no explicit mask uses the wrapper's mask variable.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf

from tf_awt.engine import _layers
from tf_awt.engine.passes import count_forward


def _concrete_values(mask) -> Optional[np.ndarray]:
    """The mask's values when they can be read now (eager / numpy), else ``None``."""
    if isinstance(mask, np.ndarray):
        return mask
    if tf.executing_eagerly():
        try:
            return np.asarray(mask)
        except Exception:  # pragma: no cover - symbolic values
            return None
    return tf.get_static_value(mask)


def resolve_masks(model, masks: Optional[Mapping[str, object]]) -> Dict[int, tuple]:
    """Validates ``masks`` against ``model`` and adds the masks of tfmot wrappers.

    Returns ``{id(inner_layer): (inner_layer, mask_tensor)}`` where ``inner_layer`` owns the
    ``kernel`` variable the mask applies to, and ``mask_tensor`` has the kernel's dtype.

    Raises:
      ValueError: a mask names an unknown layer or a layer without a kernel, has the wrong shape,
        or holds values other than 0 and 1.
    """
    candidates = _layers.kernel_layers(model)
    resolved: Dict[int, tuple] = {}
    for layer in candidates.values():
        inner, wrapper_mask = _layers.unwrap(layer)
        if wrapper_mask is not None:
            resolved[id(inner)] = (inner, tf.cast(wrapper_mask, inner.kernel.dtype))
    if masks is None:
        return resolved
    if not isinstance(masks, Mapping):
        raise ValueError(
            "masks must be a dict from a layer name to a 0/1 array of that layer's kernel shape. "
            f"You passed: {type(masks).__name__}"
        )
    for name, mask in masks.items():
        if name not in candidates:
            raise ValueError(
                f"masks names a layer that does not exist or has no kernel: {name!r}. "
                f"Layers with a kernel: {sorted(candidates)}"
            )
        inner, _ = _layers.unwrap(candidates[name])
        kernel_shape = tuple(inner.kernel.shape)
        mask_shape = tuple(mask.shape) if hasattr(mask, "shape") else np.shape(mask)
        if tuple(mask_shape) != kernel_shape:
            raise ValueError(
                f"The mask for layer {name!r} must have the kernel's shape {kernel_shape}. "
                f"You passed shape: {tuple(mask_shape)}"
            )
        values = _concrete_values(mask)
        if values is not None:
            bad = values[(values != 0) & (values != 1)]
            if bad.size:
                raise ValueError(
                    f"The mask for layer {name!r} must hold only 0 and 1. "
                    f"You passed values such as: {bad.ravel()[:3].tolist()}"
                )
        resolved[id(inner)] = (inner, tf.cast(mask, inner.kernel.dtype))
    return resolved


def sparse_forward(model, x, training: bool = False):
    """``model(x)``; for a tfmot-pruned model ``f(m ⊙ W)(x)`` through the wrappers' inner layers.

    The wrappers' own call assigns ``W ← m ⊙ W`` on every call, which cannot run inside nested
    ``tf.function`` s (cleverhans' attacks) or in replica context, and gives pruned weights a
    non-zero gradient; this path does neither (see ``_layers.masked_forward``). Counted in an active
    :class:`tf_awt.engine.passes.PassCount`.
    """
    if any(_layers.is_prune_wrapper(layer) for layer in _layers.iter_layers(model)):
        return count_forward(_layers.masked_forward(model, x, resolve_masks(model, None), training=training), x)
    return count_forward(model(x, training=training), x)
