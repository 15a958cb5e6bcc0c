r"""The Mixed Tangent Kernel (MTK) engine.

For a network :math:`f_\theta : \mathbb{R}^{d} \to \mathbb{R}^{k}` the mixed tangent kernel between
clean inputs :math:`X = (x^1_i)_{i<N_1}` and (adversarial) inputs :math:`\tilde X = (x^2_j)_{j<N_2}` is

.. math::

    \Theta(X, \tilde X)[i, j, c, d] = \sum_p
        \frac{\partial f_c(x^1_i)}{\partial \theta_p}\,\frac{\partial f_d(x^2_j)}{\partial \theta_p}
    = \big(J(X)\,J(\tilde X)^\top\big)[i, j, c, d],

summed over every trainable weight :math:`\theta_p` of the model. For a sparse student
:math:`f(m \odot \theta)` the forward pass uses :math:`m \odot W` and, by the chain rule, every
Jacobian column carries the factor :math:`m_p` (pruned weights contribute nothing; biases are
never masked).

Functional core, in the style of neural-tangents' ``empirical.py``::

    kernel_fn = mixed_tangent_kernel_fn(model)          # checks the model once
    theta = kernel_fn(x_clean, x_adv, masks=masks)      # (N1, N2, k, k)
    theta_diag = kernel_fn(x_clean, x_adv, diagonal=True)  # (N, k, k): Θ[i, i]

How the kernel is computed is a :class:`KernelImplementation`.

**STRUCTURED** never materializes the Jacobian. One forward pass records, for each layer with
trainable weights, its input and its pre-activation output :math:`z`; one vectorized backward pass
per output :math:`c` gives the sensitivities :math:`\delta_{ic} = \partial f_c(x_i)/\partial z`.
Then, layer by layer:

* Dense (rank-2 input :math:`a`): :math:`\partial f_c(x_i)/\partial W = a_i \otimes \delta_{ic}`, so
  without a mask the kernel block is :math:`(a^1_i \cdot a^2_j + 1)\,(\delta^1_{ic} \cdot
  \delta^2_{jd})` (the ``+1`` is the bias), costing :math:`O(N_1 N_2 (d_{in} + k^2 d_{out}))`.
  With a mask :math:`m`, :math:`H_{ijq} = \sum_p a^1_{ip} a^2_{jp} m_{pq} (+1)` and the block is
  :math:`\sum_q \delta^1_{icq} H_{ijq} \delta^2_{jdq}`: :math:`O(N_1 N_2 d_{in} d_{out})`, independent
  of :math:`k`, versus :math:`O(N_1 N_2 k^2 d_{in} d_{out})` for :math:`J J^\top`.
* Conv2D: per-example weight gradients :math:`g_{ic} = P_i^\top \delta_{ic}` from image patches
  :math:`P_i` (any stride, padding, dilation), masked, then :math:`g^1 \cdot g^2`. The per-example
  gradients of a conv layer are small (its weights are shared), unlike a Dense layer's.
* BatchNormalization (inference): per-example gradients of :math:`\gamma, \beta` from the
  normalized input and :math:`\delta`.
* Dense on rank > 2 inputs: per-example gradients, like Conv2D.

Parameter-free layers (pooling, Flatten, Reshape, Dropout in inference, activations, padding,
merges, ...) are applied as they are. Layers with trainable weights of any other kind, subclassed
models and multi-input models are not supported by this path.

**JACOBIAN** computes :math:`J(X)` and :math:`J(\tilde X)` with ``tf.GradientTape.jacobian``
(vectorized with pfor) and contracts them. It works for any differentiable model, but its memory
is :math:`O((N_1 + N_2) k P)` for :math:`P` weights (about 8 GB for the paper CNN at B=64 in
float32) and pfor computes per-example Conv2D filter gradients with a while loop.

**AUTO** takes STRUCTURED whenever every layer is supported, else JACOBIAN, and says once, in a
warning, which layer sent it to the fallback.

Both paths are differentiable with respect to the model's trainable variables (second-order
gradients through the recorded backward pass), and both can be used inside ``tf.function``.
"""
from __future__ import annotations

import enum
import warnings
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import tensorflow as tf
import tf_keras

from tf_awt import _layers
from tf_awt._masks import resolve_masks

__all__ = [
    "KernelImplementation",
    "mixed_tangent_kernel",
    "mixed_tangent_kernel_fn",
    "structured_support",
]


