"""The attacks an evaluation runs, and their registry: PGD with restarts and the standard AutoAttack.

:func:`tf_awt.evaluate` takes a list of :class:`AttackSuite` objects or registered names. The
names are :data:`PRESETS` (``"autoattack"``: APGD-CE, APGD-T, FAB-T and Square, the standard
AutoAttack) or single suites (:func:`attack_suite_names`):

========================  =================================================================
``pgd``                   PGD (the evaluation's steps, step 2.5ε/steps) with ``restarts`` random starts
``apgd-ce``               APGD with cross-entropy, ``apgd_iterations`` (100), one restart (:mod:`.apgd`)
``apgd-t``                APGD with the targeted DLR loss, 9 target classes, 100 iterations each
``fab-t``                 the targeted FAB attack, L∞, 9 target classes, 100 iterations each (:mod:`.fab`)
``square``                the black-box Square attack, L∞, ``square_queries`` (5,000) (:mod:`.square`)
``art-autoattack``        ART's AutoAttack (APGD-CE, APGD-DLR, Square): the independent cross-check
========================  =================================================================

The suites run in order, AutoAttack's way: each attacks only the examples that every earlier suite
left correctly classified, and an example counts as robust only if it survives every adversarial
set of every suite (the per-example worst case). ``result.suites`` is the robust accuracy after
each suite (so the first is PGD's own figure, the last the worst case) and ``result.broken_by`` the
share of the examples that each suite was the first to break. Every set is checked the same way
(inside the ε-ball and the data range; inputs outside are not counted and are reported).

A new attack is a subclass with a ``name`` and :meth:`AttackSuite.adversarial_sets`, registered
with :func:`register_attack_suite` (``make(config)`` builds it from an :class:`~tf_awt.EvalConfig`).

TensorFlow and ART are imported inside the functions that use them: a recipe's ``eval.attacks`` is
checked without them.
"""
from __future__ import annotations

import abc
import dataclasses
import zlib
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["AttackSuite", "AttackContext", "PGDSuite", "APGDSuite", "FABSuite", "SquareSuite", "ARTAutoAttackSuite", "attack_suites",
           "register_attack_suite", "attack_suite_names", "PRESETS", "expand_attack_names"]

PRESETS = {"autoattack": ("apgd-ce", "apgd-t", "fab-t", "square")}
"""Names that stand for several suites. ``autoattack`` is Croce & Hein's standard version: APGD-CE,
APGD-T, FAB-T and Square, in that order (under L2, without the L∞-only FAB-T and Square here)."""


@dataclasses.dataclass(frozen=True)
class AttackContext:
    """What a suite attacks: the model's forward function (logits), the examples and the threat model.

    Attributes:
      forward: ``forward(x) -> logits`` (a tensor function, differentiable in x).
      x, y: the examples still to attack (numpy arrays) and their integer labels.
      attack: the :class:`~tf_awt.Attack` (norm, ε, data range; PGD's steps and step size).
      batch_size: examples per attack call.
      num_classes: the number of model outputs.
      strategy: a ``tf.distribute`` strategy or None (PGD only; the others run on one device).
      pgd_batch: the (possibly distributed) compiled PGD of ``attack`` on one batch.
      index: each example's position in the evaluation set (default None: 0, 1, ...).
      seed: the evaluation's seed: every random start derives from it.
      done: called with the number of examples each attack call finished (progress display;
        default None: nothing is told).
    """

    forward: Callable
    x: np.ndarray
    y: np.ndarray
    attack: object
    batch_size: int
    num_classes: int
    strategy: object = None
    pgd_batch: Optional[Callable] = None
    index: Optional[np.ndarray] = None
    seed: int = 0
    done: Optional[Callable[[int], None]] = None

    def tick(self, examples: int) -> None:
        """``examples`` more attacked (one attack call): told to :attr:`done`."""
        if self.done is not None:
            self.done(int(examples))

    def subset(self, keep: np.ndarray) -> "AttackContext":
        """The same context on the examples where ``keep`` is True."""
        index = np.arange(len(self.x)) if self.index is None else self.index
        return dataclasses.replace(self, x=self.x[keep], y=self.y[keep], index=index[keep])

    @property
    def clip(self) -> Tuple[float, float]:
        lo, hi = self.attack.clip_min, self.attack.clip_max
        return (-np.inf if lo is None else float(lo)), (np.inf if hi is None else float(hi))


