"""Each ticket method's own options, validated where the method is registered.

A :class:`~tf_awt.SearchConfig` holds what every method shares (density, attack, epochs, scope, ...)
and, in ``options``, one instance of its method's options class: :class:`AWTOptions` for ``awt`` and
``ntt``, :class:`CosentinoOptions`, :class:`DNSOptions`, :class:`RandomLayerwiseOptions`, or
:class:`NoOptions` for the one-shot methods and ``dense``. The registry
(:func:`tf_awt.register_method`, ``options=``) is the one answer to "what can this method be told"::

    from tf_awt.tickets.method_options import AWTOptions
    config = tf_awt.SearchConfig(density=0.05, options=AWTOptions(kernel="sketch", probes=4))

A recipe's ``search:`` section is flat (``search.gamma``, ``search.rounds``): a key belongs to every
options class that has a field of that name, so one recipe serves every method a comparison runs;
a name two classes share means the same thing in both and has the same default (tested). A class
checks its values on construction (``ValueError("… You passed: …")``) and round-trips through
``from_config(get_config())``. This module imports no TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from tf_awt._validate import store_number as _number
from tf_awt._options import WEIGHT_DECAY_FORMS, check_precision, check_student_kernel
from tf_awt.paper import OPTIMIZE

__all__ = ["MethodOptions", "NoOptions", "AWTOptions", "CosentinoOptions", "DNSOptions", "RandomLayerwiseOptions",
           "NTK_MODES"]

NTK_MODES = ("full", "diagonal", "sketch")
"""How AWT's kernel distance is computed: both whole kernels, their diagonals (S-AWT), or the sketch."""


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Base of the options classes: settings of one method, flat and serializable."""

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        """The recipe keys (``search.<key>``) this class reads: its fields."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], options_of: Callable[[str], type]) -> "MethodOptions":
        """The options among a flat ``search:`` mapping (keys of other classes are not this one's).
        ``options_of(method)`` is the registry's options class of a method (for a class that holds another's)."""
        return cls(**{k: settings[k] for k in cls.keys() if k in settings})

    def flat(self) -> Dict[str, Any]:
        """Back to flat recipe keys (what :meth:`from_settings` reads)."""
        return {k: getattr(self, k) for k in self.keys()}

    def replace(self, **changes) -> "MethodOptions":
        return dataclasses.replace(self, **changes)

    def get_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "MethodOptions":
        return cls(**dict(config))


@dataclasses.dataclass(frozen=True)
class NoOptions(MethodOptions):
    """A method with nothing of its own to set (the one-shot methods, ``dense``)."""


