"""Robustness evaluation that checks itself.

``evaluate(model, data)`` measures natural accuracy and robust accuracy. By default the attacks are
PGD (the paper's PGD-100 with step 2.5ε/100, 5 random restarts) and then the standard AutoAttack
(APGD-CE, APGD-T, FAB-T, Square; native, :mod:`tf_awt.adversarial.attack_suites`), each run on the examples
that the earlier ones left correctly classified. An example counts as robust only if it survives
every attack (the per-example worst case); ``result.attack_label`` names what ran, and
``config=EvalConfig(attacks=("pgd",))`` gives the paper's PGD-only figure, labelled so. Every evaluation also runs
sanity checks and reports failures as warnings (and in ``result.warnings``):

* ε = 0 through the same attack code gives the natural accuracy;
* robust accuracy ≤ natural accuracy;
* every adversarial input lies within the ε-ball (L∞ or L2) and the data range;
* twice the PGD steps on a subset neither raises nor lowers robust accuracy beyond binomial noise;
* a later suite does not break more than noise allows of what the first (PGD) left robust, and a
  black-box suite (Square) does not break what every gradient attack missed (gradient masking);
* when the standard suites were not all asked for, the missing ones run on the check subset, and
  the same gap is reported (so a PGD-only evaluation of a masked network warns);
* at ε as large as the data range, PGD brings accuracy down to about the largest class share;
* input gradients of the loss are non-zero (zero gradients are a sign of gradient masking).

The model must output logits: an output that looks like probabilities (a softmax layer, or
non-negative rows summing to one) is refused with a ValueError.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from tf_awt import _internals
from tf_awt.adversarial.attack_suites import PRESETS, AttackContext, PGDSuite, attack_suites
from tf_awt.adversarial.attacks import Attack, pgd
from tf_awt.adversarial.phase_config import EvalConfig
from tf_awt.paper import attack_numbers
from tf_awt.engine._masks import sparse_forward
from tf_awt.keras3 import as_tf_keras
from tf_awt import _validate
from tf_awt._distribute import all_gather_rows

__all__ = ["EvaluationResult", "evaluate", "evaluation_attack"]


def evaluation_attack(eps: Optional[float] = None, norm: str = "linf", steps: Optional[int] = None) -> Attack:
    """The paper's evaluation attack: PGD-``steps`` (default 100) with step 2.5·ε/steps, random
    start, ε = 0.3 by default (:data:`tf_awt.paper.ATTACKS`)."""

    default_eps, default_steps, _ = attack_numbers("eval")
    return Attack(norm=norm, eps=default_eps if eps is None else eps, steps=default_steps if steps is None else steps,
                  step_size=None)


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Accuracies (fractions in [0, 1]) and what the sanity checks found."""

    natural_accuracy: float
    robust_accuracy: float
    """The per-example worst case over every suite in ``attacks`` (:attr:`attack_label` names them)."""
    per_class: Dict[int, Dict[str, float]]
    num_examples: int
    attack: Dict[str, object]
    restarts: int
    warnings: List[str]
    suites: Dict[str, float] = dataclasses.field(default_factory=dict)
    """Robust accuracy after each suite, in the order they ran (AutoAttack's convention: the first
    is the first suite's own figure, the last equals ``robust_accuracy``)."""
    zero_gradient_fraction: Optional[float] = None
    """Share of the checked examples whose input gradient is all zero (a dead network, or
    gradient masking); None when not measured (ε = 0)."""
    broken_by: Dict[str, float] = dataclasses.field(default_factory=dict)
    """Share of all examples that each suite was the first to misclassify."""
    attacks: List[str] = dataclasses.field(default_factory=list)
    """What ran, in order: e.g. ``["PGD-100 ×5", "APGD-CE-100", "APGD-T-100 ×9 targets", "Square-5000"]``."""
    seconds: Dict[str, float] = dataclasses.field(default_factory=dict)
    """Wall-clock seconds of each suite (on the examples still robust when it ran) and of the
    sanity checks (``"checks"``)."""

    @property
    def pgd_only(self) -> bool:
        return len(self.suites) == 1 and "pgd" in self.suites

    @property
    def attack_label(self) -> str:
        """How a printed robust accuracy names its attacks: ``PGD-only (PGD-100 ×5)`` or
        ``worst case of PGD-100 ×5, APGD-CE-100, ...``."""
        what = ", ".join(self.attacks) or "no attack"
        if self.pgd_only:
            return f"PGD-only ({what})"
        return f"worst case of {what}" if len(self.attacks) > 1 else what

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EvaluationResult":
        """The inverse of :meth:`to_dict`, also after a JSON round trip (class keys back to ints)."""
        data = dict(data)
        data["per_class"] = {int(c): dict(v) for c, v in data.get("per_class", {}).items()}
        return cls(**data)


