"""Cost of the default evaluation (PGD, then the standard AutoAttack: APGD-CE, APGD-T ×9, FAB-T ×9, Square-5000)
against the paper's PGD-100 × 5, on the same model, digits and machine.

    python benchmarks/eval_bench.py [--models mlp,cnn] [--examples 1000] [--eps 0.1] [--train-epochs 3]

Each model (the paper's MLP 784-300-100-10 or CNN) is adversarially trained on the 4,000 MNIST-5k
training digits (PGD-10 at ``--eps``, ``--train-epochs`` epochs, seed 0), so that PGD leaves part of
the test digits robust and the later suites have work to do. Then, on the first ``--examples`` test
digits, each timed once as a user's call is (every ``evaluate`` call traces its own attack
functions; one warm-up call on 8 digits first loads the libraries):

- ``pgd``: ``evaluate(config=EvalConfig(attacks=["pgd"]))``, PGD-100 × 5 restarts (the baseline);
- ``default``: ``evaluate()``'s default suites, each run on the examples still robust
  (``result.seconds`` gives each suite's share);
- ``square on N``: the same with Square on the first ``--square-examples`` digits only
  (``eval.square_examples``, the cheaper preset a recipe may choose; the output says so).

``check_subset=1`` keeps the sanity checks out (``result.seconds["checks"]`` is printed too).
Target: the default evaluation costs at most 3× PGD-100 × 5.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time


def _timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def bench_model(name: str, args, tf_awt, split) -> dict:
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_awt.models.mlp() if name == "mlp" else tf_awt.models.paper_cnn()
    train_attack = tf_awt.Attack(eps=args.eps, steps=10, step_size=2.5 * args.eps / 10)
    t0 = time.perf_counter()
    tf_awt.adversarial_fit(model, (split.x_train, split.y_train), attack=train_attack, epochs=args.train_epochs,
                           learning_rate=1e-3, batch_size=64, seed=0)
    train_seconds = time.perf_counter() - t0
    data = (split.x_test[:args.examples], split.y_test[:args.examples])
    attack = tf_awt.Attack(eps=args.eps, steps=100, step_size=2.5 * args.eps / 100)
    config = tf_awt.EvalConfig()

    def run(attacks, square_examples=None):
        settings = config if square_examples is None else config.replace(square_examples=square_examples)
        settings = settings if attacks is None else settings.replace(attacks=attacks)
        return tf_awt.evaluate(model, data, attack=attack, config=settings, check_subset=1)

    from tf_awt.engine.passes import PassCount

    row = {"model": name, "train_seconds": round(train_seconds, 1)}
    for label, attacks, subset in (("pgd", ["pgd"], None), ("default", None, None),
                                   (f"square on {args.square_examples}", None, args.square_examples)):
        with PassCount() as passes:
            seconds, result = _timed(lambda: run(attacks, subset))
        row[label] = {"seconds": round(seconds, 2), "robust_accuracy": result.robust_accuracy,
                      "suites": result.suites, "suite_seconds": result.seconds, "label": result.attack_label,
                      "passes": passes.totals()}
        print(f"{name:4s} {label:15s} {seconds:8.2f} s  robust {result.robust_accuracy:.3f}  ({result.attack_label})  "
              f"per suite: {result.seconds}  passes: {passes.totals()}", flush=True)
    row["natural_accuracy"] = result.natural_accuracy
    for label in ("default", f"square on {args.square_examples}"):
        row[f"ratio {label} / pgd"] = round(row[label]["seconds"] / row["pgd"]["seconds"], 2)
        # the machine-free ratio: forward + backward passes (a backward pass costs about two forward ones)
        work = {k: row[k]["passes"]["forward"] + 2 * row[k]["passes"]["backward"] for k in ("pgd", label)}
        row[f"pass ratio {label} / pgd"] = round(work[label] / work["pgd"], 2)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--square-examples", type=int, default=200)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    import tf_awt

    warnings.simplefilter("ignore")  # the sanity checks' warnings are not what is measured
    split = tf_awt.data.load("mnist-5k")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{args.examples} test digits, L∞ ε = {args.eps:g}")
    rows = [bench_model(name, args, tf_awt, split) for name in args.models.split(",")]
    for row in rows:
        for label in ("default", f"square on {args.square_examples}"):
            ratio = row[f"ratio {label} / pgd"]
            print(f"{row['model']}: {label} / PGD-100×5 = {ratio}× in seconds, {row[f'pass ratio {label} / pgd']}× in "
                  f"passes (forward + 2·backward): {'meets' if ratio <= 3 else 'misses'} the 3× target")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
