"""Counting passes (tf_awt.engine.passes): each count equals the one worked out by hand from the
algorithm (examples × attack steps, batches × kernels), through the public calls that make them;
nothing is counted, and the graph is untouched, outside a counting block."""
import numpy as np
import pytest
import tensorflow as tf

import tf_awt
from tf_awt.engine.passes import PassCount, count_forward, count_passes

from conftest import tiny_data, tiny_model as tiny_mlp

N, STEPS = 96, 3
ATTACK = tf_awt.Attack(norm="linf", eps=0.1, steps=STEPS, step_size=0.025)


@pytest.fixture(scope="module")
def data():
    return tiny_data(N, seed=3)


def test_adversarial_training_costs_k_plus_one_passes_each_way_per_example_and_step(data):
    model = tiny_mlp()
    with count_passes() as passes:
        tf_awt.adversarial_fit(model, data, attack=ATTACK, epochs=2, batch_size=32)
    # per example and epoch: PGD-k (k forward, k backward), the training loss (1 + 1), the natural-accuracy metric (1 forward)
    assert passes.totals() == {"forward": 2 * N * (STEPS + 2), "backward": 2 * N * (STEPS + 1), "jacobians": 0}


def test_an_exact_search_step_counts_both_attacks_both_forwards_and_four_kernel_blocks(data):
    with count_passes() as passes:
        tf_awt.find_ticket(tiny_mlp(), data, density=0.2, attack=ATTACK, epochs=1, batch_size=32, update_every=2)
    # teacher PGD-k and forward (no gradient), student PGD-k and forward (its loss's gradient);
    # the teacher's and the student's Θ(X, X̃): 2B Jacobians each per batch of B
    assert passes.totals() == {"forward": N * (2 * STEPS + 2), "backward": N * (2 * STEPS + 1), "jacobians": 4 * N}


def test_snip_costs_one_batch_and_magnitude_nothing(data):
    with count_passes() as snip:
        tf_awt.find_ticket(tiny_mlp(), data, density=0.2, method="snip", batch_size=32)
    with count_passes() as magnitude:
        tf_awt.find_ticket(tiny_mlp(), data, density=0.2, method="magnitude")
    assert snip.totals() == {"forward": 32, "backward": 32, "jacobians": 0}
    assert magnitude.totals() == {"forward": 0, "backward": 0, "jacobians": 0}


def test_the_sketch_counts_a_forward_and_backward_pass_per_probe_and_example(data):
    from tf_awt.engine.kernel_sketch import kernel_distance_sketch

    x = tf.constant(data[0][:6])
    teacher, student = tiny_mlp(), tiny_mlp()
    with count_passes() as passes:
        kernel_distance_sketch(teacher, student, x, x + 0.01, probes=4)
    # each of the two networks, per probe: X̃ forward and back (Jᵀv), X forward-mode (J u)
    assert passes.totals() == {"forward": 2 * 4 * (6 + 6), "backward": 2 * 4 * 6, "jacobians": 0}


def test_the_exact_kernel_counts_each_examples_jacobian_once():
    model, x = tiny_mlp(), tf.random.uniform([5, 6, 6, 1])
    with count_passes() as passes:
        tf_awt.mixed_tangent_kernel(model, x, x[:3])
        tf_awt.mixed_tangent_kernel(model, x, x)  # one set of Jacobians when X̃ is X
    assert passes.totals()["jacobians"] == (5 + 3) + 5


def test_nothing_is_counted_or_added_to_the_graph_outside_a_block():
    model, x = tiny_mlp(), tf.random.uniform([4, 6, 6, 1])
    logits = model(x)
    assert count_forward(logits, x) is logits
    outer = PassCount()
    with outer:
        with count_passes() as inner:  # the innermost block counts
            count_forward(model(x), x)
        count_forward(model(x), x)
    count_forward(model(x), x)
    assert inner.totals()["forward"] == 4 and outer.totals()["forward"] == 4


def test_a_gradient_through_counted_logits_is_counted_once_per_example_and_unchanged():
    model, x = tiny_mlp(), tf.random.uniform([7, 6, 6, 1])
    with count_passes() as passes:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(count_forward(model(x), x))
        grad = tape.gradient(loss, x)
    assert passes.totals() == {"forward": 7, "backward": 7, "jacobians": 0}
    with tf.GradientTape() as tape:
        tape.watch(x)
        reference = tf.reduce_sum(model(x))
    np.testing.assert_array_equal(grad.numpy(), tape.gradient(reference, x).numpy())


def test_an_unknown_kind_is_refused_by_name():
    with pytest.raises(ValueError, match="kind must be one of .*You passed: 'flops'"):
        PassCount().add("flops", 1)
