"""Issue 25: a fair run of Algorithm 1 — search length, the paper's conventions, an equal tuning budget.

    python experiments/fair_run.py lengths  [--queue 0/1]   # AWT at 2-40 search epochs × decay × student kernel
    python experiments/fair_run.py select   [--queue 0/1]   # 6 tries per method, 2 seeds, validation split
    python experiments/fair_run.py final    [--queue 0/1]   # the chosen tries on the TEST split: 3.6% and 1.8%,
                                                            # ε 0.1 and 0.3, seeds 0-2, + AutoAttack on 200 digits
    python experiments/fair_run.py digest                   # docs/results/fair_run/*.json of the finished cells
    python experiments/fair_run.py report                   # markdown tables from the digests
    python experiments/fair_run.py plot                     # docs/results/search_length.png

Every cell is one ``tf-awt run mnist5k-mlp`` (MLP 784-300-100-10 at 3.6%, L∞ ε = 0.1, PGD-10
training 10 epochs, PGD-100 × 5 evaluation) with ``eval.split=validation``: it trains on 80% of
mnist-5k's 4,000 training digits (3,200: 50 search steps per epoch at batch 64) and evaluates on
the other 800; the test split is not read. A finished cell (its ``summary.json``) is kept, so an
interrupted grid resumes where it stopped. ``--queue i/n`` runs every n-th cell (two queues pinned
to the two cores with ``taskset`` share a grid without running a cell twice).

"Decay" is NTT's: (λ/density)·‖m⊙w‖² with λ = 1e-4 (``search.weight_decay_form=l2_per_density``).
T_m = 100 steps (NTT's) unless a try says otherwise.

The selection's tries were written down before any cell of either grid ran (commit of this file):
every method gets six, over the knobs that matter for it; the best by validation robust accuracy
(mean of seeds 0 and 1; ties → natural) is the method's setting on the test split.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from _cells import tf_awt_run

RECIPE = "mnist5k-mlp"
ROOT = os.path.join("runs", "fair")
DENSITY = 0.036
DECAY = ["search.weight_decay=1.0e-4", "search.weight_decay_form=l2_per_density"]
TM100 = ["search.update_every=100"]
FULL = ["search.student_kernel=full"]
FC = ["search.scope=frankle_carbin"]
NORMAL = ["init=glorot_normal"]
PER_ENTRY = ["search.normalization=per_entry", "search.kernel_weight=0.001"]

LENGTHS = (2, 5, 10, 20, 40)


def length_cells():
    """(name, overrides): AWT, seed 0, at every length × decay on/off × student kernel."""
    for epochs in LENGTHS:
        for decay in (False, True):
            for student in ("masked", "full"):
                name = f"e{epochs}-{'decay' if decay else 'nodecay'}-{student}"
                yield name, [f"search.epochs={epochs}", *TM100, f"search.student_kernel={student}",
                             *(DECAY if decay else ["search.weight_decay=0"])]  # explicit: the recipe now decays


def _search_tries():
    """AWT's (and NTT's) six tries: length, decay, student kernel, allocation, init, weighting."""
    e20 = ["search.epochs=20", *TM100, *DECAY]
    return [
        ("e2-tm20-decay", ["search.epochs=2", "search.update_every=20", *DECAY]),  # the shipped search + decay
        ("e20-decay-masked-global", e20),
        ("e20-decay-full-global", [*e20, *FULL]),
        ("e20-decay-masked-fc", [*e20, *FC]),
        ("e20-decay-full-fc-normal", [*e20, *FULL, *FC, *NORMAL]),
        ("e20-ntt-code", [*e20, *FULL, "search.scope=layer", *NORMAL, *PER_ENTRY]),  # NTT's code as it is
    ]


def _allocation_tries():
    """A one-shot method's six tries: allocation × init."""
    return [(f"{scope}-{init}", [f"search.scope={scope}", f"init={init}"])
            for scope in ("global", "erk", "frankle_carbin") for init in ("glorot_uniform", "glorot_normal")]


TRIES = {
    "awt": _search_tries(),
    "cosentino": [
        ("global-r5-e5", ["search.rounds=5", "search.epochs=5"]),  # section 6's choice
        ("global-r3-e5", ["search.rounds=3", "search.epochs=5"]),
        ("fc-r15-e2", [*FC, "search.rounds=15", "search.epochs=2"]),  # Cosentino et al.'s own rates, 20% / 10%
        ("fc-r15-e1", [*FC, "search.rounds=15", "search.epochs=1"]),
        ("fc-r5-e5", [*FC, "search.rounds=5", "search.epochs=5"]),
        ("fc-r15-e2-normal", [*FC, "search.rounds=15", "search.epochs=2", *NORMAL]),
    ],
    "snip": _allocation_tries(),
    "magnitude": _allocation_tries(),
    "random": _allocation_tries(),
    "ntt": _search_tries(),
}
SELECT_SEEDS = (0, 1)


DIGESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "results", "fair_run")
"""One JSON per finished cell (summary + mask overlaps + search distances), committed: run
directories do not survive a session, digests do, and a cell with a digest is not run again."""


def _digest_path(out):
    return os.path.join(DIGESTS, os.path.relpath(out, ROOT) + ".json")


def run(out: str, overrides) -> dict:
    summary = os.path.join(out, "summary.json")
    if os.path.exists(_digest_path(out)) and not os.path.exists(summary):
        return json.load(open(_digest_path(out)))
    return tf_awt_run(RECIPE, out, ["eval.split=validation", f"density={DENSITY}", *overrides])


def _queue(cells, queue: str):
    index, count = (int(v) for v in queue.split("/"))
    return [cell for i, cell in enumerate(cells) if i % count == index]


def lengths(queue: str) -> None:
    cells = [(os.path.join(ROOT, "lengths", name), overrides) for name, overrides in length_cells()]
    cells.append((os.path.join(ROOT, "lengths", "magnitude"), ["method=magnitude"]))  # the overlap's reference
    for out, overrides in _queue(cells, queue):
        run(out, overrides)


def selection_cells():
    """Method by method, both seeds of a try one after the other (a try is complete as soon as possible)."""
    for family, tries in TRIES.items():
        for name, overrides in tries:
            for seed in SELECT_SEEDS:
                yield os.path.join(ROOT, "select", f"{family}-{name}-s{seed}"), [f"method={family}", f"seed={seed}", *overrides]


def select(queue: str) -> None:
    for out, overrides in _queue(list(selection_cells()), queue):
        run(out, overrides)


# --------------------------------------------------------------------------- report
def _load(out):
    """A finished cell: its digest (written by ``digest`` from the run directory)."""
    path = _digest_path(out)
    return json.load(open(path)) if os.path.exists(path) else None


