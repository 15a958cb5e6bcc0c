"""Figure 9's diagnosis: is a graft's error the *scale* of the front's activations, or other features?

    python experiments/figure9_scale.py RUN_DIR [RUN_DIR ...] [--examples 500]
    python experiments/figure9_scale.py --overlap RUN_DIR_A RUN_DIR_B
    python experiments/figure9_scale.py --hybrid LAYER RUN_DIR_A RUN_DIR_B OUT [--recipe-from RUN_DIR]

For a run made with ``train.dense_reference=true`` (its ``epochs/ticket-eN.npz`` and ``dense-eN.npz``), at
every kept epoch and every graft boundary (the cut of :func:`tf_awt.adversarial.grafting.grafted`), on the
first ``--examples`` test examples:

* ``ratio``: the root-mean-square activation at the cut, the ticket's over the dense network's;
* ``natural``: the natural error of the ticket's front on the dense back, above the dense network's own
  (the first direction of ``tf-awt graft``'s table, natural column);
* ``rescaled``: the same graft with the ticket's activations at the cut multiplied by 1 / ratio, one
  scalar per epoch and boundary (fitted on the same examples: a diagnosis, not a method);
* ``correlation``: unit by unit, the Pearson correlation of the ticket's and the dense network's activation
  over the examples (and, for a convolution, its positions), averaged over the units; a unit that is
  constant in either network counts 0. A graft joins unit j of one network to unit j of the other, so
  this says whether the two networks carry the same features in the same units.

If rescaling removes most of a boundary's increase, the ticket's front computes what the dense back
expects up to a scale. A ReLU back part with small biases is nearly positively homogeneous, so a scale
barely moves its decisions: then the increase is in which features the units carry (the correlation).
Prints one row per run and boundary (means over epochs) and writes ``scale.json`` in each run directory.
``--overlap A B`` prints, layer by layer, each ticket's density and the share of A's kept weights that B
keeps too (two tickets of one θ0: the same seed). ``--hybrid LAYER A B OUT`` writes OUT/ticket.npz: A's
ticket with B's mask in LAYER (the same θ0, checked), and the recipe.yaml and run.json of ``--recipe-from``
(default A): ``tf-awt run`` with that recipe's command line and ``--out OUT`` then trains it, its search kept.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _layers_to(model, x, start, stop):
    """``model.layers[start:stop]`` applied to ``x`` in order (a Sequential model, as the graft's)."""
    h = x
    for layer in model.layers[start:stop]:
        h = layer(h, training=False)
    return h


def _unit_correlation(a, b):
    """The mean over units (the last axis) of the Pearson correlation of ``a`` and ``b`` (module docstring)."""
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    a, b = a - a.mean(0), b - b.mean(0)
    norms = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return float(np.mean(np.where(norms > 0, (a * b).sum(0) / np.where(norms > 0, norms, 1), 0.0)))


def diagnose(run_dir, examples=500):
    from tf_awt.adversarial.grafting import _plain, boundaries, cut_index
    from tf_awt.running.grafts import _epochs, _network
    from tf_awt.running.recipes import load_recipe
    from tf_awt.running.run_inputs import RunInputs

    recipe = load_recipe(os.path.join(run_dir, "recipe.yaml"))
    inputs = RunInputs(recipe)
    x, y = inputs.split.x_test[:examples], np.asarray(inputs.split.y_test[:examples])
    base = inputs.base_model()
    rows = []
    for epoch in _epochs(run_dir):
        ticket, dense = (_plain(_network(base, os.path.join(run_dir, "epochs", f"{who}-e{epoch}.npz")))
                         for who in ("ticket", "dense"))
        err = lambda logits: float(np.mean(np.argmax(logits, -1) != y))  # noqa: E731
        dense_err = err(dense(x, training=False))
        for i, name in enumerate(boundaries(dense)):
            cut = cut_index(dense, i + 1)
            h_t, h_d = _layers_to(ticket, x, 0, cut), _layers_to(dense, x, 0, cut)
            ratio = float(np.sqrt(np.mean(np.square(h_t))) / np.sqrt(np.mean(np.square(h_d))))
            natural = err(_layers_to(dense, h_t, cut, None)) - dense_err
            rescaled = err(_layers_to(dense, h_t / ratio, cut, None)) - dense_err
            rows.append({"epoch": epoch, "boundary": name, "ratio": ratio, "natural": natural, "rescaled": rescaled,
                         "correlation": _unit_correlation(np.asarray(h_t), np.asarray(h_d))})
    with open(os.path.join(run_dir, "scale.json"), "w") as f:
        json.dump({"examples": int(len(y)), "rows": rows}, f, indent=2)
    return rows


def _ticket(run_dir):
    """``run_dir``'s ticket.npz, opened; a one-line exit where there is none."""
    path = os.path.join(run_dir, "ticket.npz")
    if not os.path.isfile(path):
        raise SystemExit(f"{run_dir} holds no ticket.npz (a run or `tf-awt search` directory has one)")
    return np.load(path)


def overlap(a, b):
    """Per layer: (density of A, density of B, share of A's kept weights that B keeps)."""
    with _ticket(a) as ta, _ticket(b) as tb:
        for key in (k for k in ta.files if k.startswith("mask/")):
            ma, mb = ta[key] > 0, tb[key] > 0
            print(f"| {key[5:]} | {ma.mean():.3f} | {mb.mean():.3f} | {(ma & mb).sum() / max(ma.sum(), 1):.2f} |")


def hybrid(layer, a, b, out, recipe_from=None):
    """OUT/ticket.npz: A's ticket with B's mask in ``layer`` (module docstring)."""
    import shutil

    with _ticket(a) as ta, _ticket(b) as tb:
        arrays = {k: ta[k] for k in ta.files}
        if any(not np.array_equal(ta[k], tb[k]) for k in ta.files if k.startswith("init/")):
            raise SystemExit(f"{a} and {b} start from different θ0 (another seed?): no hybrid")
        arrays[f"mask/{layer}"] = tb[f"mask/{layer}"]
    os.makedirs(out, exist_ok=True)
    for name in ("recipe.yaml", "run.json"):
        shutil.copy2(os.path.join(recipe_from or a, name), out)
    np.savez(os.path.join(out, "ticket.npz"), **arrays)


def main(runs, examples):
    print("| cell | boundary | activation RMS, ticket / dense | natural increase (ticket front on dense back) | rescaled | unit correlation |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in runs:
        rows = diagnose(run, examples)
        for b in dict.fromkeys(r["boundary"] for r in rows):
            sel = [r for r in rows if r["boundary"] == b]
            print(f"| {os.path.basename(os.path.normpath(run))} | after {b} | "
                  f"{np.mean([r['ratio'] for r in sel]):.2f} ({min(r['ratio'] for r in sel):.2f}–{max(r['ratio'] for r in sel):.2f}) | "
                  f"{np.mean([r['natural'] for r in sel]):+.3f} | {np.mean([r['rescaled'] for r in sel]):+.3f} | "
                  f"{np.mean([r['correlation'] for r in sel]):.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--overlap", action="store_true", help="compare the masks of the two runs given")
    parser.add_argument("--hybrid", metavar="LAYER", help="LAYER A B OUT: A's ticket with B's mask in LAYER")
    parser.add_argument("--recipe-from", metavar="RUN_DIR", help="--hybrid: whose recipe.yaml and run.json (default A)")
    args = parser.parse_args()
    if args.hybrid:
        if len(args.runs) != 3:
            parser.error(f"--hybrid LAYER takes A B OUT. You passed: {args.runs}")
        hybrid(args.hybrid, *args.runs, recipe_from=args.recipe_from)
    elif args.overlap:
        if len(args.runs) != 2:
            parser.error(f"--overlap takes two run directories. You passed: {args.runs}")
        print(f"| layer | density, {args.runs[0]} | density, {args.runs[1]} | share of the first's kept weights kept by the second |")
        print("| --- | --- | --- | --- |")
        overlap(*args.runs)
    else:
        main(args.runs, args.examples)