class AttackSuite(abc.ABC):
    """One way of attacking every example (see the module docstring)."""

    name: str = "suite"
    label: str = "suite"  # how messages name it
    black_box: bool = False  # uses no gradient: breaking what gradient attacks missed means masking
    norms: Tuple[str, ...] = ("linf", "l2")  # the threat models it attacks; an evaluation in another leaves it out

    @abc.abstractmethod
    def adversarial_sets(self, context: AttackContext) -> Iterator[np.ndarray]:
        """Yields arrays shaped like ``context.x``: adversarial inputs for every example."""

    def describe(self, attack) -> str:
        """What ran, for labels: e.g. ``PGD-100 ×5``."""
        return self.label

    def for_classes(self, num_classes: int) -> "AttackSuite":
        """The suite as it runs on a model with ``num_classes`` outputs (its label then says what
        ran). Default: itself."""
        return self

    def work(self, context: AttackContext) -> int:
        """The examples the suite attacks at most, counted once per run (restarts, targets): what
        :meth:`AttackContext.tick` counts up to. Default ``len(context.x)``, one run."""
        return len(context.x)

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _batches(context: AttackContext):
    for start in range(0, len(context.x), context.batch_size):
        yield start, context.x[start:start + context.batch_size], context.y[start:start + context.batch_size]


def _stream(name: str) -> int:
    return zlib.crc32(name.encode()) % (2**31 - 1)


def _top_targets(context: AttackContext, count: int):
    """Per run, each example's target class: the ``count`` highest clean logits after the top one."""
    import tensorflow as tf

    logits = np.concatenate([context.forward(tf.constant(xb)).numpy() for _, xb, _ in _batches(context)])
    order = np.argsort(-logits, axis=1, kind="stable")
    return [order[:, k].astype(np.int32) for k in range(1, min(count, context.num_classes - 1) + 1)]


class PGDSuite(AttackSuite):
    """PGD (``context.attack``: steps, step size, norm, ε) with ``restarts`` random restarts (default 5)."""

    name = "pgd"
    label = "PGD"

    def __init__(self, restarts: int = 5):
        from tf_awt import _validate

        self.restarts = _validate.integer(restarts, "restarts", low=1)

    def describe(self, attack) -> str:
        return f"PGD-{attack.steps} ×{self.restarts}"

    def work(self, context: AttackContext) -> int:
        return self.restarts * len(context.x)

    def adversarial_sets(self, context: AttackContext) -> Iterator[np.ndarray]:
        for _ in range(self.restarts):
            parts = []
            for _, xb, yb in _batches(context):
                parts.append(context.pgd_batch(xb, yb).numpy())
                context.tick(len(xb))
            yield np.concatenate(parts) if parts else context.x.copy()


class _Compiled(AttackSuite):
    """A suite whose attack is one compiled batch function ``run(xb, yb, seed, target) -> (adv, fooled)``."""

    def _compile(self, context: AttackContext):
        raise NotImplementedError

    def _targets(self, context: AttackContext):
        """Per example, the target class of each run (one untargeted run: the labels)."""
        return [context.y]

    def adversarial_sets(self, context: AttackContext) -> Iterator[np.ndarray]:
        import tensorflow as tf

        if context.attack.eps <= 0 or not len(context.x):
            return
        # one trace for every batch size (the examples left shrink from run to run)
        signature = [tf.TensorSpec((None,) + context.x.shape[1:], tf.as_dtype(context.x.dtype)),
                     tf.TensorSpec((None,), tf.as_dtype(context.y.dtype)), tf.TensorSpec((2,), tf.int64),
                     tf.TensorSpec((None,), tf.as_dtype(context.y.dtype))]
        run = tf.function(self._compile(context), input_signature=signature)
        adv, fooled = context.x.copy(), np.zeros(len(context.x), bool)
        for k, targets in enumerate(self._targets(context)):
            left = np.flatnonzero(~fooled)
            for start in range(0, len(left), context.batch_size):
                rows = left[start:start + context.batch_size]
                seed = tf.constant([context.seed, _stream(self.name) + 7919 * k + int(rows[0])], tf.int64)
                out, hit = run(tf.constant(context.x[rows]), tf.constant(context.y[rows]), seed,
                                tf.constant(np.asarray(targets[rows]).astype(context.y.dtype)))
                adv[rows], fooled[rows] = out.numpy(), hit.numpy()
                context.tick(len(rows))
        yield adv


