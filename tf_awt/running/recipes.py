"""Recipes: YAML views of the library's own configurations; bundled ones live in ``tf_awt/recipes``.

A recipe fixes a whole run (search → adversarial training → evaluation → export). Its sections are
the objects the API takes (:data:`SECTIONS`): ``attack`` an :class:`~tf_awt.Attack`, ``search`` a
:class:`~tf_awt.SearchConfig`, ``train`` a :class:`~tf_awt.TrainConfig`, ``eval`` an
:class:`~tf_awt.EvalConfig`, ``export`` an :class:`~tf_awt.adversarial.phase_config.ExportConfig`; a key is a field of its
section's class, by the same name and with the same default (declared there, once). This module only
parses YAML, applies ``--set`` overrides and reports unknown keys with a "did you mean"::

    dataset: mnist-5k          # a tf_awt.data name or an .npz path
    model: mlp                 # mlp | cnn | linear | vgg16 | resnet18
    init: glorot_uniform       # glorot_uniform (Keras) | glorot_normal (NTT/stax: + N(0, 0.01²) biases)
    method: awt                # awt | ntt | random | magnitude | snip | synflow | erk | random_layerwise | cosentino | dense
    density: 0.05
    seed: 0
    distribute: none           # none | mirrored | multi_worker
    attack: {norm: linf, eps: 0.3, steps: 10, step_size: 0.075, random_start: true}   # the search's (and training's) PGD
    search: {epochs: 20, batch_size: 64, normalization: per_example, scope: global, layer_densities: null,
             pattern: unstructured, implementation: auto,           # every method's (SearchConfig's fields)
             gamma: 1.0e-3, kernel_weight: null, learning_rate: 5.0e-4, update_every: 100, weight_decay: 0.0,
             weight_decay_form: l2, student_kernel: masked, kernel: full, probes: 4, precision: float32,
             optimize: weights, student_steps: null, student_step_size: null, teacher_cache: false,  # awt, ntt
             reference: awt,                                        # random_layerwise
             rounds: 5, prune_rate: null, eps_warmup_epochs: 0,     # cosentino (and learning_rate)
             hysteresis: 0.1, ramp_fraction: 0.5}                   # dns (and update_every, learning_rate)
    # each method reads the shared keys and its own options (tf_awt.tickets.method_options); a recipe
    # may hold every method's, so one recipe serves a comparison of several
    # eps_warmup_epochs: method cosentino: each round's ε warm-up (epochs)
    # weight_decay_form: l2 (β‖m⊙w‖² in the loss) | l2_per_density (NTT: λ/density) | decoupled (Algorithm 1 line 5)
    # student_kernel: masked (Σ m_p ∂f∂f′) | full (NTT: every weight's column at m⊙w)
    # scope: global | layer | erk | frankle_carbin; layer_densities: [d_1, ...] or {layer: d} overrides it
    # precision: bfloat16 runs the kernels' large products in bfloat16 (float32 sums; faster on AMX CPUs)
    # pattern: N:M (e.g. 2:4) keeps N of every M consecutive input weights per unit; density must be N/M
    train: {epochs: 100, learning_rate: 1.0e-3, batch_size: 64, steps: 40, step_size: 0.01,
            eps_warmup_epochs: 0, lr_schedule: constant, lr_warmup_epochs: 0, clip_norm: null,
            rescale: none, fail_on_collapse: false}
    eval: {attacks: [pgd, autoattack], steps: 100, restarts: 5, apgd_iterations: 100, fab_iterations: 100,
           square_queries: 5000, square_examples: null, max_examples: null, split: test}
    # attacks: run in order, robust accuracy = the per-example worst case; autoattack = apgd-ce,
    # apgd-t, fab-t, square (the standard AutoAttack); [pgd] = the paper's PGD-only evaluation.
    # square_examples: Square on the first N examples only (a cheaper preset, named in the output).
    # split: validation trains on 80% of the training data and evaluates on the other 20%
    # (stratified, fixed), for choosing hyper-parameters without the test split
    export: {saved_model: true, tflite: true, keras3: false, plots: true}
    # saved_model: the servable SavedModel, also logged to MLflow (false: sizes only, no model: a
    # comparison's selection tries); tflite: model.tflite (pruned kernels stored sparse);
    # keras3: model.keras, the trained ticket as a Keras 3 model; plots: the run's three PNGs

``train.steps``/``train.step_size`` are the training attack's (ε and norm from ``attack``);
``train.eps_warmup_epochs`` ramps ε and the step size up from 0 (:class:`tf_awt.TrainConfig`, in epochs),
``train.lr_schedule`` is constant | cosine | step, ``train.clip_norm`` clips the gradient's global
norm, ``train.rescale`` is none | fan_in (:meth:`tf_awt.Ticket.to_model`), and
``train.fail_on_collapse`` makes ``tf-awt run`` exit with code 3 when training collapsed;
``eval.steps`` uses step 2.5ε/steps. Unknown keys and bad values are ValueErrors naming them (an
unknown key with the allowed key it is closest to).

Nothing here imports TensorFlow (a recipe is checked before it loads).
"""
from __future__ import annotations

