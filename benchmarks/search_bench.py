"""One AWT search step on the paper MLP (784-300-100-10) or CNN, B=64, PGD-10 inner attacks, and
the projected wall time of the paper's experiment on this machine.

    python benchmarks/search_bench.py [--model mlp|cnn] [--repeats 10] [--density 0.05] [--kernel full]
                                      [--optimize weights|scores] [--precision float32|bfloat16] [--no-epoch]

Times compiled functions on the same batch (median after warm-up): the two PGD attacks (teacher
and student), the attacks plus both kernels and distances with the gradient, and the whole
``TicketSearch.train_step`` (attacks + kernels + optimizer update + mask schedule); the update's
share is the whole step minus attacks+kernels. Then projects a search epoch on 4,000 MNIST digits
(63 steps of 64) and runs one for real on the bundled MNIST-5k training split (``--no-epoch``
skips it), and times one adversarial-training step of the ticket (``AdversarialTrainer``, the
paper's PGD-40 step 0.01 at ε = 0.3) to project **the paper's experiment**: a search of 20 epochs
on 60,000 digits (938 steps of 64 per epoch) and 100 epochs of PGD-40 adversarial training.

``--changes`` instead times the whole step at the recipes' settings before issue 41 (mnist5k-mlp:
exact kernel; the CNN recipes: sketch K = 4 with the student's PGD-10; ε = 0.1, PGD-10 step 0.025,
B = 64) with each of issue 41's changes on and off, in one run: the sketch and its K, the student's
own attack (PGD-3, FGSM with a random start), the teacher cache (the step reads X̃0 and f_θ0(X̃0)
instead of attacking the teacher), K = 1 with the student's FGSM (mnist5k-cnn's search since
issue 41), all of them together, and (``--exact``) the CNN's exact kernel, each as a ratio to the
first row's step;
it projects the 60,000-image search (938 steps an epoch) from them, and gives each row's pieces as
shares of its step (the attacks with the teacher's logits, the teacher's kernel or products, the
student's terms with their gradient; the rest is the update: 100% minus the three, which can be
negative by the noise of separately timed pieces).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def median_time(fn, repeats):
    fn()  # warm-up / trace
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--kernel", default="full", choices=["full", "diagonal"])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--optimize", default="weights", choices=["weights", "scores"])
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--no-epoch", action="store_true", help="skip the real search epoch")
    parser.add_argument("--changes", action="store_true", help="the step with each of issue 41's changes on and off")
    parser.add_argument("--exact", action="store_true", help="with --changes on the CNN: also the exact kernel's step")
    args = parser.parse_args(argv)
    if args.changes:
        return changes(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import tf_keras

    import tf_awt
    from tf_awt.adversarial.training import AdversarialTrainer
    from tf_awt.engine.distances import target_distance
    from tf_awt.tickets.search import TicketSearch, search_optimizer
    from tf_awt.tickets.search_callback import TicketSearchCallback

    split = tf_awt.data.load("mnist-5k")
    x = tf.constant(split.x_train[:64])
    y = tf.constant(split.y_train[:64])
    tf_keras.utils.set_random_seed(0)
    build = tf_awt.models.mlp if args.model == "mlp" else tf_awt.models.paper_cnn
    model = build()
    attack = tf_awt.Attack(eps=0.3, steps=10, step_size=0.075)
    config = tf_awt.SearchConfig.from_settings(dict(density=args.density, attack=attack, kernel=args.kernel, epochs=1, optimize=args.optimize,
                                   precision=args.precision))
    search = TicketSearch(model, config, steps_per_epoch=63)
    search.compile(optimizer=search_optimizer(config))
    diagonal = args.kernel == "diagonal"

    @tf.function
    def attacks():
        a = tf_awt.pgd(lambda z: search.teacher(z, training=False), x, y, attack)
        b = tf_awt.pgd(search._student_fn, x, y, attack)
        return a, b

    x_adv_t, x_adv_s = attacks()

    @tf.function
    def attacks_and_kernels():
        a, b = attacks()
        f_t = search.teacher(a, training=False)
        theta_t = search._teacher_kernel(x, a, diagonal=diagonal)
        with tf.GradientTape() as tape:
            f_s = search._student_fn(b)
            theta_s = search._student_kernel(x, b, diagonal=diagonal)
            loss = target_distance(f_t, f_s) + config.effective_kernel_weight * tf_awt.kernel_distance(theta_t, theta_s)
        return tape.gradient(loss, search.student.trainable_variables, unconnected_gradients="zero")

    step_fn = tf.function(search.train_step)

    def force(out):
        tf.nest.map_structure(lambda t: t.numpy(), out)

    t_attack = median_time(lambda: force(attacks()), args.repeats)
    t_ak = median_time(lambda: force(attacks_and_kernels()), args.repeats)
    t_step = median_time(lambda: force(step_fn((x, y))), args.repeats)
    ticket = tf_awt.find_ticket(model, (split.x_train[:64], split.y_train[:64]), density=args.density, method="magnitude")
    trainer = AdversarialTrainer(ticket.to_model(model), attack=tf_awt.Attack(eps=0.3, steps=40, step_size=0.01))
    trainer.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    train_fn = tf.function(trainer.train_step)
    t_train = median_time(lambda: force(train_fn((x, y))), args.repeats)
    print(f"# search_bench: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}, model {args.model}, density {args.density}, kernel {args.kernel}, "
          f"optimize {args.optimize}, precision {args.precision}, B=64, PGD-10, repeats={args.repeats}")
    print("| part | median s/step | share |")
    print("| --- | --- | --- |")
    print(f"| attacks (teacher + student PGD-10) | {t_attack:.3f} | {t_attack / t_step:.0%} |")
    print(f"| kernels + distances + gradient | {t_ak - t_attack:.3f} | {(t_ak - t_attack) / t_step:.0%} |")
    print(f"| update (Adam + mask schedule) | {max(t_step - t_ak, 0):.3f} | {max(t_step - t_ak, 0) / t_step:.0%} |")
    print(f"| whole train_step | {t_step:.3f} | 100% |")
    print(f"| adversarial-training step (PGD-40, step 0.01) | {t_train:.3f} | |")
    search_h, train_h = 20 * 938 * t_step / 3600, 100 * 938 * t_train / 3600
    print(f"\nprojected search epoch (63 steps of 64 = 4,000 digits): {63 * t_step:.1f} s")
    print(f"projected paper experiment on this machine: search 20 epochs x 938 steps = {search_h:.1f} h, "
          f"adversarial training 100 epochs x 938 steps = {train_h:.1f} h, total {search_h + train_h:.1f} h")
    if args.no_epoch:
        return
    tf_keras.utils.set_random_seed(0)
    ds = tf.data.Dataset.from_tensor_slices((split.x_train, split.y_train)).batch(64)
    search = TicketSearch(build(), config, steps_per_epoch=63)
    search.compile(optimizer=search_optimizer(config))
    t0 = time.perf_counter()
    search.fit(ds, epochs=1, verbose=0, callbacks=[TicketSearchCallback()])
    print(f"measured: one search epoch on MNIST-5k train (4,000 digits) with model.fit, tracing included: "
          f"{time.perf_counter() - t0:.1f} s")


def changes(args):
    """The step at the recipe's settings with each change on and off (the module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras

    import tf_awt
    from tf_awt.tickets.search import TicketSearch, search_optimizer
    from tf_awt.tickets.teacher_cache import TeacherCache

    split = tf_awt.data.load("mnist-5k")
    x, y = tf.constant(split.x_train[:64]), tf.constant(split.y_train[:64])
    index = tf.range(64, dtype=tf.int64)
    attack = tf_awt.Attack(eps=0.1, steps=10, step_size=0.025)
    build = tf_awt.models.mlp if args.model == "mlp" else tf_awt.models.paper_cnn
    base = dict(kernel="full") if args.model == "mlp" else dict(kernel="sketch", probes=4)
    fgsm = dict(student_steps=1, student_step_size=1.25 * attack.eps)
    k1_fgsm = dict(kernel="sketch", probes=1, **fgsm)
    rows = [("recipe before issue 41 (" + ", ".join(f"{k} {v}" for k, v in base.items()) + ")", {}, False)]
    if args.model == "mlp":
        rows += [("sketch K = 4", dict(kernel="sketch", probes=4), False), ("sketch K = 1", dict(kernel="sketch", probes=1), False)]
    else:
        rows += [("K = 2", dict(probes=2), False), ("K = 1", dict(probes=1), False)]
        rows += [("exact kernel", dict(kernel="full"), False)] if args.exact else []
    rows += [("student PGD-3", dict(student_steps=3), False), ("student FGSM, random start", fgsm, False),
             ("sketch K = 1 + student FGSM" + (" (mnist5k-cnn's recipe)" if args.model == "cnn" else ""), k1_fgsm, False),
             ("teacher cache", {}, True), ("sketch K = 1 + student FGSM + teacher cache", k1_fgsm, True)]
    print(f"# search_bench --changes: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}, model {args.model}, density {args.density}, B=64, ε = 0.1 PGD-10, repeats={args.repeats}")
    print("| change | median s/step | ratio to the first row | projected 60,000-image search epoch (938 steps) | attacks | teacher kernel "
          "| student terms + gradient | rest (update) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    first = None
    for name, settings, cached in rows:
        tf_keras.utils.set_random_seed(0)
        config = tf_awt.SearchConfig.from_settings(dict(density=args.density, attack=attack, epochs=1, update_every=20, **{**base, **settings}))
        search = TicketSearch(build(), config, steps_per_epoch=938)
        search.compile(optimizer=search_optimizer(config))
        batch = (x, y)
        if cached:
            search.teacher_cache = TeacherCache.replay(search.teacher, [(x, y, index)], config.seed, config.effective_attack)
            batch = (x, y, index)
        step = tf.function(search.train_step)
        seconds = median_time(lambda: tf.nest.map_structure(lambda t: t.numpy(), step(batch)), args.repeats)
        first = first or seconds
        pieces = _pieces(search, batch, args.repeats)
        shares = " | ".join(f"{t / seconds:.0%}" for t in (*pieces, seconds - sum(pieces)))
        print(f"| {name} | {seconds:.3f} | {seconds / first:.2f} | {938 * seconds / 3600:.2f} h | {shares} |", flush=True)


def _pieces(search, batch, repeats):
    """Seconds of the step's pieces, each a compiled function of the search's own methods on ``batch``:
    the two attacks (teacher's X̃0 and f_θ0(X̃0), or their cache lookup, and the student's X̃ˢ), the
    teacher's kernel (or its products Θ0·v), the student's terms with their gradient, and the rest of
    the step (the optimizer's update and the mask schedule: the step minus the three)."""
    import tensorflow as tf

    from tf_awt.engine.distances import target_distance

    x, y = batch[0], batch[1]
    index = batch[2] if len(batch) > 2 else None
    sketch = search.config.options.kernel == "sketch"
    attacks = tf.function(lambda: search._adversarial_inputs(x, y, index))
    x_adv_t, f_t, x_adv_s = attacks()
    probes = tf.function(lambda: search._probes(tf.shape(x_adv_t)[0], f_t.shape[-1], x.dtype))() if sketch else None
    teacher = tf.function(lambda: search._teacher_ntk(x, x_adv_t, probes))
    theta_t = teacher()

    @tf.function
    def student():
        with tf.GradientTape() as tape:
            f_s, theta_s = search._student_terms(x, x_adv_s, x_adv_s, probes)
            loss = (target_distance(f_t, f_s, search.config.normalization)
                    + search.config.effective_kernel_weight * search._kernel_distance(theta_t, theta_s, tf.shape(x_adv_t)[0]))
        return tape.gradient(loss, search.optimized_variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def force(fn):
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn())

    return [median_time(force(fn), repeats) for fn in (attacks, teacher, student)]


if __name__ == "__main__":
    main()
