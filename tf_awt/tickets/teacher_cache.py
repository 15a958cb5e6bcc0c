r"""Teacher work done once (``search.teacher_cache``): the frozen teacher's X̃0 and f_θ0(X̃0) per example.

The teacher :math:`f_{\theta_0}` never changes during a search, so its PGD inputs
:math:`\tilde X_0` and its logits on them depend only on the example, the attack and the random
start. Every search step pays for them anyway (the teacher's PGD is about half of the attacks'
share of a step, issue 41's profile). With the cache, the search attacks each training example
once, exactly as its first epoch would, and reuses those inputs in every later epoch:

1. before ``fit``, the first epoch's batches (the order of the stateless seed ``[seed, 0]``,
   :func:`tf_awt.checkpoint.epoch_batches`) are replayed through the teacher alone, batch ``t``
   attacked with the search's own stateless start ``[2·seed, t]``: the X̃0 and f_θ0(X̃0) of
   epoch 1 of an uncached search, held per example in memory (two non-trainable variables, the
   training inputs' size plus N·k logits);
2. every search step reads its batch's rows by index (the batches carry each example's index)
   instead of attacking the teacher.

So the first epoch *is* the uncached search's (same inputs, same ticket after one epoch); from
the second epoch on the teacher's random starts are the first epoch's instead of fresh ones. That
is a different draw of the same search, not a different search (checked in docs/search.md: mask
overlap with the uncached search against the overlap of two seeds). A resumed search rebuilds the
cache by the same replay, so it continues the uninterrupted one exactly; the cache is built from
the search's own data, seed and attack every time and lives only as long as the search, so it
cannot go stale. The student's side (its PGD, its kernel) and the teacher's kernel
:math:`\Theta_0(X, \tilde X_0)` (a function of the batch's pairs and, sketched, of the step's
probes) are computed at every step as before.

Array data only: a ``tf.data.Dataset`` has no stable example index.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import tensorflow as tf

from tf_awt.adversarial.attacks import Attack, pgd

__all__ = ["TeacherCache"]


class TeacherCache:
    """The teacher's first-epoch X̃0 and f_θ0(X̃0), one row per training example.

    Build it with :meth:`replay`; :meth:`lookup` reads a batch's rows by index (in a
    ``tf.function``, under a ``tf.distribute`` strategy too: the variables are only read).

    Args:
      inputs: (N, ...) the teacher's PGD inputs, in example order.
      logits: (N, k) the teacher's logits on them.
    """

    def __init__(self, inputs: np.ndarray, logits: np.ndarray):
        if len(inputs) != len(logits):
            raise ValueError(f"a teacher cache needs one row of logits per input. You passed {len(inputs)} inputs "
                             f"and {len(logits)} rows of logits")
        self.inputs = tf.Variable(inputs, trainable=False, name="teacher_inputs")
        self.logits = tf.Variable(logits, trainable=False, name="teacher_logits")

    @classmethod
    def replay(cls, teacher, first_epoch, seed: int, attack: Attack, dtype=tf.float32) -> "TeacherCache":
        """Attacks ``teacher`` on the first epoch's batches as the search would.

        Args:
          teacher: the frozen dense model at θ0.
          first_epoch: the search's first-epoch batches ``(x, y, index)``, in order
            (:func:`tf_awt.checkpoint.epoch_batches` with ``with_index=True``); every example once.
          seed: ``SearchConfig.seed``: the teacher's PGD start of step t is ``[2·seed, t]``
            (:meth:`TicketSearch._adversarial_inputs`).
          attack: the teacher's attack (``SearchConfig.effective_attack``).
          dtype: the student's dtype (the search casts its inputs to it).
        """

        @tf.function
        def attack_batch(xb, yb, step):
            xb = tf.cast(xb, dtype)
            x_adv = pgd(lambda z: teacher(z, training=False), xb, yb, attack,
                        seed=tf.stack([tf.constant(2 * int(seed), tf.int64), step]))
            return x_adv, teacher(x_adv, training=False)

        rows, inputs, logits = [], [], []
        for step, (xb, yb, index) in enumerate(first_epoch):
            x_adv, f = attack_batch(xb, yb, tf.constant(step, tf.int64))
            rows.append(index.numpy()), inputs.append(x_adv.numpy()), logits.append(f.numpy())
        rows = np.concatenate(rows)
        order = np.argsort(rows)
        if not np.array_equal(rows[order], np.arange(len(rows))):
            raise ValueError(f"a teacher cache replays one epoch holding every example once. The batches held {len(rows)} "
                             f"rows with indices {np.unique(rows).size} distinct, from {rows.min()} to {rows.max()}")
        return cls(np.concatenate(inputs)[order], np.concatenate(logits)[order])

    def lookup(self, index) -> Tuple[tf.Tensor, tf.Tensor]:
        """(X̃0, f_θ0(X̃0)) of the examples ``index`` (a batch's indices)."""
        return tf.gather(self.inputs, index), tf.gather(self.logits, index)
