"""What a run of a recipe reads: its data (the validation split when ``eval.split: validation``),
its architecture at the seeded initialization θ0, its ``tf.distribute`` strategy, and its attacks
clipped to the data's range. Each is made on first use, so a run that only evaluates never builds a
strategy, and a data set that cannot be read fails before anything is written.

The data set, the models and the strategy are imported on first use (``tf-awt run`` on a finished
directory never loads them).
"""
from __future__ import annotations

from typing import Optional

__all__ = ["RunInputs", "check_eps_in_range", "check_inputs"]


def check_eps_in_range(eps: float, norm: str, split, name: str = "attack.eps", where: str = "") -> None:
    """ε below 0, or an L∞ ε beyond the data's range (it moves every input anywhere): a ValueError
    naming ``name`` and what is allowed. ``tf-awt run`` checks its recipe's attack with it before
    writing anything, ``tf-awt evaluate`` its ``--eps``."""
    bounded = split.clip_min is not None and split.clip_max is not None
    high = float(split.clip_max - split.clip_min) if bounded else None
    if eps < 0 or (norm == "linf" and bounded and eps > high):
        raise ValueError(f"{name} must be in [0, {high:g}] for an L∞ attack on data in [{split.clip_min:g}, "
                         f"{split.clip_max:g}]{where}. You passed: {eps:g}" if bounded else
                         f"{name} must be >= 0. You passed: {eps:g}")


def check_inputs(recipe, data_dir: Optional[str] = None) -> None:
    """What every run of ``recipe`` checks first: its data set can be read and its attack fits the
    data's range. A sweep or a comparison calls it before writing anything, so a recipe that every
    cell would refuse is refused once, with nothing left behind. Only the data's range is read: no
    example of either split is used."""
    _checked_split(recipe, data_dir)


def _checked_split(recipe, data_dir: Optional[str]):
    """The recipe's data set, its attack's ε checked against the data's range."""
    from tf_awt import data

    split = data.load(recipe.dataset, data_dir)
    check_eps_in_range(recipe.attack.eps, recipe.attack.norm, split, where=f" ({split.name})")
    return split


class RunInputs:
    """The inputs of one run of ``recipe`` (a :class:`tf_awt.running.recipes.Recipe`).

    Args:
      recipe: the resolved recipe.
      data_dir: tensorflow-datasets ``data_dir`` (default None: ``TFDS_DATA_DIR`` or its default).
    """

    def __init__(self, recipe, data_dir: Optional[str] = None):
        self.recipe, self.data_dir = recipe, data_dir
        self._split = self._strategy = None

    @property
    def split(self):
        """The recipe's data set (a :class:`tf_awt.data.Split`), or its validation split."""
        if self._split is None:
            from tf_awt import data

            self._split = _checked_split(self.recipe, self.data_dir)
            if self.recipe.eval.split == "validation":
                self._split = data.validation_split(self._split)
        return self._split

    @property
    def strategy(self):
        """The recipe's ``tf.distribute`` strategy (``distribute``: none | mirrored | multi_worker)."""
        if self._strategy is None:
            from tf_awt._distribute import strategy_for

            self._strategy = strategy_for(self.recipe.distribute)
        return self._strategy

    def base_model(self):
        """The architecture at its seeded initialization θ0 (the same weights on every call)."""
        import tf_keras

        from tf_awt.models import build_model

        tf_keras.utils.set_random_seed(self.recipe.seed)
        return build_model(self.recipe.model, self.split.input_shape, self.split.num_classes, self.recipe.init)

    def in_range(self, attack):
        """``attack`` clipped to the data set's range (unbounded for Gaussian toy data)."""
        return attack.replace(clip_min=self.split.clip_min, clip_max=self.split.clip_max)

    @property
    def held_out_name(self) -> str:
        """What :meth:`validation` holds, the prefix of the training curves computed on it: ``"test"``
        (the test split: a curve to look at, never to choose an epoch or a setting by), or
        ``"validation"`` (``eval.split: validation``, a split carved from the training data)."""
        return "validation" if self.recipe.eval.split == "validation" else "test"

    def validation(self, held: int = 1000):
        """The first ``held`` test (or validation) examples as a dataset: the per-epoch curves of
        training, named by :attr:`held_out_name`."""
        import tensorflow as tf

        s = self.split
        n = min(len(s.y_test), held)
        return tf.data.Dataset.from_tensor_slices((s.x_test[:n], s.y_test[:n])).batch(256)