@dataclasses.dataclass(frozen=True)
class AWTOptions(MethodOptions):
    """Algorithm 1's options (methods ``awt`` and ``ntt``; NTT is AWT with ε = 0).

    Attributes:
      gamma: γ of eq. (13) (default 1e-3), >= 0.
      kernel_weight: weight of the kernel distance; None (default) means γ².
      learning_rate: the search's Adam learning rate (default 5e-4; SGD with momentum 0.9 for
        ``optimize="scores"``).
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
      kernel: how the kernel distance is computed (:data:`NTK_MODES`): "full" (default; both
        (N·k)² kernels, exact), "diagonal" (S-AWT: Θ[i, i] only) or "sketch" (matrix-free, an
        unbiased estimate of the full distance from ``probes`` Rademacher probes:
        :mod:`tf_awt.engine.kernel_sketch`; memory O(probes · weights)).
      probes: for ``kernel="sketch"``: K, the probes per step (default 4); the estimate's standard
        error falls as 1/√K (docs/search.md, "The sketched kernel distance").
      precision: "float32" (default) or "bfloat16": the kernels' large contractions on bfloat16
        operands with float32 sums (relative error about 1e-4 on the paper's models).
      optimize: "weights" (default: Algorithm 1) or "scores" (straight-through top-k scores with the
        weights at θ0; :mod:`tf_awt.tickets.search`).
      student_steps: the PGD steps of the student's attack X̃ˢ0 (default None: the search attack's
        ``steps``); e.g. 3, or 1: FGSM with a random start (Wong et al., 2020). The teacher's X̃0
        always uses the search's attack.
      student_step_size: that attack's step (default None: the search attack's step when
        ``student_steps`` is None, 1.25·ε when it is 1 (Wong et al.'s FGSM step), else
        2.5·ε / ``student_steps``).
      teacher_cache: with (x, y) arrays: attack the frozen teacher once per example (the first
        epoch's X̃0 and f_θ0(X̃0), in memory) and reuse them in later epochs (default False;
        :mod:`tf_awt.tickets.teacher_cache`). The first epoch is the uncached search's.
    """

    gamma: float = 1e-3
    kernel_weight: Optional[float] = None
    learning_rate: float = 5e-4
    update_every: int = 100
    weight_decay: float = 0.0
    weight_decay_form: str = "l2"
    student_kernel: str = "masked"
    kernel: str = "full"
    probes: int = 4
    precision: str = "float32"
    optimize: str = "weights"
    student_steps: Optional[int] = None
    student_step_size: Optional[float] = None
    teacher_cache: bool = False

    def __post_init__(self):
        _number(self, "gamma", low=0)
        _number(self, "kernel_weight", low=0, optional=True)
        _number(self, "learning_rate", low=0, low_open=True)
        _number(self, "update_every", low=1, integer=True, name="update_every (T_m)")
        _number(self, "weight_decay", low=0)
        if self.weight_decay_form not in WEIGHT_DECAY_FORMS:
            raise ValueError(f"weight_decay_form must be one of {list(WEIGHT_DECAY_FORMS)}. You passed: {self.weight_decay_form!r}")
        check_student_kernel(self.student_kernel)
        if self.kernel not in NTK_MODES:
            raise ValueError(f"kernel must be one of {NTK_MODES}. You passed: {self.kernel!r}")
        _number(self, "probes", low=1, integer=True)
        check_precision(self.precision)
        if self.optimize not in OPTIMIZE:
            raise ValueError(f"optimize must be one of {OPTIMIZE}. You passed: {self.optimize!r}")
        _number(self, "student_steps", low=1, integer=True, optional=True)
        _number(self, "student_step_size", low=0, low_open=True, optional=True)
        if not isinstance(self.teacher_cache, (bool, np.bool_)):
            raise ValueError(f"teacher_cache must be true or false. You passed: {self.teacher_cache!r}")
        object.__setattr__(self, "teacher_cache", bool(self.teacher_cache))

    @property
    def effective_kernel_weight(self) -> float:
        """The kernel distance's weight: ``kernel_weight``, or γ² when it is None."""
        return self.gamma**2 if self.kernel_weight is None else float(self.kernel_weight)

    def student_attack(self, attack):
        """The student's attack: the teacher's ``attack`` with ``student_steps`` / ``student_step_size``."""
        if self.student_steps is None:
            return attack if self.student_step_size is None else attack.replace(step_size=self.student_step_size)
        step_size = self.student_step_size
        if step_size is None and self.student_steps == 1 and attack.eps > 0:  # FGSM with a random start: Wong et al.'s 1.25·ε
            step_size = 1.25 * attack.eps
        return attack.replace(steps=self.student_steps, step_size=step_size)


@dataclasses.dataclass(frozen=True)
class CosentinoOptions(MethodOptions):
    """Cosentino et al.'s adversarial iterative magnitude pruning (:mod:`tf_awt.tickets.iterative`).

    Attributes:
      rounds: pruning rounds, each an adversarial training of the search's ``epochs`` epochs
        (default 5).
      prune_rate: fraction of the kept weights pruned per round; None (default) derives it from
        ``rounds``, a value sets the number of rounds instead.
      eps_warmup_epochs: every round's adversarial training ramps ε (and the PGD step) up over this
        many epochs (its :class:`~tf_awt.TrainConfig`'s ``eps_warmup_epochs``; default 0: full ε
        from the first step). At large ε (0.3 on MNIST) rounds without it collapse, and magnitudes
        of a collapsed network choose nothing (docs/results.md section 6).
      learning_rate: the rounds' Adam learning rate (default 5e-4).
    """

    rounds: int = 5
    prune_rate: Optional[float] = None
    eps_warmup_epochs: float = 0.0
    learning_rate: float = 5e-4

    def __post_init__(self):
        _number(self, "rounds", low=1, integer=True)
        _number(self, "prune_rate", low=0, high=1, low_open=True, optional=True)
        if self.prune_rate is not None and self.prune_rate >= 1:
            raise ValueError(f"prune_rate must be in (0, 1). You passed: {self.prune_rate!r}")
        _number(self, "eps_warmup_epochs", low=0)
        _number(self, "learning_rate", low=0, low_open=True)


