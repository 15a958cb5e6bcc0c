"""What a ticket method has to choose: its search space, the settings ``tf-awt compare`` tries.

A :class:`SearchSpace` is a list of *points*, each a setting of recipe keys
(``{"search.scope": "erk", "init": "glorot_normal"}``): the knobs that matter for one method and
nothing else. :meth:`SearchSpace.grid` builds the product of a few knobs' values; an explicit list
writes hand-picked points. :meth:`SearchSpace.tries` draws the points a tuning budget of ``count``
tries runs: ``count`` distinct points, uniformly without replacement from a seeded generator (the
whole space when it has no more than ``count``), in the space's own order. Every method in a
comparison gets the same ``count``; a method whose space is smaller has nothing more to choose.

Values are YAML scalars (numbers, strings, booleans, null), so a point reads like ``--set``
overrides and survives a JSON round trip; the keys are checked against the recipe when a comparison
builds its runs (:mod:`tf_awt.running.compare`), not here: this module imports neither TensorFlow
nor the recipes.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = ["SearchSpace"]

_SCALARS = (bool, int, float, str, type(None))


def _point(point, where: str) -> Tuple[Tuple[str, Any], ...]:
    if not isinstance(point, Mapping):
        raise ValueError(f"{where}: a point of a search space is a mapping of recipe keys to values. You passed: {point!r}")
    for key, value in point.items():
        if not isinstance(key, str) or not key or key.count(".") > 1:
            raise ValueError(f"{where}: keys are recipe keys (`init`, `search.scope`: at most one dot). You passed: {key!r}")
        if not isinstance(value, _SCALARS):
            raise ValueError(f"{where}: values are numbers, strings, booleans or null. You passed: {key}={value!r}")
    return tuple(sorted(point.items()))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The settings a comparison may try for one method.

    Attributes:
      points: the candidate settings, each a tuple of (recipe key, value) pairs (default none: the
        method has nothing to choose and runs once, with the recipe's settings). Pass dicts;
        they are stored sorted by key, and duplicates are refused.
    """

    points: Tuple[Tuple[Tuple[str, Any], ...], ...] = ()

    def __post_init__(self):
        if isinstance(self.points, (str, bytes, Mapping)) or not isinstance(self.points, Iterable):
            raise ValueError(f"points must be a list of mappings of recipe keys to values. You passed: {self.points!r}")
        points = tuple(_point(dict(p) if isinstance(p, tuple) else p, f"point {i}") for i, p in enumerate(self.points))
        seen = set()
        for i, p in enumerate(points):
            if p in seen:
                raise ValueError(f"point {i} repeats an earlier point: {dict(p)}. You passed: {[dict(q) for q in points]}")
            seen.add(p)
        object.__setattr__(self, "points", points)

    @classmethod
    def grid(cls, knobs: Mapping[str, Sequence[Any]]) -> "SearchSpace":
        """Every combination of ``knobs`` ({recipe key: candidate values}), the first key slowest."""
        if not isinstance(knobs, Mapping):
            raise ValueError(f"knobs must be a mapping of recipe keys to lists of values. You passed: {knobs!r}")
        for key, values in knobs.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ValueError(f"knob {key!r} needs a non-empty list of values. You passed: {values!r}")
        keys = list(knobs)
        return cls(tuple(dict(zip(keys, combo)) for combo in itertools.product(*(knobs[k] for k in keys))))

    def __len__(self) -> int:
        return len(self.points)

    def keys(self) -> List[str]:
        """The recipe keys any point sets, in first-seen order."""
        return list(dict.fromkeys(k for p in self.points for k, _ in p))

    def tries(self, count: int, seed: int = 0) -> List[Dict[str, Any]]:
        """``count`` distinct points drawn uniformly without replacement (by ``seed``), in the
        space's order; all of them when the space has at most ``count``; ``[{}]`` (one try: the
        recipe as it is) when the space is empty."""
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"count (tries) must be an integer >= 1. You passed: {count!r}")
        if not self.points:
            return [{}]
        chosen = range(len(self.points)) if len(self.points) <= count else \
            sorted(np.random.default_rng(seed).permutation(len(self.points))[:count].tolist())
        return [dict(self.points[i]) for i in chosen]

    def get_config(self) -> Dict[str, Any]:
        return {"points": [dict(p) for p in self.points]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SearchSpace":
        return cls(tuple(config.get("points", ())))