class APGDSuite(_Compiled):
    """APGD (:mod:`tf_awt.adversarial.apgd`): ``loss="ce"`` is APGD-CE, ``"dlr-targeted"`` APGD-T.

    Args:
      loss: "ce" (default) or "dlr-targeted".
      iterations: iterations per run (default 100, the standard AutoAttack's).
      restarts: runs of APGD-CE from new random starts (default 1); APGD-T runs once per target.
      targets: APGD-T's target classes, the highest clean logits after the top one (default 9;
        at most the number of classes less one).
    """

    def __init__(self, loss: str = "ce", iterations: int = 100, restarts: int = 1, targets: int = 9):
        from tf_awt import _validate
        from tf_awt.adversarial.apgd import LOSSES

        if loss not in LOSSES:
            raise ValueError(f"APGD loss must be one of {LOSSES}. You passed: {loss!r}")
        self.loss = loss
        self.iterations = _validate.integer(iterations, "apgd iterations", low=1)
        self.restarts = _validate.integer(restarts, "apgd restarts", low=1)
        self.targets = _validate.integer(targets, "apgd targets", low=1)
        self.name, self.label = ("apgd-ce", "APGD-CE") if loss == "ce" else ("apgd-t", "APGD-T")

    def describe(self, attack) -> str:
        runs = f" ×{self.targets} targets" if self.loss != "ce" else (f" ×{self.restarts}" if self.restarts > 1 else "")
        return f"{self.label}-{self.iterations}{runs}"

    def for_classes(self, num_classes: int) -> "APGDSuite":
        """APGD-T has at most ``num_classes - 1`` targets: with fewer classes than targets + 1, a copy
        that says so (``APGD-T-100 ×2 targets`` on three classes)."""
        if self.loss == "ce" or self.targets <= num_classes - 1:
            return self
        return APGDSuite(self.loss, self.iterations, self.restarts, max(num_classes - 1, 1))

    def work(self, context: AttackContext) -> int:
        runs = self.restarts if self.loss == "ce" else min(self.targets, context.num_classes - 1)
        return runs * len(context.x)

    def _targets(self, context: AttackContext):
        if self.loss == "ce":
            return [context.y] * self.restarts
        return _top_targets(context, self.targets)

    def _compile(self, context: AttackContext):
        from tf_awt.adversarial.apgd import apgd

        a = context.attack
        return lambda xb, yb, seed, target: apgd(context.forward, xb, yb, eps=a.eps, norm=a.norm, clip=context.clip,
                                                 iterations=self.iterations, seed=seed, loss=self.loss, target=target,
                                                 num_classes=context.num_classes)