def _forward(model):
    return lambda z: sparse_forward(model, z)


def _outputs_probabilities(model, x) -> bool:
    last = model.layers[-1] if getattr(model, "layers", None) else None
    inner = getattr(last, "layer", last)
    activation = getattr(inner, "activation", None)
    if isinstance(inner, tf_keras.layers.Softmax) or getattr(activation, "__name__", "") == "softmax":
        return True
    out = _forward(model)(tf.constant(x[:32])).numpy()
    return bool(out.min() >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-5))


def _lp_distance(adv, x, norm):
    diff = (adv - x).reshape(len(x), -1)
    return np.abs(diff).max(axis=1) if norm == "linf" else np.linalg.norm(diff, axis=1)


def evaluate(model, data, attack: Optional[Attack] = None, config: Optional[EvalConfig] = None, batch_size: int = 256,
             check_subset: int = 256, seed: int = 0, strategy=None, progress: Optional[Callable] = None) -> EvaluationResult:
    """Natural and robust accuracy of ``model`` (logits) on ``data``.

    Args:
      model: tf_keras model (dense or pruned) with logit outputs, or a Keras 3 model (converted).
      data: (x, y) arrays, or a finite ``tf.data.Dataset`` of (x, y) batches (read once into
        memory); finite x in the attack's data range, integer labels in [0, model outputs), else
        a ValueError naming the first bad entry.
      attack: the :class:`~tf_awt.Attack` (default :func:`evaluation_attack`: L∞, ε = 0.3,
        PGD-100, step 2.5ε/100).
      config: an :class:`~tf_awt.EvalConfig` (default ``EvalConfig()``), the one place the attacks
        are chosen: ``attacks`` (the suites, in order: names such as ``"pgd"``, the preset
        ``"autoattack"``, ``"apgd-ce"``, or :class:`AttackSuite` objects; default PGD then the
        standard AutoAttack; robust accuracy is the per-example worst case over all of them) and
        their budgets (``restarts``, ``apgd_iterations``, ``fab_iterations``, ``square_queries``,
        ``square_examples``).
        Its ``steps``/``max_examples``/``split`` are a run's: pass ``attack=config.attack(attack)``
        for its PGD.
      batch_size: evaluation batch size (default 256).
      check_subset: examples used by the sanity checks (default 256).
      seed: seed of the attacks' random starts (default 0), TensorFlow's global seed during the call only:
        the caller's global seed is left as it was.
      strategy: a ``tf.distribute`` strategy (default None: one device). Each PGD batch is split
        into one contiguous slice per replica, every replica attacks its slice and the
        adversarial examples are gathered back. The other suites run on one device. The model's
        variables must have been created in ``strategy.scope()``.
      progress: ``progress(label, total)`` for each suite as it starts (``label`` like ``"APGD-T-100
        ×9 targets on 6184 examples"``, ``total`` the examples it attacks counted once per run),
        returning an object with ``update(n)`` and ``close()``: tqdm's interface, so
        ``functools.partial(tqdm.tqdm, unit="example")`` draws a bar with an ETA per suite.
        Default None: nothing is shown.
    """

    if config is not None and not isinstance(config, EvalConfig):
        raise ValueError(f"config must be a tf_awt.EvalConfig. You passed: {config!r}")
    settings = config or EvalConfig()
    model = as_tf_keras(model)
    attack = attack if attack is not None else evaluation_attack()
    batch_size, check_subset, seed = _check_numbers(batch_size, check_subset, seed)
    chosen = attack_suites(settings.attacks, settings)
    # FAB-T and Square are L∞ only here: an L2 evaluation runs without them (its label says so)
    chosen = [suite for suite in chosen if attack.norm in suite.norms] or chosen
    x, y = _checked_data(model, data, attack)
    with _internals.global_seed(seed):  # the attacks' random starts; the caller's seed is left as it was
        forward = _forward(model)
        predict = _Predictor(forward, batch_size)
        attack_batch = _pgd_fn(forward, attack, strategy)
        nat = predict.all(x) == y
        context = AttackContext(forward, x, y, attack, batch_size, int(forward(tf.constant(x[:1])).shape[-1]), strategy,
                                attack_batch, seed=seed)
        chosen = [suite.for_classes(context.num_classes) for suite in chosen]  # labels say what ran
        rob, suites, broken, found, seconds = _run_suites(chosen, context, nat, predict, progress)
        checks_start = time.perf_counter()
        natural, robust = float(nat.mean()), float(rob.mean())
        sub = slice(0, min(check_subset, len(x)))
        found += _zero_eps_check(forward, predict, x[sub], y[sub], nat[sub], attack)
        if robust > natural + 1e-12:
            found.append(f"robust accuracy {robust:.4f} exceeds natural accuracy {natural:.4f}")
        zero_gradients = None
        if attack.eps > 0 and attack.steps > 0:
            found += _convergence_check(forward, predict, x[sub], y[sub], attack, attack_batch, strategy)
            found += _large_eps_check(predict, x[sub], y[sub], attack, forward, strategy)
            found += _masking_probe(chosen, context.subset(rob[:len(x)] & (np.arange(len(x)) < check_subset)), settings,
                                    predict, min(check_subset, len(x)), progress)
            zero_gradients = _zero_gradient_fraction(forward, x[sub], y[sub])
            if zero_gradients > 0:
                found.append(f"{zero_gradients:.1%} of the examples have an all-zero input gradient: a sign of gradient masking")
        seconds["checks"] = time.perf_counter() - checks_start
        for message in found:
            warnings.warn(f"evaluate sanity check: {message}", stacklevel=2)
    per_class = {
        int(c): {"natural_accuracy": float(nat[y == c].mean()), "robust_accuracy": float(rob[y == c].mean()),
                 "count": int((y == c).sum())}
        for c in np.unique(y)
    }
    pgd_restarts = next((suite.restarts for suite in chosen if isinstance(suite, PGDSuite)), settings.restarts)
    return EvaluationResult(natural, robust, per_class, len(x), attack.get_config(), pgd_restarts, found, suites,
                            zero_gradients, broken, [suite.describe(attack) for suite in chosen],
                            {k: round(v, 3) for k, v in seconds.items()})


