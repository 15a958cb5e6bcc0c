"""Issue 14: every ticket method with the same budget of tries, chosen on a validation split.

Since issue 28 this protocol is one command, ``tf-awt compare`` (tf_awt/running/compare.py,
docs/distributed.md), with each method's search space declared in the library. This script stays as
the exact record of docs/results.md section 6, whose commands run it: its three tries per method
were hand-picked (``awt-scores`` is a separate row), and its final step adds AutoAttack on 200 test
digits. Rerunning section 6 through ``tf-awt compare`` would be a new experiment with other tries,
not a reproduction. New comparisons: use ``tf-awt compare``.

    python experiments/mask_methods.py select [--density 0.036]   # 3 settings per method, validation split, seed 0
    python experiments/mask_methods.py table  [--density 0.036]   # markdown table of the finished selection runs
    python experiments/mask_methods.py final --densities 0.036,0.018 --seeds 3 [--families awt,magnitude,...]
    python experiments/mask_methods.py report --densities 0.036,0.018  # mean ± std of the finished final runs
    python experiments/mask_methods.py plot --densities 0.036,0.018    # docs/results/mask_methods.png
    python experiments/mask_methods.py final --densities 0.5 --pattern 2:4 --families awt,magnitude,...  # N:M
    python experiments/mask_methods.py final --recipe mnist5k-cnn --table-dir runs/mask-table-cnn \
        --densities 0.01,0.03,0.05 --seeds 2 --families dense,magnitude,snip,random,random_layerwise  # the CNN
    python experiments/mask_methods.py final --table-dir runs/mask-table-eps0.3 --densities 0.036 --seeds 2 \
        --set attack.eps=0.3 --set attack.step_size=0.075 --set train.step_size=0.075 --set train.epochs=100 \
        --set train.eps_warmup_epochs=10 --families snip,cosentino,...   # ε = 0.3 (section 5's settings)

(Since issue 25 the ``mnist5k-mlp`` recipe's AWT search adds NTT's weight decay; section 6 ran without
it: ``--set search.weight_decay=0`` reproduces it.) Every configuration is one ``tf-awt run mnist5k-mlp`` (MLP 784-300-100-10, L∞ ε = 0.1, search 2
epochs, PGD-10 training 10 epochs, PGD-100 × 5 evaluation) into
``runs/mask-select/<density>/<name>`` with ``eval.split=validation``: it trains on 80% of mnist-5k's
4,000 training digits and evaluates on the other 20%; the test split is not read. A finished run
is kept, so an interrupted grid resumes where it stopped. Each method gets the same budget: three
settings of what that method has to choose (weighting and allocation for AWT/NTT, weighting and
score learning rate for AWT with ``optimize=scores``, the allocation scope for the one-shot
baselines, rounds × epochs per round for Cosentino et al.); ``random_layerwise`` has nothing to
choose: it copies the layer counts of the best AWT setting.

``final`` runs every family with its chosen setting (the best validation robust accuracy at the
selection density, used at every density) on the test split, into
``runs/mask-table/<family>-d<density>-s<seed>``; ``random_layerwise`` there copies the layer counts
of the same density's and seed's final AWT ticket (``<table-dir>/awt-d<density>-s<seed>/ticket.npz``), ``erk`` (random positions at ERK layer
densities) has nothing to choose, ``dense`` is the unpruned network.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _cells import tf_awt_run

ROOT = os.path.join("runs", "mask-select")
PER_ENTRY = ["search.normalization=per_entry", "search.kernel_weight=0.001"]
GRID = {
    "awt": [("eq13-global", []), ("perentry-global", PER_ENTRY), ("perentry-erk", [*PER_ENTRY, "search.scope=erk"])],
    "awt-scores": [("eq13-lr0.001", ["search.optimize=scores", "search.lr=0.001"]),
                   ("perentry-lr0.001", ["search.optimize=scores", "search.lr=0.001", *PER_ENTRY]),
                   ("perentry-lr0.01", ["search.optimize=scores", "search.lr=0.01", *PER_ENTRY])],
    "ntt": [("eq13-global", []), ("perentry-global", PER_ENTRY), ("perentry-erk", [*PER_ENTRY, "search.scope=erk"])],
    "magnitude": [(s, [f"search.scope={s}"]) for s in ("global", "layer", "erk")],
    "random": [(s, [f"search.scope={s}"]) for s in ("global", "layer", "erk")],
    "snip": [(s, [f"search.scope={s}"]) for s in ("global", "layer", "erk")],
    "synflow": [(s, [f"search.scope={s}"]) for s in ("global", "layer", "erk")],
    "cosentino": [("r3-e5", ["search.rounds=3", "search.epochs=5"]), ("r5-e2", ["search.rounds=5", "search.epochs=2"]),
                  ("r5-e5", ["search.rounds=5", "search.epochs=5"])],
}


def method_of(family: str) -> str:
    return family.split("-")[0]


RECIPE = "mnist5k-mlp"
EXTRA: list = []  # --set overrides applied to every run (e.g. the ε = 0.3 settings)


def run(out: str, overrides) -> dict:
    return tf_awt_run(RECIPE, out, [*EXTRA, *overrides])


def rows(density: float):
    base = os.path.join(ROOT, f"d{density}")
    for family, settings in GRID.items():
        for name, _ in settings:
            path = os.path.join(base, f"{family}-{name}", "summary.json")
            if os.path.exists(path):
                yield family, name, json.load(open(path))
    path = os.path.join(base, "random_layerwise", "summary.json")
    if os.path.exists(path):
        yield "random_layerwise", "layer counts of the best awt", json.load(open(path))


def best(density: float, family: str):
    """The family's setting with the highest validation robust accuracy (ties: natural accuracy)."""
    found = [(s["robust_accuracy"], s["natural_accuracy"], name) for f, name, s in rows(density) if f == family]
    return max(found)[2] if found else None


