"""The names a configuration may take, validated without importing TensorFlow.

``Recipe`` (and with it every ``tf-awt`` command) checks a recipe through the library's own
configuration classes (:class:`tf_awt.SearchConfig`, :class:`tf_awt.Attack`,
:class:`tf_awt.adversarial.training_schedule.TrainingSchedule`); keeping their vocabularies here lets a bad recipe be refused
before TensorFlow loads. The modules that compute with them re-export these names.
"""
from __future__ import annotations

import enum
import re
from typing import Optional, Tuple

NORMALIZATIONS = ("per_example", "per_entry")
PRECISIONS = ("float32", "bfloat16")


def check_precision(value) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}. You passed: {value!r}")
    return value


STUDENT_KERNELS = ("masked", "full")
"""The student's kernel: Σ_p m_p ∂_p f ∂_p f′ ("masked") or Σ_p ∂_p f ∂_p f′ at θ = m ⊙ w ("full", NTT)."""


def check_student_kernel(value) -> str:
    if value not in STUDENT_KERNELS:
        raise ValueError(f"student_kernel must be one of {list(STUDENT_KERNELS)}. You passed: {value!r}")
    return value


WEIGHT_DECAY_FORMS = ("l2", "l2_per_density", "decoupled")
"""How ``weight_decay`` enters the search: β·‖m⊙w‖² in the loss ("l2"), NTT's (λ/density)·‖m⊙w‖²
("l2_per_density"), or Algorithm 1 line 5's w ← w − η∇L − β·m⊙w after each step ("decoupled")."""

INITIALIZERS = ("glorot_uniform", "glorot_normal")
"""The bundled models' initialization: Keras' default (glorot_uniform weights, zero biases) or
NTT's / stax's (glorot_normal weights, N(0, 0.01²) biases)."""

SCOPES = ("global", "layer", "erk", "frankle_carbin")
LR_SCHEDULES = ("constant", "cosine", "step")
"""Adversarial training's learning-rate schedules (:class:`tf_awt.adversarial.training_schedule.TrainingSchedule`)."""
UNSTRUCTURED = "unstructured"
RESCALES = ("none", "fan_in")
"""How a ticket's kept weights are scaled for training (:meth:`tf_awt.Ticket.to_model`)."""
EVAL_SPLITS = ("test", "validation")
"""What a run evaluates on: the test split, or a validation split carved from the training data."""
DISTRIBUTE = ("none", "mirrored", "multi_worker")
"""A run's ``tf.distribute`` strategy (:mod:`tf_awt._distribute`)."""


def parse_pattern(pattern: str) -> Optional[Tuple[int, int]]:
    """``"unstructured"`` -> None; ``"N:M"`` -> (N, M) with 1 <= N < M; anything else is a ValueError."""
    if pattern == UNSTRUCTURED:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", pattern) if isinstance(pattern, str) else None
    if match is None or not 1 <= int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"pattern must be 'unstructured' or 'N:M' with 1 <= N < M (e.g. '2:4'). You passed: {pattern!r}")
    return int(match.group(1)), int(match.group(2))


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