def _check_numbers(batch_size, check_subset, seed):
    return (_validate.integer(batch_size, "batch_size", low=1), _validate.integer(check_subset, "check_subset", low=1),
            _validate.integer(seed, "seed"))


def _checked_data(model, data, attack: Attack):
    """(x, y) arrays from ``data``, checked against the model and the attack's data range; logits required."""

    if isinstance(data, tf.data.Dataset):
        data = _validate.dataset_to_arrays(data, "data")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"data must be (x, y) arrays or a finite tf.data.Dataset of (x, y) batches. You passed: {type(data).__name__}")
    shape, classes = _validate.model_contract(model)
    x, y = _validate.check_arrays(data[0], data[1], "data", input_shape=shape, num_classes=classes,
                                  clip_min=attack.clip_min, clip_max=attack.clip_max)
    if _outputs_probabilities(model, x):
        raise ValueError(
            f"model {model.name!r} outputs probabilities (softmax); evaluate needs logits. "
            "Remove the final softmax (e.g. Dense(k) instead of Dense(k, activation='softmax'))."
        )
    return x, y


def _pgd_fn(forward, attack: Attack, strategy):
    """``(xb, yb) -> adversarial xb``; with several replicas each attacks a contiguous slice, gathered back."""
    def one_replica(xb, yb):
        return pgd(forward, xb, yb, attack)

    if strategy is None or strategy.num_replicas_in_sync == 1:
        return tf.function(one_replica, reduce_retracing=True)


    def replica_slice(xb, yb):
        context = tf.distribute.get_replica_context()
        per = (tf.shape(xb)[0] + context.num_replicas_in_sync - 1) // context.num_replicas_in_sync
        first = tf.cast(context.replica_id_in_sync_group, tf.int32) * per
        return all_gather_rows(one_replica(xb[first:first + per], yb[first:first + per]))

    @tf.function(reduce_retracing=True)
    def across_replicas(xb, yb):
        return strategy.experimental_local_results(strategy.run(replica_slice, args=(xb, yb)))[0]

    return across_replicas


class _Predictor:
    """Predicted classes, batch by batch."""

    def __init__(self, forward, batch_size: int):
        self.batch_size = batch_size
        self.batch = tf.function(lambda xb: tf.argmax(forward(xb), axis=1), reduce_retracing=True)

    def all(self, xs) -> np.ndarray:
        return np.concatenate([self.batch(xs[i:i + self.batch_size]).numpy() for i in range(0, len(xs), self.batch_size)])

    def robust(self, attack_fn, xs, ys) -> np.ndarray:
        """Per example: correct on the input and on one run of ``attack_fn``."""
        out = np.zeros(len(xs), bool)
        for start in range(0, len(xs), self.batch_size):
            xb, yb = xs[start:start + self.batch_size], ys[start:start + self.batch_size]
            ok = self.batch(xb).numpy() == yb
            out[start:start + len(xb)] = ok & (self.batch(attack_fn(xb, yb).numpy()).numpy() == yb)
        return out