class FABSuite(_Compiled):
    """The targeted FAB attack, L∞ (:mod:`tf_awt.adversarial.fab`): the closest misclassified point
    found, counted when within ε.

    Args:
      iterations: iterations per target (default 100, the standard AutoAttack's).
      targets: the target classes, the highest clean logits after the top one (default 9; at most
        the number of classes less one).
    """

    name = "fab-t"
    label = "FAB-T"
    norms = ("linf",)

    def __init__(self, iterations: int = 100, targets: int = 9):
        from tf_awt import _validate

        self.iterations = _validate.integer(iterations, "fab iterations", low=1)
        self.targets = _validate.integer(targets, "fab targets", low=1)

    def describe(self, attack) -> str:
        return f"FAB-T-{self.iterations} ×{self.targets} targets"

    def for_classes(self, num_classes: int) -> "FABSuite":
        """At most ``num_classes - 1`` targets (the label then says how many ran)."""
        return self if self.targets <= num_classes - 1 else FABSuite(self.iterations, max(num_classes - 1, 1))

    def work(self, context: AttackContext) -> int:
        return min(self.targets, context.num_classes - 1) * len(context.x)

    def _targets(self, context: AttackContext):
        return _top_targets(context, self.targets)

    def _compile(self, context: AttackContext):
        from tf_awt.adversarial.fab import fab_targeted

        return lambda xb, yb, seed, target: fab_targeted(context.forward, xb, yb, target, eps=context.attack.eps,
                                                         clip=context.clip, iterations=self.iterations)


class SquareSuite(_Compiled):
    """The Square attack, L∞ (:mod:`tf_awt.adversarial.square`); black-box.

    Args:
      queries: model queries per example (default 5,000, the standard AutoAttack's).
      max_examples: attack only the first this many examples of the evaluation set (default None:
        all); the output says so.
      p_init: the initial share of pixels changed (default 0.8).
    """

    name = "square"
    label = "Square"
    black_box = True
    norms = ("linf",)

    def __init__(self, queries: int = 5000, max_examples: Optional[int] = None, p_init: float = 0.8):
        from tf_awt import _validate

        self.queries = _validate.integer(queries, "square queries", low=1)
        self.max_examples = None if max_examples is None else _validate.integer(max_examples, "square max_examples", low=1)
        self.p_init = _validate.real(p_init, "square p_init", low=0, low_open=True, high=1)

    def describe(self, attack) -> str:
        subset = f" on the first {self.max_examples} examples" if self.max_examples is not None else ""
        return f"Square-{self.queries}{subset}"

    def work(self, context: AttackContext) -> int:
        if self.max_examples is None:
            return len(context.x)
        index = np.arange(len(context.x)) if context.index is None else context.index
        return int((index < self.max_examples).sum())

    def adversarial_sets(self, context: AttackContext) -> Iterator[np.ndarray]:
        if context.attack.norm != "linf":
            raise ValueError(f"the square suite attacks L∞ only. You passed norm {context.attack.norm!r}: "
                             "leave square out of eval.attacks (attacks: [pgd, apgd-ce, apgd-t])")
        if self.max_examples is None:
            yield from super().adversarial_sets(context)
            return
        index = np.arange(len(context.x)) if context.index is None else context.index
        chosen = index < self.max_examples
        adv = context.x.copy()
        for found in super().adversarial_sets(context.subset(chosen)):
            adv[chosen] = found
        yield adv

    def _compile(self, context: AttackContext):
        from tf_awt.adversarial.square import square_linf

        return lambda xb, yb, seed, target: square_linf(context.forward, xb, yb, eps=context.attack.eps, clip=context.clip,
                                                        queries=self.queries, seed=seed, p_init=self.p_init)


class ARTAutoAttackSuite(AttackSuite):
    """ART's AutoAttack (APGD-CE, APGD-DLR, Square; :mod:`tf_awt.adversarial.autoattack`): the
    independent cross-check of the native suites, not a default.

    Args:
      square_queries: Square attack iterations (default 1000).
      apgd_iterations: iterations of each APGD attack (default 100).
      apgd_restarts: random restarts of each APGD attack (default 5).
    """

    name = "art-autoattack"
    label = "ART AutoAttack"

    def __init__(self, square_queries: int = 1000, apgd_iterations: int = 100, apgd_restarts: int = 5):
        from tf_awt import _validate

        self.square_queries = _validate.integer(square_queries, "square_queries", low=1)
        self.apgd_iterations = _validate.integer(apgd_iterations, "apgd_iterations", low=1)
        self.apgd_restarts = _validate.integer(apgd_restarts, "apgd_restarts", low=1)

    def adversarial_sets(self, context: AttackContext) -> Iterator[np.ndarray]:
        if context.attack.eps <= 0 or not len(context.x):
            return
        from tf_awt.adversarial.autoattack import autoattack

        adv = autoattack(context.forward, context.x, context.y, context.attack, context.num_classes,
                         batch_size=context.batch_size, square_queries=self.square_queries,
                         apgd_iterations=self.apgd_iterations, apgd_restarts=self.apgd_restarts)
        context.tick(len(context.x))  # ART runs every example in one call
        yield adv


