"""The private tfmot, tf_keras and Keras 3 internals tf_awt reads (tf_awt._internals): the installed
versions are the ones the adapter was written for, each accessor still finds what it reads, and no
other module reaches into those internals."""
import ast
import importlib.metadata
import os

import numpy as np
import pytest

import tf_awt
from tf_awt import _internals


def test_the_installed_versions_are_the_ones_the_adapter_was_written_for():
    for distribution, prefix in _internals.WRITTEN_FOR.items():
        installed = importlib.metadata.version(distribution)
        assert installed == prefix or installed.startswith(prefix + "."), (
            f"tf_awt/_internals.py was written for {distribution} {prefix}.x, {installed} is installed: check each "
            "accessor there (this file's other tests name the one that breaks), then update WRITTEN_FOR")


def _wrapped_model():
    import tf_keras

    from tf_awt.tickets.pruning_schedule import AWTSchedule

    inputs = tf_keras.Input((4,))
    hidden = tf_keras.layers.Dense(3, name="a")(inputs)
    outputs = tf_keras.layers.Dense(2, name="b")(tf_keras.layers.ReLU()(hidden))
    dense = tf_keras.Model(inputs, outputs)
    wrapped = tf_keras.models.clone_model(
        dense, clone_function=lambda l: _internals.prune_low_magnitude(l, AWTSchedule.frozen_at(0.5))
        if isinstance(l, tf_keras.layers.Dense) else l)
    return dense, wrapped


def test_tfmot_accessors_find_the_wrapper_its_variables_and_the_registry():
    import tf_keras

    dense, wrapped = _wrapped_model()
    wrappers = [l for l in wrapped.layers if isinstance(l, _internals.prune_wrapper_class())]
    assert [w.layer.name for w in wrappers] == ["a", "b"]
    weight, mask, threshold = _internals.pruning_vars(wrappers[0])[0]
    assert weight is wrappers[0].layer.kernel and tuple(mask.shape) == (4, 3) and tuple(threshold.shape) == ()
    assert _internals.registry_supports(tf_keras.layers.Dense(1)) and not _internals.registry_supports(type("Custom", (tf_keras.layers.Layer,), {})())
    assert issubclass(tf_awt.tickets.pruning_schedule.AWTSchedule, _internals.PruningSchedule)
    stripped = _internals.strip_pruning(wrapped)
    assert not any(isinstance(l, _internals.prune_wrapper_class()) for l in stripped.layers)


def test_the_tf_keras_graph_is_read_as_functional_runs_it():
    import tensorflow as tf
    import tf_keras

    from tf_awt.engine._layers import run_graph

    dense, _ = _wrapped_model()
    assert _internals.is_graph_network(dense) and not _internals.is_graph_network(type("Sub", (tf_keras.Model,), {})())
    graph = _internals.layer_graph(dense)
    assert sorted(graph.nodes_by_depth) == [0, 1, 2, 3]
    assert all(hasattr(node, name) for nodes in graph.nodes_by_depth.values() for node in nodes
               for name in ("is_input", "layer", "flat_input_ids", "flat_output_ids", "map_arguments"))
    x = tf.constant(np.random.default_rng(0).normal(size=(5, 4)).astype("float32"))
    np.testing.assert_allclose(run_graph(dense, x, lambda layer, args, kwargs: layer(*args, **kwargs)), dense(x), atol=1e-6)


def test_keras3_history_and_nodes_are_read_as_the_conversion_needs():
    keras = pytest.importorskip("keras")

    inputs = keras.Input((4,))
    layer = keras.layers.Dense(2, name="d")
    outputs = layer(inputs)
    nodes = _internals.keras3_inbound_nodes(layer)
    assert len(nodes) == 1 and nodes[0].input_tensors[0] is inputs
    assert _internals.keras3_history(outputs) == ("d", 0, 0)


def test_a_scoped_global_seed_leaves_an_unseeded_process_unseeded():
    import subprocess
    import sys

    code = ("from tensorflow.python.eager import context; import tensorflow as tf; from tf_awt import _internals\n"
            "with _internals.global_seed(3):\n    inside = tf.random.uniform([2]).numpy().tolist()\n"
            "with _internals.global_seed(3):\n    again = tf.random.uniform([2]).numpy().tolist()\n"
            "print(context.global_seed(), hasattr(context.context(), '_rng'), inside == again)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["None", "False", "True"], done.stderr[-2000:]


def test_no_other_module_reads_the_internals():
    """The private names the adapter wraps appear in no other module of the package."""
    private = ("tensorflow_model_optimization.python", "pruning_vars", "_is_graph_network", "_nodes_by_depth",
               "_tensor_usage_count", "_nested_outputs", "_inbound_nodes", "_keras_history")
    package = os.path.dirname(tf_awt.__file__)
    found = []
    for folder, _, files in os.walk(package):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path == _internals.__file__:
                continue
            tree = ast.parse(open(path, encoding="utf-8").read())
            code = [node for node in ast.walk(tree) if isinstance(node, (ast.Attribute, ast.ImportFrom, ast.Import))
                    and not (isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "_internals")]
            for node in code:
                names = [node.attr] if isinstance(node, ast.Attribute) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                found += [(os.path.relpath(path, package), n) for n in names for p in private if n == p or n.startswith(p + ".")]
    assert found == []
