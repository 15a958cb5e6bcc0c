"""The ticket-method registry: the one answer to "which methods can find a ticket, and how".

Every method — Algorithm 1 and NTT, the one-shot baselines, Cosentino et al.'s iterative pruning,
``dense`` (no pruning) and any method a user registers — is a :class:`TicketMethod` here, and every
caller (:func:`tf_awt.find_ticket`, :class:`tf_awt.SearchConfig`, recipes, ``tf-awt run``,
``tf-awt sweep``) looks it up by name; none of them special-cases a method. Adding a method is one
:func:`register_method` call::

    def keep_largest_inputs(model, data, config, options):
        ...                                   # any scores -> masks {layer name: 0/1 array}
        return masks

    tf_awt.register_method("largest_inputs", keep_largest_inputs)
    tf_awt.find_ticket(model, (x, y), density=0.05, method="largest_inputs")  # or `method: largest_inputs`

A method's ``find(model, data, config, options)`` gets the built tf_keras model at θ0 (not to be
modified), the data as given to :func:`tf_awt.find_ticket` ((x, y) arrays or a dataset of
batches), the validated :class:`tf_awt.SearchConfig` (its ``options``: an instance of the
method's options class, ``register_method(..., options=...)``, :mod:`tf_awt.tickets.method_options`)
and the :class:`FindOptions`, and returns the
masks ({prunable layer name: 0/1 array of the kernel's shape}), or (masks, history), or a whole
:class:`tf_awt.Ticket`. This module imports no TensorFlow (a recipe's method is checked before
TensorFlow loads); the built-in methods import their implementations when they run.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from tf_awt.tickets.method_options import (AWTOptions, CosentinoOptions, DNSOptions, MethodOptions, NoOptions,
                                          RandomLayerwiseOptions)
from tf_awt.tickets.search_space import SearchSpace

__all__ = ["TicketMethod", "FindOptions", "register_method", "get_method", "method_names", "METHODS", "SearchSpace"]


@dataclasses.dataclass(frozen=True)
class FindOptions:
    """How :func:`tf_awt.find_ticket` was asked to run a method (beside the :class:`SearchConfig`).

    Attributes:
      batch_size: examples per batch for (x, y) arrays (default 64).
      callbacks: Keras callbacks for a method that trains (default none).
      verbose: ``fit`` verbosity (default 0).
      checkpoint_dir: where a method that trains saves and resumes (default None: nowhere).
    """

    batch_size: int = 64
    callbacks: Tuple = ()
    verbose: int = 0
    checkpoint_dir: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class TicketMethod:
    """One way of finding a ticket.

    Attributes:
      name: what recipes and ``find_ticket(method=...)`` call it.
      find: ``find(model, data, config, options)`` -> masks, (masks, history) or a Ticket.
      trains: True if it trains for ``config.epochs`` epochs (a per-epoch progress bar and a
        checkpoint in ``tf-awt run``; default False).
      prunes: False for a method that keeps every weight whatever the density (``dense``): a sweep
        runs it once, at density 1 (default True).
      description: one line for listings (default "").
      space: what the method has to choose, the settings ``tf-awt compare`` tries
        (:class:`tf_awt.tickets.search_space.SearchSpace`; default empty: nothing, one try with the recipe's settings).
      options: the class of its own options (:mod:`tf_awt.tickets.method_options`), validated there;
        a :class:`~tf_awt.SearchConfig` of this method holds one in ``options`` (default
        :class:`~tf_awt.tickets.method_options.NoOptions`: nothing beyond the shared settings).
    """

    name: str
    find: Callable
    trains: bool = False
    prunes: bool = True
    description: str = ""
    space: SearchSpace = SearchSpace()
    options: type = NoOptions


_REGISTRY: Dict[str, TicketMethod] = {}


def register_method(name: str, find: Callable, *, trains: bool = False, prunes: bool = True,
                    description: str = "", space: Union[SearchSpace, Mapping[str, Sequence[Any]], None] = None,
                    options: Optional[type] = None) -> TicketMethod:
    """Registers (or replaces) the ticket method ``name``; returns it. See the module docstring.

    ``space`` is what ``tf-awt compare`` tunes for it: a :class:`tf_awt.tickets.search_space.SearchSpace`, or a mapping
    {recipe key: candidate values} taken as their grid (default None: nothing to tune). ``options`` is the class of
    its own settings, a frozen dataclass subclassing :class:`~tf_awt.tickets.method_options.MethodOptions` whose
    fields are its ``search.<key>`` recipe keys (default None: none)."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"a method name is letters, digits, '_' and '-'. You passed: {name!r}")
    if not callable(find):
        raise ValueError(f"find must be a callable find(model, data, config, options). You passed: {find!r}")
    options = NoOptions if options is None else options
    if not (isinstance(options, type) and issubclass(options, MethodOptions) and dataclasses.is_dataclass(options)):
        raise ValueError("options must be a dataclass subclassing tf_awt.tickets.method_options.MethodOptions (or None). "
                         f"You passed: {options!r}")
    if space is None:
        space = SearchSpace()
    elif not isinstance(space, SearchSpace):
        space = SearchSpace.grid(space)
    method = TicketMethod(name, find, bool(trains), bool(prunes), description, space, options)
    _REGISTRY[name] = method
    return method


def method_names() -> Tuple[str, ...]:
    """The registered methods' names, built-in first."""
    return tuple(_REGISTRY)


def get_method(name: str) -> TicketMethod:
    """The registered method ``name``; a ValueError lists the registered ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"method must be one of {method_names()} (or one registered with tf_awt.register_method). "
                         f"You passed: {name!r}") from None


# --------------------------------------------------------------------------- the built-in methods
# Named by "module:function" and imported on first use, like package entry points: this module stays
# free of TensorFlow and below every implementation in the import graph (no cycle).
_BUILT_IN = {
    "search": "tf_awt.tickets.find:run_search",
    "one_shot": "tf_awt.tickets.baselines:find_one_shot",
    "layerwise_shuffle": "tf_awt.tickets.baselines:find_layerwise_shuffle",
    "iterative": "tf_awt.tickets.iterative:find_iterative",
    "surgery": "tf_awt.tickets.surgery:find_surgery",
    "dense": "tf_awt.tickets.ticket:find_dense",
}


def _entry_point(path: str) -> Callable:
    """``find`` of a built-in method: the function at ``module:function``, imported when called."""
    module, function = path.split(":")

    def find(model, data, config, options):
        import importlib

        return getattr(importlib.import_module(module), function)(model, data, config, options)

    find.__name__ = function
    find.__qualname__ = path
    return find


_search = _entry_point(_BUILT_IN["search"])
_one_shot = _entry_point(_BUILT_IN["one_shot"])
_layerwise_shuffle = _entry_point(_BUILT_IN["layerwise_shuffle"])
_iterative = _entry_point(_BUILT_IN["iterative"])
_dense = _entry_point(_BUILT_IN["dense"])
_surgery = _entry_point(_BUILT_IN["surgery"])


# ----------------------------------------------------------------- what each built-in method tunes
# The knobs that matter for each method (read off the paper and the code it builds on, NTT): a comparison draws the same number of tries from each. Absolute values, sized for the
# bundled CPU recipes; `tf-awt compare --space METHOD:KEY=V1,V2` replaces a knob's values.
_SEARCH_KNOBS = {
    "search.epochs": (2, 10),  # search length: the paper runs ~190 mask updates, the CPU recipes ~6
    "search.update_every": (20, 100),  # T_m (NTT: 100)
    "search.weight_decay": (0.0, 1e-4),  # Algorithm 1 line 5 / NTT's λ, in the recipe's weight_decay_form
    "search.student_kernel": ("masked", "full"),  # the sparse net's own NTK, or NTT's NTK at θ = m⊙w
    "search.scope": ("global", "frankle_carbin"),  # layer allocation
    "search.normalization": ("per_example", "per_entry"),  # eq. (13)'s weighting, or NTT's code's
}
SEARCH_SPACE = SearchSpace.grid(_SEARCH_KNOBS)
AWT_SPACE = SearchSpace.grid({**_SEARCH_KNOBS, "search.student_steps": (None, 3, 1), "search.probes": (1, 4)})
"""AWT's knobs: NTT's, the student's attack (the teacher's PGD, PGD-3, or FGSM with a random start:
issue 41's cheaper steps; NTT has ε = 0, no attack to choose) and the sketch's probes K (1 or 4;
docs/results.md section 12). On the exact kernel path (`search.kernel: full`, the MLP recipes) K does
nothing, so two of AWT's points there search alike: a draw of tries can hold such a pair."""
ALLOCATION_SPACE = SearchSpace.grid({"search.scope": ("global", "layer", "erk", "frankle_carbin"),
                                     "init": ("glorot_uniform", "glorot_normal")})
ITERATIVE_SPACE = SearchSpace.grid({
    "search.rounds": (3, 5, 15),  # Cosentino et al. prune 20% / 10% a round: 15 rounds to 3.6%
    "search.epochs": (1, 2, 5),  # adversarial training per round
    "search.scope": ("global", "frankle_carbin"),
    "search.eps_warmup_epochs": (0.0, 1.0),  # rounds at large ε collapse without it (results.md section 6)
})
SURGERY_SPACE = SearchSpace.grid({
    "search.epochs": (2, 10),  # as AWT's: the same search lengths
    "search.update_every": (20, 100),  # steps between surgeries
    "search.hysteresis": (0.0, 0.1),  # plain top-k |W|, or Guo et al.'s band
    "search.ramp_fraction": (0.25, 0.75),  # how soon the density arrives
    "train.rewind": ("learned", "init"),  # fine-tune DNS's weights (Guo et al.), or train m ⊙ θ0
})

register_method("awt", _search, trains=True, space=AWT_SPACE, options=AWTOptions,
                description="Algorithm 1: the student keeps the dense net's adversarial training dynamics")
register_method("ntt", _search, trains=True, description="Neural Tangent Transfer: AWT with ε = 0", space=SEARCH_SPACE,
                options=AWTOptions)
for _name, _text in (("random", "uniform random scores"), ("magnitude", "|θ0|"), ("snip", "|g ⊙ θ0| (Lee et al., 2019)"),
                     ("synflow", "iterative synaptic flow (Tanaka et al., 2020)")):
    register_method(_name, _one_shot, description=_text, space=ALLOCATION_SPACE)
register_method("erk", _one_shot, description="random scores at Erdős–Rényi-Kernel layer densities",
                space={"init": ("glorot_uniform", "glorot_normal")})  # the allocation is the method
register_method("random_layerwise", _layerwise_shuffle, options=RandomLayerwiseOptions,
                description="a reference ticket's layer counts at random positions (Frankle et al., 2021)")
register_method("cosentino", _iterative, description="adversarial iterative magnitude pruning (Cosentino et al., 2019)",
                space=ITERATIVE_SPACE, options=CosentinoOptions)
register_method("dns", _surgery, trains=True, space=SURGERY_SPACE, options=DNSOptions,
                description="Dynamic Network Surgery: prunes while it trains, pruned weights can come back (Guo et al., 2016)")
register_method("dense", _dense, prunes=False, description="no pruning: every weight kept")
del _name, _text, _search, _one_shot, _layerwise_shuffle, _iterative, _dense, _surgery

METHODS = tuple(name for name in method_names() if name != "dense")
"""The built-in ticket methods that prune (the paper's and the baselines')."""
