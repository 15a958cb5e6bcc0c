"""The settings of a ticket search (:class:`SearchConfig`), validated without importing TensorFlow.

:mod:`tf_awt.tickets.search` runs them; a recipe (and every ``tf-awt`` command) checks them before
TensorFlow loads.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tf_awt import _options, _validate
from tf_awt._options import (NORMALIZATIONS, WEIGHT_DECAY_FORMS, KernelImplementation, check_precision,
                             check_student_kernel)
from tf_awt.adversarial.attacks import Attack
from tf_awt.tickets.methods import get_method
from tf_awt.paper import OPTIMIZE, attack_numbers

__all__ = ["SearchConfig", "KERNELS"]

KERNELS = ("full", "diagonal", "sketch")


def _number(config, field, name=None, low=None, high=None, low_open=False, integer=False):
    """Checks ``config.<field>`` (Python or NumPy number) and stores it as a Python int/float."""
    value = getattr(config, field)
    name = name or field
    checked = (_validate.integer(value, name, low) if integer
               else _validate.real(value, name, low, high, low_open=low_open))
    object.__setattr__(config, field, checked)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Settings of a ticket search; validated on construction.

    Attributes:
      density: fraction of prunable weights kept, in (0, 1].
      method: a registered method (:mod:`tf_awt.tickets.methods`; default "awt"); "ntt" is AWT with ε = 0.
      attack: the PGD attack of the search (default: L∞, ε = 0.3, 10 steps of 0.075).
      gamma: γ of eq. (13) (default 1e-3), >= 0.
      kernel_weight: weight of the kernel distance; None (default) means γ².
      normalization: "per_example" (default, eq. 13) or "per_entry" (NTT's code).
      learning_rate: Adam learning rate (default 5e-4).
      update_every: T_m, steps between mask updates (default 100), >= 1.
      weight_decay: β (or NTT's λ), the decay of the kept student weights (default 0); how it
        enters is ``weight_decay_form``.
      weight_decay_form: "l2" (default): β·‖m⊙w‖² added to the loss (so Adam rescales it);
        "l2_per_density": NTT's (λ/density)·‖m⊙w‖² (``LAMBDA_L2_REG`` = 1e-4 in
        ``nt_transfer/ntt.py``; λ = 1e-4 at density 0.036 is "l2" with β = 0.0028);
        "decoupled": Algorithm 1 line 5, w ← w − η∇L − β·m⊙w (β per step, outside the optimizer).
      student_kernel: "masked" (default): the student's kernel Σ_p m_p ∂_p f ∂_p f′ (the sparse net's
        own tangent kernel); "full": NTT's ``emp_ntk_fn(x1, x2, masked_student_net_params)``, the
        NTK of every weight at θ = m⊙w (:func:`tf_awt.mixed_tangent_kernel`).
      epochs: search epochs (default 20).
      batch_size: the search data's batch size (default 64), >= 1: with T_m it sets how often masks
        are updated per epoch.
      kernel: how the kernel distance is computed: "full" (default; both (N·k)² kernels, exact),
        "diagonal" (S-AWT: Θ[i, i] only) or "sketch" (matrix-free, an unbiased estimate of the full
        distance from ``probes`` Rademacher probes: :mod:`tf_awt.engine.kernel_sketch`; no kernel matrix
        and no layer rule, memory O(probes · weights)).
      probes: for ``kernel="sketch"``: K, the probes per step (default 4); the estimate's standard
        error falls as 1/√K (docs/search.md, "The sketched kernel distance").
      scope: "global" (default), "layer", "erk" (Erdős–Rényi-Kernel layer densities) or
        "frankle_carbin" (Frankle & Carbin's per-round rates, 20% fully connected, 10% conv and
        output, at the number of rounds that gives ``density``: at 3.6% on the MLP 3.5% per hidden
        layer and 20.6% at the output) top-k, for every method.
      layer_densities: explicit density per prunable layer, a list in layer order or a
        {layer name: density} mapping (default None); overrides ``scope`` for every method, and
        must add up to ``density`` over the model's prunable weights (checked with the model).
      pattern: "unstructured" (default) or "N:M" (e.g. "2:4"): keep the N highest of every M
        consecutive input weights of each unit, for every method but erk/random_layerwise;
        ``density`` must then be N/M (and ``scope`` is not used).
      implementation: kernel implementation (default "auto").
      precision: "float32" (default) or "bfloat16": the kernels' large contractions on bfloat16
        operands with float32 sums (:func:`tf_awt.mixed_tangent_kernel_fn`; relative error about
        1e-4 on the paper's models, faster where the CPU has AVX512-BF16/AMX: docs/performance.md).
      optimize: "weights" (default: Algorithm 1) or "scores" (straight-through top-k scores with the
        weights at θ0); see the module docstring. Used by awt/ntt only.
      rounds: for ``method="cosentino"``: pruning rounds, each an adversarial training of
        ``epochs`` epochs (default 5; :mod:`tf_awt.tickets.iterative`).
      prune_rate: for ``method="cosentino"``: fraction of the kept weights pruned per round;
        None (default) derives it from ``rounds``, a value sets the number of rounds instead.
      eps_warmup_epochs: for ``method="cosentino"``: every round's adversarial training ramps ε
        (and the PGD step) up over this many epochs (its :class:`~tf_awt.TrainConfig`'s ``eps_warmup_epochs``; default 0:
        full ε from the first step). At large ε (0.3 on MNIST) rounds without it collapse, and
        magnitudes of a collapsed network choose nothing (docs/results.md section 6).
      hysteresis: for ``method="dns"``: h in [0, 1), the surgeries' band: a pruned weight comes
        back only when its magnitude outgrows a kept one's by (1 + h)/(1 − h) (default 0.1;
        :mod:`tf_awt.tickets.surgery`).
      ramp_fraction: for ``method="dns"``: the density falls from 1 to ``density`` over this
        fraction of the search's steps (cubic, Zhu & Gupta 2017; default 0.5), in (0, 1].
      reference: for ``method="random_layerwise"``: the ticket whose per-layer densities the random
        masks reproduce: a method name (default "awt", searched with these same settings) or the
        path of a saved ticket (.npz). Ignored by other methods.
      student_steps: awt only: the PGD steps of the student's attack X̃ˢ0 (default None: the search
        attack's ``steps``); e.g. 3, or 1 with ``student_step_size`` 1.25·ε for FGSM with a random
        start (Wong et al., 2020). The teacher's X̃0 always uses ``attack``.
      student_step_size: awt only: that attack's step (default None: the search attack's step
        when ``student_steps`` is None, else 2.5·ε / ``student_steps``).
      teacher_cache: awt/ntt with (x, y) arrays: attack the frozen teacher once per example (the
        first epoch's X̃0 and f_θ0(X̃0), in memory) and reuse them in later epochs (default
        False; :mod:`tf_awt.tickets.teacher_cache`). The first epoch is the uncached search's.
      seed: seed of the search's randomness (default 0): the PGD random starts of step t are
        drawn from the stateless seeds [2·seed, t] (teacher) and [2·seed + 1, t] (student), so a
        search resumed from a checkpoint repeats the uninterrupted one; also the one-shot
        baselines' seed.
    """

    density: float
    method: str = "awt"
    attack: Attack = Attack(**dict(zip(("eps", "steps", "step_size"), attack_numbers("search"))))
    gamma: float = 1e-3
    kernel_weight: Optional[float] = None
    normalization: str = "per_example"
    learning_rate: float = 5e-4
    update_every: int = 100
    weight_decay: float = 0.0
    weight_decay_form: str = "l2"
    student_kernel: str = "masked"
    epochs: int = 20
    batch_size: int = 64
    kernel: str = "full"
    probes: int = 4
    scope: str = "global"
    layer_densities: Optional[object] = None
    pattern: str = "unstructured"
    implementation: str = "auto"
    precision: str = "float32"
    optimize: str = "weights"
    reference: str = "awt"
    rounds: int = 5
    prune_rate: Optional[float] = None
    eps_warmup_epochs: float = 0.0
    hysteresis: float = 0.1
    ramp_fraction: float = 0.5
    student_steps: Optional[int] = None
    student_step_size: Optional[float] = None
    teacher_cache: bool = False
    seed: int = 0

    def __post_init__(self):
        _number(self, "density", low=0, high=1, low_open=True)
        get_method(self.method)  # a ValueError naming the registered methods
        if not isinstance(self.attack, Attack):
            raise ValueError(f"attack must be a tf_awt.Attack. You passed: {self.attack!r}")
        _number(self, "gamma", low=0)
        if self.kernel_weight is not None:
            _number(self, "kernel_weight", low=0)
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}. You passed: {self.normalization!r}")
        _number(self, "learning_rate", low=0, low_open=True)
        _number(self, "update_every", "update_every (T_m)", low=1, integer=True)
        _number(self, "weight_decay", low=0)
        if self.weight_decay_form not in WEIGHT_DECAY_FORMS:
            raise ValueError(f"weight_decay_form must be one of {list(WEIGHT_DECAY_FORMS)}. You passed: {self.weight_decay_form!r}")
        check_student_kernel(self.student_kernel)
        self._check_layer_densities()
        _number(self, "epochs", low=0, integer=True)
        _number(self, "batch_size", low=1, integer=True)
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}. You passed: {self.kernel!r}")
        _number(self, "probes", low=1, integer=True)
        if self.scope not in _options.SCOPES:
            raise ValueError(f"scope must be one of {_options.SCOPES}. You passed: {self.scope!r}")
        self._check_pattern()
        KernelImplementation.parse(self.implementation)
        check_precision(self.precision)
        if self.optimize not in OPTIMIZE:
            raise ValueError(f"optimize must be one of {OPTIMIZE}. You passed: {self.optimize!r}")
        if not isinstance(self.reference, str) or not self.reference or self.reference == "random_layerwise":
            raise ValueError("reference must be a ticket method other than 'random_layerwise' or the path of a saved "
                             f"ticket (.npz). You passed: {self.reference!r}")
        _number(self, "rounds", low=1, integer=True)
        if self.prune_rate is not None:
            _number(self, "prune_rate", low=0, high=1, low_open=True)
            if self.prune_rate >= 1:
                raise ValueError(f"prune_rate must be in (0, 1). You passed: {self.prune_rate!r}")
        _number(self, "eps_warmup_epochs", low=0)
        _number(self, "hysteresis", low=0, high=1)
        if self.hysteresis >= 1:
            raise ValueError(f"hysteresis must be in [0, 1). You passed: {self.hysteresis!r}")
        _number(self, "ramp_fraction", low=0, high=1, low_open=True)
        if self.student_steps is not None:
            _number(self, "student_steps", low=1, integer=True)
        if self.student_step_size is not None:
            _number(self, "student_step_size", low=0, low_open=True)
        if not isinstance(self.teacher_cache, (bool, np.bool_)):
            raise ValueError(f"teacher_cache must be true or false. You passed: {self.teacher_cache!r}")
        object.__setattr__(self, "teacher_cache", bool(self.teacher_cache))
        _number(self, "seed", integer=True)

    def _check_layer_densities(self):
        value = self.layer_densities
        if value is None:
            return
        allowed = "a list of densities in (0, 1], one per prunable layer, or a {layer name: density} mapping"
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        else:
            raise ValueError(f"layer_densities must be {allowed}. You passed: {value!r}")
        if not items:
            raise ValueError(f"layer_densities must be {allowed}. You passed an empty {type(value).__name__}")
        checked = {key: _validate.real(d, f"layer_densities[{key!r}]", 0, 1, low_open=True) for key, d in items}
        if any(not isinstance(key, str) for key in checked) and isinstance(value, dict):
            raise ValueError(f"layer_densities' keys must be layer names. You passed: {value!r}")
        object.__setattr__(self, "layer_densities", checked if isinstance(value, dict) else list(checked.values()))

    def resolved_layer_densities(self, names, shapes):
        """``layer_densities`` as a list aligned with the prunable layers ``names`` (None if not set),
        checked against the model: every name known, one density per layer, adding up to ``density``."""
        value = self.layer_densities
        if value is None:
            return None
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(names))
            missing = [n for n in names if n not in value]
            if unknown or missing:
                raise ValueError(f"layer_densities must give one density per prunable layer {list(names)}. "
                                 f"You passed: {value!r} (unknown: {unknown}, missing: {missing})")
            densities = [value[n] for n in names]
        else:
            if len(value) != len(names):
                raise ValueError(f"layer_densities must give one density per prunable layer {list(names)} "
                                 f"({len(names)} values). You passed {len(value)}: {value!r}")
            densities = list(value)
        sizes = [float(np.prod(s)) for s in shapes]
        overall = sum(d * n for d, n in zip(densities, sizes)) / sum(sizes)
        if abs(overall - self.density) > max(1e-3, 0.01 * self.density):
            raise ValueError(f"layer_densities {densities} keep {overall:.4f} of the {int(sum(sizes))} prunable weights, "
                             f"but density is {self.density}: they must agree (within 1%)")
        return densities

    def _check_pattern(self):
        nm = _options.parse_pattern(self.pattern)
        if nm is None:
            return
        n, m = nm
        if abs(self.density - n / m) > 1e-9:
            raise ValueError(f"pattern {self.pattern!r} keeps {n} of every {m} weights: density must be {n / m:g}. "
                             f"You passed: density={self.density!r}")
        if self.method in ("erk", "random_layerwise") or self.scope in ("erk", "frankle_carbin") or self.layer_densities:
            raise ValueError(f"pattern {self.pattern!r} fixes every layer's density at {n}/{m}; it cannot be combined with "
                             f"ERK or reference layer densities. You passed: method={self.method!r}, scope={self.scope!r}")

    @property
    def effective_kernel_weight(self) -> float:
        return self.gamma**2 if self.kernel_weight is None else float(self.kernel_weight)

    @property
    def effective_attack(self) -> Attack:
        return self.attack.replace(eps=0.0) if self.method == "ntt" else self.attack

    @property
    def student_attack(self) -> Attack:
        """The student's attack: :attr:`effective_attack` with ``student_steps`` / ``student_step_size``."""
        attack = self.effective_attack
        if self.student_steps is None:
            return attack if self.student_step_size is None else attack.replace(step_size=self.student_step_size)
        return attack.replace(steps=self.student_steps, step_size=self.student_step_size)

    def get_config(self) -> dict:
        config = dataclasses.asdict(self)
        config["attack"] = self.attack.get_config()
        if isinstance(self.layer_densities, tuple):
            config["layer_densities"] = list(self.layer_densities)
        return config

    @classmethod
    def from_config(cls, config: dict) -> "SearchConfig":
        config = dict(config)
        config["attack"] = Attack.from_config(config["attack"])
        return cls(**config)
