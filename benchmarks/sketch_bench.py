"""The sketched kernel distance (``search.kernel: sketch``) against the exact structured kernels:
one whole AWT search step (``TicketSearch.train_step``: PGD-10 of teacher and student, the kernel
distance and its gradient, Adam, the mask schedule) at B = 32 and density 5%, seconds and peak memory.

    python benchmarks/sketch_bench.py [--models mlp,cnn,vgg16,resnet18] [--probes 1,4,8,16] [--repeats 5]

Every row runs in its own process (a clean peak RSS: VmHWM, reset after set-up, minus the RSS after set-up,
and the peak itself); the ratios are against the exact path measured in the same run. MNIST
models take mnist-5k digits (L∞ ε = 0.3, step 0.075), the 32×32×3 models (tf_awt.models.vgg16,
tf_awt.models.resnet18) uniform noise images (L∞ ε = 8/255, step 2/255): the step's cost does not
depend on the pixels. An exact row whose per-example gradients alone (2 · B · k · P_pe · 4 bytes,
P_pe = the weights without a factored Dense rule) exceed 80% of the available memory is not run
and says so. Then the projection of the paper-scale CNN search: 20 epochs of 60,000 digits at B = 32.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

B = 32


def _status_gb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, GB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")  # pragma: no cover


def _reset_peak() -> None:
    """Resets VmHWM to the current RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def one(model_name: str, kernel: str, probes: int, repeats: int) -> dict:
    """One row, in this process: the median seconds of a compiled train_step and the peak memory."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import tf_keras

    import tf_awt
    from tf_awt.tickets.search import TicketSearch, search_optimizer

    tf_keras.utils.set_random_seed(0)
    if model_name in ("mlp", "cnn"):
        split = tf_awt.data.load("mnist-5k")
        x, y = tf.constant(split.x_train[:B]), tf.constant(split.y_train[:B])
        attack = tf_awt.Attack(eps=0.3, steps=10, step_size=0.075)
    else:
        rng = np.random.default_rng(0)
        x, y = tf.constant(rng.uniform(0, 1, (B, 32, 32, 3)).astype("float32")), tf.constant(rng.integers(0, 10, B))
        attack = tf_awt.Attack(eps=8 / 255, steps=10, step_size=2 / 255)
    model = {"mlp": tf_awt.models.mlp, "cnn": tf_awt.models.paper_cnn, "vgg16": tf_awt.models.vgg16,
             "resnet18": tf_awt.models.resnet18}[model_name]()
    config = tf_awt.SearchConfig.from_settings(dict(density=0.05, attack=attack, kernel=kernel, probes=probes, epochs=1))
    search = TicketSearch(model, config, steps_per_epoch=100)
    search.compile(optimizer=search_optimizer(config))
    step = tf.function(search.train_step)
    set_up = _status_gb("VmRSS")
    _reset_peak()  # the data set's loading peak is not the step's
    t0 = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), step((x, y)))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), step((x, y)))
        times.append(time.perf_counter() - t0)
    attacks = tf.function(lambda: search._adversarial_inputs(tf.cast(x, tf.float32), y))  # the two PGD-10 runs
    tf.nest.map_structure(lambda t: t.numpy(), attacks())
    pgd_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), attacks())
        pgd_times.append(time.perf_counter() - t0)
    return {"model": model_name, "kernel": kernel, "probes": probes, "seconds": statistics.median(times),
            "attack_seconds": statistics.median(pgd_times),
            "first_call_seconds": first, "peak_gb": _status_gb("VmHWM"), "step_peak_gb": _status_gb("VmHWM") - set_up,
            "weights": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))}


def _per_example_gb(model_name: str) -> float:
    """What the exact structured path holds at least: per-example gradients of every weight
    without a factored rule (Conv2D, BN; a Dense layer on rank-2 inputs is factored), for x and
    X̃, (2, B, k, P_pe) float32."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    import tf_awt

    model = {"mlp": tf_awt.models.mlp, "cnn": tf_awt.models.paper_cnn, "vgg16": tf_awt.models.vgg16,
             "resnet18": tf_awt.models.resnet18}[model_name]()
    per_example = sum(int(np.prod(w.shape)) for layer in model.layers if not layer.__class__.__name__ == "Dense"
                      for w in layer.trainable_weights)
    return 2 * B * 10 * per_example * 4 / 2**30


def _available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")  # pragma: no cover


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,cnn,vgg16,resnet18")
    parser.add_argument("--probes", default="1,4,8,16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "KERNEL", "PROBES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], int(args.one[2]), args.repeats)))
        return
    print(f"# sketch_bench: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}, B={B}, density 0.05, PGD-10, repeats={args.repeats}, "
          f"available memory {_available_gb():.1f} GB")
    print("| model | weights | kernel distance | median s/step | vs exact | of which the two PGD-10 | the rest (kernel term, update) "
          "| the rest vs exact | peak RSS GB (step's increase) | first call s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    projection = {}
    for model_name in args.models.split(","):
        exact = exact_rest = None
        rows = [("full", 1)] + [("sketch", int(k)) for k in args.probes.split(",")]
        for kernel, probes in rows:
            label = "exact (structured)" if kernel == "full" else f"sketch K={probes}"
            if kernel == "full":
                need = _per_example_gb(model_name)
                if need > 0.8 * _available_gb():
                    print(f"| {model_name} | | {label} | not run: its per-example gradients alone need {need:.1f} GB "
                          f"(> 80% of {_available_gb():.1f} GB available) | | | | | | |", flush=True)
                    continue
            out = subprocess.run([sys.executable, __file__, "--one", model_name, kernel, str(probes),
                                  "--repeats", str(args.repeats)], capture_output=True, text=True)
            if out.returncode != 0:
                reason = "out of memory (killed)" if out.returncode in (-9, 137) else out.stderr.strip().splitlines()[-1][:120]
                print(f"| {model_name} | | {label} | failed: {reason} | | | | | | |", flush=True)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rest = max(row["seconds"] - row["attack_seconds"], 1e-9)
            if kernel == "full":
                exact, exact_rest = row["seconds"], rest
            ratio = f"{exact / row['seconds']:.1f}× faster" if exact and kernel == "sketch" else ("1×" if kernel == "full" else "")
            rest_ratio = f"{exact_rest / rest:.1f}×" if exact and kernel == "sketch" else ""
            print(f"| {model_name} | {row['weights']:,} | {label} | {row['seconds']:.3f} | {ratio} | {row['attack_seconds']:.3f} | "
                  f"{rest:.3f} | {rest_ratio} | {row['peak_gb']:.2f} ({row['step_peak_gb']:+.2f}) | {row['first_call_seconds']:.1f} |",
                  flush=True)
            if model_name == "cnn":
                projection[label] = row["seconds"]
    steps = 20 * 60000 // B
    for label, seconds in projection.items():
        print(f"\nprojected paper-scale CNN search ({steps:,} steps of {B}), {label}: {steps * seconds / 3600:.1f} h", end="")
    print()


if __name__ == "__main__":
    main()
