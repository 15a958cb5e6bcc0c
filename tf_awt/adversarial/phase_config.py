"""The settings of adversarial training, evaluation and export (:class:`TrainConfig`,
:class:`EvalConfig`, :class:`ExportConfig`), validated without importing TensorFlow.

They are what :func:`tf_awt.adversarial_fit` and :func:`tf_awt.evaluate` take (``config=``) and
what a recipe's ``train:``, ``eval:`` and ``export:`` sections are: each setting has one name and
one default, here. Like :class:`tf_awt.SearchConfig` and :class:`tf_awt.Attack` they are frozen,
checked on construction (``ValueError("… You passed: …")``), and round-trip through
``from_config(get_config())``.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from tf_awt import _validate
from tf_awt._options import EVAL_SPLITS, LR_SCHEDULES, RESCALES
from tf_awt.paper import attack_numbers

__all__ = ["TrainConfig", "EvalConfig", "ExportConfig"]

_TRAIN_STEPS, _TRAIN_STEP_SIZE = attack_numbers("train")[1:]
_EVAL_STEPS = attack_numbers("eval")[1]


class _Config:
    """``replace``, ``get_config`` and ``from_config`` for the frozen configs of this module."""

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def get_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)


def _set(config, field: str, value) -> None:
    object.__setattr__(config, field, value)


def _flag(config, field: str) -> None:
    value = getattr(config, field)
    if not isinstance(value, bool):
        raise ValueError(f"{field} must be true or false. You passed: {value!r}")


def _one_of(config, field: str, allowed) -> None:
    value = getattr(config, field)
    if value not in allowed:
        raise ValueError(f"{field} must be one of {tuple(allowed)}. You passed: {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Config):
    """Adversarial training of a ticket (the paper's MNIST setting by default).

    Attributes:
      epochs: training epochs (default 100), >= 0.
      learning_rate: Adam's learning rate, the peak of ``lr_schedule`` (default 1e-3), > 0.
      batch_size: (default 64), >= 1.
      steps, step_size: the training PGD's iterations and step (default 40 and 0.01; ``step_size``
        None means 2.5·ε/steps); ε and norm are the attack's (:meth:`attack`).
      eps_warmup_epochs: ε and the PGD step ramp up linearly from 0 over this many epochs (default 0).
      lr_schedule: "constant" (default), "cosine" or "step" (:class:`tf_awt.adversarial.training_schedule.TrainingSchedule`).
      lr_warmup_epochs: linear learning-rate warm-up (default 0).
      clip_norm: clip the gradient's global norm (default None: no clipping).
      rewind: "init" (default, the paper: train m ⊙ θ0) or "learned": start from the weights the
        search ended with (NTT's code; DNS's fine-tuning, Guo et al. 2016); a run's setting, for
        methods that train (:meth:`tf_awt.Ticket.to_model`).
      rescale: "none" (default) or "fan_in": the ticket's kept weights rescaled to the dense
        layer's output variance (:meth:`tf_awt.Ticket.to_model`; a run's setting).
      track_distances: after every epoch, log the target and kernel distances between the ticket
        being trained and the dense network at θ0 on a fixed probe of the training data
        (:class:`tf_awt.adversarial.dynamics.DistanceTracker`; the search's attack and
        normalization; default False; a run's setting): the paper's Figure 1 (b)–(c) for any method.
      probe_examples: the probe's size, the first this many training examples (default 64), >= 1.
      dense_reference: also train the dense network from the same θ0, with the same data order,
        attack seeds and settings, and keep both networks' weights after every epoch
        (``epochs/ticket-eN.npz``, ``epochs/dense-eN.npz``) for ``tf-awt graft`` (default False:
        it doubles training; a run's setting).
      fail_on_collapse: a run whose training collapsed fails (:class:`tf_awt.errors.TrainingCollapsed`;
        ``tf-awt run`` exits 3) instead of only saying so (default False; a run's setting).
    """

    epochs: int = 100
    learning_rate: float = 1e-3
    batch_size: int = 64
    steps: int = _TRAIN_STEPS
    step_size: Optional[float] = _TRAIN_STEP_SIZE
    eps_warmup_epochs: float = 0.0
    lr_schedule: str = "constant"
    lr_warmup_epochs: float = 0.0
    clip_norm: Optional[float] = None
    rewind: str = "init"
    rescale: str = "none"
    track_distances: bool = False
    probe_examples: int = 64
    dense_reference: bool = False
    fail_on_collapse: bool = False

    def __post_init__(self):
        _set(self, "epochs", _validate.integer(self.epochs, "epochs", low=0))
        _set(self, "learning_rate", _validate.real(self.learning_rate, "learning_rate", low=0, low_open=True))
        _set(self, "batch_size", _validate.integer(self.batch_size, "batch_size", low=1))
        _set(self, "steps", _validate.integer(self.steps, "steps", low=0))
        if self.step_size is not None:
            _set(self, "step_size", _validate.real(self.step_size, "step_size", low=0, low_open=True))
        _one_of(self, "lr_schedule", LR_SCHEDULES)
        _one_of(self, "rewind", ("init", "learned"))
        _one_of(self, "rescale", RESCALES)
        _flag(self, "track_distances")
        _flag(self, "dense_reference")
        _set(self, "probe_examples", _validate.integer(self.probe_examples, "probe_examples", low=1))
        _flag(self, "fail_on_collapse")
        self.schedule(steps_per_epoch=1)  # the warm-ups and clip_norm, checked by the schedule itself

    def attack(self, attack):
        """The training attack: ``attack``'s norm, ε and data range with this config's steps and step."""
        return attack.replace(steps=self.steps, step_size=self.step_size)

    def schedule(self, steps_per_epoch: int):
        """The warm-ups, learning-rate schedule and clipping as a :class:`tf_awt.adversarial.training_schedule.TrainingSchedule`."""
        from tf_awt.adversarial.training_schedule import TrainingSchedule

        return TrainingSchedule.from_epochs(steps_per_epoch, self.epochs, eps_warmup_epochs=self.eps_warmup_epochs,
                                            lr_schedule=self.lr_schedule, lr_warmup_epochs=self.lr_warmup_epochs,
                                            clip_norm=self.clip_norm)


@dataclasses.dataclass(frozen=True)
class EvalConfig(_Config):
    """The evaluation of a trained ticket.

    Attributes:
      attacks: the attack suites, run in order, each on the examples still robust; robust
        accuracy is the per-example worst case over all of them (default ``("pgd",
        "autoattack")``: PGD, then the standard AutoAttack's APGD-CE, APGD-T, FAB-T and Square;
        :mod:`tf_awt.adversarial.attack_suites`). ``("pgd",)`` is the paper's PGD-only evaluation,
        labelled so wherever it is printed. Names (built from this config's budgets) or, in Python,
        :class:`~tf_awt.adversarial.attack_suites.AttackSuite` objects (a config holding one has no
        ``get_config``: register it by name, :func:`~tf_awt.adversarial.attack_suites.register_attack_suite`).
      steps: PGD iterations (default 100), step 2.5·ε/steps; ε and norm are the attack's (:meth:`attack`).
      restarts: PGD's random restarts per example, worst case counted (default 5), >= 1.
      apgd_iterations: iterations of each APGD run (default 100, the standard AutoAttack's), >= 1.
      fab_iterations: iterations of each FAB-T run (default 100, the standard AutoAttack's), >= 1.
      square_queries: the Square attack's queries per example (default 5,000, the standard's), >= 1.
      square_examples: run Square on the first this many examples only (default None: all), >= 1;
        a cheaper preset for slow models, named in the output.
      max_examples: evaluate on the first this many examples (default None: all), >= 1.
      split: "test" (default) or "validation": a run then trains on 80% of the training data and
        evaluates on the other 20% (stratified, fixed; a run's setting), so that hyper-parameters
        are chosen without the test split.
    """

    attacks: tuple = ("pgd", "autoattack")
    steps: int = _EVAL_STEPS
    restarts: int = 5
    apgd_iterations: int = 100
    fab_iterations: int = 100
    square_queries: int = 5000
    square_examples: Optional[int] = None
    max_examples: Optional[int] = None
    split: str = "test"

    def __post_init__(self):
        from tf_awt.adversarial.attack_suites import AttackSuite, expand_attack_names

        if isinstance(self.attacks, str):  # "pgd,autoattack" (a --set or CLI value)
            _set(self, "attacks", tuple(a.strip() for a in self.attacks.split(",")))
        if isinstance(self.attacks, list):
            _set(self, "attacks", tuple(self.attacks))
        if not isinstance(self.attacks, tuple) or not all(isinstance(a, (str, AttackSuite)) for a in self.attacks):
            raise ValueError(f"attacks must be a list of attack suite names, e.g. [pgd, autoattack], or AttackSuite objects. "
                             f"You passed: {self.attacks!r}")
        expand_attack_names(self.attacks)  # unknown or repeated names: a ValueError naming them
        _set(self, "steps", _validate.integer(self.steps, "steps", low=0))
        _set(self, "restarts", _validate.integer(self.restarts, "restarts", low=1))
        _set(self, "apgd_iterations", _validate.integer(self.apgd_iterations, "apgd_iterations", low=1))
        _set(self, "fab_iterations", _validate.integer(self.fab_iterations, "fab_iterations", low=1))
        _set(self, "square_queries", _validate.integer(self.square_queries, "square_queries", low=1))
        for field in ("square_examples", "max_examples"):
            if getattr(self, field) is not None:
                _set(self, field, _validate.integer(getattr(self, field), field, low=1))
        _one_of(self, "split", EVAL_SPLITS)

    def get_config(self) -> dict:
        unnamed = [a for a in self.attacks if not isinstance(a, str)]
        if unnamed:
            raise ValueError(f"an EvalConfig holding AttackSuite objects has no config: register each with "
                             f"register_attack_suite(name, make) and give its name. You passed: {unnamed!r}")
        config = dataclasses.asdict(self)
        config["attacks"] = list(self.attacks)
        return config

    @property
    def pgd_only(self) -> bool:
        """Only PGD runs: the paper's evaluation, not the worst case of the standard attacks."""
        return tuple(self.attacks) == ("pgd",)

    def attack(self, attack):
        """The evaluation attack: ``attack``'s norm, ε and data range, ``steps`` of 2.5·ε/steps."""
        return attack.replace(steps=self.steps, step_size=None)


@dataclasses.dataclass(frozen=True)
class ExportConfig(_Config):
    """What a run exports.

    Attributes:
      saved_model: ``saved_model/``, the servable sparse SavedModel, also logged to MLflow as the
        run's model (default True). False for runs whose numbers matter and whose model does not
        (``tf-awt compare``'s selection tries): the summary still gives the model's sizes.
      tflite: also ``model.tflite``, the pruned kernels stored sparse (default True).
      keras3: also ``model.keras``, the trained ticket as a Keras 3 model (default False).
      plots: ``distances.png``, ``accuracy.png`` and ``density.png`` (default True; about 0.35 s of
        CPU a run). False where nobody looks at them (``tf-awt compare``'s selection tries).
    """

    saved_model: bool = True
    tflite: bool = True
    keras3: bool = False
    plots: bool = True

    def __post_init__(self):
        _flag(self, "saved_model")
        _flag(self, "tflite")
        _flag(self, "keras3")
        _flag(self, "plots")
