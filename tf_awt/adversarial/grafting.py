r"""Network grafting (Gu et al., 2020; the paper's Figure 9): do two networks compute alike, layer by layer?

If a ticket trains like its dense network, then at any epoch t the first l layers of one should
feed the remaining layers of the other without a large rise in error. For two networks A and B of
one architecture, :func:`grafted` builds :math:`A_{\le l} \circ B_{> l}`: the layers up to the
l-th prunable layer (Dense, Conv2D; with the weightless layers after it, up to the next prunable
one) from A, the rest from B. :func:`graft_errors` measures, for every boundary l and both
directions, the natural and adversarial error of the grafted network against the better of the two
originals:

.. math::  \Delta_{l}(A \to B) = \mathrm{err}(A_{\le l} \circ B_{> l}) - \min(\mathrm{err}(A), \mathrm{err}(B))

(adversarial error: PGD against the grafted network itself, the ``attack`` given). A network
grafted onto itself gives exactly 0; onto an unrelated one (another initialization) a large
increase. A pruned network is grafted through its stripped copy (m ⊙ W in plain layers).

Against the better original, a network that trains badly makes every graft look bad: its own gap
:math:`|\mathrm{err}(A) - \mathrm{err}(B)|` is in every Δ. :meth:`GraftErrors.mean_above_worse`
is the part its own error does not explain,
:math:`\mathrm{err}(A_{\le l} \circ B_{> l}) - \max(\mathrm{err}(A), \mathrm{err}(B))`.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from tf_awt.adversarial.attacks import Attack, pgd
from tf_awt.engine import _layers, layer_rules

__all__ = ["grafted", "graft_errors", "GraftErrors"]


def _plain(model):
    """``model`` without tfmot wrappers (the kernels m ⊙ W)."""
    if any(_layers.is_prune_wrapper(layer) for layer in _layers.iter_layers(model)):
        from tf_awt import _internals

        return _internals.strip_pruning(model)
    return model


def boundaries(model) -> List[str]:
    """The names of the prunable layers after which a graft can cut (every one but the last)."""
    return [layer.name for layer in layer_rules.prunable_layers(_plain(model))][:-1]


def cut_index(model, boundary: int) -> int:
    """The position in ``model.layers`` of the first layer after the ``boundary``-th (1-based) cut: the
    prunable layer after the ``boundary``-th one (``model`` plain, as :func:`grafted` makes it)."""
    names = [layer.name for layer in layer_rules.prunable_layers(model)]
    if not 1 <= boundary < len(names):
        raise ValueError(f"boundary must be in [1, {len(names) - 1}] (a cut after one of {names[:-1]}). You passed: {boundary!r}")
    return [layer.name for layer in model.layers].index(names[boundary])


def grafted(front, back, boundary: int):
    """A plain copy of ``back``'s architecture whose layers up to (not including) the prunable layer
    after the ``boundary``-th (1-based) carry ``front``'s weights, the rest ``back``'s."""
    front, back = _plain(front), _plain(back)
    cut = cut_index(back, boundary)  # the first layer of the back part
    model = tf_keras.models.clone_model(back)
    for i, layer in enumerate(model.layers):  # by position: the same architecture, maybe under other names
        layer.set_weights((front if i < cut else back).layers[i].get_weights())
    return model


def _errors(model, x, y, attack: Optional[Attack], seed: int):
    logits = model(x, training=False)
    natural = float(np.mean(np.argmax(logits, -1) != y))
    if attack is None or attack.eps == 0:
        return natural, natural
    x_adv = pgd(lambda z: model(z, training=False), x, tf.constant(y), attack, seed=tf.constant([seed, 0], tf.int64))
    return natural, float(np.mean(np.argmax(model(x_adv, training=False), -1) != y))


@dataclasses.dataclass(frozen=True)
class GraftErrors:
    """The grafts of one pair of networks (one epoch).

    Attributes:
      boundaries: the prunable layers after which each graft cuts.
      originals: {"a"/"b": (natural error, adversarial error)} of the two networks.
      increase: {"a_to_b"/"b_to_a": {"natural"/"adversarial": [Δ per boundary]}}; "a_to_b" is A's
        front on B's back.
    """

    boundaries: List[str]
    originals: Dict[str, tuple]
    increase: Dict[str, Dict[str, List[float]]]

    def mean_increase(self, kind: str = "natural") -> float:
        """The mean Δ (error above the better original) over both directions and every boundary."""
        return float(np.mean([v for d in self.increase.values() for v in d[kind]]))

    def mean_above_worse(self, kind: str = "natural") -> float:
        """The mean error above the *worse* original: Δ − |err(A) − err(B)| (module docstring)."""
        k = ("natural", "adversarial").index(kind)
        return self.mean_increase(kind) - abs(self.originals["a"][k] - self.originals["b"][k])


def graft_errors(a, b, data, attack: Optional[Attack] = None, seed: int = 0) -> GraftErrors:
    """Both directions' grafts of networks ``a`` and ``b`` at every boundary, on ``data`` = (x, y)
    (module docstring); ``attack`` None or ε = 0: the adversarial error is the natural one."""
    x, y = tf.constant(np.asarray(data[0])), np.asarray(data[1])
    originals = {"a": _errors(_plain(a), x, y, attack, seed), "b": _errors(_plain(b), x, y, attack, seed)}
    best = [min(originals["a"][k], originals["b"][k]) for k in (0, 1)]
    names = boundaries(b)
    increase = {}
    for direction, (front, back) in (("a_to_b", (a, b)), ("b_to_a", (b, a))):
        rows = [_errors(grafted(front, back, i), x, y, attack, seed) for i in range(1, len(names) + 1)]
        increase[direction] = {kind: [r[k] - best[k] for r in rows] for k, kind in enumerate(("natural", "adversarial"))}
    return GraftErrors(names, originals, increase)