import dataclasses
import os
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional

import re

import yaml

__all__ = ["Recipe", "load_recipe", "bundled_recipes", "apply_overrides", "SECTIONS", "section_keys"]

from tf_awt._options import DISTRIBUTE, INITIALIZERS  # noqa: E402
from tf_awt.adversarial.attacks import Attack  # noqa: E402
from tf_awt.tickets.methods import get_method, method_names  # noqa: E402  (the one method registry)
from tf_awt.adversarial.phase_config import EvalConfig, ExportConfig, TrainConfig  # noqa: E402
from tf_awt.tickets.search_config import SHARED_KEYS, SearchConfig, options_class  # noqa: E402

SECTIONS = {"attack": Attack, "search": SearchConfig, "train": TrainConfig, "eval": EvalConfig, "export": ExportConfig}
"""A recipe's sections are these library configurations: ``recipe.search`` *is* the
:class:`~tf_awt.SearchConfig` that :func:`tf_awt.find_ticket` takes, and so on. A section's keys are
its class's fields, by the same names and with the same defaults, except those in :data:`NOT_KEYS`;
``search``'s keys are also every registered method's options (:mod:`tf_awt.tickets.method_options`),
flat, so that one recipe holds the settings of every method a comparison runs."""
NOT_KEYS = {"attack": ("clip_min", "clip_max"), "search": ("density", "method", "attack", "seed", "options")}
"""Fields that are not section keys: the attack's data range comes from the data set; the search's
density, method, attack and seed are the recipe's top-level keys, its options are flat keys."""
_DEFAULT_ATTACK = next(f.default for f in dataclasses.fields(SearchConfig) if f.name == "attack")


def _options_classes() -> List[type]:
    """The registered methods' options classes, each once, in registry order."""
    return list(dict.fromkeys(get_method(m).options for m in method_names()))


def _search_fields() -> Dict[str, dataclasses.Field]:
    """``search:`` key -> its field: SearchConfig's shared ones, then every options class's."""
    out = {f.name: f for f in dataclasses.fields(SearchConfig) if f.name not in NOT_KEYS["search"]}
    for cls in _options_classes():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out.update({k: fields[k] for k in cls.keys() if k not in out})
    return out


def section_keys(section: str) -> List[str]:
    """The keys of a recipe section, in field order."""
    if section == "search":
        return list(_search_fields())
    return [f.name for f in dataclasses.fields(SECTIONS[section]) if f.name not in NOT_KEYS.get(section, ())]


