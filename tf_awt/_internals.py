"""The one place that reads private internals of tfmot, tf_keras and Keras 3 (private).

tf_awt needs a few things no public API gives: tfmot's wrapper class and its ``pruning_vars`` (the
(weight, mask, threshold) triples a ``PruneLowMagnitude`` wrapper holds), tfmot's ``PruneRegistry``
(which built-in layers it can wrap), tf_keras's layer graph (to re-run a model node by node, as
``Functional._run_internal_graph`` does) and Keras 3's node history (to convert a Keras 3 model).
It also scopes TensorFlow's global seed (:func:`global_seed`), which TensorFlow can set but not give
back. Every such access is a function here and nowhere else; :data:`WRITTEN_FOR` names the versions they
were written for, and ``tests/test_internals.py`` checks each function against the installed
versions, so an upgrade that moves one fails there, by name, and not deep inside a search.

What tfmot exports publicly (``prune_low_magnitude``, ``strip_pruning``, ``PruningSchedule``) is
taken from ``tensorflow_model_optimization.sparsity.keras``; it is re-exported here only so that a
module needs one import for everything tfmot.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, NamedTuple, Tuple

__all__ = ["WRITTEN_FOR", "prune_low_magnitude", "strip_pruning", "PruningSchedule", "prune_wrapper_class",
           "pruning_vars", "registry_supports", "is_graph_network", "LayerGraph", "layer_graph", "keras3_inbound_nodes",
           "keras3_history", "global_seed"]

WRITTEN_FOR = {"tensorflow-model-optimization": "0.8", "tf-keras": "2.21", "keras": "3"}
"""Distribution name -> the version prefix the functions below were written and tested for."""


def _sparsity():
    from tensorflow_model_optimization.sparsity import keras as sparsity

    return sparsity


def prune_low_magnitude(layer, pruning_schedule):
    """tfmot's public ``prune_low_magnitude`` (a ``PruneLowMagnitude`` wrapper around ``layer``)."""
    return _sparsity().prune_low_magnitude(layer, pruning_schedule=pruning_schedule)


def strip_pruning(model):
    """tfmot's public ``strip_pruning``: the model with every wrapper replaced by its masked layer."""
    return _sparsity().strip_pruning(model)


def __getattr__(name):  # PEP 562: the base class AWTSchedule derives from, imported on first use
    if name == "PruningSchedule":
        return _sparsity().PruningSchedule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def prune_wrapper_class():
    """tfmot's ``PruneLowMagnitude`` (private module ``pruning_wrapper``: not exported by tfmot)."""
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    return pruning_wrapper.PruneLowMagnitude


def pruning_vars(wrapper) -> List[Tuple[Any, Any, Any]]:
    """The wrapper's ``(weight, mask, threshold)`` variables, one triple per prunable weight."""
    return list(wrapper.pruning_vars)


def registry_supports(layer) -> bool:
    """Whether tfmot's own ``PruneRegistry`` (private module ``prune_registry``) can wrap ``layer``."""
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    return bool(prune_registry.PruneRegistry.supports(layer))


def is_graph_network(model) -> bool:
    """A tf_keras Sequential or Functional model (private ``_is_graph_network``), not a subclassed one."""
    return bool(getattr(model, "_is_graph_network", False))


class LayerGraph(NamedTuple):
    """A tf_keras graph model's nodes, as ``Functional._run_internal_graph`` reads them.

    ``nodes_by_depth``: {depth: [Node]}, the input nodes deepest; each Node has ``is_input``,
    ``layer``, ``flat_input_ids``, ``flat_output_ids`` and ``map_arguments(tensor_dict)``.
    ``usage``: {tensor id: how many nodes read it}. ``nested_outputs``: the outputs' structure.
    """

    nodes_by_depth: Dict[int, list]
    usage: Dict[str, int]
    nested_outputs: Any


def layer_graph(model) -> LayerGraph:
    """The node graph of a tf_keras graph model (private ``_nodes_by_depth``, ``_tensor_usage_count``,
    ``_nested_outputs``)."""
    return LayerGraph(model._nodes_by_depth, model._tensor_usage_count, model._nested_outputs)


def keras3_inbound_nodes(layer) -> list:
    """The nodes at which a Keras 3 layer is called (private ``_inbound_nodes``); each has
    ``input_tensors`` and ``output_tensors``."""
    return list(layer._inbound_nodes)


def keras3_history(tensor) -> Tuple[str, int, int]:
    """(operation name, node index, tensor index) of a Keras 3 symbolic tensor (private ``_keras_history``)."""
    history = tensor._keras_history
    return history.operation.name, history.node_index, history.tensor_index


_MISSING = object()


@contextlib.contextmanager
def global_seed(seed: int):
    """``tf.random.set_seed(seed)`` inside the block only: on leaving it the caller's global seed and
    the sequence of operation seeds it was drawing from are back, as if the block had not run.

    Reads and restores the eager context's private ``_seed`` and ``_rng`` (``tf.random.set_seed``
    replaces both; ``_rng`` does not exist before a first seed). Stateful random kernels cached
    with an explicit op seed restart, as after any ``tf.random.set_seed``.
    """
    import tensorflow as tf
    from tensorflow.python.eager import context as eager

    ctx = eager.context()
    saved_seed, saved_rng = ctx._seed, getattr(ctx, "_rng", _MISSING)
    tf.random.set_seed(seed)
    try:
        yield
    finally:
        ctx._seed = saved_seed
        if saved_rng is _MISSING:
            del ctx._rng
        else:
            ctx._rng = saved_rng