def digest() -> None:
    """Writes the digest of every finished cell that has none (run from the directory holding runs/)."""
    cells = [os.path.join(ROOT, "lengths", name) for name, _ in length_cells()] + [os.path.join(ROOT, "lengths", "magnitude")]
    cells += [out for out, _ in selection_cells()]
    if os.path.isdir(os.path.join(ROOT, "final")):
        cells += [os.path.join(ROOT, "final", eps, name) for eps in os.listdir(os.path.join(ROOT, "final"))
                  for name in os.listdir(os.path.join(ROOT, "final", eps))
                  if os.path.exists(os.path.join(ROOT, "final", eps, name, "autoattack-200.json"))]
    for out in cells:
        summary = os.path.join(out, "summary.json")
        if os.path.exists(_digest_path(out)) or not os.path.exists(summary):
            continue
        data = json.load(open(summary))
        masks, ref = _masks(out), magnitude_masks(out)
        same = same_count_magnitude(out, masks)
        data["overlap_magnitude"] = {k: float((masks[k] * ref[k]).sum() / masks[k].sum()) for k in masks}
        data["overlap_same_count"] = {k: float((masks[k] * same[k]).sum() / masks[k].sum()) for k in masks}
        data["target_distance"], data["kernel_distance"], data["mask_updates"] = _distances(out)
        autoattack = os.path.join(out, "autoattack-200.json")
        if os.path.exists(autoattack):
            aa = json.load(open(autoattack))
            data["first_200"] = {"pgd": aa["suites"].get("pgd"), "autoattack": aa["suites"].get("autoattack"),
                                 "robust": aa["robust_accuracy"]}
        data["library_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                text=True).stdout.strip()
        os.makedirs(os.path.dirname(_digest_path(out)), exist_ok=True)
        with open(_digest_path(out), "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)


def _masks(out):
    with np.load(os.path.join(out, "ticket.npz")) as z:
        return {k[5:]: z[k] for k in z.files if k.startswith("mask/")}


def _history(out):
    with np.load(os.path.join(out, "ticket.npz")) as z:
        return json.loads(bytes(z["meta"]).decode()).get("history", {})


def _distances(out):
    """The search's last-epoch (50 steps) mean target and kernel distances, and its mask updates."""
    history = _history(out)
    last = tuple(float(np.mean(history[k][-50:])) if history.get(k) else float("nan")
                 for k in ("target_distance", "kernel_distance"))
    return (*last, int(max(history.get("mask_updates") or [0])))


def magnitude_masks(out):
    """Magnitude pruning's masks at the cell's own θ0 (global top-k |θ0| with the collapse guard, what
    ``method: magnitude`` keeps at this density and seed), from the ticket's initial weights."""
    import tensorflow as tf

    from tf_awt.tickets import _selection

    with np.load(os.path.join(out, "ticket.npz")) as z:
        names = [k[5:] for k in z.files if k.startswith("mask/")]
        kernels = [z[k] for k in sorted(k for k in z.files if k.startswith("init/"))][0::2]
    masks = _selection.top_k_masks([tf.abs(tf.constant(k)) for k in kernels], DENSITY)
    return {n: m.numpy() for n, m in zip(names, masks)}


def same_count_magnitude(out, masks):
    """Per layer, the top-|θ0| weights at the ticket's own layer counts: the selection without the allocation."""
    with np.load(os.path.join(out, "ticket.npz")) as z:
        kernels = [z[k] for k in sorted(k for k in z.files if k.startswith("init/"))][0::2]
    result = {}
    for (name, mask), kernel in zip(masks.items(), kernels):
        flat = np.abs(kernel).ravel()
        keep = np.zeros(flat.size, np.float32)
        keep[np.argsort(-flat, kind="stable")[: int(mask.sum())]] = 1
        result[name] = keep.reshape(kernel.shape)
    return result


def lengths_table() -> str:
    reference = os.path.join(ROOT, "lengths", "magnitude")
    lines = ["| search epochs | decay | student kernel | mask updates | kept weights also in magnitude's mask (dense_0 / dense_1 / logits) | "
             "… in the top-\\|θ0\\| at the ticket's own layer counts | layer density % | target dist. | kernel dist. | natural | robust | search s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, _ in length_cells():
        out = os.path.join(ROOT, "lengths", name)
        s = _load(out)
        if s is None:
            continue
        epochs, decay, student = name.split("-")
        overlap = " / ".join(f"{v:.2f}" for v in s["overlap_magnitude"].values())
        overlap += " | " + " / ".join(f"{v:.2f}" for v in s["overlap_same_count"].values())
        td, kd, updates = s["target_distance"], s["kernel_distance"], s["mask_updates"]
        dens = " / ".join(f"{100 * v:.2f}" for v in s["layer_density"].values())
        lines.append(f"| {epochs[1:]} | {'λ=1e-4' if decay == 'decay' else '0'} | {student} | {updates} | "
                     f"{overlap} | {dens} | {td:.3g} | {kd:.3g} | {s['natural_accuracy']:.3f} | {s['robust_accuracy']:.3f} | "
                     f"{s['phase_seconds'].get('search', 0):.0f} |")
    if _load(reference):
        s = _load(reference)
        dens = " / ".join(f"{100 * v:.2f}" for v in s["layer_density"].values())
        lines.append(f"| magnitude at θ0 | — | — | — | 1 / 1 / 1 | 1 / 1 / 1 | {dens} | — | — | {s['natural_accuracy']:.3f} | "
                     f"{s['robust_accuracy']:.3f} | 0 |")
    return "\n".join(lines)


def selection_rows():
    for family, tries in TRIES.items():
        for name, _ in tries:
            found = [_load(os.path.join(ROOT, "select", f"{family}-{name}-s{seed}")) for seed in SELECT_SEEDS]
            if all(found):
                yield family, name, found


def chosen(family):
    rows = [(np.mean([s["robust_accuracy"] for s in found]), np.mean([s["natural_accuracy"] for s in found]), name)
            for f, name, found in selection_rows() if f == family]
    complete = len(rows) == len(TRIES[family])
    return (max(rows)[2] if rows else None), complete


def selection_table() -> str:
    lines = ["| method | try | natural (s0, s1) | robust (s0, s1) | mean robust | layer density % (s0) | search s (s0) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for family, name, found in selection_rows():
        best, complete = chosen(family)
        mark = (" **(chosen)**" if complete else " (best so far)") if name == best else ""
        nat = ", ".join(f"{s['natural_accuracy']:.3f}" for s in found)
        rob = ", ".join(f"{s['robust_accuracy']:.3f}" for s in found)
        dens = " / ".join(f"{100 * v:.2f}" for v in found[0]["layer_density"].values())
        lines.append(f"| {family} | {name}{mark} | {nat} | {rob} | {np.mean([s['robust_accuracy'] for s in found]):.3f} | "
                     f"{dens} | {found[0]['phase_seconds'].get('search', 0):.0f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the test split, once
FINAL_DENSITIES = (0.036, 0.018)
FINAL_SEEDS = (0, 1, 2)
EPS = {
    "eps0.1": [],  # the recipe's ε = 0.1
    # section 5's ε = 0.3 settings: the paper's ε, with the ε warm-up that keeps training from collapsing
    "eps0.3": ["attack.eps=0.3", "attack.step_size=0.075", "train.step_size=0.075", "train.epochs=100",
               "train.eps_warmup_epochs=10"],
}
FIXED = {  # rows with nothing to choose
    "dense": ["method=dense"],
    "random-erk": ["method=random", "search.scope=erk"],
    "random-fc": ["method=random", "search.scope=frankle_carbin"],
}


def final_cells(families=None):
    """(out, overrides, family): every family with its chosen try (validation, 3.6%, ε = 0.1), on the
    test split, at both densities and both ε, seeds 0-2; random_layerwise shuffles the final AWT ticket."""
    for eps, eps_overrides in EPS.items():
        for density in FINAL_DENSITIES:
            for seed in FINAL_SEEDS:
                rows = [(name, overrides) for name, overrides in FIXED.items()]
                for family in TRIES:
                    name, complete = chosen(family)
                    if name is None or not complete:
                        raise SystemExit(f"the selection of {family} is not complete: run 'select' first")
                    rows.append((family, [f"method={family}", *dict(TRIES[family])[name]]))
                ticket = os.path.abspath(os.path.join(ROOT, "final", eps, f"awt-d{density}-s{seed}", "ticket.npz"))
                rows.append(("random_layerwise", ["method=random_layerwise", f"search.reference={ticket}"]))
                for family, overrides in rows:
                    if families and family not in families:
                        continue
                    out = os.path.join(ROOT, "final", eps, f"{family}-d{density}-s{seed}")
                    yield out, [f"density={density}", f"seed={seed}", *eps_overrides, *overrides], family


def final(queue: str, families=None, reverse: bool = False) -> None:
    """The final cells on the test split (not ``eval.split=validation``), then AutoAttack on 200 test digits.

    ``reverse``: the queue's cells from the end, a cell another process holds (its directory lock)
    skipped: a second process on a queue whose partner queue finished early (how the ε = 0.3 grid
    ended: ``--queue 0/2`` and ``--queue 0/2 --reverse`` met in the middle)."""
    cells = _queue(list(final_cells(families)), queue)
    for out, overrides, _ in (reversed(cells) if reverse else cells):
        try:
            _final_cell(out, overrides)
        except (SystemExit, subprocess.CalledProcessError) as error:
            if not reverse:
                raise
            print(f"skipped {out}: {error}", flush=True)


def _final_cell(out: str, overrides) -> None:
    summary = os.path.join(out, "summary.json")
    if not os.path.exists(_digest_path(out)):
        tf_awt_run(RECIPE, out, overrides)
    # The tables of docs/results.md section 7 (library at 85de9d5) ran ART's AutoAttack (APGD-CE, APGD-DLR,
    # Square-1000) here; from issue 36 on it is the native standard AutoAttack, after PGD.
    target = os.path.join(out, "autoattack-200.json")
    if os.path.exists(summary) and not os.path.exists(target):
        eps = next((o.split("=")[1] for o in overrides if o.startswith("attack.eps=")), "0.1")
        subprocess.check_call([sys.executable, "-m", "tf_awt.running.cli", "evaluate", "--model", os.path.join(out, "saved_model"),
                               "--dataset", "mnist-5k", "--attacks", "pgd,autoattack", "--norm", "linf", "--eps", eps,
                               "--max-examples", "200", "--json", target, "--quiet"])


def _best_ticket_line(density, stats, measure: str) -> str:
    """The two best tickets by ``measure`` (stats: (family, mean, std, seeds)) and whether their gap
    exceeds the sum of their standard deviations; "" with fewer than two tickets."""
    ranked = sorted((s for s in stats if s[0] != "dense"), key=lambda s: -s[1])
    if len(ranked) < 2:
        return ""
    (a, ma, sa, na), (b, mb, sb, nb) = ranked[0], ranked[1]
    if min(na, nb) < 2:
        verdict = "one seed: no spread to compare with; so far"
    else:
        verdict = ("exceeds" if ma - mb > sa + sb else "does not exceed") + " the sum of their spreads"
    return f"| {density} | best ticket by {measure}: **{a}**, {ma - mb:+.3f} over {b} ({verdict}) | | | | | |"


def final_table(eps: str) -> str:
    """Mean ± std over seeds per density and family (test split), and which gaps exceed the spread,
    by PGD-100×5 on all test digits and by the worst of PGD and AutoAttack on the first 200."""
    lines = ["| density | method | seeds | natural | robust (PGD-100×5) | worst of PGD and AutoAttack, first 200 | "
             "collapsed |", "| --- | --- | --- | --- | --- | --- | --- |"]
    families = [*FIXED, *TRIES, "random_layerwise"]
    for density in FINAL_DENSITIES:
        by_pgd, by_worst = [], []
        for family in families:
            found = [_load(os.path.join(ROOT, "final", eps, f"{family}-d{density}-s{seed}")) for seed in FINAL_SEEDS]
            found = [f for f in found if f]
            if not found:
                continue
            nat = np.array([f["natural_accuracy"] for f in found])
            rob = np.array([f["robust_accuracy"] for f in found])
            worst = [f["first_200"]["robust"] for f in found if f.get("first_200")]
            by_pgd.append((family, rob.mean(), rob.std(), len(found)))
            if worst:
                by_worst.append((family, np.mean(worst), np.std(worst), len(worst)))
            lines.append(f"| {density} | {family} | {len(found)} | {nat.mean():.3f} ± {nat.std():.3f} | {rob.mean():.3f} ± "
                         f"{rob.std():.3f} | {(f'{np.mean(worst):.3f} ± {np.std(worst):.3f}') if worst else '—'} | "
                         f"{sum(bool(f.get('collapsed')) for f in found)} |")
        lines += [line for line in (_best_ticket_line(density, by_pgd, "PGD-100×5"),
                                    _best_ticket_line(density, by_worst, "the worst of PGD and AutoAttack")) if line]
    return "\n".join(lines)


def plot(path=os.path.join(os.path.dirname(DIGESTS), "search_length.png")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    reference = os.path.join(ROOT, "lengths", "magnitude")
    fig, (ax_overlap, ax_robust) = plt.subplots(1, 2, figsize=(10, 4))
    for decay in ("nodecay", "decay"):
        for student in ("masked", "full"):
            xs, overlap, robust = [], [], []
            for epochs in LENGTHS:
                out = os.path.join(ROOT, "lengths", f"e{epochs}-{decay}-{student}")
                s = _load(out)
                if s is None:
                    continue
                xs.append(epochs)
                overlap.append(s["overlap_same_count"]["dense_0"])
                robust.append(s["robust_accuracy"])
            label = f"{'decay λ=1e-4' if decay == 'decay' else 'no decay'}, {student}"
            style = "-" if decay == "decay" else "--"
            ax_overlap.plot(xs, overlap, style, marker="o", label=label)
            ax_robust.plot(xs, robust, style, marker="o", label=label)
    if _load(reference):
        ax_robust.axhline(_load(reference)["robust_accuracy"], color="grey", lw=1, label="magnitude at θ0")
    for ax, title in ((ax_overlap, "dense_0: kept weights among the top-|θ0| of the same count"),
                      (ax_robust, "validation robust accuracy (PGD-100×5, ε=0.1)")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(LENGTHS, [str(e) for e in LENGTHS])
        ax.set_xlabel("search epochs (T_m = 100 steps)")
        ax.set_title(title, fontsize=9)
    ax_robust.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("lengths", "select", "final", "digest", "report", "plot"))
    parser.add_argument("--families", default=None, help="final: comma-separated families (default: all)")
    parser.add_argument("--queue", default="0/1", help="i/n: run every n-th cell starting at i (default 0/1: all)")
    parser.add_argument("--reverse", action="store_true",
                        help="final: the queue's cells from the end, skipping a cell another process holds")
    args = parser.parse_args(argv)
    if args.command == "lengths":
        lengths(args.queue)
    elif args.command == "select":
        select(args.queue)
    elif args.command == "final":
        final(args.queue, args.families.split(",") if args.families else None, args.reverse)
    elif args.command == "digest":
        digest()
    elif args.command == "report":
        print("## Search length\n\n" + lengths_table() + "\n\n## Selection\n\n" + selection_table())
        for eps in EPS:
            print(f"\n## Test split, {eps}\n\n" + final_table(eps))
    else:
        plot()


if __name__ == "__main__":
    main()
