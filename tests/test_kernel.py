"""Mixed Tangent Kernel: every path against a brute-force float64 reference, and its gradient."""
import warnings

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from conftest import BUILDERS, alive_masks, inputs_for, make_model, random_masks
from _reference import reference_kernel, relative_error
from tf_awt.engine.distances import target_distance
from tf_awt.engine.kernel import KernelImplementation

PATHS = ["structured", "jacobian"]


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("implementation", PATHS)
def test_kernel_matches_reference_float64(kind, masked, implementation):
    model = make_model(kind)
    x1, x2 = inputs_for(model, 4, seed=2), inputs_for(model, 3, seed=3)
    masks = _live_masks(model, x1, x2) if masked else None
    theta = tf_awt.mixed_tangent_kernel(model, x1, x2, masks=masks, implementation=implementation)
    k = model.outputs[0].shape[-1]
    assert theta.shape == (4, 3, k, k)
    assert theta.dtype == tf.float64
    assert relative_error(theta, reference_kernel(model, x1, x2, masks)) < 1e-5


_LIVE = {}


def _live_masks(model, x1, x2):
    """Masks of every kernel layer (Dense, Conv2D, Dense on rank-4 inputs, the nested head) under
    which each masked layer contributes non-zero columns on both inputs (:func:`alive_masks`).
    Computed once per model and inputs (the models are rebuilt with the same seed in every test);
    :func:`test_live_masks_make_every_layer_count` checks that each layer's mask changes the kernel."""
    from _reference import leaf_layers

    names = tuple(name for name, layer in leaf_layers(model).items() if hasattr(layer, "kernel"))
    key = (names, model.count_params(), float(tf.reduce_sum(x1)), float(tf.reduce_sum(x2)))
    if key not in _LIVE:
        _LIVE[key] = alive_masks(model, tf.concat([x1, x2], 0))
    return _LIVE[key]


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_live_masks_make_every_layer_count(kind):
    """A path that ignores one layer's mask fails the masked tests: unmasking any one layer changes
    the reference kernel, and the masked kernel differs from the unmasked one."""
    model = make_model(kind)
    x1, x2 = inputs_for(model, 3, seed=2), inputs_for(model, 2, seed=3)
    masks = _live_masks(model, x1, x2)
    masked = reference_kernel(model, x1, x2, masks)
    for name in masks:
        others = {n: m for n, m in masks.items() if n != name}
        assert relative_error(reference_kernel(model, x1, x2, others), masked) > 1e-3, name
    assert relative_error(masked, reference_kernel(model, x1, x2)) > 1e-3


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("implementation", PATHS)
def test_diagonal_is_the_diagonal_of_the_full_kernel(kind, implementation):
    model = make_model(kind)
    x1, x2 = inputs_for(model, 3, seed=2), inputs_for(model, 3, seed=3)
    masks = _live_masks(model, x1, x2)
    diag = tf_awt.mixed_tangent_kernel(model, x1, x2, masks=masks, diagonal=True, implementation=implementation)
    ref = reference_kernel(model, x1, x2, masks, diagonal=True)
    assert diag.shape == ref.shape == (3, 3, 3)
    assert relative_error(diag, ref) < 1e-5


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("implementation", PATHS)
def test_float32_kernel_matches_float64_reference(kind, implementation):
    model64 = make_model(kind, "float64")
    model32 = make_model(kind, "float32")
    model32.set_weights([w.astype(np.float32) for w in model64.get_weights()])
    x1, x2 = inputs_for(model64, 4, seed=5), inputs_for(model64, 4, seed=6)
    masks = _live_masks(model64, x1, x2)
    ref = reference_kernel(model64, x1, x2, masks)
    theta = tf_awt.mixed_tangent_kernel(
        model32, tf.cast(x1, tf.float32), tf.cast(x2, tf.float32), masks=masks, implementation=implementation
    )
    assert theta.dtype == tf.float32
    assert relative_error(theta, ref) < 1e-4


