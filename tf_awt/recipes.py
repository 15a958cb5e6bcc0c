"""Recipes: YAML files validated into frozen dataclasses; bundled ones live in ``tf_awt/recipes``.

A recipe fixes a whole run (search → adversarial training → evaluation → export)::

    dataset: mnist-5k          # a tf_awt.data name or an .npz path
    model: mlp                 # mlp | cnn | linear | vgg16 | resnet18
    init: glorot_uniform       # glorot_uniform (Keras) | glorot_normal (NTT/stax: + N(0, 0.01²) biases)
    method: awt                # awt | ntt | random | magnitude | snip | synflow | erk | random_layerwise | cosentino | dense
    density: 0.05
    seed: 0
    distribute: none           # none | mirrored | multi_worker
    attack: {norm: linf, eps: 0.3, steps: 10, step_size: 0.075}   # the search's (and training's) PGD
    search: {epochs: 20, lr: 5.0e-4, gamma: 1.0e-3, update_every: 100, weight_decay: 0.0,
             weight_decay_form: l2, student_kernel: masked, layer_densities: null,
             kernel: full, kernel_weight: null, normalization: per_example, scope: global,
             pattern: unstructured, optimize: weights, reference: awt, rounds: 5, prune_rate: null,
             precision: float32, eps_warmup_epochs: 0}
    # eps_warmup_epochs: method cosentino: each round's ε warm-up (epochs)
    # weight_decay_form: l2 (β‖m⊙w‖² in the loss) | l2_per_density (NTT: λ/density) | decoupled (Algorithm 1 line 5)
    # student_kernel: masked (Σ m_p ∂f∂f′) | full (NTT: every weight's column at m⊙w)
    # scope: global | layer | erk | frankle_carbin; layer_densities: [d_1, ...] or {layer: d} overrides it
    # precision: bfloat16 runs the kernels' large products in bfloat16 (float32 sums; faster on AMX CPUs)
    # pattern: N:M (e.g. 2:4) keeps N of every M consecutive input weights per unit; density must be N/M
    train: {epochs: 100, lr: 1.0e-3, batch_size: 64, steps: 40, step_size: 0.01,
            eps_warmup_epochs: 0, lr_schedule: constant, lr_warmup_epochs: 0, clip_norm: null,
            rescale: none, fail_on_collapse: false}
    eval: {steps: 100, restarts: 5, max_examples: null, autoattack: false, split: test}
    # autoattack: + AutoAttack (ART); split: validation trains on 80% of the training data and
    # evaluates on the other 20% (stratified, fixed), for choosing hyper-parameters without the test split
    export: {tflite: true, keras3: false}   # also write model.tflite (pruned kernels stored sparse);
                                            # keras3: also model.keras, the trained ticket as a Keras 3 model

``train.steps``/``train.step_size`` are the training attack's (ε and norm from ``attack``);
``train.eps_warmup_epochs`` ramps ε and the step size up from 0 (:class:`tf_awt.TrainingSchedule`),
``train.lr_schedule`` is constant | cosine | step, ``train.clip_norm`` clips the gradient's global
norm, ``train.rescale`` is none | fan_in (:meth:`tf_awt.Ticket.to_model`), and
``train.fail_on_collapse`` makes ``tf-awt run`` exit with code 3 when training collapsed;
``eval.steps`` uses step 2.5ε/steps. Unknown keys and bad values are ValueErrors naming them.
"""
from __future__ import annotations

import dataclasses
import os
from importlib import resources
from typing import Any, Dict, List, Optional

import re

import yaml

__all__ = ["Recipe", "load_recipe", "bundled_recipes", "apply_overrides"]

from tf_awt.methods import get_method  # noqa: E402  (the one method registry)
from tf_awt.paper import attack_numbers  # noqa: E402

_SEARCH_EPS, _SEARCH_STEPS, _SEARCH_STEP_SIZE = attack_numbers("search")
_TRAIN_EPS, _TRAIN_STEPS, _TRAIN_STEP_SIZE = attack_numbers("train")
_EVAL_STEPS = attack_numbers("eval")[1]
DISTRIBUTE = ("none", "mirrored", "multi_worker")
EVAL_SPLITS = ("test", "validation")


@dataclasses.dataclass(frozen=True)
class AttackSection:
    norm: str = "linf"
    eps: float = _SEARCH_EPS
    steps: int = _SEARCH_STEPS
    step_size: Optional[float] = _SEARCH_STEP_SIZE


@dataclasses.dataclass(frozen=True)
class SearchSection:
    epochs: int = 20
    lr: float = 5e-4
    gamma: float = 1e-3
    update_every: int = 100
    weight_decay: float = 0.0
    weight_decay_form: str = "l2"
    student_kernel: str = "masked"
    layer_densities: Optional[Any] = None
    kernel: str = "full"
    probes: int = 4
    kernel_weight: Optional[float] = None
    normalization: str = "per_example"
    scope: str = "global"
    pattern: str = "unstructured"
    batch_size: int = 64
    optimize: str = "weights"
    reference: str = "awt"
    rounds: int = 5
    prune_rate: Optional[float] = None
    precision: str = "float32"
    eps_warmup_epochs: float = 0.0


SEARCH_RENAMED = {"lr": "learning_rate"}
"""Recipe ``search.*`` keys whose :class:`~tf_awt.SearchConfig` field has another name."""
SEARCH_RECIPE_ONLY = ("batch_size",)
"""Recipe ``search.*`` keys that are not search settings (the search data's batch size)."""


def _field_names(cls) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)]


