"""Brute-force references for the kernel engine: explicit per-(example, output) Jacobian rows.

Each row is one ``tf.GradientTape.gradient`` of a scalar ``f_c(x_i)``; masked kernels are applied
by making ``layer.kernel`` the tensor ``m * W`` for the call, so the rows carry the factor m and
stay differentiable w.r.t. W (for gradient checks under an outer tape).
"""
import numpy as np
import tensorflow as tf


def leaf_layers(model):
    """{name: layer} of every leaf layer, nested models walked."""
    layers = {}

    def walk(m):
        for layer in m.layers:
            if hasattr(layer, "layers"):
                walk(layer)
            else:
                layers[layer.name] = layer

    walk(model)
    return layers


def explicit_jacobian(model, x, masks=None, effective=False):
    """(N, k, P) Jacobian of model(x) w.r.t. model.trainable_variables, one gradient per entry.

    Masked kernels are the tensor m ⊙ W for the call; ``effective=True`` differentiates w.r.t.
    that tensor (the columns carry no factor m; differentiable w.r.t. W and the mask tensors)."""
    masks = masks or {}
    layers = leaf_layers(model)
    rows = []
    n = int(x.shape[0])
    for i in range(n):
        with tf.GradientTape(persistent=True) as tape:
            saved, products = {}, {}
            for name, m in masks.items():
                layer = layers[name]
                saved[name] = layer.kernel
                products[name] = layer.kernel * tf.cast(m, layer.kernel.dtype)
                tape.watch(products[name])
                object.__setattr__(layer, "kernel", products[name])
            try:
                out = model(x[i : i + 1], training=False)[0]
            finally:
                for name, var in saved.items():
                    object.__setattr__(layers[name], "kernel", var)
            outs = [out[c] for c in range(out.shape[0])]
        sources = [products.get(_owner(layers, v), v) for v in model.trainable_variables] if effective \
            else model.trainable_variables
        for fc in outs:
            grads = tape.gradient(fc, sources, unconnected_gradients="zero")
            rows.append(tf.concat([tf.reshape(g, [-1]) for g in grads], 0))
        del tape
    return tf.reshape(tf.stack(rows), [n, len(rows) // n, -1])


def reference_kernel(model, x1, x2, masks=None, diagonal=False):
    j1 = explicit_jacobian(model, x1, masks)
    j2 = explicit_jacobian(model, x2, masks)
    return tf.einsum("icp,idp->icd" if diagonal else "icp,jdp->ijcd", j1, j2)


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _owner(layers, variable):
    """The name of the layer whose kernel is ``variable`` (None for any other weight)."""
    for name, layer in layers.items():
        if getattr(layer, "kernel", None) is variable:
            return name
    return None


def single_mask_kernel(model, x1, x2, masks):
    """The documented student kernel Σ_p m_p ∂_p f(x1) ∂_p f(x2) (∂ w.r.t. the effective weight),
    the mask entering once: its derivative w.r.t. a pruned m_p is not zero."""
    j1, j2 = (explicit_jacobian(model, x, masks, effective=True) for x in (x1, x2))
    named = leaf_layers(model)
    weight_mask = []
    for v in model.trainable_variables:
        name = _owner(named, v)
        weight_mask.append(tf.reshape(masks[name], [-1]) if name in masks else tf.ones([int(np.prod(v.shape))], v.dtype))
    return tf.einsum("icp,p,jdp->ijcd", j1, tf.concat(weight_mask, 0), j2)
