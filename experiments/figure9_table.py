"""The tables of experiments/figure9.sh from its runs directory.

    python experiments/figure9_table.py RUNS [--copy DEST]

Prints one row per finished cell (its graft.json exists), then one row per method and density with the
mean ± std over the seeds that finished, then each boundary's mean increase (over epochs and both graft
directions). ``--copy DEST`` also copies each finished cell's small files (no weights) to DEST/<cell>/.
"""
import argparse
import json
import os
import shutil

import numpy as np

KEPT = ("summary.json", "evaluation.json", "recipe.yaml", "run.json", "graft.json", "graft.csv", "graft.png")
METHODS = ("awt", "random", "magnitude")


def cells(runs):
    """(method, density, seed, directory) of every cell whose graft finished, in figure9.sh's order."""
    found = []
    for name in os.listdir(runs):
        path = os.path.join(runs, name)
        if not os.path.exists(os.path.join(path, "graft.json")):
            continue
        method, density, seed = name.rsplit("-", 2)
        found.append((method, float(density[1:]), int(seed[1:]), path))
    return sorted(found, key=lambda c: (_rank(c[0]), c[1], c[2]))


def _rank(method):
    """figure9.sh's order of methods; another (a hybrid ticket) last."""
    return METHODS.index(method) if method in METHODS else len(METHODS)


def boundary_means(graft):
    """{boundary: (mean natural increase, mean adversarial increase)} over epochs and both directions."""
    out = {}
    for b in dict.fromkeys(r["boundary"] for r in graft["rows"]):
        rows = [r for r in graft["rows"] if r["boundary"] == b]
        out[b] = (np.mean([r["natural_increase"] for r in rows]), np.mean([r["adversarial_increase"] for r in rows]))
    return out


def over_worse(graft):
    """Mean (natural, adversarial) error of a graft above the *worse* of the two originals at its epoch: a
    ticket that trains badly makes every graft look bad against the better (dense) original; this part is
    what the ticket's own error does not explain."""
    out = []
    for i, kind in enumerate(("natural", "adversarial")):
        gaps = []
        for r in graft["rows"]:
            o = graft["originals"][str(r["epoch"])]
            gaps.append(r[f"{kind}_increase"] - abs(o["ticket"][i] - o["dense"][i]))
        out.append(float(np.mean(gaps)))
    return out


def main(runs, copy=None):
    found = cells(runs)
    grafts = {c[3]: json.load(open(os.path.join(c[3], "graft.json"))) for c in found}
    print("| cell | natural / robust (own evaluation) | its attacks, test digits | mean increase of a graft: "
          "natural / adversarial | the same above the worse original |")
    print("| --- | --- | --- | --- | --- |")
    for method, density, seed, path in found:
        e = json.load(open(os.path.join(path, "evaluation.json")))
        g = grafts[path]
        print(f"| {os.path.basename(path)} | {e['natural_accuracy']:.3f} / {e['robust_accuracy']:.3f} | "
              f"{', '.join(e['attacks'])}; {e['num_examples']} | "
              f"{g['mean_natural_increase']:+.3f} / {g['mean_adversarial_increase']:+.3f} | "
              "{:+.3f} / {:+.3f} |".format(*over_worse(g)))
    print("\n| method | density | seeds | mean increase, natural | mean increase, adversarial | above the worse: natural | adversarial |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    groups = {}
    for method, density, seed, path in found:
        groups.setdefault((method, density), []).append(grafts[path])
    for (method, density), gs in sorted(groups.items(), key=lambda kv: (kv[0][1], _rank(kv[0][0]))):
        nat = [g["mean_natural_increase"] for g in gs]
        adv = [g["mean_adversarial_increase"] for g in gs]
        spread = lambda v: f" ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else ""  # noqa: E731
        worse = [over_worse(g) for g in gs]
        print(f"| {method} | {density:g} | {len(gs)} | " + " | ".join(
            f"{np.mean(v):+.3f}{spread(v)}" for v in (nat, adv, [w[0] for w in worse], [w[1] for w in worse])) + " |")
    print("\nEach boundary's mean increase (natural / adversarial), over the epochs and both directions:\n")
    names = list(dict.fromkeys(b for g in grafts.values() for b in boundary_means(g)))
    print("| cell | " + " | ".join(f"after {b}" for b in names) + " |")
    print("| --- |" + " --- |" * len(names))
    for method, density, seed, path in found:
        means = boundary_means(grafts[path])
        print(f"| {os.path.basename(path)} | " + " | ".join(
            f"{means[b][0]:+.2f} / {means[b][1]:+.2f}" if b in means else "–" for b in names) + " |")
    if copy:
        for *_, path in found:
            dest = os.path.join(copy, os.path.basename(path))
            os.makedirs(dest, exist_ok=True)
            for f in KEPT:
                if os.path.exists(os.path.join(path, f)):
                    shutil.copy2(os.path.join(path, f), dest)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs")
    parser.add_argument("--copy", metavar="DEST", help="copy each finished cell's small files to DEST/<cell>/")
    args = parser.parse_args()
    main(args.runs, args.copy)
