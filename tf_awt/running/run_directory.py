"""A run's output directory: its layout, what it holds, and the state a resumed run continues.

Layout (every file written to a temporary name, then renamed: an interrupted run never leaves a
complete-looking half-written file)::

    recipe.yaml             the fully resolved recipe
    ticket.npz              search: masks, θ0, distance history          (phase "search")
    trained.weights.h5      the adversarially trained ticket              (phase "train")
    history.json            per-epoch natural/adversarial loss and accuracy
    evaluation.json         natural/robust accuracy, per class, sanity warnings (phase "evaluate")
    saved_model/            strip_pruning'd sparse model, serving_default(images) -> logits (phase "export")
    model.tflite            the same model for TFLite, pruned kernels stored sparse (export.tflite: true)
    model.keras             the same model as a Keras 3 file (export.keras3: true)
    summary.json            the run's results; written last
    *.png                   distance curves, accuracy curves, per-layer density
    run.json                MLflow run id and phase timings (what a resumed run continues)
    checkpoints/search|train/   per-epoch checkpoints of the running phase (deleted when it completes)

A directory holding another recipe's run is refused; ``force`` discards whatever it holds. This
module imports no TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Optional

from tf_awt._files import apply_umask, atomic_write_bytes, atomic_write_json

__all__ = ["RunDirectory", "OUTPUTS", "completed_epochs", "kept"]

OUTPUTS = ("summary.json", "ticket.npz", "trained.weights.h5", "history.json", "evaluation.json", "run.json", "saved_model",
           "model.tflite", "model.keras", "checkpoints")


class RunDirectory:
    """The output directory ``out`` of one run of ``recipe`` (a :class:`tf_awt.running.recipes.Recipe`)."""

    def __init__(self, out: str, recipe):
        self.out, self.recipe = out, recipe

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def has(self, *names: str) -> bool:
        return all(os.path.exists(self.path(name)) for name in names)

    def read_json(self, name: str):
        with open(self.path(name), encoding="utf-8") as fh:
            return json.load(fh)

    def write_json(self, name: str, value) -> None:
        atomic_write_json(self.path(name), value)

    def require(self, name: str, phase: str) -> None:
        if not self.has(name):
            raise ValueError(f"{self.path(name)} does not exist: run the {phase!r} phase first (or 'tf-awt run').")

    @property
    def fingerprint(self) -> str:
        """sha256 of the resolved recipe: what makes two runs the same run."""
        return hashlib.sha256(self.recipe.to_yaml().encode()).hexdigest()

    def finished_summary(self) -> Optional[dict]:
        """The summary of a finished run (``summary.json``), or None."""
        return self.read_json("summary.json") if self.has("summary.json") else None

    def prepare(self, force: bool = False) -> dict:
        """Checks what the directory holds; returns the saved run state (``run.json``) to continue."""
        os.makedirs(self.out, exist_ok=True)
        if force:
            for name in OUTPUTS:
                target = self.path(name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
            return {}
        recipe_path = self.path("recipe.yaml")
        if os.path.exists(recipe_path):
            with open(recipe_path, encoding="utf-8") as fh:
                held = fh.read()
            if held != self.recipe.to_yaml():
                raise ValueError(f"{self.out} holds a run of another recipe ({recipe_path} differs from this one). "
                                 "Use another --out directory, or --force to discard it.")
        state_path = self.path("run.json")
        if not os.path.exists(state_path):
            return {}
        try:
            state = self.read_json("run.json")
            if not isinstance(state, dict):
                raise ValueError("not a mapping")
        except (OSError, ValueError) as err:
            raise ValueError(f"{state_path} is corrupt ({err}). Rerun with --force to start over.") from None
        return state

    def saved_state(self) -> dict:
        """The saved run state (``run.json``), or {} if there is none or it cannot be read (a single phase
        replaces it; :meth:`prepare`, for a whole run, refuses a corrupt one instead)."""
        try:
            state = self.read_json("run.json") if self.has("run.json") else {}
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def write_recipe(self) -> None:
        atomic_write_bytes(self.path("recipe.yaml"), self.recipe.to_yaml().encode())

    def save_state(self, state: dict, timings: dict) -> None:
        self.write_json("run.json", dict(state, phase_seconds=timings, fingerprint=self.fingerprint))

    def save_weights(self, model, name: str = "trained.weights.h5") -> None:
        tmp = self.path(f".tmp-{name}")
        model.save_weights(tmp)
        apply_umask(tmp)
        os.replace(tmp, self.path(name))

    def checkpoint_dir(self, phase: str) -> str:
        return self.path(os.path.join("checkpoints", phase))

    def resume_point(self, phase: str, epochs: int):
        """(the phase's checkpoint directory, the epochs of ``epochs`` it already completed)."""
        directory = self.checkpoint_dir(phase)
        return directory, min(completed_epochs(directory), epochs)

    def drop_checkpoint(self, phase: str) -> None:
        directory = self.checkpoint_dir(phase)
        if os.path.exists(directory):
            shutil.rmtree(directory)
        parent = self.path("checkpoints")
        if os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)


def completed_epochs(directory: Optional[str]) -> int:
    """Epochs completed by the checkpoints in ``directory`` (0 if there are none or it is unreadable).

    For progress display only: :meth:`tf_awt.checkpoint.PhaseCheckpoint.restore` checks the state
    before anything is used.
    """
    try:
        with open(os.path.join(directory, "state.json"), encoding="utf-8") as fh:
            return int(json.load(fh)["epoch"])
    except (TypeError, OSError, ValueError, KeyError):
        return 0


_PHASE_OUTPUTS = (("search", "ticket.npz"), ("train", "trained.weights.h5"), ("evaluate", "evaluation.json"),
                  ("export", "saved_model"))


def kept(out: str) -> str:
    """What an interrupted run or grid left in ``out`` that a rerun continues from, in words: the
    finished phases' outputs and the running phase's checkpoint (``"ticket.npz (search), the train
    checkpoint after epoch 3"``), or a grid's finished cells (``"4 finished cells"``)."""
    if not os.path.isdir(out):
        return "nothing"
    cells = [root for root, _, files in os.walk(out) if "summary.json" in files and root != out]
    if cells:
        return f"{len(cells)} finished cell{'s' * (len(cells) != 1)}"
    parts = [f"{name} ({phase})" for phase, name in _PHASE_OUTPUTS if os.path.exists(os.path.join(out, name))]
    for phase in ("search", "train"):
        epochs = completed_epochs(os.path.join(out, "checkpoints", phase))
        if epochs:
            parts.append(f"the {phase} checkpoint after epoch {epochs}")
    return ", ".join(parts) or "nothing finished yet"
