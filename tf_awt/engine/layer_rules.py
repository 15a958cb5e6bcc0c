r"""The layer-rule registry: the one answer to "what can be pruned, and how the kernel sees it".

One :class:`LayerRule` per supported layer class (looked up by the exact class, as tfmot's
``PruneRegistry`` does) says

* ``prunable``: which of the layer's weights a ticket may mask (``("kernel",)``, or none);
* ``weights(layer)``: the layer's two structured weights (e.g. kernel and bias, γ and β);
* ``forward(layer, a, w)``: the layer's affine part on input ``a`` with the (masked) first
  weight ``w``, returning the recorded input and the pre-activation :math:`z`; the layer's
  ``activation`` follows when ``activation`` is True;
* ``gradients(record, delta)``: the per-example weight gradients :math:`\partial f_c(x_i)/\partial
  \theta`, a list of (N, k, P) tensors (the first weight's, flattened in the weight's own order,
  if ``record.first``; the second's if ``record.second``), from the recorded input and the
  sensitivities :math:`\delta_{ic} = \partial f_c(x_i)/\partial z`. They are the gradients w.r.t.
  the *effective* (masked) weight and are **not** masked: the engine applies ``record.mask`` once,
  in the contraction (:mod:`tf_awt.engine._contract`); ``record.precision`` says whether large products
  may run in bfloat16;
* optionally ``factored(record)`` and ``block(rec1, d1, rec2, d2, diagonal)``: a kernel block
  computed without per-example gradients (a Dense layer on rank-2 inputs:
  :math:`(a^1_i \cdot a^2_j + 1)(\delta^1_{ic} \cdot \delta^2_{jd})`, see :mod:`tf_awt.engine.kernel`);
* ``support(layer)``: why a configuration of the class is not supported (None: it is).

Every consumer asks the registry: the list of prunable layers (search, baselines, pipeline,
:meth:`tf_awt.Ticket.to_model`), the kernel engine's support check and its structured forward
pass and blocks. A layer with weights named like a prunable one (``kernel``) but no rule is left
dense with a one-time warning naming it. Register a rule for your own layer with
:func:`register_layer_rule`; parameter-free layers need none (they are applied as they are).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, List, Optional, Tuple

import tensorflow as tf
import tf_keras

from tf_awt import _internals
from tf_awt.engine import _contract, _layers

__all__ = ["LayerRule", "register_layer_rule", "layer_rule", "prunable_layers", "DENSE_RULE", "CONV2D_RULE",
           "BATCHNORM_RULE"]


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """How tf_awt treats one layer class (see the module docstring for each field)."""

    weights: Callable[[tf_keras.layers.Layer], Tuple[Optional[tf.Variable], Optional[tf.Variable]]]
    forward: Callable
    gradients: Callable
    prunable: Tuple[str, ...] = ("kernel",)
    activation: bool = True
    factored: Optional[Callable] = None
    block: Optional[Callable] = None
    support: Optional[Callable[[tf_keras.layers.Layer], Optional[str]]] = None


@dataclasses.dataclass
class Record:
    """One layer's forward quantities, recorded by the structured forward pass."""

    layer: tf_keras.layers.Layer
    rule: LayerRule
    a: tf.Tensor
    z: tf.Tensor
    mask: Optional[tf.Tensor]
    first: bool  # the first weight (kernel, γ) is a trainable variable of the model
    second: bool  # the second weight (bias, β) is
    precision: str = "float32"  # "bfloat16": the rule may run its large products in bfloat16


# --------------------------------------------------------------------------- Dense
def _dense_weights(layer):
    return layer.kernel, (layer.bias if layer.use_bias else None)


def _dense_forward(layer, a, kernel):
    a = tf.cast(a, kernel.dtype)
    z = tf.matmul(a, kernel) if a.shape.rank == 2 else tf.tensordot(a, kernel, [[a.shape.rank - 1], [0]])
    return a, (z + layer.bias if layer.use_bias else z)


def _dense_gradients(rec: Record, delta) -> List[tf.Tensor]:
    """Rank > 2 inputs: the kernel is shared over the middle axes, per-example gradients summed over them."""
    n, k = tf.shape(delta)[0], delta.shape[1]
    a = tf.reshape(rec.a, [n, -1, rec.a.shape[-1]])
    dl = tf.reshape(delta, [n, k, -1, delta.shape[-1]])
    out = []
    if rec.first:
        g = tf.einsum("ntp,nctq->ncpq", a, dl)
        out.append(tf.reshape(g, [n, k, -1]))
    if rec.second:
        out.append(tf.reduce_sum(dl, axis=2))
    return out


