"""The settings of a ticket search (:class:`SearchConfig`), validated without importing TensorFlow.

:mod:`tf_awt.tickets.search` runs them; a recipe (and every ``tf-awt`` command) checks them before
TensorFlow loads.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional

import numpy as np

from tf_awt import _options, _validate
from tf_awt._validate import store_number as _number
from tf_awt._options import NORMALIZATIONS, KernelImplementation
from tf_awt.adversarial.attacks import Attack
from tf_awt.paper import attack_numbers
from tf_awt.tickets.method_options import MethodOptions
from tf_awt.tickets.methods import get_method, method_names

__all__ = ["SearchConfig", "SHARED_KEYS", "options_class"]


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Settings of a ticket search; validated on construction.

    What every method shares is a field here; what only one method reads is in ``options``, an
    instance of the options class its registry entry names (:mod:`tf_awt.tickets.method_options`:
    ``AWTOptions`` for awt/ntt, ``CosentinoOptions``, ``DNSOptions``, ``RandomLayerwiseOptions``).
    :meth:`from_settings` builds one from flat keys (what :func:`tf_awt.find_ticket`'s keyword
    arguments and a recipe's ``search:`` section give).

    Attributes:
      density: fraction of prunable weights kept, in (0, 1].
      method: a registered method (:mod:`tf_awt.tickets.methods`; default "awt"); "ntt" is AWT with ε = 0.
      attack: the PGD attack of the search (default: L∞, ε = 0.3, 10 steps of 0.075).
      epochs: how long a method that trains does (default 20): awt/ntt's search epochs,
        dns's training, each of cosentino's rounds.
      batch_size: the search data's batch size (default 64), >= 1: with T_m it sets how often masks
        are updated per epoch.
      normalization: how every recorded kernel distance is weighted: "per_example" (default,
        eq. 13) or "per_entry" (NTT's code); the search's loss, and the distances dns and training record.
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
      implementation: the Mixed Tangent Kernel's implementation wherever one is computed (default "auto").
      seed: seed of the search's randomness (default 0): the PGD random starts of step t are
        drawn from the stateless seeds [2·seed, t] (teacher) and [2·seed + 1, t] (student), so a
        search resumed from a checkpoint repeats the uninterrupted one; also the one-shot
        baselines' seed.
      options: the method's own options (default None: its options class's defaults); must be an
        instance of that class.
    """

    density: float
    method: str = "awt"
    attack: Attack = Attack(**dict(zip(("eps", "steps", "step_size"), attack_numbers("search"))))
    epochs: int = 20
    batch_size: int = 64
    normalization: str = "per_example"
    scope: str = "global"
    layer_densities: Optional[object] = None
    pattern: str = "unstructured"
    implementation: str = "auto"
    seed: int = 0
    options: Optional[MethodOptions] = None

    def __post_init__(self):
        _number(self, "density", low=0, high=1, low_open=True)
        cls = get_method(self.method).options  # a ValueError naming the registered methods
        if self.options is None:
            object.__setattr__(self, "options", cls())
        elif type(self.options) is not cls:
            raise ValueError(f"options of method {self.method!r} must be a {cls.__name__}. You passed: {self.options!r}")
        if not isinstance(self.attack, Attack):
            raise ValueError(f"attack must be a tf_awt.Attack. You passed: {self.attack!r}")
        _number(self, "epochs", low=0, integer=True)
        _number(self, "batch_size", low=1, integer=True)
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}. You passed: {self.normalization!r}")
        if self.scope not in _options.SCOPES:
            raise ValueError(f"scope must be one of {_options.SCOPES}. You passed: {self.scope!r}")
        self._check_layer_densities()
        self._check_pattern()
        KernelImplementation.parse(self.implementation)
        _number(self, "seed", integer=True)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], strict: bool = True) -> "SearchConfig":
        """A config of flat settings (``{"density": 0.05, "method": "awt", "gamma": 1e-3}``): the shared
        ones are fields, the rest go to the method's options class. ``strict`` (default): a key that is
        neither is a ValueError naming both lists; else it is left out (a recipe's ``search:`` section
        holds the options of every method it may run)."""
        shared = {k: settings[k] for k in SHARED_KEYS if k in settings}
        method = get_method(shared.get("method", "awt"))
        options = method.options.from_settings(settings, options_class)
        unknown = sorted(set(settings) - set(shared) - set(options.flat()))
        if strict and unknown:
            raise ValueError(f"{unknown[0]} is not a setting of method {method.name!r}. Allowed: its options "
                             f"{list(options.flat())} and every method's {list(SHARED_KEYS)}. "
                             f"You passed: {unknown[0]}={settings[unknown[0]]!r}")
        return cls(**shared, options=options)

    def flat(self) -> Dict[str, Any]:
        """The settings as flat keys (what :meth:`from_settings` reads)."""
        return {**{k: getattr(self, k) for k in SHARED_KEYS}, **self.options.flat()}

    def replace(self, **settings) -> "SearchConfig":
        """A copy with flat settings replaced, options included (``config.replace(gamma=0.0)``); a new
        ``method`` keeps the shared settings and the options' keys it also has."""
        config = SearchConfig.from_settings({**self.flat(), **settings}, strict=False)
        unknown = sorted(set(settings) - set(config.flat()))
        if unknown:
            raise ValueError(f"{unknown[0]} is not a setting of method {config.method!r}. Allowed: its options "
                             f"{list(config.options.flat())} and every method's {list(SHARED_KEYS)}. "
                             f"You passed: {unknown[0]}={settings[unknown[0]]!r}")
        return config

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
        """AWT's kernel-distance weight (:attr:`~tf_awt.tickets.method_options.AWTOptions.effective_kernel_weight`)."""
        return self.options.effective_kernel_weight

    @property
    def effective_attack(self) -> Attack:
        return self.attack.replace(eps=0.0) if self.method == "ntt" else self.attack

    @property
    def student_attack(self) -> Attack:
        """AWT's student attack: :attr:`effective_attack` with the options' ``student_steps`` / ``student_step_size``."""
        return self.options.student_attack(self.effective_attack)

    def get_config(self) -> dict:
        config = {k: getattr(self, k) for k in SHARED_KEYS}
        config["attack"] = self.attack.get_config()
        if isinstance(self.layer_densities, tuple):
            config["layer_densities"] = list(self.layer_densities)
        config["options"] = self.options.get_config()
        return config

    @classmethod
    def from_config(cls, config: dict) -> "SearchConfig":
        config = dict(config)
        config["attack"] = Attack.from_config(config["attack"])
        options = config.pop("options", None)
        method = get_method(config.get("method", "awt"))
        return cls(**config, options=None if options is None else method.options.from_config(options))


SHARED_KEYS = tuple(f.name for f in dataclasses.fields(SearchConfig) if f.name != "options")
"""The settings every method shares: :class:`SearchConfig`'s fields but ``options``."""


def options_class(method: str) -> Optional[type]:
    """The options class of a registered method, or None for a name that is not one (e.g. a ticket's path)."""
    return get_method(method).options if method in method_names() else None