@dataclasses.dataclass(frozen=True)
class DNSOptions(MethodOptions):
    """Dynamic Network Surgery (Guo et al., 2016; :mod:`tf_awt.tickets.surgery`).

    Attributes:
      hysteresis: h in [0, 1), the surgeries' band: a pruned weight comes back only when its
        magnitude outgrows a kept one's by (1 + h)/(1 − h) (default 0.1).
      ramp_fraction: the density falls from 1 to ``density`` over this fraction of the steps
        (cubic, Zhu & Gupta 2017; default 0.5), in (0, 1].
      update_every: steps between surgeries (default 100), >= 1.
      learning_rate: the training's Adam learning rate (default 5e-4).
    """

    hysteresis: float = 0.1
    ramp_fraction: float = 0.5
    update_every: int = 100
    learning_rate: float = 5e-4

    def __post_init__(self):
        _number(self, "hysteresis", low=0, high=1)
        if self.hysteresis >= 1:
            raise ValueError(f"hysteresis must be in [0, 1). You passed: {self.hysteresis!r}")
        _number(self, "ramp_fraction", low=0, high=1, low_open=True)
        _number(self, "update_every", low=1, integer=True, name="update_every (T_m)")
        _number(self, "learning_rate", low=0, low_open=True)


@dataclasses.dataclass(frozen=True)
class RandomLayerwiseOptions(MethodOptions):
    """``random_layerwise``: a reference ticket's layer densities at random positions.

    Attributes:
      reference: the ticket whose per-layer densities the random masks reproduce: a method name
        (default "awt", searched with the same shared settings and ``reference_options``) or the
        path of a saved ticket (.npz).
      reference_options: the reference method's options when ``reference`` names a method (default
        None: its defaults; a recipe fills them from its ``search:`` keys).
    """

    reference: str = "awt"
    reference_options: Optional[MethodOptions] = None

    def __post_init__(self):
        if not isinstance(self.reference, str) or not self.reference or self.reference == "random_layerwise":
            raise ValueError("reference must be a ticket method other than 'random_layerwise' or the path of a saved "
                             f"ticket (.npz). You passed: {self.reference!r}")
        if self.reference_options is not None and not isinstance(self.reference_options, MethodOptions):
            raise ValueError(f"reference_options must be a method's options (e.g. AWTOptions()) or None. "
                             f"You passed: {self.reference_options!r}")

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        return ("reference",)

    @classmethod
    def from_settings(cls, settings, options_of):
        reference = settings.get("reference", "awt")
        inner = options_of(reference) if isinstance(reference, str) and reference != "random_layerwise" else None
        nested = inner.from_settings(settings, options_of) if inner is not None else None
        return cls(**({"reference": reference} if "reference" in settings else {}), reference_options=nested)

    def flat(self) -> Dict[str, Any]:
        nested = self.reference_options.flat() if self.reference_options is not None else {}
        return {**nested, "reference": self.reference}

    def get_config(self) -> dict:
        nested = self.reference_options
        return {"reference": self.reference,
                "reference_options": None if nested is None else {"class": type(nested).__name__, **nested.get_config()}}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        nested = config.get("reference_options")
        if nested is not None:
            nested = dict(nested)
            classes = _subclasses(MethodOptions)  # built-in or a user's, wherever it is defined
            name = nested.pop("class", None)
            if name not in classes:
                raise ValueError(f"reference_options' class must be one of {sorted(classes)}. You passed: {name!r}")
            config["reference_options"] = classes[name].from_config(nested)
        return cls(**config)


def _subclasses(cls) -> Dict[str, type]:
    """Every subclass of ``cls`` defined so far, by class name."""
    out = {}
    for sub in cls.__subclasses__():
        out.update({sub.__name__: sub, **_subclasses(sub)})
    return out
