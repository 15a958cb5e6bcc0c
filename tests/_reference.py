"""Brute-force references for the kernel engine: explicit per-(example, output) Jacobian rows.

Each row is one ``tf.GradientTape.gradient`` of a scalar ``f_c(x_i)``; masked kernels are applied
by making ``layer.kernel`` the tensor ``m * W`` for the call, so the rows carry the factor m and
stay differentiable w.r.t. W (for gradient checks under an outer tape).
"""
import numpy as np
import tensorflow as tf


def explicit_jacobian(model, x, masks=None):
    """(N, k, P) Jacobian of model(x) w.r.t. model.trainable_variables, one gradient per entry."""
    masks = masks or {}
    layers = {}

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, tf.keras.Model) or hasattr(layer, "layers"):
                walk(layer)
            else:
                layers[layer.name] = layer

    walk(model)
    rows = []
    n = int(x.shape[0])
    for i in range(n):
        with tf.GradientTape(persistent=True) as tape:
            saved = {}
            for name, m in masks.items():
                layer = layers[name]
                saved[name] = layer.kernel
                object.__setattr__(layer, "kernel", layer.kernel * tf.constant(m, layer.kernel.dtype))
            try:
                out = model(x[i : i + 1], training=False)[0]
            finally:
                for name, var in saved.items():
                    object.__setattr__(layers[name], "kernel", var)
            outs = [out[c] for c in range(out.shape[0])]
        for c, fc in enumerate(outs):
            grads = tape.gradient(fc, model.trainable_variables, unconnected_gradients="zero")
            rows.append(tf.concat([tf.reshape(g, [-1]) for g in grads], 0))
        del tape
    k = len(rows) // n
    return tf.reshape(tf.stack(rows), [n, k, -1])


def reference_kernel(model, x1, x2, masks=None, diagonal=False):
    j1 = explicit_jacobian(model, x1, masks)
    j2 = explicit_jacobian(model, x2, masks)
    return tf.einsum("icp,idp->icd" if diagonal else "icp,jdp->ijcd", j1, j2)


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))