def _noise(p: float, n: int) -> float:
    """Two binomial standard errors of an accuracy p measured on n examples."""
    return 2 * np.sqrt(max(p * (1 - p), 1 / max(n, 1)) / max(n, 1))


def _attack_in_order(chosen, context: AttackContext, still: np.ndarray, predict: "_Predictor", progress=None):
    """Runs each suite on the examples of ``context`` still robust (``still``, updated in place);
    returns (robust accuracy after each suite, share each broke first, warnings, seconds of each)."""
    attack, n = context.attack, len(context.x)
    suites: Dict[str, float] = {}
    broken: Dict[str, float] = {}
    found: List[str] = []
    seconds: Dict[str, float] = {}
    for suite in chosen:
        start = time.perf_counter()
        before = still.copy()
        part = context.subset(before)
        bar = progress(f"{suite.describe(attack)} on {len(part.x)} examples", suite.work(part)) if progress else None
        part = dataclasses.replace(part, done=bar.update) if bar is not None else part
        survived = np.ones(len(part.x), bool)
        for adv in (suite.adversarial_sets(part) if len(part.x) else ()):
            adv = np.array(adv, copy=True)
            outside, worst = _outside(adv, part.x, attack)
            if outside.any():
                found.append(f"{suite.label} returned {int(outside.sum())} inputs outside the eps-ball or the data range "
                             f"[{attack.clip_min}, {attack.clip_max}] (largest distance {worst:.6g}, eps {attack.eps:g}); "
                             "they were not counted")
                adv[outside] = part.x[outside]
            survived &= predict.all(adv) == part.y
        still[np.flatnonzero(before)] = survived
        if bar is not None:
            bar.close()
        suites[suite.name] = float(still.mean()) if n else 0.0
        broken[suite.name] = float((before & ~still).mean()) if n else 0.0
        seconds[suite.name] = time.perf_counter() - start
    return suites, broken, found, seconds


def _gap_warnings(chosen, suites, broken, n: int, where: str = "") -> List[str]:
    """A later suite (or a black-box one) breaking more than noise allows of what the first left robust."""
    first, found = chosen[0], []
    reference = suites[first.name]
    noise = _noise(reference, n)
    gradient_labels = []
    for suite in chosen:
        if suite is not first and broken[suite.name] > noise:
            if suite.black_box:
                found.append(f"{where}the black-box {suite.label} attack broke {broken[suite.name]:.4f} of the examples "
                             f"that every gradient attack before it ({', '.join(gradient_labels)}) left robust, beyond "
                             f"noise {noise:.4f}: gradient masking; the gradient attacks overestimate robustness here")
            else:
                found.append(f"{where}{suite.label} broke {broken[suite.name]:.4f} of the examples that {first.label} left "
                             f"robust ({first.label} {reference:.4f}, after {suite.label} {suites[suite.name]:.4f}), beyond "
                             f"noise {noise:.4f}: {first.label} overestimates robustness here")
        if not suite.black_box:
            gradient_labels.append(suite.label)
    return found


def _run_suites(chosen, context: AttackContext, nat: np.ndarray, predict: "_Predictor", progress=None):
    """(robust per example over every suite, robust accuracy after each, share each broke first,
    warnings, seconds of each)."""
    rob = nat.copy()
    suites, broken, found, seconds = _attack_in_order(chosen, context, rob, predict, progress)
    return rob, suites, broken, found + _gap_warnings(chosen, suites, broken, len(context.x)), seconds


