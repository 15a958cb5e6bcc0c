"""The attacks an evaluation runs: one interface for PGD with restarts and the AutoAttack suite.

:func:`tf_awt.evaluate` takes a list of :class:`AttackSuite` s (``attacks=[PGDSuite(restarts=5),
AutoAttackSuite()]``, or their names ``["pgd", "autoattack"]``). Each suite produces one or more
sets of adversarial inputs for all examples; an example counts as robust only if the model
classifies it correctly in *every* set of *every* suite (per-example worst case), and every set is
checked the same way (inside the ε-ball and the data range; inputs outside are not counted and
are reported). A new attack is a subclass with a ``name`` and :meth:`AttackSuite.adversarial_sets`.

TensorFlow and ART are imported inside the functions that use them.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["AttackSuite", "AttackContext", "PGDSuite", "AutoAttackSuite", "attack_suites", "register_attack_suite",
           "attack_suite_names"]


@dataclasses.dataclass(frozen=True)
class AttackContext:
    """What a suite attacks: the model's forward function (logits), the examples and the threat model.

    Attributes:
      forward: ``forward(x) -> logits`` (a tensor function, differentiable in x).
      x, y: the examples (numpy arrays) and their integer labels.
      attack: the :class:`~tf_awt.Attack` (norm, ε, data range; PGD's steps and step size).
      batch_size: examples per attack call.
      num_classes: the number of model outputs.
      strategy: a ``tf.distribute`` strategy or None.
      pgd_batch: the (possibly distributed) compiled PGD of ``attack`` on one batch.
    """

    forward: Callable
    x: np.ndarray
    y: np.ndarray
    attack: object
    batch_size: int
    num_classes: int
    strategy: object = None
    pgd_batch: Optional[Callable] = None


class AttackSuite(abc.ABC):
    """One way of attacking every example (see the module docstring)."""

    name: str = "suite"
    label: str = "suite"  # how messages name it

    @abc.abstractmethod
    def adversarial_sets(self, context: AttackContext) -> Iterator[np.ndarray]:
        """Yields arrays shaped like ``context.x``: adversarial inputs for every example."""

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class PGDSuite(AttackSuite):
    """PGD (``context.attack``: steps, step size, norm, ε) with ``restarts`` random restarts (default 5)."""

    name = "pgd"
    label = "PGD"

    def __init__(self, restarts: int = 5):
        from tf_awt import _validate

        self.restarts = _validate.integer(restarts, "restarts", low=1)

    def adversarial_sets(self, context: AttackContext) -> Iterator[np.ndarray]:
        for _ in range(self.restarts):
            parts = [context.pgd_batch(context.x[i:i + context.batch_size], context.y[i:i + context.batch_size]).numpy()
                     for i in range(0, len(context.x), context.batch_size)]
            yield np.concatenate(parts) if parts else context.x.copy()


class AutoAttackSuite(AttackSuite):
    """AutoAttack (APGD-CE, APGD-DLR, Square; through ART, :mod:`tf_awt.adversarial.autoattack`) at
    ``context.attack``'s norm and ε.

    Args:
      square_queries: Square attack iterations (default 1000).
      apgd_iterations: iterations of each APGD attack (default 100).
      apgd_restarts: random restarts of each APGD attack (default 5).
    """

    name = "autoattack"
    label = "AutoAttack"

    def __init__(self, square_queries: int = 1000, apgd_iterations: int = 100, apgd_restarts: int = 5):
        from tf_awt import _validate

        self.square_queries = _validate.integer(square_queries, "square_queries", low=1)
        self.apgd_iterations = _validate.integer(apgd_iterations, "apgd_iterations", low=1)
        self.apgd_restarts = _validate.integer(apgd_restarts, "apgd_restarts", low=1)

    def adversarial_sets(self, context: AttackContext) -> Iterator[np.ndarray]:
        if context.attack.eps <= 0:
            return
        from tf_awt.adversarial.autoattack import autoattack

        yield autoattack(context.forward, context.x, context.y, context.attack, context.num_classes,
                         batch_size=context.batch_size, square_queries=self.square_queries,
                         apgd_iterations=self.apgd_iterations, apgd_restarts=self.apgd_restarts)


_BY_NAME = {"pgd": lambda restarts, square_queries: PGDSuite(restarts),
            "autoattack": lambda restarts, square_queries: AutoAttackSuite(square_queries)}
"""The suite registry: a name -> how :func:`attack_suites` builds it from ``restarts`` and ``square_queries``."""


def register_attack_suite(name: str, make: Callable[[int, int], AttackSuite]) -> None:
    """Registers (or replaces) the attack suite ``name``: ``evaluate(..., attacks=[name])`` then runs
    ``make(restarts, square_queries)``, which returns an :class:`AttackSuite` whose ``name`` is ``name``
    (like :func:`tf_awt.register_method` for ticket methods)."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"an attack suite name is letters, digits, '_' and '-'. You passed: {name!r}")
    if not callable(make):
        raise ValueError(f"make must be a callable make(restarts, square_queries) -> AttackSuite. You passed: {make!r}")
    _BY_NAME[name] = make


def attack_suite_names() -> Tuple[str, ...]:
    """The registered attack suites' names, built-in first."""
    return tuple(_BY_NAME)


def attack_suites(attacks: Sequence[Union[str, AttackSuite]], restarts: int = 5, square_queries: int = 1000):
    """``attacks`` as suite objects: names ("pgd", "autoattack") become suites with ``restarts`` /
    ``square_queries``; suite objects are kept. The list must be non-empty and hold each name once."""
    if isinstance(attacks, (str, AttackSuite)) or not attacks:
        raise ValueError(f"attacks must be a non-empty list of {sorted(_BY_NAME)} or AttackSuite objects. You passed: {attacks!r}")
    suites = []
    for item in attacks:
        if isinstance(item, AttackSuite):
            suites.append(item)
        elif isinstance(item, str) and item in _BY_NAME:
            suite = _BY_NAME[item](restarts, square_queries)
            if not isinstance(suite, AttackSuite) or suite.name != item:
                raise ValueError(f"the attack suite registered as {item!r} must make an AttackSuite named {item!r}. "
                                 f"It made: {suite!r}")
            suites.append(suite)
        else:
            raise ValueError(f"attacks must name {sorted(_BY_NAME)} or be AttackSuite objects. You passed: {item!r}")
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise ValueError(f"attacks must not repeat a suite (robust accuracy is reported per name). You passed: {names}")
    return suites