def test_masked_weights_contribute_nothing():
    """A mask of zeros on every kernel leaves only the biases' kernel."""
    model = make_model("mlp")
    zeros = {name: np.zeros_like(m) for name, m in random_masks(model).items()}
    x = inputs_for(model, 3)
    theta = tf_awt.mixed_tangent_kernel(model, x, x, masks=zeros, implementation="structured")
    # With every kernel zeroed the hidden units are constant, so only the output bias moves f:
    # d f_c / d b_out_d = [c == d], hence Θ[i, j] = I.
    np.testing.assert_allclose(theta.numpy(), np.broadcast_to(np.eye(3), (3, 3, 3, 3)), atol=1e-12)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_tfmot_wrapper_masks_are_applied(kind):
    import tensorflow_model_optimization as tfmot

    model = make_model(kind)
    masks = random_masks(model)
    tf_keras.backend.set_floatx("float64")  # the wrappers take the global float type
    try:
        pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    finally:
        tf_keras.backend.set_floatx("float32")
    by_inner = {}
    for layer in pruned.layers:
        if hasattr(layer, "pruning_vars"):
            for weight, mask, _ in layer.pruning_vars:
                mask.assign(masks[layer.layer.name])
                by_inner[layer.layer.name] = layer.name
    pruned.set_weights(pruned.get_weights())  # unchanged weights; wrappers must not zero them
    x1, x2 = inputs_for(model, 3, seed=2), inputs_for(model, 2, seed=3)
    ref = reference_kernel(model, x1, x2, masks)
    for implementation in PATHS:
        theta = tf_awt.mixed_tangent_kernel(pruned, x1, x2, implementation=implementation)
        assert relative_error(theta, ref) < 1e-5, implementation
    # An explicit mask for a wrapped layer (by the wrapper's name) takes precedence.
    first = next(iter(by_inner))
    override = dict(masks)
    override[first] = np.ones_like(masks[first])
    theta = tf_awt.mixed_tangent_kernel(pruned, x1, x2, masks={by_inner[first]: override[first]})
    assert relative_error(theta, reference_kernel(model, x1, x2, override)) < 1e-5


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_gradient_of_kernel_distance_matches_reference(kind):
    model = make_model(kind)
    x1, x2 = inputs_for(model, 3, seed=2), inputs_for(model, 3, seed=3)
    masks = _live_masks(model, x1, x2)
    theta_dense = reference_kernel(model, x1, x2)

    def grads(kernel):
        with tf.GradientTape() as tape:
            loss = tf_awt.kernel_distance(theta_dense, kernel())
        return tape.gradient(loss, model.trainable_variables, unconnected_gradients="zero")

    ref = grads(lambda: reference_kernel(model, x1, x2, masks))
    flat_ref = np.concatenate([g.numpy().ravel() for g in ref])
    assert np.abs(flat_ref).max() > 0
    for implementation in PATHS:
        got = grads(lambda: tf_awt.mixed_tangent_kernel(model, x1, x2, masks=masks, implementation=implementation))
        flat = np.concatenate([g.numpy().ravel() for g in got])
        assert relative_error(flat, flat_ref) < 1e-5, implementation


@pytest.mark.parametrize("kind", ["mlp", "functional"])
def test_gradient_matches_finite_differences(kind):
    """Directional derivative of the structured kernel distance vs central differences (float64).

    (The CNN's max-pooling over padded borders has ties, where the loss is not differentiable.)
    """
    model = make_model(kind)
    masks = random_masks(model, density=0.8)
    x1, x2 = inputs_for(model, 2, seed=2), inputs_for(model, 2, seed=3)
    target = reference_kernel(model, x1, x2) * 0.5
    kernel_fn = tf_awt.mixed_tangent_kernel_fn(model, "structured")
    variables = model.trainable_variables

    def loss():
        return tf_awt.kernel_distance(target, kernel_fn(x1, x2, masks=masks))

    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, variables, unconnected_gradients="zero")
    rng = np.random.default_rng(0)
    direction = [rng.normal(size=v.shape) for v in variables]
    analytic = sum(float(np.sum(g.numpy() * d)) for g, d in zip(grads, direction))
    h = 1e-6
    base = [np.array(v.numpy(), copy=True) for v in variables]
    values = []
    for sign in (1, -1):
        for v, b, d in zip(variables, base, direction):
            v.assign(b + sign * h * d)
        values.append(float(loss()))
    for v, b in zip(variables, base):
        v.assign(b)
    numeric = (values[0] - values[1]) / (2 * h)
    assert abs(numeric) > 1e-3
    assert abs(analytic - numeric) / abs(numeric) < 1e-5