class KernelImplementation(str, enum.Enum):
    """How :func:`mixed_tangent_kernel` computes Θ.

    Attributes:
      AUTO: STRUCTURED when every layer of the model is supported, else JACOBIAN (with a warning,
        once per model, naming the layer that is not supported).
      STRUCTURED: per-layer factorization from layer inputs and back-propagated output
        sensitivities; never materializes the Jacobian. Fast and memory-light; supports Dense,
        Conv2D, BatchNormalization (inference) and any parameter-free layer, in Sequential and
        Functional models, with or without tfmot ``PruneLowMagnitude`` wrappers.
      JACOBIAN: batched ``tf.GradientTape.jacobian`` of the outputs w.r.t. every trainable
        variable, contracted as ``J(x1) J(x2)^T``. Works for any differentiable model;
        memory ``O((N1 + N2) * k * P)``.
    """

    AUTO = "auto"
    STRUCTURED = "structured"
    JACOBIAN = "jacobian"

    @classmethod
    def parse(cls, value) -> "KernelImplementation":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(
                f"implementation must be one of {[m.value for m in cls]}. You passed: {value!r}"
            ) from None


_Dense = tf_keras.layers.Dense
_Conv2D = tf_keras.layers.Conv2D
_BatchNorm = tf_keras.layers.BatchNormalization


def _has_trainable(layer) -> bool:
    return bool(layer.trainable_weights)


def structured_support(model, masks: Optional[Mapping[str, object]] = None) -> Optional[str]:
    """Returns ``None`` if the STRUCTURED path supports ``model``, else the reason it does not."""
    reason = _layers_support(model, masks)
    if reason:
        return reason
    if len(model.outputs) != 1 or model.outputs[0].shape.rank != 2:
        return f"model {model.name!r} does not have a single (batch, k) output"
    return None


def _layers_support(model, masks) -> Optional[str]:
    if not _layers.is_graph_network(model):
        return (
            f"model {model.name!r} is not a single-input Sequential/Functional model "
            f"({type(model).__name__})"
        )
    for layer in model.layers:
        if _layers.is_model(layer):
            reason = _layers_support(layer, masks)
            if reason:
                return reason
            continue
        inner, _ = _layers.unwrap(layer)
        kind = type(inner)
        if kind is _Dense:
            continue
        if kind is _Conv2D:
            if inner.data_format != "channels_last" or inner.groups != 1:
                return (
                    f"layer {layer.name!r} is a Conv2D with data_format={inner.data_format!r}, "
                    f"groups={inner.groups} (only channels_last, groups=1 are structured)"
                )
            continue
        if masks and layer.name in masks:
            return f"layer {layer.name!r} ({kind.__name__}) is masked but has no structured rule"
        if not _has_trainable(inner):
            continue  # parameter-free for the kernel: applied as it is
        if kind is _BatchNorm:
            rank = inner.input_spec.ndim if inner.input_spec and inner.input_spec.ndim else len(inner.input_shape)
            if list(inner.axis) != [rank - 1]:
                return f"layer {layer.name!r} is a BatchNormalization over axis {inner.axis} (only the last axis is structured)"
            continue
        return f"layer {layer.name!r} ({kind.__name__}) has trainable weights and no structured rule"
    return None


# --------------------------------------------------------------------------- structured path


class _Record:
    """One layer's forward quantities, recorded by the structured forward pass."""

    __slots__ = ("layer", "kind", "a", "z", "mask", "kernel", "bias")

    def __init__(self, layer, kind, a, z, mask, kernel, bias):
        self.layer, self.kind, self.a, self.z, self.mask = layer, kind, a, z, mask
        self.kernel, self.bias = kernel, bias  # whether each is a trainable variable of the model


