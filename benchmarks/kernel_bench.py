"""Mixed Tangent Kernel speed: the structured path against the jacobian path, same inputs, same run.

    python benchmarks/kernel_bench.py [--repeats 5] [--cases mlp-dense,...] [--mem-limit-gb 0]

Every (case, implementation) runs in its own subprocess so its peak resident memory (ru_maxrss) is
its own; each times a compiled ``tf.function`` (median of ``--repeats`` runs after one warm-up
call that also traces). A subprocess killed for memory is reported as such.
Prints a markdown table with the speed-up structured vs jacobian per row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    # name: (model, batch, masked density or None, with gradient, diagonal)
    "mlp-dense": ("mlp", 64, None, False, False),
    "mlp-masked5%+grad": ("mlp", 64, 0.05, True, False),
    "cnn-dense": ("cnn", 32, None, False, False),
    "cnn-masked5%+grad": ("cnn", 32, 0.05, True, False),
    "cnn-diagonal-B64": ("cnn", 64, None, False, True),
    "cnn-diagonal-masked5%+grad-B64": ("cnn", 64, 0.05, True, True),
    # Where the jacobian path cannot fit in memory at the paper's batch, the same case at a batch it fits:
    "cnn-masked5%+grad-B8": ("cnn", 8, 0.05, True, False),
    "cnn-diagonal-B16": ("cnn", 16, None, False, True),
    "cnn-diagonal-masked5%+grad-B16": ("cnn", 16, 0.05, True, True),
}


def run_one(case: str, implementation: str, repeats: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import tf_keras

    import tf_awt
    from tf_awt import models

    model_name, batch, density, with_grad, diagonal = CASES[case]
    tf_keras.utils.set_random_seed(0)
    model = models.mlp() if model_name == "mlp" else models.paper_cnn()
    rng = np.random.default_rng(0)
    x1 = tf.constant(rng.uniform(0, 1, (batch, 28, 28, 1)), tf.float32)
    x2 = tf.clip_by_value(x1 + tf.constant(rng.uniform(-0.3, 0.3, x1.shape), tf.float32), 0, 1)
    masks = None
    if density is not None:
        masks = {
            layer.name: tf.constant((rng.random(layer.kernel.shape) < density).astype("float32"))
            for layer in model.layers
            if hasattr(layer, "kernel")
        }
    kernel_fn = tf_awt.mixed_tangent_kernel_fn(model, implementation)
    target = tf.zeros((batch, 10, 10) if diagonal else (batch, batch, 10, 10))

    @tf.function
    def step(a, b):
        if not with_grad:
            return kernel_fn(a, b, masks=masks, diagonal=diagonal)
        with tf.GradientTape() as tape:
            loss = tf_awt.kernel_distance(target, kernel_fn(a, b, masks=masks, diagonal=diagonal))
        return tape.gradient(loss, model.trainable_variables, unconnected_gradients="zero")

    t0 = time.perf_counter()
    out = step(x1, x2)
    tf.nest.map_structure(lambda t: t.numpy(), out)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = step(x1, x2)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - t0)
    checksum = float(sum(np.sum(np.abs(t.numpy()), dtype=np.float64) for t in tf.nest.flatten(out)))
    return {
        "median_s": statistics.median(times),
        "first_call_s": first,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checksum": checksum,
    }


def spawn(case, implementation, repeats, mem_limit_gb, timeout_s):
    cmd = [sys.executable, __file__, "--one", case, implementation, "--repeats", str(repeats)]

    def limit():
        if mem_limit_gb:
            lim = int(mem_limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout_s:.0f} s"}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    if proc.returncode < 0:
        return {"error": f"killed by signal {-proc.returncode} (out of memory)"}
    err = proc.stderr.lower()
    if "resourceexhausted" in err or "bad_alloc" in err or "memoryerror" in err or "oom" in err:
        return {"error": "out of memory" + (f" (> {mem_limit_gb:g} GB address space)" if mem_limit_gb else "")}
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": tail[:120]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--mem-limit-gb", type=float, default=0.0,
                        help="address-space cap per subprocess in GB (default 0: none; TF reserves far more "
                             "virtual than resident memory, so a cap below ~2x the RAM fails early)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per (case, path) subprocess")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.repeats)))
        return
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    print(f"# kernel_bench: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}, repeats={args.repeats}")
    print("| case | structured median s | jacobian median s | speed-up | structured peak RSS MB | jacobian peak RSS MB | max rel. diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case in cases:
        s = spawn(case, "structured", args.repeats, args.mem_limit_gb, args.timeout)
        j = spawn(case, "jacobian", args.repeats, args.mem_limit_gb, args.timeout)
        if "error" in s:
            print(f"| {case} | {s['error']} | | | | | |")
            continue
        if "error" in j:
            print(f"| {case} | {s['median_s']:.4f} | {j['error']} | n/a | {s['peak_rss_mb']:.0f} | n/a | n/a |")
            continue
        diff = abs(s["checksum"] - j["checksum"]) / max(abs(j["checksum"]), 1e-30)
        print(
            f"| {case} | {s['median_s']:.4f} | {j['median_s']:.4f} | {j['median_s'] / s['median_s']:.1f}x "
            f"| {s['peak_rss_mb']:.0f} | {j['peak_rss_mb']:.0f} | {diff:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