@pytest.mark.parametrize("implementation", PATHS)
def test_kernel_inside_tf_function(implementation):
    model = make_model("cnn")
    masks = {name: tf.Variable(m) for name, m in random_masks(model).items()}
    kernel_fn = tf_awt.mixed_tangent_kernel_fn(model, implementation)
    x1, x2 = inputs_for(model, 3, seed=2), inputs_for(model, 3, seed=3)

    @tf.function
    def loss_and_grads(a, b):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(kernel_fn(a, b, masks=masks)))
        return loss, tape.gradient(loss, model.trainable_variables, unconnected_gradients="zero")

    loss, grads = loss_and_grads(x1, x2)
    eager = float(tf.reduce_sum(tf.square(tf_awt.mixed_tangent_kernel(model, x1, x2, masks=masks))))
    assert abs(float(loss) - eager) / eager < 1e-10
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads) > 0
    # Mask variables may change between calls without retracing.
    for m in masks.values():
        m.assign(tf.ones_like(m))
    loss2, _ = loss_and_grads(x1, x2)
    dense = float(tf.reduce_sum(tf.square(tf_awt.mixed_tangent_kernel(model, x1, x2))))
    assert abs(float(loss2) - dense) / dense < 1e-10


def test_auto_uses_structured_and_falls_back_with_one_warning():
    model = make_model("cnn")
    assert tf_awt.mixed_tangent_kernel_fn(model).implementation is KernelImplementation.STRUCTURED
    unsupported = tf_keras.Sequential(
        [tf_keras.layers.Input((4,), dtype="float64"), tf_keras.layers.Dense(3, dtype="float64"),
         tf_keras.layers.LayerNormalization(name="ln", dtype="float64"), tf_keras.layers.Dense(2, dtype="float64")]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn = tf_awt.mixed_tangent_kernel_fn(unsupported)
        tf_awt.mixed_tangent_kernel_fn(unsupported)
    messages = [str(w.message) for w in caught if "falls back" in str(w.message)]
    assert len(messages) == 1 and "'ln'" in messages[0] and "LayerNormalization" in messages[0]
    assert fn.implementation is KernelImplementation.JACOBIAN
    x = inputs_for(unsupported, 3)
    assert relative_error(fn(x, x), reference_kernel(unsupported, x, x)) < 1e-5
    with pytest.raises(ValueError, match="structured.*'ln'"):
        tf_awt.mixed_tangent_kernel(unsupported, x, x, implementation="structured")


class _Subclassed(tf_keras.Model):
    """At module level: a class defined inside the test is a new code object each run, and
    AutoGraph's conversion cache (keyed by object ids) once served it another function's conversion."""

    def __init__(self):
        super().__init__()
        self.d1 = tf_keras.layers.Dense(3, activation="tanh", dtype="float64")
        self.d2 = tf_keras.layers.Dense(2, dtype="float64")

    def call(self, x, training=False):
        return self.d2(self.d1(x))


def test_subclassed_model_uses_jacobian_path():
    model = _Subclassed()
    x = inputs_for(make_model("mlp"), 3)
    model(x)
    with pytest.warns(UserWarning, match="falls back"):
        theta = tf_awt.mixed_tangent_kernel(model, x, x)
    assert relative_error(theta, reference_kernel(model, x, x)) < 1e-5


class TestBadInput:
    def setup_method(self):
        self.model = make_model("mlp")
        self.x = inputs_for(self.model, 3)

    def test_mismatched_input_shape(self):
        with pytest.raises(ValueError, match=r"x2 must have shape \(N, 6\).*\(3, 7\)"):
            tf_awt.mixed_tangent_kernel(self.model, self.x, tf.zeros((3, 7), tf.float64))

    def test_mask_of_wrong_shape(self):
        with pytest.raises(ValueError, match=r"'d1'.*\(6, 5\).*\(5, 6\)"):
            tf_awt.mixed_tangent_kernel(self.model, self.x, self.x, masks={"d1": np.ones((5, 6))})

    def test_mask_with_values_other_than_0_1(self):
        with pytest.raises(ValueError, match=r"only 0 and 1.*0.5"):
            tf_awt.mixed_tangent_kernel(self.model, self.x, self.x, masks={"d1": np.full((6, 5), 0.5)})

    def test_mask_for_unknown_layer(self):
        with pytest.raises(ValueError, match=r"'nope'.*\['d1', 'd2', 'out'\]"):
            tf_awt.mixed_tangent_kernel(self.model, self.x, self.x, masks={"nope": np.ones((6, 5))})

    def test_diagonal_needs_equal_sizes(self):
        with pytest.raises(ValueError, match="diagonal=True.*N1=3, N2=2"):
            tf_awt.mixed_tangent_kernel(self.model, self.x, self.x[:2], diagonal=True)

    def test_unknown_implementation(self):
        with pytest.raises(ValueError, match=r"implementation must be one of.*'fast'"):
            tf_awt.mixed_tangent_kernel(self.model, self.x, self.x, implementation="fast")

    def test_distances_need_equal_shapes(self):
        with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
            target_distance(tf.zeros((2, 3)), tf.zeros((2, 4)))
        with pytest.raises(ValueError, match="normalization.*'mean'"):
            tf_awt.kernel_distance(tf.zeros((2, 2, 3, 3)), tf.zeros((2, 2, 3, 3)), normalization="mean")


def test_distances_follow_equation_13():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    assert np.isclose(float(target_distance(a, b)), np.sum((a - b) ** 2) / 5)
    assert np.isclose(float(target_distance(a, b, "per_entry")), np.mean((a - b) ** 2))
    t1, t2 = rng.normal(size=(5, 5, 3, 3)), rng.normal(size=(5, 5, 3, 3))
    assert np.isclose(float(tf_awt.kernel_distance(t1, t2)), np.sum((t1 - t2) ** 2) / 25)
    assert np.isclose(float(tf_awt.kernel_distance(t1, t2, "per_entry")), np.mean((t1 - t2) ** 2))


def test_nested_feature_extractor_with_image_output_is_structured():
    L = tf_keras.layers
    tf_keras.utils.set_random_seed(3)
    features = tf_keras.Sequential([L.Input((6, 6, 1), dtype="float64"), L.Conv2D(2, 3, activation="tanh", name="fc1", dtype="float64"),
                                    L.MaxPooling2D(dtype="float64")], name="features")
    inp = L.Input((6, 6, 1), dtype="float64")
    out = L.Dense(3, name="cls", dtype="float64")(L.Flatten(dtype="float64")(features(inp)))
    model = tf_keras.Model(inp, out)
    assert tf_awt.mixed_tangent_kernel_fn(model).implementation is KernelImplementation.STRUCTURED
    masks = random_masks(model, density=0.6)
    x1, x2 = inputs_for(model, 3, seed=4), inputs_for(model, 2, seed=5)
    theta = tf_awt.mixed_tangent_kernel(model, x1, x2, masks=masks, implementation="structured")
    assert relative_error(theta, reference_kernel(model, x1, x2, masks)) < 1e-5


# ---------------------------------------------------------------------------- compiled by default
def test_one_call_api_is_compiled_once_per_signature_and_checks_inputs_eagerly():
    model = make_model("mlp", dtype="float32")
    x1, x2 = inputs_for(model, 4, seed=2), inputs_for(model, 3, seed=3)
    eager = tf_awt.mixed_tangent_kernel_fn(model, compiled=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TensorFlow's retracing warning would be an error here
        for i in range(20):  # 20 calls with new values of the same shapes: no retracing
            theta = tf_awt.mixed_tangent_kernel(model, x1 + 0.01 * i, x2)
            np.testing.assert_allclose(theta.numpy(), eager(x1 + 0.01 * i, x2).numpy(), rtol=1e-5, atol=1e-6)
    traced = model._tf_awt_kernel_fns[(KernelImplementation.AUTO, "float32")].traced
    assert traced.experimental_get_tracing_count() == 1
    masks = random_masks(model)
    for i in range(3):
        tf_awt.mixed_tangent_kernel(model, x1, x1, masks={k: v for k, v in masks.items()}, diagonal=True)
    assert traced.experimental_get_tracing_count() == 2  # one more signature: masks, diagonal, x2 = x1
    bad = dict(masks)
    bad[next(iter(bad))] = np.full(np.shape(bad[next(iter(bad))]), 0.5)
    with pytest.raises(ValueError, match=r"must hold only 0 and 1"):
        tf_awt.mixed_tangent_kernel(model, x1, x2, masks=bad)  # checked before the compiled call
    with pytest.raises(ValueError, match=r"x2 must have shape \(N, 6\)"):
        tf_awt.mixed_tangent_kernel(model, x1, np.zeros((3, 7), "float32"))


def test_compiled_kernel_notices_changed_variables_and_dies_with_its_model():
    import gc
    import weakref

    model = make_model("mlp", dtype="float32")
    x = inputs_for(model, 3, seed=2)
    full = tf_awt.mixed_tangent_kernel(model, x, x)
    model.layers[0].trainable = False  # fewer trainable variables: a new trace, a smaller kernel
    part = tf_awt.mixed_tangent_kernel(model, x, x)
    np.testing.assert_allclose(part.numpy(), tf_awt.mixed_tangent_kernel_fn(model, compiled=False)(x, x).numpy(), rtol=1e-5)
    assert float(tf.reduce_sum(tf.linalg.trace(full - part))) > 0
    ref = weakref.ref(model)
    del model, full, part
    gc.collect()
    assert ref() is None  # the cache lives on the model: nothing keeps it alive


def test_xla_compiled_kernel_equals_the_default():
    model = make_model("cnn", dtype="float32")
    x1, x2 = inputs_for(model, 3, seed=2), inputs_for(model, 2, seed=3)
    xla = tf_awt.mixed_tangent_kernel_fn(model, jit_compile=True)
    np.testing.assert_allclose(xla(x1, x2).numpy(), tf_awt.mixed_tangent_kernel(model, x1, x2).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_gradient_wrt_the_mask_enters_once_and_reaches_pruned_weights(kind):
    """∂Θ/∂m for the documented student kernel Σ_p m_p ∂_p f ∂_p f' (the score search's signal),
    against a float64 brute-force reference; pruned weights of every layer (Dense and Conv2D) get
    a non-zero derivative (the mask is not squared)."""
    from _reference import single_mask_kernel

    model = make_model(kind)
    masks = {name: tf.constant(m) for name, m in random_masks(model).items()}
    x1, x2 = inputs_for(model, 3, seed=2), inputs_for(model, 2, seed=3)
    weights = tf.constant(np.random.default_rng(0).normal(size=(3, 2, 3, 3)))

    def mask_grads(kernel):
        with tf.GradientTape() as tape:
            tape.watch(list(masks.values()))
            loss = tf.reduce_sum(weights * kernel())
        return tape.gradient(loss, masks)

    ref = mask_grads(lambda: single_mask_kernel(model, x1, x2, masks))
    got = mask_grads(tf.function(lambda: tf_awt.mixed_tangent_kernel(model, x1, x2, masks=masks, implementation="structured")))
    for name in masks:
        assert relative_error(got[name], ref[name]) < 1e-5, name
        pruned = ref[name].numpy()[masks[name].numpy() == 0]
        assert np.abs(pruned).max() > 1e-6 * np.abs(ref[name].numpy()).max(), name


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_bfloat16_precision_is_within_a_thousandth_of_the_float64_reference(kind, diagonal):
    """precision="bfloat16" (bfloat16 products, float32 sums): relative error in Frobenius norm
    below 1e-3 against the float64 reference, masked, with its gradient; a float64 model ignores it."""
    model64 = make_model(kind, "float64")
    model32 = make_model(kind, "float32")
    model32.set_weights([w.astype(np.float32) for w in model64.get_weights()])
    x1, x2 = inputs_for(model64, 4, seed=5), inputs_for(model64, 4, seed=6)
    masks = _live_masks(model64, x1, x2)
    ref = reference_kernel(model64, x1, x2, masks, diagonal=diagonal).numpy()
    theta = tf_awt.mixed_tangent_kernel(model32, tf.cast(x1, tf.float32), tf.cast(x2, tf.float32), masks=masks,
                                        diagonal=diagonal, precision="bfloat16")
    assert theta.dtype == tf.float32
    assert np.linalg.norm(theta.numpy() - ref) / np.linalg.norm(ref) < 1e-3
    exact = tf_awt.mixed_tangent_kernel(model64, x1, x2, masks=masks, diagonal=diagonal, precision="bfloat16")
    assert relative_error(exact, ref) < 1e-5
    fn32, fn16 = (tf_awt.mixed_tangent_kernel_fn(model32, precision=p) for p in ("float32", "bfloat16"))

    def grads(fn):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fn(tf.cast(x1, tf.float32), tf.cast(x2, tf.float32), masks=masks, diagonal=diagonal) ** 2)
        grads = tape.gradient(loss, model32.trainable_variables, unconnected_gradients="zero")
        return np.concatenate([g.numpy().ravel() for g in grads])

    g32, g16 = grads(fn32), grads(fn16)
    assert np.linalg.norm(g16 - g32) / np.linalg.norm(g32) < 1e-2
    with pytest.raises(ValueError, match="precision must be one of"):
        tf_awt.mixed_tangent_kernel_fn(model32, precision="float16")


def _full_reference(model, x1, x2, masks):
    """NTT's student kernel, brute force: every weight's Jacobian column at θ = m ⊙ w, float64."""
    from _reference import explicit_jacobian

    j1 = explicit_jacobian(model, x1, masks, effective=True)
    j2 = explicit_jacobian(model, x2, masks, effective=True)
    return tf.einsum("icp,jdp->ijcd", j1, j2)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "functional"])
