"""One input contract, checked once at every entry point (private).

* :func:`real` / :func:`integer`: a number argument, Python or NumPy scalar, returned as a Python
  ``float`` / ``int``; anything else (bools, strings, NaN, out of range) is a ValueError naming the
  argument, the value and what is allowed.
* :func:`check_arrays`: the (x, y) contract of every data entry point: non-empty, equal lengths,
  numeric finite x of the model's input shape inside the attack's data range, y integer labels in
  [0, k). Errors name the argument and the first bad location, e.g. ``y[17] = 23``.
* :func:`checked_dataset`: the same checks, for a ``tf.data.Dataset``, as assertions inside the
  pipeline; :func:`reraise_data_errors` turns their failure into the same ValueError.
* :func:`dataset_to_arrays`: materializes a finite dataset of (x, y) batches (evaluation).

TensorFlow is imported inside the functions that check tensors and datasets, so the configurations
validate numbers without it.
"""
from __future__ import annotations

import contextlib
import numbers
from typing import Optional, Sequence, Tuple

import numpy as np

_MARK = "tf_awt data check: "


def is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def real(value, name: str, low: Optional[float] = None, high: Optional[float] = None, low_open: bool = False,
         high_open: bool = False) -> float:
    """``value`` as a Python float, checked to be a finite number in the given range."""
    ok = is_real(value) and np.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if high_open else float(value) <= high
    if not ok:
        raise ValueError(f"{name} must be {_range_text(low, high, low_open, high_open, 'a number')}. You passed: {value!r}")
    return float(value)


def integer(value, name: str, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """``value`` as a Python int (Python or NumPy integer; not bool, not float)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if ok and low is not None:
        ok = int(value) >= low
    if ok and high is not None:
        ok = int(value) <= high
    if not ok:
        raise ValueError(f"{name} must be {_range_text(low, high, False, False, 'an integer')}. You passed: {value!r}")
    return int(value)


def _range_text(low, high, low_open, high_open, kind) -> str:
    if low is not None and high is not None:
        return f"{'' if kind == 'a number' else kind + ' '}in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high:g}"
    return f"a finite {kind.split()[-1]}" if kind == "a number" else kind


def _where(index) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def check_arrays(x, y, name: str = "data", input_shape: Optional[Sequence[Optional[int]]] = None,
                 num_classes: Optional[int] = None, clip_min: Optional[float] = None,
                 clip_max: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Checks (x, y) and returns them as float32 / int64 arrays.

    Args:
      x, y: inputs (N, ...) and labels (N,) (or (N, 1)).
      name: how the caller calls the data in the error message (e.g. "train", "--data x.npz").
      input_shape: the model's input shape without the batch axis (None entries match anything).
      num_classes: labels must lie in [0, num_classes).
      clip_min, clip_max: the data range x must lie in (None: unbounded side).
    """
    try:
        x = np.asarray(x)
        y = np.asarray(y)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name}: x and y must be arrays ({err})") from None
    if x.ndim < 2:
        raise ValueError(f"{name}: x must have shape (N, ...) with one row per example. You passed shape {x.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name}: y must hold one integer label per example, shape (N,). You passed shape {y.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty: x has 0 examples. Pass at least one example.")
    if len(x) != len(y):
        raise ValueError(f"{name}: x and y must have the same length. You passed {len(x)} inputs and {len(y)} labels")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name}: x must be real numbers. You passed dtype {x.dtype}")
    if input_shape is not None:
        want = tuple(input_shape)
        got = x.shape[1:]
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
            shown = tuple("None" if w is None else w for w in want)
            raise ValueError(f"{name}: each input has shape {got}, the model expects {shown}")
    x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(f"{name}: x{_where(bad)} = {x[tuple(bad)]}; inputs must be finite numbers "
                         f"({int((~finite).sum())} non-finite values in all)")
    for bound, side, test in ((clip_min, "below", np.less), (clip_max, "above", np.greater)):
        if bound is None:
            continue
        outside = test(x, bound)
        if outside.any():
            bad = np.argwhere(outside)[0]
            raise ValueError(f"{name}: x{_where(bad)} = {np.format_float_positional(x[tuple(bad)], trim='-')} lies {side} the data range "
                             f"[{clip_min}, {clip_max}] the attacks use; rescale the inputs (e.g. images / 255)")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{name}: y must hold integer class labels. You passed dtype {y.dtype}")
    if not np.issubdtype(y.dtype, np.integer):
        frac = ~np.isfinite(y) | (y != np.round(y))
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise ValueError(f"{name}: y[{i}] = {y[i]!r}; labels must be integers")
    y = y.astype(np.int64)
    high = f"{num_classes}" if num_classes is not None else "k"
    bad = (y < 0) if num_classes is None else ((y < 0) | (y >= num_classes))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: y[{i}] = {int(y[i])}, labels must be in [0, {high})"
                         + (" (the model has that many outputs)" if num_classes is not None else ""))
    return x, y


