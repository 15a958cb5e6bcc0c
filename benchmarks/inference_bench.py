"""Inference of an exported ticket: does the sparsity make it faster, not only smaller?

    python benchmarks/inference_bench.py [--repeats 300] [--threads 1]

For the paper MLP (784-300-100-10) and the paper CNN at 5% and 1% density (magnitude tickets at
θ0: latency does not depend on which weights are kept, only on how many), in one run:

* ``keras dense``: the dense model (same architecture, no mask) as a compiled ``tf.function``,
  what the exported SavedModel runs;
* ``tflite dense``: :func:`export_tflite` with ``sparse=False`` (kernels stored dense, zeros
  included) in TFLite's interpreter;
* ``tflite sparse``: :func:`export_tflite` (``Optimize.EXPERIMENTAL_SPARSITY``), what
  ``tf-awt run`` writes as ``model.tflite``.

Latency: median of ``--repeats`` calls after warm-up, batch 1 and 64, ``--threads`` interpreter
threads (TensorFlow's own intra-op threads are set to the same number). File size: the SavedModel
folder and the flatbuffers. ``max |Δlogit|``: sparse TFLite against the masked Keras model on the
batch. Prints a markdown table and the speed-ups of ``tflite sparse`` over both dense columns.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings


def _median_seconds(fn, repeats):
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interpreter(path, batch, shape, threads):
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, (batch, *shape))
    interpreter.allocate_tensors()
    out = interpreter.get_output_details()[0]["index"]

    def run(x):
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


def _folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _measure(arch, density, repeats, threads, workdir):
    import numpy as np
    import tensorflow as tf
    import tf_keras

    import tf_awt
    from tf_awt.tickets.export import export_tflite

    tf_keras.utils.set_random_seed(0)
    model = getattr(tf_awt.models, arch)()
    shape = tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(0).uniform(0, 1, (64, *shape)).astype("float32")
    ticket = tf_awt.find_ticket(model, (x, np.arange(64) % 10), density=density, method="magnitude")
    pruned = ticket.to_model(model)
    base = os.path.join(workdir, f"{arch}-{density}")
    saved = tf_awt.export_saved_model(pruned, base + "-saved")
    sparse_bytes = export_tflite(pruned, base + "-sparse.tflite")
    dense_bytes = export_tflite(pruned, base + "-dense.tflite", sparse=False)
    keras_fn = tf.function(lambda z: saved.model(z, training=False))
    rows = []
    for batch in (1, 64):
        xb = x[:batch]
        xt = tf.constant(xb)
        keras_s = _median_seconds(lambda: keras_fn(xt).numpy(), repeats)
        dense_run = _interpreter(base + "-dense.tflite", batch, shape, threads)
        sparse_run = _interpreter(base + "-sparse.tflite", batch, shape, threads)
        dense_s = _median_seconds(lambda: dense_run(xb), repeats)
        sparse_s = _median_seconds(lambda: sparse_run(xb), repeats)
        diff = float(np.abs(sparse_run(xb) - pruned(xb).numpy()).max())
        rows.append((arch, density, batch, keras_s, dense_s, sparse_s, diff))
    sizes = (_folder_bytes(base + "-saved"), dense_bytes, sparse_bytes)
    return rows, sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="mlp,paper_cnn")
    parser.add_argument("--densities", default="0.05,0.01")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    print(f"# inference_bench: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s), median of {args.repeats}, TF {tf.__version__}")
    print("| model | density | batch | keras dense (ms) | tflite dense (ms) | tflite sparse (ms) | sparse vs keras | "
          "sparse vs tflite dense | max abs logit diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    sizes_rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for arch in args.models.split(","):
            for density in (float(d) for d in args.densities.split(",")):
                rows, sizes = _measure(arch, density, args.repeats, args.threads, workdir)
                for arch_, dens, batch, keras_s, dense_s, sparse_s, diff in rows:
                    print(f"| {arch_} | {dens:g} | {batch} | {keras_s * 1e3:.4f} | {dense_s * 1e3:.4f} | {sparse_s * 1e3:.4f} | "
                          f"{keras_s / sparse_s:.1f}× | {dense_s / sparse_s:.1f}× | {diff:.1e} |", flush=True)
                sizes_rows.append((arch, density, *sizes))
    print("\n| model | density | SavedModel folder (bytes) | tflite dense (bytes) | tflite sparse (bytes) |")
    print("| --- | --- | --- | --- | --- |")
    for arch, density, saved, dense, sparse in sizes_rows:
        print(f"| {arch} | {density:g} | {saved:,} | {dense:,} | {sparse:,} |")


if __name__ == "__main__":
    main()
