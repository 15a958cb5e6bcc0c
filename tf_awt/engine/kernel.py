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
    theta_all = kernel_fn(x_clean, x_adv, masks=masks, student_kernel="full")  # every weight's column, at m ⊙ w

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
  :math:`P_i` (any stride, padding, dilation), then :math:`\sum_p m_p g^1_p g^2_p` over the kept
  weights only (the mask enters once; :mod:`tf_awt.engine._contract`). The per-example
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

import warnings
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import tensorflow as tf

from tf_awt.engine import _contract, _layers, layer_rules
from tf_awt.engine._masks import resolve_masks
from tf_awt.engine.passes import count
from tf_awt._options import KernelImplementation, check_precision, check_student_kernel  # defined without TensorFlow
from tf_awt.keras3 import as_tf_keras, is_keras3

__all__ = [
    "KernelImplementation",
    "mixed_tangent_kernel",
    "mixed_tangent_kernel_fn",
    "structured_support",
]


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


def _layer_support(layer, masks) -> Optional[str]:
    """Why the structured path cannot handle this leaf layer (None: it can), from its layer rule."""
    inner, _ = _layers.unwrap(layer)
    rule = layer_rules.layer_rule(inner)
    masked = bool(masks) and (layer.name in masks or inner.name in masks)
    if rule is not None:
        if masked and "kernel" not in rule.prunable:
            return f"layer {layer.name!r} ({type(inner).__name__}) is masked but its rule prunes nothing"
        return rule.support(inner) if rule.support is not None else None
    if masked:
        return f"layer {layer.name!r} ({type(inner).__name__}) is masked but has no structured rule"
    if not _has_trainable(inner):
        return None  # parameter-free for the kernel: applied as it is
    return f"layer {layer.name!r} ({type(inner).__name__}) has trainable weights and no structured rule"


def _layers_support(model, masks) -> Optional[str]:
    if not _layers.is_graph_network(model):
        return (
            f"model {model.name!r} is not a single-input Sequential/Functional model "
            f"({type(model).__name__})"
        )
    for layer in model.layers:
        reason = _layers_support(layer, masks) if _layers.is_model(layer) else _layer_support(layer, masks)
        if reason:
            return reason
    return None


# --------------------------------------------------------------------------- structured path


def _structured_forward(model, x, masks: Dict[int, tuple], trainable: set, tape,
                        precision: str = "float32", student_kernel: str = "masked") -> Tuple[tf.Tensor, List[layer_rules.Record]]:
    records: List[layer_rules.Record] = []
    count_pruned = student_kernel == "full"  # every Jacobian column, evaluated at m ⊙ w

    def apply(layer, args, kwargs):
        inner, _ = _layers.unwrap(layer)
        rule = layer_rules.layer_rule(inner)
        if rule is None or not _has_trainable(inner):
            return _layers.call_inference(inner, args, kwargs)
        first, second = rule.weights(inner)
        mask = masks.get(id(inner), (None, None))[1]
        a, z = rule.forward(inner, args[0], first if mask is None else first * mask)
        first_tr = first is not None and id(first) in trainable
        second_tr = second is not None and id(second) in trainable
        if first_tr or second_tr:
            tape.watch(z)
            kept = mask if first_tr and not count_pruned else None
            records.append(layer_rules.Record(inner, rule, a, z, kept, first_tr, second_tr, precision))
        return inner.activation(z) if rule.activation and inner.activation is not None else z

    f = _layers.run_graph(model, x, apply)
    return f, records


