"""Layer-graph plumbing shared by the kernel engine and the ticket search (private).

* :func:`iter_layers` walks every leaf layer of a (possibly nested) tf_keras model.
* :func:`unwrap` turns a tfmot ``PruneLowMagnitude`` wrapper into ``(inner_layer, mask_variable)``.
* :func:`run_graph` re-executes a Sequential/Functional model node by node, letting a callback
  apply each layer (this is how the structured kernel path records per-layer inputs and outputs,
  and how every path runs a wrapped layer without the wrapper's training-time side effects).
* :func:`substituted_kernels` temporarily makes ``layer.kernel`` a tensor (e.g. ``m * W``) so the
  layer's own ``call`` computes with a masked kernel that is still differentiable w.r.t. ``W``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import tensorflow as tf
import tf_keras
from tf_awt import _internals


def is_prune_wrapper(layer) -> bool:
    # Avoid importing tfmot for models that never use it: the wrapper class name is unique.
    if type(layer).__name__ != "PruneLowMagnitude":
        return False
    return isinstance(layer, _internals.prune_wrapper_class())


def unwrap(layer) -> Tuple[tf_keras.layers.Layer, Optional[tf.Variable]]:
    """Returns ``(inner_layer, wrapper_mask_or_None)`` for a layer that may be a tfmot wrapper."""
    if is_prune_wrapper(layer):
        masks = [mask for weight, mask, _ in _internals.pruning_vars(layer) if weight is getattr(layer.layer, "kernel", None)]
        return layer.layer, (masks[0] if masks else None)
    return layer, None


def is_model(layer) -> bool:
    return isinstance(layer, tf_keras.Model)


def iter_layers(model) -> Iterator[tf_keras.layers.Layer]:
    """Yields every leaf layer of ``model`` (nested models are descended into, wrappers are not)."""
    for layer in model.layers:
        if is_model(layer):
            yield from iter_layers(layer)
        else:
            yield layer


def kernel_layers(model) -> Dict[str, tf_keras.layers.Layer]:
    """Maps a layer's name to the layer, for every leaf layer that has a ``kernel`` weight.

    A tfmot wrapper is listed under the wrapper's name (that is the name users see in
    ``model.summary()``); its inner layer carries the kernel.
    """
    out = {}
    for layer in iter_layers(model):
        inner, _ = unwrap(layer)
        if isinstance(getattr(inner, "kernel", None), tf.Variable):
            out[layer.name] = layer
    return out


def is_graph_network(model) -> bool:
    return _internals.is_graph_network(model) and len(model.inputs) == 1


ApplyFn = Callable[[tf_keras.layers.Layer, tuple, dict], tf.Tensor]


def run_graph(model, x, apply_fn: ApplyFn):
    """Runs a Functional/Sequential ``model`` on ``x``, applying each leaf layer with ``apply_fn``.

    Mirrors ``tf_keras`` ``Functional._run_internal_graph``; nested graph models are run
    recursively with the same ``apply_fn``. ``apply_fn(layer, args, kwargs)`` must return what
    ``layer(*args, **kwargs)`` would, in inference mode.
    """
    if not is_graph_network(model):
        raise TypeError(f"{model.name} is not a single-input Functional/Sequential model.")
    tensor_dict = {}
    graph = _internals.layer_graph(model)
    usage = graph.usage
    ref = model.inputs[0]
    x_id = str(id(ref))
    tensor_dict[x_id] = [x] * usage[x_id]
    for depth in sorted(graph.nodes_by_depth.keys(), reverse=True):
        for node in graph.nodes_by_depth[depth]:
            if node.is_input:
                continue
            if any(t_id not in tensor_dict for t_id in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(tensor_dict)
            layer = node.layer
            if is_model(layer) and is_graph_network(layer):
                outputs = run_graph(layer, args[0], apply_fn)
            else:
                outputs = apply_fn(layer, args, kwargs)
            for out_id, y in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                tensor_dict[out_id] = [y] * usage[out_id]
    outputs = [tensor_dict[str(id(t))].pop() for t in model.outputs]
    return tf.nest.pack_sequence_as(graph.nested_outputs, outputs)


@contextlib.contextmanager
def substituted_kernels(replacements: Dict[int, Tuple[tf_keras.layers.Layer, tf.Tensor]]):
    """Within the block, ``layer.kernel`` is the given tensor instead of the variable.

    ``replacements`` maps ``id(layer)`` to ``(layer, tensor)``. ``object.__setattr__`` bypasses
    Keras' attribute tracking, so the layer's weight lists are untouched and restored exactly.
    """
    saved: List[Tuple[tf_keras.layers.Layer, tf.Variable]] = []
    try:
        for layer, tensor in replacements.values():
            saved.append((layer, layer.kernel))
            object.__setattr__(layer, "kernel", tensor)
        yield
    finally:
        for layer, variable in saved:
            object.__setattr__(layer, "kernel", variable)


def call_inference(layer, args, kwargs):
    """Calls a layer in inference mode (``training=False`` where the layer accepts it)."""
    kwargs = dict(kwargs)
    kwargs["training"] = False
    return layer(*args, **kwargs)


def masked_forward(model, x, masks: Dict[int, Tuple[tf_keras.layers.Layer, tf.Tensor]], training: bool = False):
    """``f_{m ⊙ W}(x)``, differentiable w.r.t. ``W``; inference mode unless ``training=True``.

    ``masks`` is ``{id(inner_layer): (inner_layer, mask)}`` (see ``_masks.resolve_masks``). tfmot
    wrappers are bypassed (their inner layer is called), so no wrapper side effect runs; the
    gradient of a pruned weight is exactly zero.
    """
    replacements = {key: (layer, layer.kernel * mask) for key, (layer, mask) in masks.items()}
    with substituted_kernels(replacements):
        if is_graph_network(model):

            def apply(layer, args, kwargs):
                inner, _ = unwrap(layer)
                if training:
                    return inner(*args, **dict(kwargs, training=True))
                return call_inference(inner, args, kwargs)

            return run_graph(model, x, apply)
        return model(x, training=training)