def _dense_factored(rec: Record) -> bool:
    return rec.a.shape.rank == 2


def _dense_block(rec1: Record, d1, rec2: Record, d2, diagonal: bool):
    """Kernel block of a Dense layer on rank-2 inputs from inputs a and sensitivities δ of both sides."""
    a1, a2 = rec1.a, rec2.a
    if rec1.mask is None:
        if diagonal:
            scale = tf.reduce_sum(a1 * a2, axis=-1) if rec1.first else tf.zeros_like(a1[:, 0])
            if rec1.second:
                scale = scale + 1
            return scale[:, None, None] * tf.einsum("icq,idq->icd", d1, d2)
        scale = tf.matmul(a1, a2, transpose_b=True) if rec1.first else tf.zeros([tf.shape(a1)[0], tf.shape(a2)[0]], a1.dtype)
        if rec1.second:
            scale = scale + 1
        return scale[:, :, None, None] * tf.einsum("icq,jdq->ijcd", d1, d2)
    m = rec1.mask
    if diagonal:
        h = tf.matmul(a1 * a2, m)  # (N, dout)
        if rec1.second:
            h = h + 1
        return tf.einsum("icq,iq,idq->icd", d1, h, d2)
    n1, n2 = tf.shape(a1)[0], tf.shape(a2)[0]
    pairs = tf.reshape(a1[:, None, :] * a2[None, :, :], [n1 * n2, a1.shape[-1]])
    h = tf.reshape(_contract.matmul(pairs, m, rec1.precision), [n1, n2, m.shape[-1]])  # H_ijq = Σ_p a1_ip a2_jp m_pq
    if rec1.second:
        h = h + 1
    return tf.einsum("ijcq,jdq->ijcd", tf.einsum("icq,ijq->ijcq", d1, h), d2)


DENSE_RULE = LayerRule(weights=_dense_weights, forward=_dense_forward, gradients=_dense_gradients,
                       factored=_dense_factored, block=_dense_block)


# --------------------------------------------------------------------------- Conv2D
def _conv_forward(layer, a, kernel):
    a = tf.cast(a, kernel.dtype)
    z = tf.nn.convolution(a, kernel, strides=list(layer.strides), padding=layer.padding.upper(),
                          dilations=list(layer.dilation_rate))
    return a, (z + layer.bias if layer.use_bias else z)


def _conv_gradients(rec: Record, delta) -> List[tf.Tensor]:
    """Per-example, per-output weight gradients (N, k, P) of a Conv2D layer from image patches."""
    n, k = tf.shape(delta)[0], delta.shape[1]
    out = []
    if rec.first:
        layer = rec.layer
        kh, kw = layer.kernel.shape[:2]
        patches = tf.image.extract_patches(rec.a, sizes=[1, kh, kw, 1], strides=[1, *layer.strides, 1],
                                           rates=[1, *layer.dilation_rate, 1], padding=layer.padding.upper())
        if rec.precision == "bfloat16":
            patches, delta_ = tf.cast(patches, tf.bfloat16), tf.cast(delta, tf.bfloat16)
        else:
            delta_ = delta
        g = tf.einsum("nhwr,nchwo->ncro", patches, delta_)  # patches ordered like kernel.reshape(kh*kw*cin, cout)
        out.append(tf.reshape(tf.cast(g, delta.dtype), [n, k, -1]))
    if rec.second:
        out.append(tf.reduce_sum(delta, axis=[2, 3]))
    return out


def _conv_support(layer) -> Optional[str]:
    if layer.data_format != "channels_last" or layer.groups != 1:
        return (f"layer {layer.name!r} is a Conv2D with data_format={layer.data_format!r}, groups={layer.groups} "
                "(only channels_last, groups=1 are structured)")
    return None


CONV2D_RULE = LayerRule(weights=_dense_weights, forward=_conv_forward, gradients=_conv_gradients, support=_conv_support)


# --------------------------------------------------------------------------- BatchNormalization (inference)
def _bn_weights(layer):
    return (layer.gamma if layer.scale else None), (layer.beta if layer.center else None)


def _bn_forward(layer, a, gamma):
    a = tf.cast(a, layer.moving_mean.dtype)
    xhat = (a - layer.moving_mean) * tf.math.rsqrt(layer.moving_variance + layer.epsilon)
    z = xhat * gamma if gamma is not None else xhat
    return xhat, (z + layer.beta if layer.center else z)


def _bn_gradients(rec: Record, delta) -> List[tf.Tensor]:
    n, k = tf.shape(delta)[0], delta.shape[1]
    xhat = tf.reshape(rec.a, [n, 1, -1, rec.a.shape[-1]])
    dl = tf.reshape(delta, [n, k, -1, delta.shape[-1]])
    out = []
    if rec.first:
        out.append(tf.reduce_sum(dl * xhat, axis=2))
    if rec.second:
        out.append(tf.reduce_sum(dl, axis=2))
    return out