def model_contract(model):
    """(input shape without batch, number of classes) of a built tf_keras model with one input/output."""
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    outputs = getattr(model, "outputs", None)
    classes = int(outputs[0].shape[-1]) if outputs and outputs[0].shape[-1] is not None else None
    return shape, classes


def batches(model, data, batch_size: int, attack, name: str = "data"):
    """``data`` ((x, y) arrays, batched in order, or a dataset of batches) as a checked dataset for ``model``.

    Inputs must fit the model's input shape and ``attack``'s data range, labels its outputs.
    """
    import tensorflow as tf

    shape, classes = model_contract(model)
    bounds = dict(input_shape=shape, num_classes=classes, clip_min=attack.clip_min, clip_max=attack.clip_max)
    if isinstance(data, tf.data.Dataset):
        return checked_dataset(data, name, **bounds)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = check_arrays(data[0], data[1], name, **bounds)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    raise ValueError(f"{name} must be a tf.data.Dataset of (x, y) batches or a tuple (x, y) of arrays. You passed: {type(data).__name__}")


def epoch_data(model, data, batch_size: int, attack, seed: int, epochs: int, name: str = "data", with_index: bool = False):
    """Training data for a resumable ``fit``: ``(first_epoch -> batches, steps per epoch or None)``.

    ``with_index``: (x, y) arrays only, batches ``(x, y, index)`` (:func:`tf_awt.checkpoint.epoch_batches`).

    (x, y) arrays: epoch e is shuffled by the stateless seed [seed, e]
    (:func:`tf_awt.checkpoint.epoch_batches`), so a resumed fit sees the batches an uninterrupted
    one would. A dataset is used as it is, from any epoch (its own order).
    """
    import tensorflow as tf

    if isinstance(data, (tuple, list)) and len(data) == 2:
        from tf_awt.checkpoint import epoch_batches, steps_per_epoch

        shape, classes = model_contract(model)
        x, y = check_arrays(data[0], data[1], name, input_shape=shape, num_classes=classes,
                            clip_min=attack.clip_min, clip_max=attack.clip_max)
        return ((lambda first: epoch_batches(x, y, batch_size, seed, first, epochs, with_index)),
                steps_per_epoch(len(y), batch_size))
    dataset = batches(model, data, batch_size, attack, name)
    steps = int(dataset.cardinality().numpy())
    return (lambda first: dataset), (steps if steps > 0 else None)