_BY_NAME = {
    "pgd": lambda config: PGDSuite(config.restarts),
    "apgd-ce": lambda config: APGDSuite("ce", config.apgd_iterations),
    "apgd-t": lambda config: APGDSuite("dlr-targeted", config.apgd_iterations),
    "fab-t": lambda config: FABSuite(config.fab_iterations),
    "square": lambda config: SquareSuite(config.square_queries, config.square_examples),
    "art-autoattack": lambda config: ARTAutoAttackSuite(),
}
"""The suite registry: a name -> how :func:`attack_suites` builds it from an :class:`~tf_awt.EvalConfig`."""


def register_attack_suite(name: str, make: Callable[[object], AttackSuite]) -> None:
    """Registers (or replaces) the attack suite ``name``: ``evaluate(..., attacks=[name])`` (and a
    recipe's ``eval.attacks``) then runs ``make(config)``, which gets the evaluation's
    :class:`~tf_awt.EvalConfig` and returns an :class:`AttackSuite` whose ``name`` is ``name``
    (like :func:`tf_awt.register_method` for ticket methods)."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name) or name in PRESETS:
        raise ValueError(f"an attack suite name is letters, digits, '_' and '-', and not a preset {sorted(PRESETS)}. "
                         f"You passed: {name!r}")
    if not callable(make):
        raise ValueError(f"make must be a callable make(config) -> AttackSuite. You passed: {make!r}")
    _BY_NAME[name] = make


def attack_suite_names() -> Tuple[str, ...]:
    """The registered attack suites' names, built-in first (the presets are :data:`PRESETS`)."""
    return tuple(_BY_NAME)


def expand_attack_names(attacks: Sequence) -> Tuple:
    """``attacks`` with each preset name replaced by its suites; a ValueError names an unknown name
    or a repeated suite. Suite objects pass through."""
    if isinstance(attacks, (str, AttackSuite)) or not isinstance(attacks, (list, tuple)) or not attacks:
        raise ValueError(f"attacks must be a non-empty list of {sorted(PRESETS)}, {list(_BY_NAME)} or AttackSuite objects. "
                         f"You passed: {attacks!r}")
    out = []
    for item in attacks:
        if isinstance(item, str) and item in PRESETS:
            out.extend(PRESETS[item])
        elif isinstance(item, AttackSuite) or (isinstance(item, str) and item in _BY_NAME):
            out.append(item)
        else:
            raise ValueError(f"attacks must name {sorted(PRESETS)} or {list(_BY_NAME)}, or be AttackSuite objects. "
                             f"You passed: {item!r}")
    names = [getattr(item, "name", item) for item in out]
    if len(set(names)) != len(names):
        raise ValueError(f"attacks must not repeat a suite (robust accuracy is reported per name). You passed: {names}")
    return tuple(out)


def attack_suites(attacks: Sequence[Union[str, AttackSuite]], config):
    """``attacks`` as suite objects: names (and presets) become suites built from ``config`` (an
    :class:`~tf_awt.EvalConfig`, which validates its names through :func:`expand_attack_names`, so
    this module does not import it); suite objects are kept."""
    suites = []
    for item in expand_attack_names(attacks):
        if isinstance(item, AttackSuite):
            suites.append(item)
            continue
        suite = _BY_NAME[item](config)
        if not isinstance(suite, AttackSuite) or suite.name != item:
            raise ValueError(f"the attack suite registered as {item!r} must make an AttackSuite named {item!r}. "
                             f"It made: {suite!r}")
        suites.append(suite)
    return suites