def search_defaults() -> Dict[str, Any]:
    """Every ``search:`` key's default (a key two options classes share has one default: tested)."""
    out = {k: f.default for k, f in _search_fields().items() if k in SHARED_KEYS}
    for cls in _options_classes():
        out.update({k: v for k, v in cls().flat().items() if k not in out})
    return out


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A whole run; see the module docstring for the keys. The sections are the library's own
    configurations (:data:`SECTIONS`); ``search``'s density, method, attack and seed are always the
    recipe's top-level ones (``search=None``, the default, builds it from them)."""

    dataset: str = "mnist-5k"
    model: str = "mlp"
    init: str = "glorot_uniform"
    method: str = "awt"
    density: float = 0.05
    seed: int = 0
    distribute: str = "none"
    description: str = ""
    attack: Attack = _DEFAULT_ATTACK
    search: Optional[SearchConfig] = None
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    export: ExportConfig = ExportConfig()
    search_settings: Optional[Mapping[str, Any]] = dataclasses.field(default=None, repr=False,
                                                                     metadata={"recipe_key": False})
    """Every ``search:`` key, flat, for whichever method runs (default None: the defaults, and
    ``search``'s): ``search`` is built from it for ``method``, so a copy with another method keeps them."""

    def __post_init__(self):
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if not (value is None and name == "search") and not isinstance(value, cls):
                raise ValueError(f"{name} must be a tf_awt.{cls.__name__}. You passed: {value!r}")
        if self.train.rewind == "learned" and not get_method(self.method).trains:
            raise ValueError(f"train.rewind: learned starts from the weights a search trained, and method {self.method!r} "
                             f"trains none. Allowed: rewind init, or a method that trains (awt, ntt, dns). You passed: method={self.method!r}")
        if self.distribute not in DISTRIBUTE:
            raise ValueError(f"distribute must be one of {DISTRIBUTE}. You passed: {self.distribute!r}")
        from tf_awt.models import MODELS

        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}. You passed: {self.model!r}")
        if self.init not in INITIALIZERS:
            raise ValueError(f"init must be one of {list(INITIALIZERS)}. You passed: {self.init!r}")
        self._resolve_search()
        self.train_attack(), self.eval_attack()

    def _resolve_search(self):
        """``search_settings`` completed (defaults, then ``search``'s own values) and checked for every
        method's options; ``search`` rebuilt from them for ``method`` (validates density and seed too)."""
        settings = {**search_defaults(), **(self.search_settings or {})}
        if self.search is not None:
            settings.update({k: v for k, v in self.search.flat().items() if k not in NOT_KEYS["search"]})
        for cls in _options_classes():
            cls.from_settings(settings, options_class)
        run = {"density": self.density, "method": self.method, "attack": self.attack, "seed": self.seed}
        object.__setattr__(self, "search", SearchConfig.from_settings({**settings, **run}, strict=False))
        object.__setattr__(self, "search_settings", settings)

    # ------------------------------------------------------------------ the phases' attacks
    def train_attack(self) -> Attack:
        """The recipe's attack with ``train.steps`` / ``train.step_size``."""
        return self.train.attack(self.attack)

    def eval_attack(self) -> Attack:
        """The recipe's attack with ``eval.steps`` (step 2.5ε/steps)."""
        return self.eval.attack(self.attack)

    def to_dict(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in _recipe_keys().values() if f.name not in SECTIONS}
        for name in SECTIONS:
            section = getattr(self, name)
            if name == "search":
                out[name] = {key: _plain(self.search_settings[key]) for key in section_keys(name)}
            else:
                out[name] = {key: _plain(getattr(section, key)) for key in section_keys(name)}
        return out

    def flat(self) -> Dict[str, Any]:
        """``{"attack.eps": 0.3, ...}``: the resolved recipe as flat keys (MLflow params)."""
        out = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _recipe_keys() -> Dict[str, dataclasses.Field]:
    """The recipe's top-level keys: :class:`Recipe`'s fields but ``search_settings``."""
    return {f.name: f for f in dataclasses.fields(Recipe) if f.metadata.get("recipe_key", True)}


def _plain(value):
    """Tuples as lists (YAML)."""
    return list(value) if isinstance(value, tuple) else value


class _Loader(yaml.SafeLoader):
    """YAML 1.2 integers: PyYAML's default (YAML 1.1) reads ``2:4`` as the base-60 integer 124,
    which made ``search.pattern: 2:4`` mean 124; here it stays the string "2:4"."""


_Loader.yaml_implicit_resolvers = {key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
                                   for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
                              list("-+0123456789"))
# YAML 1.2 floats: PyYAML's YAML 1.1 float needs a dot (``1.0e-4``), so ``1e-4`` was the string "1e-4"
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)[eE][-+]?[0-9]+$"),
                              list("-+.0123456789"))


def _load_yaml(text):
    return yaml.load(text, Loader=_Loader)


def _coerce(value, annotation, where):
    text = str(annotation)
    if value is None:
        if "Optional" in text or "None" in text:
            return None
        raise ValueError(f"{where} must not be empty (null). Allowed: a value of type {text.replace('typing.', '')}")
    if "float" in text and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if text in ("bool", "<class 'bool'>"):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false. You passed: {value!r}")
        return value
    expected = {"int": int, "float": float, "str": str}
    for name, typ in expected.items():
        if text.endswith(name) or text == f"<class '{name}'>" or f"[{name}]" in text:
            if not isinstance(value, typ) or isinstance(value, bool):
                raise ValueError(f"{where} must be a {name}. You passed: {value!r}")
    return value