def checked_dataset(dataset, name: str, input_shape=None, num_classes=None, clip_min=None, clip_max=None):
    """``dataset`` with the :func:`check_arrays` checks as in-graph assertions on every batch.

    The element spec (pairs, shapes, dtypes) is checked now (ValueError); values are checked when
    batches are read, and a failure surfaces (through :func:`reraise_data_errors`) as a ValueError.
    """
    import tensorflow as tf

    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(f"{name}: the dataset must yield (x, y) batches. It yields: {spec}")
    x_spec, y_spec = spec[0], spec[1]
    if not (x_spec.dtype.is_floating or x_spec.dtype.is_integer):
        raise ValueError(f"{name}: the dataset's x must be real numbers. It yields dtype {x_spec.dtype.name}")
    if not (y_spec.dtype.is_integer or y_spec.dtype.is_floating):
        raise ValueError(f"{name}: the dataset's y must be integer labels. It yields dtype {y_spec.dtype.name}")
    if input_shape is not None and x_spec.shape.rank is not None:
        got = x_spec.shape[1:]
        if not tf.TensorShape(input_shape).is_compatible_with(got):
            raise ValueError(f"{name}: the dataset's inputs have shape {tuple(x_spec.shape)}, "
                             f"the model expects (batch, {', '.join(map(str, input_shape))})")

    def check(x, y, *rest):
        xf = tf.cast(x, tf.float32)
        checks = [tf.debugging.assert_all_finite(xf, _MARK + f"{name}: x holds a non-finite value (NaN or inf); inputs must be finite")]
        if clip_min is not None:
            checks.append(tf.debugging.assert_greater_equal(xf, tf.cast(clip_min, tf.float32), message=_MARK + f"{name}: x lies below the data range [{clip_min}, {clip_max}]"))
        if clip_max is not None:
            checks.append(tf.debugging.assert_less_equal(xf, tf.cast(clip_max, tf.float32), message=_MARK + f"{name}: x lies above the data range [{clip_min}, {clip_max}]"))
        yi = tf.cast(y, tf.int64)
        if y.dtype.is_floating:
            checks.append(tf.debugging.assert_equal(tf.cast(yi, y.dtype), y, message=_MARK + f"{name}: y holds a non-integer label"))
        checks.append(tf.debugging.assert_non_negative(yi, message=_MARK + f"{name}: y holds a negative label; labels must be in [0, {num_classes or 'k'})"))
        if num_classes is not None:
            checks.append(tf.debugging.assert_less(yi, tf.constant(num_classes, tf.int64), message=_MARK + f"{name}: y holds a label >= {num_classes}; labels must be in [0, {num_classes})"))
        with tf.control_dependencies(checks):
            return (tf.identity(x), tf.identity(y), *rest)

    return dataset.map(check)


@contextlib.contextmanager
def reraise_data_errors():
    """Turns a failed :func:`checked_dataset` assertion into a ValueError with its message."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as err:
        text = str(err)
        if _MARK not in text:
            raise
        message = text.split(_MARK, 1)[1].splitlines()[0]
        raise ValueError(message) from None


def dataset_to_arrays(dataset, name: str = "data"):
    """A finite dataset of (x, y) batches as two numpy arrays."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(f"{name}: the dataset must yield (x, y) batches. It yields: {spec}")
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(f"{name}: the dataset is infinite (e.g. .repeat()); pass a finite one")
    batched = spec[1].shape.rank is None or spec[1].shape.rank >= 1  # (B,) labels: batches; () labels: examples
    xs, ys = [], []
    for item in dataset.as_numpy_iterator():
        x, y = item[0], item[1]
        if not batched:
            x, y = x[None], np.reshape(y, (1,))
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError(f"{name} is empty: the dataset yields no batches")
    return np.concatenate(xs), np.concatenate(ys)


_integer = integer  # store_number's `integer` flag shadows the function


def store_number(obj, field, low=None, high=None, low_open=False, integer=False, optional=False, name=None):
    """Checks ``obj.<field>`` of a frozen dataclass (a Python or NumPy number; None if ``optional``) and
    stores it as a Python int/float (``name`` is what an error calls it; default the field's name)."""
    value = getattr(obj, field)
    if optional and value is None:
        return
    name = name or field
    checked = _integer(value, name, low) if integer else real(value, name, low, high, low_open=low_open)
    object.__setattr__(obj, field, checked)