def _structured_forward(model, x, masks: Dict[int, tuple], trainable: set, tape) -> Tuple[tf.Tensor, List[_Record]]:
    records: List[_Record] = []

    def apply(layer, args, kwargs):
        inner, _ = _layers.unwrap(layer)
        kind = type(inner)
        mask = masks.get(id(inner), (None, None))[1]
        if kind is _Dense or kind is _Conv2D:
            a = args[0]
            kernel = inner.kernel if mask is None else inner.kernel * mask
            if kind is _Dense:
                a = tf.cast(a, kernel.dtype)
                if a.shape.rank == 2:
                    z = tf.matmul(a, kernel)
                else:
                    z = tf.tensordot(a, kernel, [[a.shape.rank - 1], [0]])
            else:
                a = tf.cast(a, kernel.dtype)
                z = tf.nn.convolution(
                    a,
                    kernel,
                    strides=list(inner.strides),
                    padding=inner.padding.upper(),
                    dilations=list(inner.dilation_rate),
                )
            if inner.use_bias:
                z = z + inner.bias
            k_tr = id(inner.kernel) in trainable
            b_tr = inner.use_bias and id(inner.bias) in trainable
            if k_tr or b_tr:
                tape.watch(z)
                records.append(_Record(inner, kind, a, z, mask if k_tr else None, k_tr, b_tr))
            return inner.activation(z) if inner.activation is not None else z
        if kind is _BatchNorm and _has_trainable(inner):
            a = tf.cast(args[0], inner.moving_mean.dtype)
            xhat = (a - inner.moving_mean) * tf.math.rsqrt(inner.moving_variance + inner.epsilon)
            z = xhat
            if inner.scale:
                z = z * inner.gamma
            if inner.center:
                z = z + inner.beta
            g_tr = inner.scale and id(inner.gamma) in trainable
            b_tr = inner.center and id(inner.beta) in trainable
            if g_tr or b_tr:
                tape.watch(z)
                records.append(_Record(inner, kind, xhat, z, None, g_tr, b_tr))
            return z
        return _layers.call_inference(inner, args, kwargs)

    f = _layers.run_graph(model, x, apply)
    return f, records


def _conv_grads(rec: _Record, delta, n, k) -> List[tf.Tensor]:
    """Per-example, per-output weight gradients (N, k, P) of a Conv2D layer from image patches."""
    out = []
    if rec.kernel:
        layer = rec.layer
        kh, kw, cin, cout = layer.kernel.shape
        patches = tf.image.extract_patches(
            rec.a,
            sizes=[1, kh, kw, 1],
            strides=[1, *layer.strides, 1],
            rates=[1, *layer.dilation_rate, 1],
            padding=layer.padding.upper(),
        )  # (N, H', W', kh*kw*cin), ordered like kernel.reshape(kh*kw*cin, cout)
        g = tf.einsum("nhwr,nchwo->ncro", patches, delta)
        if rec.mask is not None:
            g = g * tf.reshape(rec.mask, [kh * kw * cin, cout])
        out.append(tf.reshape(g, [n, k, -1]))
    if rec.bias:
        out.append(tf.reduce_sum(delta, axis=[2, 3]))
    return out


def _side_factors(model, x, masks, trainable):
    """Forward + sensitivities for one side: (outputs, dense factors, per-example gradients).

    ``dense`` is a list of ``(record, delta)`` for Dense layers on rank-2 inputs (kept factored);
    ``g`` concatenates the per-example gradients (N, k, P') of every other weight, or is None.
    """
    with tf.GradientTape() as tape:
        f, records = _structured_forward(model, x, masks, trainable, tape)
        f_sum = tf.reduce_sum(f, axis=0)  # (k,): d f_sum[c] / d z_i = delta_ic, examples independent
    zs = [r.z for r in records]
    jac = tape.jacobian(f_sum, zs, unconnected_gradients=tf.UnconnectedGradients.ZERO) if zs else []
    dense, per_example = [], []
    for rec, d in zip(records, jac):
        delta = tf.transpose(d, [1, 0] + list(range(2, d.shape.rank)))  # (N, k, ...)
        n, k = tf.shape(delta)[0], delta.shape[1]
        if rec.kind is _Dense and rec.a.shape.rank == 2:
            dense.append((rec, delta))
        elif rec.kind is _Conv2D:
            per_example.extend(_conv_grads(rec, delta, n, k))
        elif rec.kind is _Dense:  # rank > 2 input: weights shared over the middle axes
            a = tf.reshape(rec.a, [n, -1, rec.a.shape[-1]])
            dl = tf.reshape(delta, [n, k, -1, delta.shape[-1]])
            if rec.kernel:
                g = tf.einsum("ntp,nctq->ncpq", a, dl)
                if rec.mask is not None:
                    g = g * rec.mask
                per_example.append(tf.reshape(g, [n, k, -1]))
            if rec.bias:
                per_example.append(tf.reduce_sum(dl, axis=2))
        else:  # BatchNormalization over the last axis
            xhat = tf.reshape(rec.a, [n, 1, -1, rec.a.shape[-1]])
            dl = tf.reshape(delta, [n, k, -1, delta.shape[-1]])
            if rec.kernel:
                per_example.append(tf.reduce_sum(dl * xhat, axis=2))
            if rec.bias:
                per_example.append(tf.reduce_sum(dl, axis=2))
    g = tf.concat(per_example, axis=-1) if per_example else None
    return f, dense, g


