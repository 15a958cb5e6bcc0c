"""Issue 12: choose the training schedule defaults on a validation split, then re-run what collapsed.

    python experiments/training_schedules.py mlp-select   # dense MLP, eps 0.3: warm-up x lr schedule, validation
    python experiments/training_schedules.py mlp-select-long  # the same at 100 epochs, longer warm-ups
    python experiments/training_schedules.py qs-select    # quickstart (5% MLP ticket, eps 0.1): warm-up, validation
    python experiments/training_schedules.py cnn-select   # 3% CNN AWT ticket: warm-up x rescale, validation
    python experiments/training_schedules.py table        # markdown table of every finished run

Each configuration is one ``tf-awt run`` into ``runs/schedules/<name>`` (a finished run is kept, so
an interrupted grid resumes where it stopped). Selection runs use ``eval.split=validation``: they
train on 80% of mnist-5k's 4,000 training digits and evaluate on the other 20%; the test split is
not read. The CNN grid searches its ticket once (the search does not depend on ``train.*`` keys):
the first configuration's ``ticket.npz`` is copied into the others' folders before they start.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

from _cells import tf_awt_run

ROOT = os.path.join("runs", "schedules")

MLP_EPS03 = ["attack.eps=0.3", "attack.step_size=0.075", "train.step_size=0.075", "train.epochs=40"]
MLP_GRID = [(f"mlp-eps0.3-w{w}-{lr}", ["method=dense", *MLP_EPS03, f"train.eps_warmup_epochs={w}", f"train.lr_schedule={lr}"])
            for w in (0, 5, 10, 20) for lr in ("constant", "cosine")]
MLP_LONG = [(f"mlp-eps0.3-w{w}-{lr}-e100", ["method=dense", *MLP_EPS03, "train.epochs=100", f"train.eps_warmup_epochs={w}",
                                           f"train.lr_schedule={lr}"]) for w, lr in ((10, "constant"), (20, "constant"), (20, "cosine"))]
MLP_LONG += [("mlp-eps0.3-w10-constant-e200", ["method=dense", *MLP_EPS03, "train.epochs=200", "train.eps_warmup_epochs=10"]),
             ("mlp-eps0.3-w10-constant-e100-pgd40", ["method=dense", *MLP_EPS03, "train.epochs=100", "train.eps_warmup_epochs=10",
                                                     "train.steps=40", "train.step_size=0.01"])]
QS_GRID = [(f"qs-w{w}", [f"train.eps_warmup_epochs={w}"]) for w in (0, 2, 4)]
CNN_GRID = [(f"cnn-d0.03-w{w}-{r}", ["density=0.03", f"train.eps_warmup_epochs={w}", f"train.rescale={r}"])
            for w, r in ((0, "none"), (5, "none"), (5, "fan_in"), (0, "fan_in"), (3, "none"))]


def run(name: str, recipe: str, overrides, ticket_from: str = None) -> dict:
    out = os.path.join(ROOT, name)
    summary = os.path.join(out, "summary.json")
    if not os.path.exists(summary):
        if ticket_from and os.path.exists(os.path.join(ROOT, ticket_from, "ticket.npz")) and not os.path.exists(out):
            os.makedirs(out)
            shutil.copy(os.path.join(ROOT, ticket_from, "ticket.npz"), os.path.join(out, "ticket.npz"))
    return tf_awt_run(recipe, out, overrides)


def table(prefix: str = "") -> str:
    rows = ["| run | natural | robust | collapsed | train s | last train loss |", "| --- | --- | --- | --- | --- | --- |"]
    for name in sorted(os.listdir(ROOT)):
        path = os.path.join(ROOT, name, "summary.json")
        if not name.startswith(prefix) or not os.path.exists(path):
            continue
        s = json.load(open(path))
        hist = json.load(open(os.path.join(ROOT, name, "history.json")))
        rows.append(f"| {name} | {s['natural_accuracy']:.4f} | {s['robust_accuracy']:.4f} | {s['collapsed']} | "
                    f"{s['phase_seconds'].get('train', 0):.0f} | {hist['loss'][-1]:.3f} |")
    return "\n".join(rows)


def main(phase: str) -> None:
    os.makedirs(ROOT, exist_ok=True)
    if phase == "mlp-select":
        for name, overrides in MLP_GRID:
            run(name, "mnist5k-mlp", ["eval.split=validation", *overrides])
        print(table("mlp-"))
    elif phase == "mlp-select-long":
        for name, overrides in MLP_LONG:
            run(name, "mnist5k-mlp", ["eval.split=validation", *overrides])
        print(table("mlp-"))
    elif phase == "qs-select":
        for name, overrides in QS_GRID:
            run(name, "quickstart", ["eval.split=validation", *overrides])
        print(table("qs-"))
    elif phase == "cnn-select":
        first = CNN_GRID[0][0]
        for name, overrides in CNN_GRID:
            run(name, "mnist5k-cnn", ["eval.split=validation", *overrides], ticket_from=None if name == first else first)
        print(table("cnn-"))
    elif phase == "table":
        print(table())
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
