"""Where the student's sketch term spends its time (issue 41, item 1), on the paper CNN at the recipes' B = 64.

    python benchmarks/sketch_profile.py [--probes 4] [--model cnn|mlp] [--repeats 6] [--no-ops]

The student's side of a sketched search step is f_s(X̃ˢ) for the target term and the K products
Θˢ(X, X̃ˢ)·v_κ = J(X)·(J(X̃ˢ)ᵀ v_κ) for the kernel term, and the gradient of both w.r.t. the weights.
Timed as compiled functions on one batch (median after warm-up), each a ratio to ``TicketSearch.train_step``
measured in the same run:

* ``forward``: f_s(X̃ˢ) alone; ``forward + gradient``: the target term and its gradient;
* ``products``: the K products as the library computes them (``tangent_products_fn``: one
  ``tf.vectorized_map`` over the probes, each a VJP over X̃ˢ then a forward-mode JVP over X);
* ``student term``: the target and kernel terms and their gradient, as ``train_step`` computes them;
* two exact rewrites of the same numbers: ``shared forward`` (f_s(X̃ˢ) recorded once on a persistent
  tape, the K VJPs taken from it inside the ``vectorized_map``: no second forward over X̃ˢ) and
  ``unrolled`` (the same with a Python loop over the K probes instead of ``vectorized_map``).

Then (unless ``--no-ops``) a TensorFlow profiler trace of the student term, summed by op over the
executor's threads: the share in ``pfor`` while-loop fallbacks (ops ``vectorized_map`` could not batch:
a ``Conv2D`` whose filter differs per probe, a ``Conv2DBackpropFilter`` whose input does) and in the
transposes, tiles and tensor lists ``pfor`` adds around batched ops.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import platform
import statistics
import tempfile
import time


def median_time(fn, repeats):
    fn()  # warm-up / trace
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def op_shares(fn, repeats=3):
    """(seconds of ops per call, share in pfor while-loop fallbacks, share in pfor's reshuffling ops)."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp(prefix="sketch_profile-")
    tf.profiler.experimental.start(logdir)
    for _ in range(repeats):
        fn()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as fh:
        space.ParseFromString(fh.read())
    ops = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if line.name.startswith("tf_Compute"):
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    if "ExecutorState" not in name:  # the executor's envelope around the ops
                        ops[name] += event.duration_ps / 1e12 / repeats
    total = sum(ops.values())
    loops = sum(t for n, t in ops.items() if "/while" in n)
    shuffles = sum(t for n, t in ops.items() if n.rsplit(":", 1)[-1] in
                   ("Transpose", "Tile", "TensorListStack", "TensorListFromTensor", "StridedSliceGrad", "Reshape", "ConcatV2"))
    return total, loops / total, shuffles / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--no-ops", action="store_true", help="skip the profiler's per-op trace")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras

    import tf_awt
    from tf_awt.engine import _layers
    from tf_awt.engine._masks import resolve_masks
    from tf_awt.engine.distances import target_distance
    from tf_awt.engine.kernel_sketch import _sources, sketch_distance
    from tf_awt.tickets.search import TicketSearch, search_optimizer

    split = tf_awt.data.load("mnist-5k")
    x, y = tf.constant(split.x_train[:64]), tf.constant(split.y_train[:64])
    attack = tf_awt.Attack(eps=0.1, steps=10, step_size=0.025)
    tf_keras.utils.set_random_seed(0)
    build = tf_awt.models.paper_cnn if args.model == "cnn" else tf_awt.models.mlp
    config = tf_awt.SearchConfig.from_settings(dict(density=0.05, attack=attack, epochs=1, update_every=20, kernel="sketch",
                                                    probes=args.probes))
    search = TicketSearch(build(), config, steps_per_epoch=938)
    search.compile(optimizer=search_optimizer(config))
    student, variables = search.student, search.optimized_variables
    x_adv = tf.constant(tf_awt.pgd(search._student_fn, x, y, attack))
    probes = tf.function(lambda: search._probes(64, 10, tf.float32))()
    theta_t = tf.function(lambda: search._teacher_ntk(x, x_adv, probes))()
    f_t = search.teacher(x_adv)
    resolved = resolve_masks(student, None)

    def library():
        return search._student_fn(x_adv), search._student_kernel(x, x_adv, probes)

    def rewrite(unrolled):
        sources, substituted, applied = _sources(student, resolved, "masked")

        def forward(z):
            with _layers.substituted_kernels(substituted):
                return _layers.masked_forward(student, z, applied)

        with tf.GradientTape(persistent=True) as tape:
            tape.watch(sources)
            f_2 = forward(x_adv)

        def one(probe):
            u = tape.gradient(f_2, sources, output_gradients=probe, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            with tf.autodiff.ForwardAccumulator(sources, u) as acc:
                f_1 = forward(x)
            return acc.jvp(f_1, unconnected_gradients=tf.UnconnectedGradients.ZERO)

        products = tf.stack([one(probes[k]) for k in range(args.probes)]) if unrolled else tf.vectorized_map(one, probes)
        return f_2, products

    def with_gradient(terms):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                f_s, theta_s = terms()
                loss = target_distance(f_t, f_s) + sketch_distance(theta_t, theta_s, 64)[0]
            return tape.gradient(loss, variables, unconnected_gradients="zero"), loss
        return run

    def force(out):
        tf.nest.map_structure(lambda t: t.numpy(), out)

    # the rewrites' gradients against the library's, before train_step (timed below) moves the weights
    reference = with_gradient(library)()[0]
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in reference)
    differences = {}
    for unrolled in (False, True):
        grads = with_gradient(lambda: rewrite(unrolled))()[0]
        differences[unrolled] = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(grads, reference)) / scale
    rows = [("whole train_step", tf.function(search.train_step), (x, y)),
            ("forward f_s(X̃ˢ)", tf.function(lambda: search._student_fn(x_adv)), None),
            ("forward + gradient (target term)", with_gradient(lambda: (search._student_fn(x_adv), theta_t)), None),
            ("products Θˢ·v (no gradient)", tf.function(lambda: search._student_kernel(x, x_adv, probes)), None),
            ("student term (library)", with_gradient(library), None),
            ("student term, shared forward", with_gradient(lambda: rewrite(False)), None),
            ("student term, unrolled over probes", with_gradient(lambda: rewrite(True)), None)]
    print(f"# sketch_profile: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}, model {args.model}, B=64, K={args.probes}, repeats={args.repeats}")
    print("| piece | median s | ratio to the step | largest gradient difference to the library's |")
    print("| --- | --- | --- | --- |")
    step = None
    for name, fn, batch in rows:
        call = (lambda: force(fn(batch))) if batch is not None else (lambda: force(fn()))
        seconds = median_time(call, args.repeats)
        step = step or seconds
        difference = f"{differences[name.endswith('unrolled over probes')]:.1e} (relative)" if name.startswith("student term, ") else ""
        print(f"| {name} | {seconds:.3f} | {seconds / step:.2f} | {difference} |", flush=True)
    if not args.no_ops:
        fn = with_gradient(library)
        total, loops, shuffles = op_shares(lambda: force(fn()))
        print(f"\nstudent term (library), profiler trace: {total:.3f} s of ops a call; {loops:.0%} inside pfor while-loop "
              f"fallbacks, {shuffles:.0%} in pfor's transposes, tiles, reshapes and tensor lists")


if __name__ == "__main__":
    main()