def _side_factors(model, x, masks, trainable, precision="float32", student_kernel="masked"):
    """Forward + sensitivities for one side: (outputs, factored records, per-example gradients, mask).

    ``factored`` is a list of ``(record, delta)`` whose rule computes its kernel block directly
    (a Dense layer on rank-2 inputs); ``g`` concatenates the per-example gradients (N, k, P') of
    every other weight, or is None; ``mask`` is their (P',) 0/1 weight mask (ones for unmasked
    weights), or None when no weight of ``g`` is masked.
    """
    with tf.GradientTape() as tape:
        f, records = _structured_forward(model, x, masks, trainable, tape, precision, student_kernel)
        f_sum = tf.reduce_sum(f, axis=0)  # (k,): d f_sum[c] / d z_i = delta_ic, examples independent
    zs = [r.z for r in records]
    jac = tape.jacobian(f_sum, zs, unconnected_gradients=tf.UnconnectedGradients.ZERO) if zs else []
    factored, per_example, weight_masks, any_masked = [], [], [], False
    for rec, d in zip(records, jac):
        delta = tf.transpose(d, [1, 0] + list(range(2, d.shape.rank)))  # (N, k, ...)
        if rec.rule.factored is not None and rec.rule.factored(rec):
            factored.append((rec, delta))
            continue
        for position, g in enumerate(rec.rule.gradients(rec, delta)):
            masked = position == 0 and rec.first and rec.mask is not None
            any_masked = any_masked or masked
            per_example.append(g)
            weight_masks.append(tf.reshape(tf.cast(rec.mask, g.dtype), [-1]) if masked else tf.ones(tf.shape(g)[-1:], g.dtype))
    if not per_example:
        return f, factored, None, None
    return f, factored, tf.concat(per_example, axis=-1), (tf.concat(weight_masks, axis=0) if any_masked else None)


def _structured_kernel(model, x1, x2, masks, trainable, diagonal, precision="float32", student_kernel="masked"):
    _, factored1, g1, mask = _side_factors(model, x1, masks, trainable, precision, student_kernel)
    if x2 is x1:
        factored2, g2 = factored1, g1
    else:
        _, factored2, g2, _ = _side_factors(model, x2, masks, trainable, precision, student_kernel)
    theta = None
    for (r1, d1), (r2, d2) in zip(factored1, factored2):
        block = r1.rule.block(r1, d1, r2, d2, diagonal)
        theta = block if theta is None else theta + block
    if g1 is not None:
        block = _contract.contract(g1, g2, mask, diagonal, precision)
        theta = block if theta is None else theta + block
    return theta


# --------------------------------------------------------------------------- jacobian path