@pytest.mark.parametrize("implementation", PATHS)
def test_full_student_kernel_and_its_gradient_match_the_float64_reference(kind, implementation):
    """``student_kernel="full"`` = Σ_p ∂_p f ∂_p f′ over every weight at m ⊙ w (pruned columns kept),
    and the gradient of a distance to it reaches w through m ⊙ w only (pruned weights get none)."""
    model = make_model(kind)
    x1, x2 = inputs_for(model, 3, seed=2), inputs_for(model, 2, seed=3)
    masks = _live_masks(model, x1, x2)
    ref = _full_reference(model, x1, x2, masks)
    masked = reference_kernel(model, x1, x2, masks)
    assert relative_error(masked, ref) > 1e-2  # the two conventions differ on this case
    teacher = reference_kernel(model, x1, x2)

    def grads(kernel):
        with tf.GradientTape() as tape:
            loss = tf_awt.kernel_distance(teacher, kernel())
        return tape.gradient(loss, model.trainable_variables, unconnected_gradients="zero")

    flat_ref = np.concatenate([g.numpy().ravel() for g in grads(lambda: _full_reference(model, x1, x2, masks))])
    theta = tf_awt.mixed_tangent_kernel(model, x1, x2, masks=masks, implementation=implementation, student_kernel="full")
    assert relative_error(theta, ref) < 1e-6
    got = grads(lambda: tf_awt.mixed_tangent_kernel(model, x1, x2, masks=masks, implementation=implementation,
                                                    student_kernel="full"))
    assert relative_error(np.concatenate([g.numpy().ravel() for g in got]), flat_ref) < 1e-6
    layers = {layer.name: layer for layer in model.layers}
    for name, mask in masks.items():  # no gradient on a pruned weight
        if name in layers:
            index = [id(v) for v in model.trainable_variables].index(id(layers[name].kernel))
            assert np.all(got[index].numpy()[mask == 0] == 0)


def test_student_kernel_must_be_a_known_convention():
    model = make_model("mlp")
    x = inputs_for(model, 2)
    with pytest.raises(ValueError, match=r"student_kernel must be one of \['masked', 'full'\]. You passed: 'dense'"):
        tf_awt.mixed_tangent_kernel(model, x, x, student_kernel="dense")
