"""The one-call kernel API: compiled by default against the eager path, same inputs, same run.

    python benchmarks/kernel_api_bench.py [--repeats 5]

Times ``tf_awt.mixed_tangent_kernel(model, x, x_adv)`` (the README's call, compiled and cached on
the model), ``tf.function(mixed_tangent_kernel_fn(model))`` (compiled explicitly by
the user: the reference), ``mixed_tangent_kernel_fn(model, compiled=False)`` (plain eager) and ``mixed_tangent_kernel_fn(model, jit_compile=True)`` (XLA), for the
paper MLP (784-300-100-10) and the paper CNN (``--models mlp,cnn``, default both) at B = 64: the
dense kernel, and a 5%-masked kernel with the gradient of a kernel distance with respect to the
weights (the gradient taken outside the call, as a user's training step does). Median of
``--repeats`` calls after one warm-up call (which traces), new input values at every call. Prints
a markdown table and the ratios; "default / explicit" is the issue's "within 1.3×" check.

    python benchmarks/kernel_api_bench.py --baseline DIR [--rounds 5] [--repeats 100]

compares the dense-MLP kernel, wrapped in ``tf.function`` as the issue measured it
(``tf.function(mixed_tangent_kernel_fn(model))``), of this tree against the tf_awt tree in DIR (a
``git worktree`` of an older commit): ``--rounds`` alternating subprocesses per tree, each timing
``--repeats`` calls after a warm-up; prints min and median over all calls of each tree.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="a tf_awt source tree to compare the dense MLP kernel against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn (default both)")
    parser.add_argument("--time-dense", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_dense:
        return _time_dense(args.repeats)
    if args.baseline:
        return _against(args.baseline, args.rounds, args.repeats)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras

    import tf_awt

    builders = {"mlp": tf_awt.models.mlp, "cnn": tf_awt.models.paper_cnn}
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in builders]
    if unknown or not names:
        parser.error(f"--models takes a comma-separated subset of {sorted(builders)}. You passed: {args.models!r}")
    paths = {"default (compiled)": lambda model: tf_awt.mixed_tangent_kernel,
             "explicit tf.function": lambda model: _call(tf.function(tf_awt.mixed_tangent_kernel_fn(model, compiled=False))),
             "eager (compiled=False)": lambda model: _call(tf_awt.mixed_tangent_kernel_fn(model, compiled=False)),
             "XLA (jit_compile=True)": lambda model: _call(tf_awt.mixed_tangent_kernel_fn(model, jit_compile=True))}
    results = {}
    for model_name in names:
        tf_keras.utils.set_random_seed(0)
        model = builders[model_name]()
        for case, seconds in _time_model(model, paths, args.repeats).items():
            results[(model_name, case)] = seconds
    print(f"# kernel_api_bench: {platform.node()}, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}, median of {args.repeats}")
    print("| model | call | " + " | ".join(paths) + " | default / explicit | eager / default | eager / XLA |")
    print("| --- | --- |" + " --- |" * (len(paths) + 3))
    for (model_name, case), row in results.items():
        default, explicit, eager, xla = (row[name] for name in paths)
        print(f"| {model_name} | {case} | " + " | ".join(f"{row[n]:.4f} s" for n in paths)
              + f" | {default / explicit:.2f}× | {eager / default:.1f}× | {eager / xla:.1f}× |")


def _time_model(model, paths, repeats):
    """Median seconds per (case, path) for ``model``: the dense kernel, and masked + gradient."""
    import numpy as np
    import tensorflow as tf

    import tf_awt

    rng = np.random.default_rng(0)
    masks = {l.name: (rng.random(l.kernel.shape) < 0.05).astype("float32") for l in model.layers if hasattr(l, "kernel")}
    k = model.output_shape[-1]
    target = tf.zeros((64, 64, k, k))
    shape = (64, *model.input_shape[1:])

    def inputs(i):
        x = tf.constant(np.random.default_rng(i).uniform(0, 1, shape), tf.float32)
        return x, tf.clip_by_value(x + 0.1 * tf.sign(tf.random.stateless_normal(x.shape, [i, 0])), 0, 1)

    cases = {"dense MTK": False, "masked 5% MTK + gradient of a kernel distance": True}
    results = {}
    for case, with_grad in cases.items():
        results[case] = {}
        for name, make in paths.items():
            fn = make(model)

            def once(i):
                x, x_adv = inputs(i)
                if not with_grad:
                    return fn(model, x, x_adv).numpy()
                with tf.GradientTape() as tape:
                    loss = tf_awt.kernel_distance(target, fn(model, x, x_adv, masks=masks))
                return [g.numpy() for g in tape.gradient(loss, model.trainable_variables, unconnected_gradients="zero")]

            once(0)
            times = []
            for i in range(1, repeats + 1):
                t0 = time.perf_counter()
                once(i)
                times.append(time.perf_counter() - t0)
            results[case][name] = statistics.median(times)
    return results


def _time_dense(repeats: int) -> None:
    """Prints, as JSON, the seconds of ``repeats`` calls of the compiled dense MLP kernel (B = 64)."""
    import json

    import numpy as np
    import tensorflow as tf
    import tf_keras

    import tf_awt

    tf_keras.utils.set_random_seed(0)
    model = tf_awt.models.mlp()
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (64, 28, 28, 1)), tf.float32)
    x_adv = tf.clip_by_value(x + 0.1, 0, 1)
    fn = tf.function(tf_awt.mixed_tangent_kernel_fn(model))
    fn(x, x_adv).numpy()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x, x_adv).numpy()
        times.append(time.perf_counter() - t0)
    print(json.dumps(times))


def _against(baseline: str, rounds: int, repeats: int) -> None:
    import json
    import subprocess
    import sys

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"baseline": os.path.abspath(baseline), "this tree": here}
    times = {name: [] for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "2"}
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--time-dense", "--repeats", str(repeats)],
                                 env=env, capture_output=True, text=True, check=True, cwd=tree)
            times[name] += json.loads(out.stdout.strip().splitlines()[-1])
    print(f"# kernel_api_bench --baseline: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"{rounds} alternating rounds of {repeats} calls per tree")
    print("| tree | min s | median s |")
    print("| --- | --- | --- |")
    for name, tree in trees.items():
        print(f"| {name} ({tree}) | {min(times[name]):.4f} | {statistics.median(times[name]):.4f} |")
    b, t = (statistics.median(times[n]) for n in trees)
    print(f"speed-up (median): {b / t:.2f}×")


def _call(kernel_fn):
    return lambda model, x1, x2, masks=None: kernel_fn(x1, x2, masks=masks)


if __name__ == "__main__":
    main()
