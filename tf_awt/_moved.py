"""The module paths of earlier versions, kept working: ``tf_awt.kernel`` is ``tf_awt.engine.kernel``.

Modules moved into the layer sub-packages (``engine``, ``adversarial``, ``tickets``, ``running``)
can still be imported by their old dotted names (``import tf_awt.search``, ``from tf_awt.cli import
main``, ``python -m tf_awt.cli``, ``from tf_awt import methods``): the old name is the *same module
object* as the new one, so registries and monkeypatches see one module. A finder on ``sys.meta_path``
answers for exactly the names in :data:`MOVED` and nothing else.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {f"tf_awt.{name}": f"tf_awt.{package}.{name}" for package, names in {
    "engine": ("kernel", "_contract", "layer_rules", "_layers", "_masks", "distances", "kernel_sketch"),
    "adversarial": ("attacks", "training", "training_schedule", "_learning_rate", "collapse", "evaluation",
                    "attack_suites", "autoattack", "phase_config"),
    "tickets": ("search", "search_config", "methods", "baselines", "iterative", "_selection", "pruning_schedule",
                "ticket", "export"),
    "running": ("recipes", "pipeline", "run_directory", "run_inputs", "report", "sweep", "cells", "tracking", "plots",
                "cli", "logs"),
}.items() for name in names}
"""Old dotted name -> the module's name now."""


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old name as the module of its new name (and runs it for ``python -m``)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])  # the same object: sys.modules[old] is the new module

    def exec_module(self, module):
        pass  # already executed under its new name

    def get_code(self, fullname):  # runpy (``python -m tf_awt.cli``)
        new = MOVED[fullname]
        return importlib.util.find_spec(new).loader.get_code(new)


def install() -> None:
    """Puts the finder first on ``sys.meta_path`` once (first: the data folder ``tf_awt/recipes/``
    would otherwise be found as a namespace package for ``tf_awt.recipes``)."""
    if not any(isinstance(finder, _OldNames) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldNames())