def _jacobian(model, x, masks, variables, student_kernel="masked"):
    """J(x) as (N, k, P): every trainable variable; masked kernels carry the factor m, or, for the
    ``"full"`` student kernel, the columns are ∂f/∂θ at θ = m ⊙ w (taken w.r.t. m ⊙ w itself)."""
    if student_kernel == "full" and masks:
        effective = {key: (layer, layer.kernel * mask) for key, (layer, mask) in masks.items()}
        by_variable = {id(layer.kernel): key for key, (layer, _) in masks.items()}
        with tf.GradientTape() as tape:
            for _, value in effective.values():
                tape.watch(value)
            with _layers.substituted_kernels(effective):
                f = _layers.masked_forward(model, x, {})
        targets = [effective[by_variable[id(v)]][1] if id(v) in by_variable else v for v in variables]
        jac = tape.jacobian(f, targets, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        n, k = tf.shape(f)[0], f.shape[-1]
        return tf.concat([tf.reshape(tf.cast(j, f.dtype), [n, k, -1]) for j in jac], axis=-1)
    with tf.GradientTape() as tape:
        f = _layers.masked_forward(model, x, masks)
    jac = tape.jacobian(f, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    n, k = tf.shape(f)[0], f.shape[-1]
    return tf.concat([tf.reshape(tf.cast(j, f.dtype), [n, k, -1]) for j in jac], axis=-1)


def _jacobian_kernel(model, x1, x2, masks, variables, diagonal, precision="float32", student_kernel="masked"):
    j1 = _jacobian(model, x1, masks, variables, student_kernel)
    j2 = j1 if x2 is x1 else _jacobian(model, x2, masks, variables, student_kernel)
    return _contract.contract(j1, j2, None, diagonal, precision)


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


def _variables_and_inputs(model, x1, x2):
    """The model's trainable variables and both inputs checked and cast to their dtype; ``same``
    says ``x2`` was ``x1`` (its kernel factors are then computed once)."""
    variables = model.trainable_variables
    if not variables:
        raise ValueError(f"model {model.name!r} has no trainable variables; its tangent kernel is empty.")
    dtype = variables[0].dtype
    same = x2 is x1
    x1 = _check_inputs(model, x1, "x1", dtype)
    return variables, x1, (x1 if same else _check_inputs(model, x2, "x2", dtype)), same


def mixed_tangent_kernel_fn(model, implementation="auto", compiled: bool = True, jit_compile: bool = False,
                            precision: str = "float32") -> Callable:
    """Returns ``kernel_fn(x1, x2, masks=None, diagonal=False, student_kernel="masked")`` computing the MTK of ``model``

    The model is inspected once here (supported layers, trainable variables).

    Args:
      model: a built tf_keras model whose single output is ``(batch, k)`` logits, or a Keras 3
        model (:mod:`tf_awt.keras3`: the kernel is its tf_keras twin's, with the Keras 3 model's
        weights at each call; gradients reach the twin's variables, ``as_tf_keras(model)``).
      implementation: a :class:`KernelImplementation` or its value (``"auto"``, default;
        ``"structured"``; ``"jacobian"``).
      compiled: if True (default), a call from eager code runs a ``tf.function`` traced once per
        input shapes and dtypes, masks structure, ``diagonal`` and set of trainable variables
        (new values of the same shapes do not retrace); inputs and masks are checked eagerly
        first. Inside a ``tf.function`` (e.g. a ``train_step``) the kernel is always inlined
        into the caller's graph. False: plain eager TensorFlow (slow, for debugging).
      jit_compile: compile the traced function with XLA (default False; see
        docs/performance.md for when it is faster).
      precision: ``"float32"`` (default) or ``"bfloat16"``: the large contractions (Gram products of
        per-example gradients, Conv2D per-example gradients, masked Dense blocks) on bfloat16
        operands with float32 sums (:mod:`tf_awt.engine._contract`); faster on CPUs with AVX512-BF16/AMX,
        relative error below 1e-3 (measured 1e-4 to 3e-4 on the paper's CNN: docs/performance.md).
        A float64 model ignores it.

    Raises:
      ValueError: unknown ``implementation``; ``"structured"`` for a model it does not support.
    """

    if is_keras3(model):  # computed on its tf_keras twin, with the Keras 3 model's weights at each call
        twin_fn = mixed_tangent_kernel_fn(as_tf_keras(model), implementation, compiled, jit_compile, precision)

        def keras3_kernel_fn(x1, x2, masks=None, diagonal=False, student_kernel="masked"):
            as_tf_keras(model)  # copies the current weights into the twin
            return twin_fn(x1, x2, masks=masks, diagonal=diagonal, student_kernel=student_kernel)

        return keras3_kernel_fn
    impl = KernelImplementation.parse(implementation)
    precision = check_precision(precision)
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

    def kernel_fn(x1, x2, masks=None, diagonal=False, student_kernel="masked"):
        """Θ(x1, x2) of shape (N1, N2, k, k), or (N, k, k) holding Θ[i, i] when ``diagonal``."""
        check_student_kernel(student_kernel)
        variables, x1, x2, _ = _variables_and_inputs(model, x1, x2)
        if diagonal and x1.shape[0] is not None and x2.shape[0] is not None and x1.shape[0] != x2.shape[0]:
            raise ValueError(
                "diagonal=True needs as many examples in x1 as in x2 (Θ[i, i] pairs x1[i] with x2[i]). "
                f"You passed N1={x1.shape[0]}, N2={x2.shape[0]}"
            )
        resolved = resolve_masks(model, masks)
        count("jacobians", tf.shape(x1)[0] + (0 if x2 is x1 else tf.shape(x2)[0]))  # examples whose Jacobians enter Θ
        if impl is KernelImplementation.STRUCTURED:
            if masks:
                masked_reason = structured_support(model, masks)
                if masked_reason:
                    raise ValueError(f"implementation='structured' does not support this model: {masked_reason}.")
            trainable = {id(v) for v in variables}
            return _structured_kernel(model, x1, x2, resolved, trainable, diagonal, _precision(precision, x1), student_kernel)
        return _jacobian_kernel(model, x1, x2, resolved, variables, diagonal, _precision(precision, x1), student_kernel)

    kernel_fn.implementation = impl
    if not compiled:
        return kernel_fn
    return _compiled(kernel_fn, model, impl, jit_compile)


def _compiled(kernel_fn, model, impl, jit_compile: bool):
    """``kernel_fn`` behind a ``tf.function``, with the eager checks done before the call."""

    def traced_body(x1, x2, masks, diagonal, student_kernel, variables_key):
        del variables_key  # only a trace key: a model whose trainable variables changed retraces
        return kernel_fn(x1, x1 if x2 is None else x2, masks=masks, diagonal=diagonal, student_kernel=student_kernel)

    traced = tf.function(traced_body, jit_compile=bool(jit_compile))

    def compiled_kernel_fn(x1, x2, masks=None, diagonal=False, student_kernel="masked"):
        """Θ(x1, x2) of shape (N1, N2, k, k), or (N, k, k) holding Θ[i, i] when ``diagonal``."""
        check_student_kernel(student_kernel)
        if tf.inside_function():
            return kernel_fn(x1, x2, masks=masks, diagonal=diagonal, student_kernel=student_kernel)
        variables, x1, x2, same = _variables_and_inputs(model, x1, x2)
        dtype = variables[0].dtype
        x2 = None if same else x2
        if masks:
            resolve_masks(model, masks)  # names, shapes and 0/1 values, checked on concrete values
            masks = {name: tf.cast(tf.convert_to_tensor(m), dtype) for name, m in masks.items()}
        key = tuple((id(v), tuple(v.shape)) for v in variables)
        return traced(x1, x2, masks or None, bool(diagonal), student_kernel, key)

    compiled_kernel_fn.implementation = impl
    compiled_kernel_fn.traced = traced
    return compiled_kernel_fn


def _precision(precision: str, x) -> str:
    """bfloat16 only speeds up float32 models; a float64 model keeps its precision."""
    return precision if x.dtype == tf.float32 else "float32"


def _cached_kernel_fn(model, implementation, precision="float32"):
    """The compiled kernel function of ``model``, kept on the model itself (no module-level cache:
    it is collected with the model): one trace per input signature across calls of
    :func:`mixed_tangent_kernel`."""
    cache = model.__dict__.get("_tf_awt_kernel_fns")
    if cache is None:
        cache = {}
        object.__setattr__(model, "_tf_awt_kernel_fns", cache)  # not a tracked Keras attribute
    key = (KernelImplementation.parse(implementation), check_precision(precision))
    if key not in cache:
        cache[key] = mixed_tangent_kernel_fn(model, key[0], precision=key[1])
    return cache[key]


def mixed_tangent_kernel(model, x1, x2, masks=None, diagonal=False, implementation="auto", precision="float32",
                         student_kernel="masked"):
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
      precision: ``"float32"`` (default) or ``"bfloat16"`` (see :func:`mixed_tangent_kernel_fn`).
      student_kernel: how a masked model's kernel counts the pruned weights: ``"masked"``
        (default) Σ_p m_p ∂_p f ∂_p f′ (the sparse net's own tangent kernel), or ``"full"``:
        Σ_p ∂_p f ∂_p f′ over **every** weight,
        the derivatives taken at θ = m ⊙ w (Neural Tangent Transfer's ``emp_ntk_fn(x1, x2,
        masked_params)``, the convention of the code the paper builds on). Both are exact and
        differentiable; the gradient of ``"full"`` reaches w through m ⊙ w only.

    Returns:
      ``(N1, N2, k, k)`` tensor with ``Θ[i, j, c, d] = Σ_p ∂f_c(x1_i)/∂θ_p ∂f_d(x2_j)/∂θ_p``
      (``(N, k, k)`` when ``diagonal``), differentiable w.r.t. the model's trainable variables.

    Example:
      >>> theta = tf_awt.mixed_tangent_kernel(model, x, x_adv)   # doctest: +SKIP
    """
    if not getattr(model, "built", False):
        raise ValueError(f"model {getattr(model, 'name', model)!r} must be built (call it on data once). You passed an unbuilt model.")

    return _cached_kernel_fn(as_tf_keras(model), implementation, precision)(x1, x2, masks=masks, diagonal=diagonal,
                                                                            student_kernel=student_kernel)
