"""Reference architectures of the paper, built with tf_keras (logit outputs).

* :func:`mlp` — MNIST MLP 784-300-100-10 (ReLU).
* :func:`paper_cnn` — conv32(5x5)-pool-conv64(5x5)-pool-fc1024-fc10 (ReLU, 'same' padding).
* :func:`linear` — a linear classifier (the toy example of appendix C.1).
* :func:`vgg16` — VGG16 for 32x32 images (the S-AWT experiment).
* :func:`resnet18` — ResNet-18 for 32x32 images (batch normalization, residual additions).

tf_keras is imported inside the builders, so ``MODELS`` checks a recipe without TensorFlow.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["mlp", "paper_cnn", "linear", "vgg16", "resnet18", "build_model", "MODELS", "INITIALIZERS"]

from tf_awt._options import INITIALIZERS  # noqa: E402  (defined without TensorFlow)


def _keras():
    """tf_keras and its layers, imported on first build: ``MODELS`` (the names a recipe may use) loads
    without TensorFlow."""
    import tf_keras

    return tf_keras, tf_keras.layers


def _init(init: str):
    """A function giving each layer its own weight and bias initializers of ``init`` (one of
    :data:`INITIALIZERS`) as layer keyword arguments (a shared unseeded Keras initializer instance
    would give every layer the same values).

    ``"glorot_uniform"``: Keras' default (Glorot-uniform weights, zero biases). ``"glorot_normal"``:
    the initialization of Neural Tangent Transfer's models (``nt_transfer/nn_models.py``: stax layers
    with ``W_init=glorot_normal()``, ``b_init=normal()``), i.e. truncated-normal Glorot weights and
    N(0, 0.01²) biases.
    """
    if init not in INITIALIZERS:
        raise ValueError(f"init must be one of {list(INITIALIZERS)}. You passed: {init!r}")
    if init == "glorot_uniform":
        return lambda: {}
    tf_keras, _ = _keras()
    return lambda: {"kernel_initializer": tf_keras.initializers.GlorotNormal(),
                    "bias_initializer": tf_keras.initializers.RandomNormal(stddev=0.01)}


def mlp(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, hidden: Sequence[int] = (300, 100), name="mlp",
        init: str = "glorot_uniform"):
    """Fully connected ReLU network; the paper's MNIST MLP is ``hidden=(300, 100)``; ``init``: :func:`_init`."""
    tf_keras, L = _keras()
    kw = _init(init)
    layers = [L.Input(tuple(input_shape)), L.Flatten()]
    layers += [L.Dense(h, activation="relu", name=f"dense_{i}", **kw()) for i, h in enumerate(hidden)]
    layers.append(L.Dense(num_classes, name="logits", **kw()))
    return tf_keras.Sequential(layers, name=name)


def paper_cnn(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, name="paper_cnn",
              init: str = "glorot_uniform"):
    """The paper's CNN: conv32-pool-conv64-pool-fc1024-fc10 (5x5 kernels, 'same' padding); ``init``: :func:`_init`."""
    tf_keras, L = _keras()
    kw = _init(init)
    return tf_keras.Sequential(
        [
            L.Input(tuple(input_shape)),
            L.Conv2D(32, 5, padding="same", activation="relu", name="conv_0", **kw()),
            L.MaxPooling2D(2),
            L.Conv2D(64, 5, padding="same", activation="relu", name="conv_1", **kw()),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(1024, activation="relu", name="dense_0", **kw()),
            L.Dense(num_classes, name="logits", **kw()),
        ],
        name=name,
    )


def linear(input_shape: Sequence[int] = (100,), num_classes: int = 2, name="linear", init: str = "glorot_uniform"):
    """A linear classifier (logits = x W + b); ``init``: :func:`_init`."""
    tf_keras, L = _keras()
    return tf_keras.Sequential([L.Input(tuple(input_shape)), L.Flatten(), L.Dense(num_classes, name="logits", **_init(init)())],
                               name=name)


def vgg16(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, name="vgg16", init: str = "glorot_uniform"):
    """VGG16 for 32x32 inputs: 13 3x3 conv layers (64-64-M-128-128-M-256x3-M-512x3-M-512x3-M), fc512, fc;
    ``init``: :func:`_init`."""
    tf_keras, L = _keras()
    kw = _init(init)
    layers = [L.Input(tuple(input_shape))]
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    i = 0
    for item in plan:
        if item == "M":
            layers.append(L.MaxPooling2D(2))
        else:
            layers.append(L.Conv2D(item, 3, padding="same", activation="relu", name=f"conv_{i}", **kw()))
            i += 1
    layers += [L.Flatten(), L.Dense(512, activation="relu", name="dense_0", **kw()), L.Dense(num_classes, name="logits", **kw())]
    return tf_keras.Sequential(layers, name=name)


def resnet18(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, name="resnet18", init: str = "glorot_uniform"):
    """ResNet-18 for 32x32 inputs (He et al. 2016, the CIFAR variant: a 3x3 stem, no max-pool): 4 stages
    of 2 basic blocks (64, 128, 256, 512 channels; stride 2 from the second stage, with a 1x1 conv
    shortcut), batch normalization after every conv, global average pooling, fc; 17 + 3 conv
    layers and one Dense are prunable. ``init``: :func:`_init`."""
    tf_keras, L = _keras()
    kw = _init(init)
    count = iter(range(1000))

    def conv_bn(h, filters, size, stride, relu=True):
        i = next(count)
        h = L.Conv2D(filters, size, strides=stride, padding="same", use_bias=False, name=f"conv_{i}", **kw())(h)
        h = L.BatchNormalization(name=f"bn_{i}")(h)
        return L.ReLU()(h) if relu else h

    inputs = L.Input(tuple(input_shape))
    h = conv_bn(inputs, 64, 3, 1)
    for stage, filters in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = h if stride == 1 else conv_bn(h, filters, 1, stride, relu=False)
            out = conv_bn(conv_bn(h, filters, 3, stride), filters, 3, 1, relu=False)
            h = L.ReLU()(L.Add()([out, shortcut]))
    h = L.GlobalAveragePooling2D()(h)
    return tf_keras.Model(inputs, L.Dense(num_classes, name="logits", **kw())(h), name=name)


MODELS = {"mlp": mlp, "cnn": paper_cnn, "linear": linear, "vgg16": vgg16, "resnet18": resnet18}


def build_model(name: str, input_shape: Sequence[int], num_classes: int, init: str = "glorot_uniform"):
    """Builds a bundled architecture by name (one of ``MODELS``), initialized by ``init`` (:data:`INITIALIZERS`)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}. You passed: {name!r}")
    return MODELS[name](input_shape=input_shape, num_classes=num_classes, init=init)
