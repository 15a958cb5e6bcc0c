"""Counting the passes a computation makes through its networks: a cost that does not depend on the machine.

Seconds depend on the CPU and on what else runs; the number of passes does not. Three counts:

* ``forward``: examples sent forward through a network once (a prediction, a loss, one step of a
  gradient attack, one of Square's queries; the sketch's Jacobian–vector product counts as one);
* ``backward``: examples whose gradient was taken back through a network once (a vector–Jacobian
  product: one training step or one attack step costs one per example);
* ``jacobians``: examples whose whole Jacobian entered an exact Mixed Tangent Kernel (structured or
  ``tf.GradientTape.jacobian``; about as much work as one backward pass per output).

So PGD-k costs k forward and k backward passes per example, a training step with PGD-k
k + 1 of each (plus one forward pass for its natural-accuracy metric), an exact search step
B·(teacher steps + student steps + 2) forward passes and 2·(B + B) Jacobians.

    from tf_awt.engine.passes import PassCount

    with PassCount() as passes:                 # network calls traced inside the block are counted
        tf_awt.adversarial_fit(ticket, (x, y), attack=attack, epochs=1)
    passes.totals()                             # {"forward": ..., "backward": ..., "jacobians": ...}

The counts are kept in the graph (``tf.Variable`` s, summed over the replicas of a
``tf.distribute`` strategy), so a compiled step adds to them every time it runs. A function traced
*inside* the block counts into its counter whenever it runs; one traced before the block counts
nothing: the library builds its compiled functions in each call (``adversarial_fit``,
``find_ticket``, ``evaluate``), so a call made inside the block is counted whole. Outside any block
the library's graphs are unchanged. Not counted: the gradient of the search's kernel distance with
respect to the weights (a derivative of the kernel's own computation).
"""
from __future__ import annotations

import contextvars
from typing import Dict

__all__ = ["PassCount", "KINDS", "count_passes", "count_forward", "count"]

KINDS = ("forward", "backward", "jacobians")
"""What is counted (module docstring)."""

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("tf_awt_pass_count", default=None)


class PassCount:
    """The passes of the network calls traced while it is active (``with PassCount() as p:``).

    Nested blocks: the innermost one counts. A counter may be entered again; it keeps adding.
    Its variables are made when it is first entered: enter it outside a ``tf.distribute``
    strategy's scope (the pipeline does), so that each process counts the passes of its own
    replicas, and after making a ``tf.distribute.MultiWorkerMirroredStrategy`` (which must precede
    every TensorFlow op of the program).
    """

    def __init__(self):
        self._variables = None
        self._tokens = []

    def _counters(self) -> dict:
        if self._variables is None:
            import tensorflow as tf

            with tf.init_scope():  # eager variables, even when first needed while tracing
                self._variables = {kind: tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{kind}_passes",
                                                     synchronization=tf.VariableSynchronization.ON_READ,
                                                     aggregation=tf.VariableAggregation.SUM)
                                   for kind in KINDS}
        return self._variables

    def __enter__(self) -> "PassCount":
        self._counters()
        self._tokens.append(_ACTIVE.set(self))
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._tokens.pop())

    def add(self, kind: str, examples):
        """Adds ``examples`` (an integer or a scalar tensor) to ``kind``'s count; returns the update."""
        import tensorflow as tf

        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}. You passed: {kind!r}")
        return self._counters()[kind].assign_add(tf.cast(examples, tf.int64), read_value=False)

    def totals(self) -> Dict[str, int]:
        """``{"forward": n, "backward": n, "jacobians": n}`` so far."""
        return {kind: int(variable.numpy()) for kind, variable in self._counters().items()}


def count_passes() -> PassCount:
    """A new :class:`PassCount`, to use as ``with count_passes() as passes:``."""
    return PassCount()


def count_forward(logits, inputs):
    """``logits`` of a network call on ``inputs``, counted: one forward pass per example now, and
    one backward pass per example whenever a gradient flows back through ``logits``. Outside an
    active :class:`PassCount` it returns ``logits`` itself (nothing is added to the graph)."""
    count = _ACTIVE.get()
    if count is None:
        return logits
    import tensorflow as tf

    examples = tf.shape(inputs)[0]
    count.add("forward", examples)

    @tf.custom_gradient
    def counted(z):
        def backward(upstream):
            with tf.control_dependencies([count.add("backward", examples)]):
                return tf.identity(upstream)

        return tf.identity(z), backward

    return counted(logits)


def count(kind: str, examples) -> None:
    """Adds ``examples`` to ``kind`` in the active block's counter (nothing outside a block)."""
    found = _ACTIVE.get()
    if found is not None:
        found.add(kind, examples)
