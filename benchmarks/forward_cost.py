"""What one forward pass costs against one forward + backward pass (input gradient), per example,
for the paper's MLP and CNN, eager-compiled (``tf.function``) and with XLA; and what one epoch of
PGD-10 adversarial training over 10,000 Fashion-MNIST images costs. The ratios explain the
evaluation's cost (docs/performance.md, "The default evaluation"): Square queries are forward
passes, PGD and APGD steps forward + backward ones.

    taskset -c 1 python benchmarks/forward_cost.py [--epoch]   # --epoch needs dataset-fashion-mnist

Random inputs, 20 timed calls after one warm-up, batches of 256 and 1,000.
"""
import argparse
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epoch", action="store_true", help="also time one PGD-10 training epoch on 10,000 images")
    args = parser.parse_args(argv)
    import tensorflow as tf

    import tf_awt

    tf_awt.quiet()
    for name, build in (("mlp", tf_awt.models.mlp), ("cnn", tf_awt.models.paper_cnn)):
        model = build()
        for batch in (256, 1000):
            x = tf.constant(np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32))
            y = tf.constant(np.arange(batch) % 10)
            for jit in (False, True):
                forward = tf.function(lambda z: model(z, training=False), jit_compile=jit)

                def gradient(z):
                    with tf.GradientTape() as tape:
                        tape.watch(z)
                        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(z, training=False)))
                    return tape.gradient(loss, z)

                backward = tf.function(gradient, jit_compile=jit)
                forward(x), backward(x)
                times = []
                for fn in (forward, backward):
                    start = time.perf_counter()
                    for _ in range(20):
                        fn(x).numpy()
                    times.append((time.perf_counter() - start) / 20 / batch * 1e6)
                print(f"{name} batch {batch} xla {jit}: forward {times[0]:.1f} µs/example, forward + backward "
                      f"{times[1]:.1f} µs/example, ratio {times[1] / times[0]:.2f}", flush=True)
        if args.epoch:
            split = tf_awt.data.load("fashion-mnist")
            start = time.perf_counter()
            tf_awt.adversarial_fit(model, (split.x_train[:10000], split.y_train[:10000]), epochs=1, batch_size=64,
                                   attack=tf_awt.Attack(eps=0.1, steps=10, step_size=0.025))
            print(f"{name}: one PGD-10 epoch over 10,000 images {time.perf_counter() - start:.1f} s (tracing included)")


if __name__ == "__main__":
    main()