def select(density: float, families=None) -> None:
    base = os.path.join(ROOT, f"d{density}")
    common = ["eval.split=validation", f"density={density}"]
    for family, settings in GRID.items():
        if families and family not in families:
            continue
        for name, overrides in settings:
            run(os.path.join(base, f"{family}-{name}"), [*common, f"method={method_of(family)}", *overrides])
    if families and "random_layerwise" not in families:
        return
    awt = best(density, "awt")
    ticket = os.path.abspath(os.path.join(base, f"awt-{awt}", "ticket.npz"))
    run(os.path.join(base, "random_layerwise"), [*common, "method=random_layerwise", f"search.reference={ticket}"])
    print(table(density))


def table(density: float) -> str:
    lines = [f"| method | setting | natural | robust | collapsed | search s | train s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for family, name, s in rows(density):
        mark = " **(chosen)**" if name == best(density, family) else ""
        seconds = s.get("phase_seconds", {})
        lines.append(f"| {family} | {name}{mark} | {s['natural_accuracy']:.3f} | {s['robust_accuracy']:.3f} | {s['collapsed']} | "
                     f"{seconds.get('search', 0):.0f} | {seconds.get('train', 0):.0f} |")
    return "\n".join(lines)


FINAL = os.path.join("runs", "mask-table")


def chosen(family: str, density: float):
    """The overrides of the family's chosen setting (validation selection at ``density``)."""
    name = best(density, family)
    if name is None:
        raise SystemExit(f"no finished selection runs for {family} at density {density}: run 'select' first")
    return dict(GRID[family])[name], name


def _tag(density: float, pattern: str) -> str:
    return f"d{density:g}" + (f"-p{pattern.replace(':', '-')}" if pattern else "")


def final(densities, seeds: int, families, select_density: float, pattern: str = "") -> None:
    for density in densities:
        for seed in range(seeds):
            for family in families:
                out = os.path.join(FINAL, f"{family}-{_tag(density, pattern)}-s{seed}")
                common = [f"density={density}", f"seed={seed}", *([f"search.pattern={pattern}"] if pattern else [])]
                if family == "dense":  # one run per seed, whatever the density
                    run(os.path.join(FINAL, f"dense-d1-s{seed}"), [f"seed={seed}", "method=dense"])
                elif family == "erk":  # nothing to choose (erk: random positions at ERK layer densities)
                    run(out, [*common, f"method={family}"])
                elif family == "random_layerwise":
                    ticket = os.path.abspath(os.path.join(FINAL, f"awt-d{density}-s{seed}", "ticket.npz"))
                    run(out, [*common, "method=random_layerwise", f"search.reference={ticket}"])
                else:
                    overrides, _ = chosen(family, select_density)
                    if pattern:
                        overrides = [o for o in overrides if not o.startswith("search.scope=")]
                    run(out, [*common, f"method={method_of(family)}", *overrides])


def autoattack(densities, families, examples: int = 200) -> None:
    """PGD + AutoAttack (APGD-CE, APGD-DLR, Square) on the first ``examples`` test digits of every
    finished final run, into ``<run>/autoattack-<examples>.json``."""
    for density in densities:
        for family in families:
            for name in sorted(d for d in os.listdir(FINAL) if d.startswith(f"{family}-d{density:g}-s")):
                out = os.path.join(FINAL, name)
                # ART's AutoAttack when the committed tables ran; the standard one from issue 36 on
                target = os.path.join(out, f"autoattack-{examples}.json")
                if os.path.exists(target) or not os.path.exists(os.path.join(out, "summary.json")):
                    continue
                args = [sys.executable, "-m", "tf_awt.running.cli", "evaluate", "--model", os.path.join(out, "saved_model"),
                        "--dataset", "mnist-5k", "--attacks", "pgd,autoattack", "--norm", "linf", "--eps", "0.1",
                        "--max-examples", str(examples), "--json", target, "--quiet"]
                print(" ".join(args), flush=True)
                if subprocess.call(args) != 0:
                    raise SystemExit(f"{name}: tf-awt evaluate failed")


def _autoattack_of(run_dir: str, examples: int = 200):
    path = os.path.join(run_dir, f"autoattack-{examples}.json")
    if not os.path.exists(path):
        return None
    data = json.load(open(path))
    suites = data.get("suites") or data.get("evaluation", {}).get("suites", {})
    return suites.get("pgd"), suites.get("autoattack"), data.get("robust_accuracy")


def plot(densities, families, path: str = os.path.join("docs", "results", "mask_methods.png")) -> None:
    """Robust vs natural test accuracy, mean ± std over seeds, one point per method and density."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    markers = dict(zip(densities, "os^Dv"))
    colors = dict(zip(families, plt.cm.tab20(np.linspace(0, 1, len(families)))))
    for family in families:
        for density in densities:
            found = [json.load(open(os.path.join(FINAL, d, "summary.json"))) for d in sorted(os.listdir(FINAL))
                     if d.startswith(f"{family}-d{density:g}-s") and os.path.exists(os.path.join(FINAL, d, "summary.json"))]
            if not found:
                continue
            nat = np.array([f["natural_accuracy"] for f in found])
            rob = np.array([f["robust_accuracy"] for f in found])
            ax.errorbar(nat.mean(), rob.mean(), xerr=nat.std(), yerr=rob.std(), fmt=markers[density], color=colors[family],
                        label=f"{family} ({density:g})", capsize=2, markersize=6)
    ax.set_xlabel("natural accuracy (test)")
    ax.set_ylabel("robust accuracy (PGD-100 × 5, ε = 0.1)")
    ax.set_title("MLP on mnist-5k: every ticket method, mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    print(f"wrote {path}")


def report(densities, families, pattern: str = "") -> str:
    import statistics

    lines = ["| method | density | seeds | natural | robust | collapsed | PGD / AutoAttack, first 200 test digits |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for family in families:
        for density in densities:
            dirs = sorted(os.path.join(FINAL, d) for d in os.listdir(FINAL) if d.startswith(f"{family}-{_tag(density, pattern)}-s")) \
                if os.path.isdir(FINAL) else []
            found = [json.load(open(os.path.join(d, "summary.json"))) for d in dirs if os.path.exists(os.path.join(d, "summary.json"))]
            attacked = [a for a in (_autoattack_of(d) for d in dirs) if a is not None]
            if not found:
                continue
            nat = [s["natural_accuracy"] for s in found]
            rob = [s["robust_accuracy"] for s in found]
            spread = (lambda v: statistics.pstdev(v) if len(v) > 1 else 0.0)
            aa = ""
            if attacked:
                pgd_200, aa_200 = [a[0] for a in attacked], [a[1] for a in attacked]
                aa = (f"{statistics.mean(pgd_200):.3f} ± {spread(pgd_200):.3f} / {statistics.mean(aa_200):.3f} ± "
                      f"{spread(aa_200):.3f} ({len(attacked)} seeds)")
            lines.append(f"| {family} | {density}{' ' + pattern if pattern else ''} | {len(found)} | {statistics.mean(nat):.3f} ± {spread(nat):.3f} | "
                         f"{statistics.mean(rob):.3f} ± {spread(rob):.3f} | {sum(bool(s['collapsed']) for s in found)} | {aa} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    global RECIPE, FINAL, EXTRA
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=("select", "table", "final", "autoattack", "report", "plot"))
    parser.add_argument("--density", type=float, default=0.036, help="the selection's density")
    parser.add_argument("--densities", default="0.036")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pattern", default="", help="N:M for final/report (density must be N/M)")
    parser.add_argument("--recipe", default=RECIPE, help="the recipe of final runs (selection always used mnist5k-mlp)")
    parser.add_argument("--table-dir", default=FINAL, help="where final runs go (runs/mask-table-cnn for the CNN)")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE override for every run (repeatable)")
    parser.add_argument("--families", default=",".join(["dense", "awt", "awt-scores", *[f for f in GRID if not f.startswith("awt")],
                                                         "erk", "random_layerwise"]))
    args = parser.parse_args(argv)
    RECIPE, FINAL, EXTRA = args.recipe, args.table_dir, list(args.set)
    densities = [float(d) for d in args.densities.split(",")]
    families = args.families.split(",")
    if args.phase == "select":  # --families limits the grid (two processes can share it: disjoint families)
        select(args.density, families if "--families" in " ".join(sys.argv) or argv else None)
    elif args.phase == "table":
        print(table(args.density))
    elif args.phase == "final":
        final(densities, args.seeds, families, args.density, args.pattern)
        print(report(densities, families, args.pattern))
    elif args.phase == "autoattack":
        autoattack(densities, families)
    elif args.phase == "plot":
        plot(densities, families)
    else:
        print(report(densities, families, args.pattern))


if __name__ == "__main__":
    main()