@dataclasses.dataclass(frozen=True)
class TrainSection:
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 64
    steps: int = _TRAIN_STEPS
    step_size: Optional[float] = _TRAIN_STEP_SIZE
    eps_warmup_epochs: float = 0.0
    lr_schedule: str = "constant"
    lr_warmup_epochs: float = 0.0
    clip_norm: Optional[float] = None
    rescale: str = "none"
    fail_on_collapse: bool = False


@dataclasses.dataclass(frozen=True)
class EvalSection:
    steps: int = _EVAL_STEPS
    restarts: int = 5
    max_examples: Optional[int] = None
    autoattack: bool = False
    split: str = "test"


@dataclasses.dataclass(frozen=True)
class ExportSection:
    tflite: bool = True
    keras3: bool = False


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A whole run; see the module docstring for the keys."""

    dataset: str = "mnist-5k"
    model: str = "mlp"
    init: str = "glorot_uniform"
    method: str = "awt"
    density: float = 0.05
    seed: int = 0
    distribute: str = "none"
    description: str = ""
    attack: AttackSection = AttackSection()
    search: SearchSection = SearchSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    export: ExportSection = ExportSection()

    def __post_init__(self):
        get_method(self.method)
        if self.distribute not in DISTRIBUTE:
            raise ValueError(f"distribute must be one of {DISTRIBUTE}. You passed: {self.distribute!r}")
        from tf_awt.models import MODELS

        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}. You passed: {self.model!r}")
        from tf_awt._options import INITIALIZERS

        if self.init not in INITIALIZERS:
            raise ValueError(f"init must be one of {list(INITIALIZERS)}. You passed: {self.init!r}")
        for section, key, low in (("train", "epochs", 0), ("train", "batch_size", 1), ("search", "batch_size", 1),
                                  ("eval", "steps", 0), ("eval", "restarts", 1), ("search", "epochs", 0)):
            value = getattr(getattr(self, section), key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{section}.{key} must be an integer >= {low}. You passed: {value!r}")
        # The library's own validation covers the rest (density, attack, search settings).
        self.search_config()
        self.train_attack()
        self.training_schedule(steps_per_epoch=1)
        if self.eval.split not in EVAL_SPLITS:
            raise ValueError(f"eval.split must be one of {EVAL_SPLITS}. You passed: {self.eval.split!r}")
        from tf_awt.ticket import RESCALES

        if self.train.rescale not in RESCALES:
            raise ValueError(f"train.rescale must be one of {RESCALES}. You passed: {self.train.rescale!r}")

    # ------------------------------------------------------------------ to library objects
    def attack_config(self):
        from tf_awt.attacks import Attack

        return Attack(norm=self.attack.norm, eps=self.attack.eps, steps=self.attack.steps, step_size=self.attack.step_size)

    def train_attack(self):
        return self.attack_config().replace(steps=self.train.steps, step_size=self.train.step_size)

    def training_schedule(self, steps_per_epoch: int):
        """The ``train.*`` warm-up, learning-rate schedule and clipping as a TrainingSchedule."""
        from tf_awt.training_schedule import TrainingSchedule

        t = self.train
        return TrainingSchedule.from_epochs(steps_per_epoch, t.epochs, eps_warmup_epochs=t.eps_warmup_epochs,
                                            lr_schedule=t.lr_schedule, lr_warmup_epochs=t.lr_warmup_epochs,
                                            clip_norm=t.clip_norm)

    def eval_attack(self):
        return self.attack_config().replace(steps=self.eval.steps, step_size=None)

    def search_config(self):
        """``search.*`` as a :class:`~tf_awt.SearchConfig`: every key by its own name (``lr`` is
        ``learning_rate``; ``batch_size`` is the data's), with the recipe's density, method, attack
        and seed. A ``SearchConfig`` field without a recipe key fails ``tests/test_structure.py``."""
        from tf_awt.search_config import SearchConfig

        fields = {SEARCH_RENAMED.get(k, k): getattr(self.search, k) for k in _field_names(SearchSection)
                  if k not in SEARCH_RECIPE_ONLY}
        return SearchConfig(density=self.density, method=self.method, attack=self.attack_config(), seed=self.seed, **fields)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

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


_SECTIONS = {"attack": AttackSection, "search": SearchSection, "train": TrainSection, "eval": EvalSection,
             "export": ExportSection}


class _Loader(yaml.SafeLoader):
    """YAML 1.2 integers: PyYAML's default (YAML 1.1) reads ``2:4`` as the base-60 integer 124,
    which made ``search.pattern: 2:4`` mean 124; here it stays the string "2:4"."""


_Loader.yaml_implicit_resolvers = {key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
                                   for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
                              list("-+0123456789"))


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


def from_dict(data: Dict[str, Any], source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a YAML mapping of keys. It holds: {type(data).__name__}")
    top = {f.name: f for f in dataclasses.fields(Recipe)}
    kwargs = {}
    for key, value in data.items():
        if key not in top:
            raise ValueError(f"{source}: unknown key {key!r}{_did_you_mean(key, top)}. Allowed keys: {sorted(top)}")
        if key in _SECTIONS:
            cls = _SECTIONS[key]
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if not isinstance(value, dict):
                raise ValueError(f"{source}: {key} must be a mapping with keys {sorted(fields)}. You passed: {value!r}")
            for sub in value:
                if sub not in fields:
                    raise ValueError(f"{source}: unknown key '{key}.{sub}'{_did_you_mean(sub, fields, key + '.')}. "
                                     f"Allowed keys under {key}: {sorted(fields)}")
            kwargs[key] = cls(**{k: _coerce(v, fields[k].type, f"{key}.{k}") for k, v in value.items()})
        else:
            kwargs[key] = _coerce(value, top[key].type, key)
    return Recipe(**kwargs)


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