def _dense_block(rec1, d1, rec2, d2, diagonal):
    """Kernel block of one Dense layer from inputs a and sensitivities delta of both sides."""
    a1, a2 = rec1.a, rec2.a
    if rec1.mask is None:
        if diagonal:
            scale = tf.reduce_sum(a1 * a2, axis=-1) if rec1.kernel else tf.zeros_like(a1[:, 0])
            if rec1.bias:
                scale = scale + 1
            return scale[:, None, None] * tf.einsum("icq,idq->icd", d1, d2)
        scale = tf.matmul(a1, a2, transpose_b=True) if rec1.kernel else tf.zeros([tf.shape(a1)[0], tf.shape(a2)[0]], a1.dtype)
        if rec1.bias:
            scale = scale + 1
        return scale[:, :, None, None] * tf.einsum("icq,jdq->ijcd", d1, d2)
    m = rec1.mask
    if diagonal:
        h = tf.matmul(a1 * a2, m)  # (N, dout)
        if rec1.bias:
            h = h + 1
        return tf.einsum("icq,iq,idq->icd", d1, h, d2)
    n1, n2 = tf.shape(a1)[0], tf.shape(a2)[0]
    pairs = tf.reshape(a1[:, None, :] * a2[None, :, :], [n1 * n2, a1.shape[-1]])
    h = tf.reshape(tf.matmul(pairs, m), [n1, n2, m.shape[-1]])  # H_ijq = sum_p a1_ip a2_jp m_pq
    if rec1.bias:
        h = h + 1
    t = tf.einsum("icq,ijq->ijcq", d1, h)
    return tf.einsum("ijcq,jdq->ijcd", t, d2)


def _structured_kernel(model, x1, x2, masks, trainable, diagonal):
    _, dense1, g1 = _side_factors(model, x1, masks, trainable)
    if x2 is x1:
        dense2, g2 = dense1, g1
    else:
        _, dense2, g2 = _side_factors(model, x2, masks, trainable)
    theta = None
    for (r1, d1), (r2, d2) in zip(dense1, dense2):
        block = _dense_block(r1, d1, r2, d2, diagonal)
        theta = block if theta is None else theta + block
    if g1 is not None:
        block = tf.einsum("icp,idp->icd" if diagonal else "icp,jdp->ijcd", g1, g2)
        theta = block if theta is None else theta + block
    return theta


# --------------------------------------------------------------------------- jacobian path


