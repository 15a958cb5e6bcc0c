"""Issue 26, item 4: are the sketch's tickets the exact search's? (validation split, 2 seeds)

    python experiments/sketch_quality.py run    [--queue 0/1] [--models mlp,cnn]
    python experiments/sketch_quality.py digest                 # docs/results/sketch_quality/*.json
    python experiments/sketch_quality.py report                 # the markdown table
    python experiments/sketch_quality.py spread                 # single-probe spread at the first step
    python experiments/sketch_quality.py test   [--queue 0/1]   # the CNN on the TEST split: K = 4 and exact, seeds 0-2

MLP: ``mnist5k-mlp`` at 3.6% with the AWT setting the fair run chose on validation (issue 25:
2 search epochs, T_m = 20, NTT's decay λ = 1e-4 / density), ``search.kernel=sketch`` with K = 1, 4
and 16 probes, seeds 0 and 1. Its exact rows are the fair run's own cells of that setting
(``runs/fair/select/awt-e2-tm20-decay-s{0,1}``, the same recipe and overrides, library commit
85de9d5; ``search.kernel: full`` did not change since). CNN: ``mnist5k-cnn`` at 3% (1 search
epoch), exact and K = 4, seeds 0 and 1. Every cell evaluates on the validation split (800 digits
of the training set); overlap = |m_sketch ∩ m_exact| / |m_exact| per layer, the same seed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cells import tf_awt_run  # noqa: E402

ROOT = os.path.join("runs", "sketch_quality")
FAIR = os.path.join("runs", "fair", "select")
DIGESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "results", "sketch_quality")
AWT_CHOSEN = ["search.epochs=2", "search.update_every=20", "search.weight_decay=1.0e-4",
              "search.weight_decay_form=l2_per_density"]
SEEDS = (0, 1)


def cells(models=("mlp", "cnn")):
    """(out, recipe, overrides) in the order they run: the MLP first (cheap), then the CNN."""
    if "mlp" in models:
        for probes in (1, 4, 16):
            for seed in SEEDS:
                yield (os.path.join(ROOT, f"mlp-k{probes}-s{seed}"), "mnist5k-mlp",
                       ["eval.split=validation", "density=0.036", f"seed={seed}", *AWT_CHOSEN, "search.kernel=sketch",
                        f"search.probes={probes}"])
    if "cnn" in models:  # seed-major: each seed's pair (sketch, exact) completes as early as possible
        for seed in SEEDS:
            for kernel in ("sketch", "full"):
                yield (os.path.join(ROOT, f"cnn-{'k4' if kernel == 'sketch' else 'exact'}-s{seed}"), "mnist5k-cnn",
                       ["eval.split=validation", f"seed={seed}", f"search.kernel={kernel}", "search.probes=4"])


TEST_SEEDS = (0, 1, 2)


def test_cells():
    """The chosen K (4: the validation pairs agree) and the exact search on the test split, the
    paper CNN at 3%, seeds 0-2; ordered so that two queues each get a mix of sketch and exact."""
    order = [(0, "sketch"), (0, "full"), (1, "full"), (1, "sketch"), (2, "sketch"), (2, "full")]
    for seed, kernel in order:
        yield (os.path.join(ROOT, f"cnn-test-{'k4' if kernel == 'sketch' else 'exact'}-s{seed}"), "mnist5k-cnn",
               [f"seed={seed}", f"search.kernel={kernel}", "search.probes=4"])


def run(queue: str, models, which=cells) -> None:
    index, count = (int(v) for v in queue.split("/"))
    for i, (out, recipe, overrides) in enumerate(which(models) if which is cells else which()):
        if i % count == index and not os.path.exists(os.path.join(DIGESTS, os.path.basename(out) + ".json")):
            tf_awt_run(recipe, out, overrides)


def _masks(out):
    with np.load(os.path.join(out, "ticket.npz"), allow_pickle=False) as z:
        return {k[len("mask/"):]: z[k] for k in z.files if k.startswith("mask/")}


def _exact_dir(name):
    if name.startswith("cnn-test-"):
        return os.path.join(ROOT, f"cnn-test-exact-{name.split('-')[-1]}")
    model, kind, seed = name.split("-")
    if model == "mlp":
        return os.path.join(FAIR, f"awt-e2-tm20-decay-{seed}")
    return os.path.join(ROOT, f"cnn-exact-{seed}")


def digest() -> None:
    os.makedirs(DIGESTS, exist_ok=True)
    names = [os.path.basename(out) for out, _, _ in [*cells(), *test_cells()]]
    for name in names + [f"mlp-exact-s{s}" for s in SEEDS]:
        out = _exact_dir(f"mlp-x-s{name[-1]}") if name.startswith("mlp-exact") else os.path.join(ROOT, name)
        if not os.path.exists(os.path.join(out, "summary.json")):
            continue
        summary = json.load(open(os.path.join(out, "summary.json")))
        row = {k: summary.get(k) for k in ("natural_accuracy", "robust_accuracy", "density", "layer_density",
                                           "phase_seconds", "library_commit", "collapsed")}
        exact = _exact_dir(name)
        if "exact" not in name and os.path.exists(os.path.join(exact, "ticket.npz")):
            mine, theirs = _masks(out), _masks(exact)
            row["overlap_exact"] = {layer: float(np.sum(mine[layer] * theirs[layer]) / max(np.sum(theirs[layer]), 1))
                                    for layer in theirs}
        with open(os.path.join(DIGESTS, name + ".json"), "w") as f:
            json.dump(row, f, indent=1, sort_keys=True)


def report() -> str:
    lines = ["| model | kernel distance | seeds | natural | robust (PGD-100×5) | mean robust | kept weights also in the exact "
             "search's mask (per layer, mean of seeds) | search s (seed 0) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups = [("mlp", "exact"), ("mlp", "k1"), ("mlp", "k4"), ("mlp", "k16"), ("cnn", "exact"), ("cnn", "k4")]
    for model, kind in groups:
        found = [os.path.join(DIGESTS, f"{model}-{kind}-s{s}.json") for s in SEEDS]
        found = [json.load(open(p)) for p in found if os.path.exists(p)]
        if not found:
            continue
        label = "exact (full)" if kind == "exact" else f"sketch K={kind[1:]}"
        nat = ", ".join(f"{r['natural_accuracy']:.3f}" for r in found)
        rob = ", ".join(f"{r['robust_accuracy']:.3f}" for r in found)
        overlap = ""
        if "overlap_exact" in found[0]:
            layers = list(found[0]["overlap_exact"])
            overlap = " / ".join(f"{np.mean([r['overlap_exact'][l] for r in found]):.2f}" for l in layers)
        lines.append(f"| {model} | {label} | {len(found)} | {nat} | {rob} | {np.mean([r['robust_accuracy'] for r in found]):.3f} | "
                     f"{overlap or '—'} | {found[0]['phase_seconds'].get('search', 0):.0f} |")
    return "\n".join(lines)


def test_report() -> str:
    """The test split: mean ± std over seeds 0-2 per kernel, the overlap with the exact ticket, the gap."""
    lines = ["| model | kernel distance | seeds | natural | robust (PGD-100×5) | kept weights also in the exact search's mask "
             "(per layer, mean of seeds) | search s (mean) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    stats = {}
    for kind in ("exact", "k4"):
        found = [os.path.join(DIGESTS, f"cnn-test-{kind}-s{s}.json") for s in TEST_SEEDS]
        found = [json.load(open(p)) for p in found if os.path.exists(p)]
        if not found:
            continue
        nat, rob = (np.array([r[k] for r in found]) for k in ("natural_accuracy", "robust_accuracy"))
        stats[kind] = (rob.mean(), rob.std(), len(found))
        overlap = "—"
        if all("overlap_exact" in r for r in found):
            layers = list(found[0]["overlap_exact"])
            overlap = " / ".join(f"{np.mean([r['overlap_exact'][l] for r in found]):.2f}" for l in layers)
        search = np.mean([r["phase_seconds"].get("search", 0) for r in found])
        lines.append(f"| cnn | {'exact (full)' if kind == 'exact' else 'sketch K=4'} | {len(found)} | {nat.mean():.3f} ± {nat.std():.3f} | "
                     f"{rob.mean():.3f} ± {rob.std():.3f} | {overlap} | {search:.0f} |")
    if len(stats) == 2:
        (me, se, _), (mk, sk, _) = stats["exact"], stats["k4"]
        within = abs(mk - me) <= se + sk
        lines.append(f"| cnn | sketch − exact: {mk - me:+.3f} robust ({'within' if within else 'beyond'} the sum of the stds, "
                     f"{se + sk:.3f}) | | | | | |")
    return "\n".join(lines)


def spread(samples: int = 256) -> str:
    """The single-probe spread at the first search step: the MLP and the paper CNN at θ0, the
    magnitude mask (Algorithm 1's m_0) at 3.6% / 3%, 32 mnist-5k digits and their PGD-10 examples
    (ε = 0.1) for teacher and student; the exact distance (structured kernels) beside the mean and
    relative standard deviation of ``samples`` single-probe estimates."""
    import tensorflow as tf
    import tf_keras

    import tf_awt
    from tf_awt.engine._layers import masked_forward
    from tf_awt.engine._masks import resolve_masks
    from tf_awt.engine.kernel_sketch import kernel_distance_sketch

    split = tf_awt.data.load("mnist-5k")
    x, y = tf.constant(split.x_train[:32]), tf.constant(split.y_train[:32])
    attack = tf_awt.Attack(eps=0.1, steps=10, step_size=0.025)
    lines = ["| model | density | exact distance | mean of the single-probe estimates | relative std of one probe | "
             "relative standard error at K = 1 / 4 / 16 |", "| --- | --- | --- | --- | --- | --- |"]
    for name, build, density in (("mlp", tf_awt.models.mlp, 0.036), ("cnn", tf_awt.models.paper_cnn, 0.03)):
        tf_keras.utils.set_random_seed(0)
        teacher = build()
        masks = tf_awt.find_ticket(teacher, (split.x_train[:64], split.y_train[:64]), density=density, method="magnitude").masks
        student = tf_keras.models.clone_model(teacher)
        student.set_weights(teacher.get_weights())
        x_t = tf_awt.pgd(lambda z: teacher(z, training=False), x, y, attack)
        masked = lambda z: masked_forward(student, z, resolve_masks(student, masks))  # noqa: E731
        x_s = tf_awt.pgd(masked, x, y, attack)
        exact = float(tf_awt.kernel_distance(tf_awt.mixed_tangent_kernel(teacher, x, x_t),
                                             tf_awt.mixed_tangent_kernel(student, x, x_s, masks=masks)))
        draws = np.concatenate([  # 32 probes a call: the memory is O(probes · (weights + activations))
            kernel_distance_sketch(teacher, student, x, x_t, x_s, masks=masks, probes=32, seed=(0, i),
                                          return_samples=True)[1].numpy() for i in range(samples // 32)])
        rel = float(np.std(draws) / np.mean(draws))
        lines.append(f"| {name} | {density:.1%} | {exact:.4g} | {np.mean(draws):.4g} ± {np.std(draws) / np.sqrt(samples):.2g} | "
                     f"{rel:.2f} | {rel:.2f} / {rel / 2:.2f} / {rel / 4:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "test", "digest", "report", "spread"))
    parser.add_argument("--queue", default="0/1")
    parser.add_argument("--models", default="mlp,cnn")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.queue, tuple(args.models.split(",")))
    elif args.command == "test":
        run(args.queue, None, which=test_cells)
    elif args.command == "digest":
        digest()
    elif args.command == "spread":
        print(spread())
    else:
        print(report() + "\n\nTest split:\n\n" + test_report())


if __name__ == "__main__":
    main()
