"""Reference architectures of the paper, built with tf_keras (logit outputs).

* :func:`mlp` — MNIST MLP 784-300-100-10 (ReLU).
* :func:`paper_cnn` — conv32(5x5)-pool-conv64(5x5)-pool-fc1024-fc10 (ReLU, 'same' padding).
* :func:`linear` — a linear classifier (the toy example of appendix C.1).
* :func:`vgg16` — VGG16 for 32x32 images (the S-AWT experiment).
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["mlp", "paper_cnn", "linear", "vgg16", "build_model", "MODELS"]


def _keras():
    """tf_keras and its layers, imported on first build: ``MODELS`` (the names a recipe may use) loads
    without TensorFlow."""
    import tf_keras

    return tf_keras, tf_keras.layers


def mlp(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, hidden: Sequence[int] = (300, 100), name="mlp"):
    """Fully connected ReLU network; the paper's MNIST MLP is ``hidden=(300, 100)``."""
    tf_keras, L = _keras()
    layers = [L.Input(tuple(input_shape)), L.Flatten()]
    layers += [L.Dense(h, activation="relu", name=f"dense_{i}") for i, h in enumerate(hidden)]
    layers.append(L.Dense(num_classes, name="logits"))
    return tf_keras.Sequential(layers, name=name)


def paper_cnn(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, name="paper_cnn"):
    """The paper's CNN: conv32-pool-conv64-pool-fc1024-fc10 (5x5 kernels, 'same' padding)."""
    tf_keras, L = _keras()
    return tf_keras.Sequential(
        [
            L.Input(tuple(input_shape)),
            L.Conv2D(32, 5, padding="same", activation="relu", name="conv_0"),
            L.MaxPooling2D(2),
            L.Conv2D(64, 5, padding="same", activation="relu", name="conv_1"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(1024, activation="relu", name="dense_0"),
            L.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def linear(input_shape: Sequence[int] = (100,), num_classes: int = 2, name="linear"):
    """A linear classifier (logits = x W + b)."""
    tf_keras, L = _keras()
    return tf_keras.Sequential([L.Input(tuple(input_shape)), L.Flatten(), L.Dense(num_classes, name="logits")], name=name)


def vgg16(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, name="vgg16"):
    """VGG16 for 32x32 inputs: 13 3x3 conv layers (64-64-M-128-128-M-256x3-M-512x3-M-512x3-M), fc512, fc."""
    tf_keras, L = _keras()
    layers = [L.Input(tuple(input_shape))]
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    i = 0
    for item in plan:
        if item == "M":
            layers.append(L.MaxPooling2D(2))
        else:
            layers.append(L.Conv2D(item, 3, padding="same", activation="relu", name=f"conv_{i}"))
            i += 1
    layers += [L.Flatten(), L.Dense(512, activation="relu", name="dense_0"), L.Dense(num_classes, name="logits")]
    return tf_keras.Sequential(layers, name=name)


MODELS = {"mlp": mlp, "cnn": paper_cnn, "linear": linear, "vgg16": vgg16}


def build_model(name: str, input_shape: Sequence[int], num_classes: int):
    """Builds a bundled architecture by name (one of ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}. You passed: {name!r}")
    return MODELS[name](input_shape=input_shape, num_classes=num_classes)