def _jacobian(model, x, masks, variables):
    """J(x) as (N, k, P): every trainable variable, masked kernels carry the factor m."""
    with tf.GradientTape() as tape:
        f = _layers.masked_forward(model, x, masks)
    jac = tape.jacobian(f, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    n, k = tf.shape(f)[0], f.shape[-1]
    return tf.concat([tf.reshape(tf.cast(j, f.dtype), [n, k, -1]) for j in jac], axis=-1)


def _jacobian_kernel(model, x1, x2, masks, variables, diagonal):
    j1 = _jacobian(model, x1, masks, variables)
    j2 = j1 if x2 is x1 else _jacobian(model, x2, masks, variables)
    return tf.einsum("icp,idp->icd" if diagonal else "icp,jdp->ijcd", j1, j2)


# --------------------------------------------------------------------------- public API

_WARNED: set = set()


def _check_inputs(model, x, name, dtype):
    x = tf.convert_to_tensor(x)
    x = tf.cast(x, dtype) if x.dtype != dtype else x
    expected = None
    if getattr(model, "inputs", None):
        expected = model.inputs[0].shape[1:]
    elif getattr(model, "input_shape", None) is not None:  # pragma: no cover - subclassed built models
        expected = tf.TensorShape(model.input_shape[1:])
    if expected is not None and not expected.is_compatible_with(x.shape[1:]):
        raise ValueError(
            f"{name} must have shape (N, {', '.join(str(d) for d in expected)}) to match the model's "
            f"input. You passed shape: {tuple(x.shape)}"
        )
    return x


def mixed_tangent_kernel_fn(model, implementation="auto") -> Callable:
    """Returns ``kernel_fn(x1, x2, masks=None, diagonal=False)`` computing the MTK of ``model``.

    The model is inspected once here (supported layers, trainable variables); the returned
    function is pure TensorFlow and can be traced by ``tf.function``.

    Args:
      model: a built tf_keras model whose single output is ``(batch, k)`` logits.
      implementation: a :class:`KernelImplementation` or its value (``"auto"``, default;
        ``"structured"``; ``"jacobian"``).

    Raises:
      ValueError: unknown ``implementation``; ``"structured"`` for a model it does not support.
    """
    impl = KernelImplementation.parse(implementation)
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built (call it on data once). You passed an unbuilt model.")
    reason = structured_support(model)
    if impl is KernelImplementation.STRUCTURED and reason:
        raise ValueError(f"implementation='structured' does not support this model: {reason}.")
    if impl is KernelImplementation.AUTO:
        impl = KernelImplementation.JACOBIAN if reason else KernelImplementation.STRUCTURED
        if reason and (id(model), reason) not in _WARNED:
            _WARNED.add((id(model), reason))
            warnings.warn(f"mixed_tangent_kernel falls back to the jacobian path: {reason}.", stacklevel=2)

    def kernel_fn(x1, x2, masks=None, diagonal=False):
        """Θ(x1, x2) of shape (N1, N2, k, k), or (N, k, k) holding Θ[i, i] when ``diagonal``."""
        variables = model.trainable_variables
        if not variables:
            raise ValueError(f"model {model.name!r} has no trainable variables; its tangent kernel is empty.")
        dtype = variables[0].dtype
        same = x2 is x1
        x1 = _check_inputs(model, x1, "x1", dtype)
        x2 = x1 if same else _check_inputs(model, x2, "x2", dtype)
        if diagonal and x1.shape[0] is not None and x2.shape[0] is not None and x1.shape[0] != x2.shape[0]:
            raise ValueError(
                "diagonal=True needs as many examples in x1 as in x2 (Θ[i, i] pairs x1[i] with x2[i]). "
                f"You passed N1={x1.shape[0]}, N2={x2.shape[0]}"
            )
        resolved = resolve_masks(model, masks)
        if impl is KernelImplementation.STRUCTURED:
            if masks:
                masked_reason = structured_support(model, masks)
                if masked_reason:
                    raise ValueError(f"implementation='structured' does not support this model: {masked_reason}.")
            trainable = {id(v) for v in variables}
            return _structured_kernel(model, x1, x2, resolved, trainable, diagonal)
        return _jacobian_kernel(model, x1, x2, resolved, variables, diagonal)

    kernel_fn.implementation = impl
    return kernel_fn


def mixed_tangent_kernel(model, x1, x2, masks=None, diagonal=False, implementation="auto"):
    """The Mixed Tangent Kernel Θ(x1, x2) = J(x1) J(x2)^T of ``model``.

    Args:
      model: a built tf_keras model with a single ``(batch, k)`` output (logits).
      x1: clean inputs, shape ``(N1, *input_shape)``.
      x2: second inputs (e.g. PGD adversarial examples), shape ``(N2, *input_shape)``.
      masks: ``None`` (default) or a dict from a layer's name to a 0/1 array of that layer's
        kernel shape. The kernel is then that of the sparse student ``f(m * θ)`` w.r.t. ``θ``.
        Masks of tfmot ``PruneLowMagnitude`` wrappers are used for layers not named here.
      diagonal: if True (needs ``N1 == N2``) return only ``Θ[i, i]`` as ``(N, k, k)`` (S-AWT).
      implementation: ``"auto"`` (default), ``"structured"`` or ``"jacobian"``; see
        :class:`KernelImplementation`.

    Returns:
      ``(N1, N2, k, k)`` tensor with ``Θ[i, j, c, d] = Σ_p ∂f_c(x1_i)/∂θ_p ∂f_d(x2_j)/∂θ_p``
      (``(N, k, k)`` when ``diagonal``), differentiable w.r.t. the model's trainable variables.

    Example:
      >>> theta = tf_awt.mixed_tangent_kernel(model, x, x_adv)   # doctest: +SKIP
    """
    return mixed_tangent_kernel_fn(model, implementation)(x1, x2, masks=masks, diagonal=diagonal)