def _did_you_mean(key, allowed, prefix: str = "") -> str:
    """`` (did you mean 'lr'?)`` for the closest allowed key, or ""."""
    import difflib

    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _section_settings(name: str, value, source: str) -> Dict[str, Any]:
    """The ``name:`` mapping's keys checked and their values coerced to their fields' types."""
    keys = section_keys(name)
    if not isinstance(value, dict):
        raise ValueError(f"{source}: {name} must be a mapping with keys {sorted(keys)}. You passed: {value!r}")
    types = ({k: f.type for k, f in _search_fields().items()} if name == "search"
             else {f.name: f.type for f in dataclasses.fields(SECTIONS[name])})
    settings = {}
    for key, item in value.items():
        dotted = f"{name}.{key}"
        if key not in keys:
            raise ValueError(f"{source}: unknown key '{dotted}'{_did_you_mean(key, keys, name + '.')}. "
                             f"Allowed keys under {name}: {sorted(keys)}")
        settings[key] = _coerce(item, types[key], f"{name}.{key}")
    return settings


def _naming_key(name: str, settings: Dict[str, Any], build):
    """``build()``; a ValueError about one of ``settings``' keys is prefixed with the section's name."""
    try:
        return build()
    except ValueError as err:
        text = str(err)
        field = next((k for k in settings if text.startswith(f"{k} ")), None)
        raise ValueError(f"{name}.{text}" if field else f"{name}: {text}") from None


def _section(name: str, value, source: str, fixed: Dict[str, Any]):
    """The ``name:`` mapping as its library configuration (``fixed``: the fields set outside it)."""
    settings = _section_settings(name, value, source)
    return _naming_key(name, settings, lambda: SECTIONS[name](**{**fixed, **settings}))


def from_dict(data: Dict[str, Any], source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a YAML mapping of keys. It holds: {type(data).__name__}")
    top = _recipe_keys()
    for key in data:
        if key not in top:
            raise ValueError(f"{source}: unknown key {key!r}{_did_you_mean(key, top)}. Allowed keys: {sorted(top)}")
    kwargs = {key: _coerce(value, top[key].type, key) for key, value in data.items() if key not in SECTIONS}
    for name in ("attack", "train", "eval", "export"):
        if name in data:
            kwargs[name] = _section(name, data[name], source, _DEFAULT_ATTACK.get_config() if name == "attack" else {})
    settings = _section_settings("search", data.get("search", {}), source)
    return _naming_key("search", settings, lambda: Recipe(**kwargs, search_settings=settings))


def bundled_recipes() -> Dict[str, str]:
    """Bundled recipe name -> its one-line description."""
    out = {}
    for entry in sorted(resources.files("tf_awt").joinpath("recipes").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            data = _load_yaml(entry.read_text())
            out[entry.name[:-5]] = (data or {}).get("description", "")
    return out


def _or_empty(document):
    return {} if document is None else document


def _read(name_or_path: str) -> (Dict[str, Any], str):
    if os.path.exists(name_or_path) or name_or_path.endswith((".yaml", ".yml")):
        try:
            with open(name_or_path, encoding="utf-8") as fh:
                return _or_empty(_load_yaml(fh)), name_or_path
        except OSError as err:
            raise ValueError(f"cannot read recipe file {name_or_path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ValueError(f"{name_or_path} is not valid YAML: {str(err).splitlines()[0]}") from None
    path = resources.files("tf_awt").joinpath("recipes", f"{name_or_path}.yaml")
    if not path.is_file():
        raise ValueError(f"unknown recipe {name_or_path!r}: not a file, and bundled recipes are {sorted(bundled_recipes())}")
    return _or_empty(_load_yaml(path.read_text())), name_or_path


def apply_overrides(data: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """Applies ``KEY=VALUE`` strings (``attack.eps=0.1``); VALUE is parsed as YAML."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set takes KEY=VALUE (e.g. attack.eps=0.1). You passed: {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = _load_yaml(raw)
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        if len(parts) == 1:
            data[parts[0]] = value
        elif len(parts) == 2:
            section = data.setdefault(parts[0], {})
            if not isinstance(section, dict):
                raise ValueError(f"--set {key}: {parts[0]} is not a section. You passed: {item!r}")
            section[parts[1]] = value
        else:
            raise ValueError(f"--set keys have at most one dot (section.key). You passed: {key!r}")
    return data


def load_recipe(name_or_path: str = "quickstart", overrides: Optional[List[str]] = None) -> Recipe:
    """A bundled recipe by name, or a YAML file, with ``KEY=VALUE`` overrides applied."""
    data, source = _read(name_or_path)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a YAML mapping of keys. It holds: {type(data).__name__} {data!r:.60}")
    return from_dict(apply_overrides(data, list(overrides or [])), source)