def _masking_probe(chosen, context: AttackContext, config: EvalConfig, predict: "_Predictor", n: int,
                   progress=None) -> List[str]:
    """When the standard AutoAttack suites were not all run: those missing, on the robust examples
    among the first ``n`` (the check subset). They breaking more than noise allows is reported.
    ``progress`` as :func:`evaluate`'s (labels ``check: ...``)."""
    names = {suite.name for suite in chosen}
    missing = [name for name in PRESETS["autoattack"] if name not in names]
    probe = [suite.for_classes(context.num_classes) for suite in attack_suites(missing, config.replace(square_examples=None))
             if context.attack.norm in suite.norms] if missing else []
    if not probe or not len(context.x):
        return []
    still = np.ones(len(context.x), bool)
    told = (lambda label, total: progress(f"check: {label}", total)) if progress else None
    _, broken, found, _ = _attack_in_order(probe, context, still, predict, told)
    robust = len(context.x) / n
    noise = _noise(robust, n)
    labels = ", ".join(suite.label for suite in chosen)
    for suite in probe:
        share = broken[suite.name] * len(context.x) / n
        if share > noise:
            kind = "the black-box " if suite.black_box else ""
            found.append(f"on the first {n} examples, {kind}{suite.label} broke {share:.4f} of those that {labels} left "
                         f"robust ({robust:.4f}), beyond noise {noise:.4f}: the reported robust accuracy ({labels} only) "
                         f"overestimates robustness{'; gradient masking' if suite.black_box else ''}. "
                         "Evaluate with eval.attacks: [pgd, autoattack] (the default)")
    return found


def _large_eps_check(predict: "_Predictor", x, y, attack: Attack, forward, strategy) -> List[str]:
    """At ε as large as the data range (L∞), any input can be reached: PGD must bring accuracy to
    about the largest class share; accuracy that stays high means PGD cannot follow the gradient."""
    if attack.clip_min is None or attack.clip_max is None or not len(x):
        return []
    span = float(attack.clip_max - attack.clip_min)
    eps = span if attack.norm == "linf" else span * float(np.sqrt(np.prod(x.shape[1:])))
    if attack.eps >= eps:
        return []
    big = attack.replace(eps=eps, step_size=None)
    accuracy = float(predict.robust(_pgd_fn(forward, big, strategy), x, y).mean())
    share = float(np.bincount(y).max() / len(y))
    noise = _noise(share, len(y))
    if accuracy > share + noise:
        return [f"at eps {eps:g} (the whole data range) PGD-{big.steps} leaves accuracy {accuracy:.3f} on {len(y)} examples, "
                f"above the largest class share {share:.3f} + noise {noise:.3f}: the attack does not reach inputs that "
                "exist (gradient masking or a broken attack)"]
    return []


def _zero_eps_check(forward, predict: _Predictor, x, y, nat, attack: Attack) -> List[str]:
    zero_adv = pgd(forward, x, y, attack.replace(eps=0.0)).numpy()
    return [] if np.array_equal(predict.batch(zero_adv).numpy() == y, nat) else ["eps=0 attack does not reproduce the natural predictions"]


def _convergence_check(forward, predict: _Predictor, x, y, attack: Attack, attack_fn, strategy) -> List[str]:
    """Twice the PGD steps must not raise robust accuracy beyond binomial noise."""
    stronger = _pgd_fn(forward, attack.replace(steps=attack.steps * 2, step_size=attack.step_size), strategy)
    rob_strong, rob_one = predict.robust(stronger, x, y), predict.robust(attack_fn, x, y)
    n = len(rob_one)
    noise = _noise(float(rob_one.mean()), n)
    if rob_strong.mean() > rob_one.mean() + noise:
        return [f"twice the PGD steps raised robust accuracy on {n} examples from {rob_one.mean():.3f} to "
                f"{rob_strong.mean():.3f} (beyond noise {noise:.3f}): the attack may not converge"]
    if rob_strong.mean() < rob_one.mean() - noise:
        return [f"twice the PGD steps lowered robust accuracy on {n} examples from {rob_one.mean():.3f} to "
                f"{rob_strong.mean():.3f} (beyond noise {noise:.3f}): PGD-{attack.steps} has not converged and "
                "overestimates robustness"]
    return []


def _zero_gradient_fraction(forward, x, y) -> float:
    """Share of examples whose loss has an all-zero input gradient (a dead network or gradient masking)."""
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(y), forward(xs))
    grads = tape.gradient(loss, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO).numpy().reshape(len(x), -1)
    return float(np.mean(np.abs(grads).max(axis=1) == 0))


def _outside(adv: np.ndarray, x: np.ndarray, attack: Attack):
    """Per example: does ``adv`` leave the ε-ball around ``x`` or the data range? And the largest distance."""
    dist = _lp_distance(adv, x, attack.norm)
    outside = dist > attack.eps + 1e-5 * max(1.0, attack.eps)
    flat = adv.reshape(len(x), -1)
    if attack.clip_min is not None:
        outside |= flat.min(axis=1) < attack.clip_min - 1e-6
    if attack.clip_max is not None:
        outside |= flat.max(axis=1) > attack.clip_max + 1e-6
    return outside, float(dist.max()) if len(dist) else 0.0
