"""Keras 3 models at the edges: converted to tf_keras (Keras 2), which tfmot and tf_awt run on.

``import keras`` on TensorFlow 2.21 gives Keras 3, whose models tfmot cannot wrap. Every public
entry point of tf_awt that takes a model (``find_ticket``, ``TicketSearch``, ``adversarial_fit``,
``evaluate``, ``mixed_tangent_kernel[_fn]``, ``Ticket.to_model``) accepts a Keras 3 model built
from the layers in :data:`CONVERTIBLE` (Sequential or functional, one input, one output) by
converting it with :func:`to_tf_keras`: the same layers, names, configuration and weights, so
kernels, tickets and predictions are the ones of the Keras 3 model. A layer without a conversion
is a ValueError naming it; so is a regularizer or constraint (they would be lost silently).

What comes back is a tf_keras model: ``Ticket.to_model(keras3_model)`` returns the ticket in tfmot
wrappers (tfmot has no Keras 3 wrappers), ``adversarial_fit(keras3_model, ...)`` trains a converted
copy and writes the trained weights back into the Keras 3 model. :func:`to_keras3` converts a
(stripped) tf_keras model the other way, e.g. to save a trained ticket as a ``.keras`` file.

Keras 3 and tf_keras are imported inside the functions that convert, so importing this module loads
neither.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict

from tf_awt import _internals

__all__ = ["is_keras3", "to_tf_keras", "to_keras3", "as_tf_keras", "CONVERTIBLE"]

_DROPPED = ("dtype", "quantization_config", "optional", "kernel_initializer", "bias_initializer", "beta_initializer",
            "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer", "synchronized")
_MUST_BE_EMPTY = ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                  "bias_constraint", "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")


def _rename(mapping: Dict[str, str]) -> Callable[[dict], dict]:
    return lambda config: {mapping.get(k, k): v for k, v in config.items()}


def _same(config: dict) -> dict:
    return config


# Keras 3 class name -> how its config becomes the tf_keras one (after the common cleaning).
CONVERTIBLE: Dict[str, Callable[[dict], dict]] = {
    "Dense": _same, "Conv2D": _same, "BatchNormalization": _same, "Flatten": _same, "Reshape": _same,
    "Dropout": _same, "Activation": _same, "ReLU": _same, "ELU": _same, "Softmax": _same,
    "MaxPooling2D": _same, "AveragePooling2D": _same, "GlobalAveragePooling2D": _same, "GlobalMaxPooling2D": _same,
    "ZeroPadding2D": _same, "Add": _same, "Concatenate": _same,
    "LeakyReLU": _rename({"negative_slope": "alpha"}),
}


def _bn_back(config: dict) -> dict:
    axis = list(config["axis"]) if not isinstance(config["axis"], int) else [config["axis"]]
    if len(axis) != 1:
        raise ValueError(f"layer {config['name']!r}: Keras 3's BatchNormalization takes one axis. It has {axis}.")
    return dict(config, axis=int(axis[0]))


_BACK: Dict[str, Callable[[dict], dict]] = {"LeakyReLU": _rename({"alpha": "negative_slope"}), "BatchNormalization": _bn_back}


def is_keras3(model) -> bool:
    """Whether ``model`` is a Keras 3 model (``keras.Model`` of the ``keras`` 3 package, not tf_keras)."""
    cls = _keras3_model_class()
    return cls is not None and isinstance(model, cls)


def _keras3_model_class():
    """``keras.Model`` if Keras 3 has been imported (a model of it cannot exist otherwise), else None."""
    keras = sys.modules.get("keras")
    return keras.Model if keras is not None and str(getattr(keras, "__version__", "")).startswith("3.") else None


def _clean(class_name: str, config: dict) -> dict:
    if class_name not in CONVERTIBLE:
        raise ValueError(f"layer {config.get('name')!r} ({class_name}) has no conversion to tf_keras; convertible layers: "
                         f"{sorted(CONVERTIBLE)}. Build the model with tf_keras, or with these layers.")
    for key in _MUST_BE_EMPTY:
        if config.get(key) is not None:
            raise ValueError(f"layer {config.get('name')!r} has {key}={config[key]!r}, which the conversion to tf_keras "
                             "would lose. Remove it (add the penalty to the loss instead) or build the model with tf_keras.")
    cleaned = {k: v for k, v in config.items() if k not in _DROPPED}
    return CONVERTIBLE[class_name](cleaned)


def to_tf_keras(model):
    """A tf_keras copy of the Keras 3 ``model``: same layer names, configuration and weights.

    Raises:
      ValueError: a layer without a conversion, a regularizer or constraint, a nested model, a
        layer used twice (shared weights), or more than one input or output.
    """
    import tf_keras

    if type(model).__name__ not in ("Sequential", "Functional"):
        raise ValueError(f"Keras 3 model {model.name!r} is a subclassed model ({type(model).__name__}); only Sequential and "
                         "functional models can be converted to tf_keras. Build it with keras.Sequential or keras.Model(inputs, outputs).")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(f"Keras 3 model {model.name!r} must be built with an Input to be converted. You passed an unbuilt model.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"Keras 3 model {model.name!r} must have one input and one output. It has {len(model.inputs)} and "
                         f"{len(model.outputs)}.")
    converted: Dict[str, Any] = {}
    tensors: Dict[str, Any] = {}
    layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    input_layer = next((l for l in model.layers if type(l).__name__ == "InputLayer"), None)
    x = tf_keras.Input(tuple(model.inputs[0].shape[1:]), name=input_layer.name if input_layer is not None else None)
    tensors[_internals.keras3_history(model.inputs[0])] = x
    for layer in layers:
        if isinstance(layer, _keras3_model_class()):
            raise ValueError(f"layer {layer.name!r} is a nested Keras 3 model; flatten it (or build the model with tf_keras, "
                             "where nested models are supported).")
        class_name = type(layer).__name__
        config = _clean(class_name, layer.get_config())
        converted[layer.name] = tf_keras.layers.deserialize({"class_name": class_name, "config": config})
        nodes = _internals.keras3_inbound_nodes(layer)
        if len(nodes) != 1:
            raise ValueError(f"layer {layer.name!r} is called {len(nodes)} times (shared weights); the conversion supports "
                             "layers called once.")
        args = [tensors[_internals.keras3_history(t)] for t in nodes[0].input_tensors]
        out = converted[layer.name](args if len(args) > 1 else args[0])
        for t in nodes[0].output_tensors:
            tensors[_internals.keras3_history(t)] = out
    result = tf_keras.Model(x, tensors[_internals.keras3_history(model.outputs[0])], name=model.name)
    for layer in layers:
        converted[layer.name].set_weights(layer.get_weights())
    return result


def to_keras3(model):
    """A Keras 3 copy of the tf_keras ``model`` (no tfmot wrappers: ``strip_pruning`` first)."""
    import keras

    def config_back(layer) -> dict:
        class_name = type(layer).__name__
        if class_name not in CONVERTIBLE:
            raise ValueError(f"layer {layer.name!r} ({class_name}) has no conversion to Keras 3; convertible layers: "
                             f"{sorted(CONVERTIBLE)}. Strip tfmot wrappers first (tfmot's strip_pruning).")
        config = {k: v for k, v in layer.get_config().items() if k not in _DROPPED}
        return _BACK.get(class_name, _same)(config)

    x = keras.Input(tuple(model.inputs[0].shape[1:]))
    converted = {l.name: getattr(keras.layers, type(l).__name__).from_config(config_back(l))
                 for l in model.layers if type(l).__name__ != "InputLayer"}
    config = model.get_config()
    if "inbound_nodes" not in config["layers"][-1]:  # Sequential: a chain
        output = x
        for layer in model.layers:
            if layer.name in converted:
                output = converted[layer.name](output)
    else:  # functional: this model's own graph, as its config records it
        outputs = {}
        for entry in config["layers"]:
            name = entry["config"]["name"]
            if entry["class_name"] == "InputLayer":
                outputs[(name, 0)] = x
                continue
            if len(entry["inbound_nodes"]) != 1:
                raise ValueError(f"layer {name!r} is called {len(entry['inbound_nodes'])} times; the conversion supports "
                                 "layers called once.")
            args = [outputs[(inbound[0], inbound[1])] for inbound in entry["inbound_nodes"][0]]
            outputs[(name, 0)] = converted[name](args if len(args) > 1 else args[0])
        output = outputs[tuple(config["output_layers"][0][:2])]
    result = keras.Model(x, output, name=model.name)
    for layer in model.layers:
        if layer.name in converted:
            converted[layer.name].set_weights(layer.get_weights())
    return result


def as_tf_keras(model):
    """``model`` itself if it is not a Keras 3 model, else its tf_keras twin with the current weights.

    The twin is converted once and kept on the Keras 3 model; every call copies the Keras 3
    model's current weights into it (by layer name), so a model trained with Keras 3 between
    two calls is seen as it is now.
    """
    if not is_keras3(model):
        return model
    twin = getattr(model, "_tf_awt_twin", None)
    if twin is None:
        twin = to_tf_keras(model)
        object.__setattr__(model, "_tf_awt_twin", twin)
    else:
        copy_weights(model, twin)
    return twin


def copy_weights(source, target) -> None:
    """Copies every layer's weights from ``source`` to the layer of the same name in ``target``."""
    for layer in source.layers:
        weights = layer.get_weights()
        if weights:
            target.get_layer(layer.name).set_weights(weights)