def _bn_support(layer) -> Optional[str]:
    rank = layer.input_spec.ndim if layer.input_spec and layer.input_spec.ndim else len(layer.input_shape)
    if list(layer.axis) != [rank - 1]:
        return f"layer {layer.name!r} is a BatchNormalization over axis {layer.axis} (only the last axis is structured)"
    return None


BATCHNORM_RULE = LayerRule(weights=_bn_weights, forward=_bn_forward, gradients=_bn_gradients, prunable=(),
                           activation=False, support=_bn_support)


# --------------------------------------------------------------------------- the registry
class _Registry:
    """Layer class -> rule (exact class); tfmot's PruneRegistry keeps its map the same way."""

    rules = {
        tf_keras.layers.Dense: DENSE_RULE,
        tf_keras.layers.Conv2D: CONV2D_RULE,
        tf_keras.layers.BatchNormalization: BATCHNORM_RULE,
    }
    warned: set = set()


def register_layer_rule(layer_class: type, rule: LayerRule) -> None:
    """Registers (or replaces) the rule of ``layer_class`` (a tf_keras Layer subclass)."""
    if not (isinstance(layer_class, type) and issubclass(layer_class, tf_keras.layers.Layer)):
        raise ValueError(f"layer_class must be a tf_keras Layer subclass. You passed: {layer_class!r}")
    if not isinstance(rule, LayerRule):
        raise ValueError(f"rule must be a tf_awt.engine.layer_rules.LayerRule. You passed: {rule!r}")
    _Registry.rules[layer_class] = rule


def layer_rule(layer) -> Optional[LayerRule]:
    """The rule of ``layer``'s exact class, or None."""
    return _Registry.rules.get(type(layer))


def prunable_layers(model) -> List[tf_keras.layers.Layer]:
    """The (inner, unwrapped) leaf layers of ``model`` whose rule makes a weight prunable.

    Trainable layers with a ``kernel`` weight but no rule are left dense; each is named once in a
    warning.
    """
    out = []
    for layer in _layers.iter_layers(model):
        inner, _ = _layers.unwrap(layer)
        rule = layer_rule(inner)
        if rule is not None and rule.prunable:
            if inner.trainable:
                out.append(inner)
        elif isinstance(getattr(inner, "kernel", None), tf.Variable) and inner.trainable:
            key = (type(inner).__module__, type(inner).__name__, inner.name)
            if key not in _Registry.warned:
                _Registry.warned.add(key)
                warnings.warn(f"layer {inner.name!r} ({type(inner).__name__}) has no tf_awt layer rule: it is left dense. "
                              "Register one with tf_awt.engine.layer_rules.register_layer_rule to prune it.", stacklevel=3)
    return out


def clone_wrapping(model, names, schedule):
    """A clone of ``model`` whose layers named in ``names`` sit in tfmot ``PruneLowMagnitude`` wrappers.

    Nested Sequential/functional models are cloned recursively (as tfmot's own
    ``prune_low_magnitude`` does), so a prunable layer inside a nested block is wrapped too. The
    clone shares its unwrapped layers' objects with ``model`` (copy weights before use); every
    name in ``names`` must be wrapped, else a ValueError names the ones that could not be.
    """

    wanted = set(names)
    wrapped = set()

    def clone(layer):
        if _layers.is_model(layer) and (isinstance(layer, tf_keras.Sequential) or _internals.is_graph_network(layer)):
            return tf_keras.models.clone_model(layer, clone_function=clone)
        if layer.name in wanted:
            wrapped.add(layer.name)
            make_prunable(layer)
            return _internals.prune_low_magnitude(layer, schedule)
        return layer

    out = tf_keras.models.clone_model(model, clone_function=clone)
    missing = sorted(wanted - wrapped)
    if missing:
        raise ValueError(f"layers {missing} of model {model.name!r} could not be wrapped for pruning (inside a subclassed "
                         "model, whose layers cannot be cloned); build the model as Sequential or functional")
    return out


def make_prunable(layer) -> None:
    """Lets tfmot wrap a layer it does not know whose tf_awt layer rule prunes weights (as tfmot's
    own ``PruneRegistry.make_prunable`` does for built-in layers: a ``get_prunable_weights``)."""

    rule = layer_rule(layer)
    if rule is None or hasattr(layer, "get_prunable_weights") or _internals.registry_supports(layer):
        return
    layer.get_prunable_weights = lambda: [getattr(layer, name) for name in rule.prunable]
