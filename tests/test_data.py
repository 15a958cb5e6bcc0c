"""The data-set registry, the IDX reader (MNIST-format folders) and Fashion-MNIST."""
import gzip
import os
import struct

import numpy as np
import pytest

import tf_awt
from tf_awt import data
from tf_awt.running import cli

from conftest import tiny_recipe

FASHION = data.FASHION_MNIST_DEBIAN


def write_idx(path, array, type_code=0x08, gz=False, cut=0, magic=None):
    """An IDX file of ``array`` (the format as documented by LeCun et al.), ``cut`` bytes short."""
    array = np.asarray(array)
    raw = (magic if magic is not None else bytes([0, 0, type_code, array.ndim])) + \
        struct.pack(f">{array.ndim}I", *array.shape) + array.astype(array.dtype.newbyteorder(">")).tobytes()
    raw = raw[:len(raw) - cut]
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)
    return path


def mnist_folder(folder, n_train=30, n_test=10, classes=10, gz=False, seed=0, **broken):
    """A folder of the four MNIST-format files; ``broken`` = {file stem: write_idx keyword} damages one."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 8, 8), dtype=np.uint8),
              "train-labels-idx1-ubyte": (np.arange(n_train) % classes).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 8, 8), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": (np.arange(n_test) % classes).astype(np.uint8)}
    for stem, array in arrays.items():
        kwargs = broken.get(stem.replace("-", "_"), {})
        array = kwargs.pop("array", array)
        write_idx(os.path.join(folder, stem + (".gz" if gz else "")), array, gz=gz, **kwargs)
    return str(folder), arrays


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_folder_reads_as_pixels_over_255_against_a_float64_reference(tmp_path, gz):
    folder, arrays = mnist_folder(tmp_path / "m", gz=gz)
    split = data.load(f"idx:{folder}")
    reference = (arrays["train-images-idx3-ubyte"].astype(np.float64) / 255.0)[..., None]
    assert split.x_train.dtype == np.float32 and split.x_train.shape == (30, 8, 8, 1)
    np.testing.assert_array_equal(split.x_train, reference.astype(np.float32))  # correctly rounded, no drift
    np.testing.assert_array_equal(split.y_test, arrays["t10k-labels-idx1-ubyte"].astype(np.int64))
    assert split.num_classes == 10 and split.name == f"idx:{folder}"
    assert data.load(folder).x_test.shape == (10, 8, 8, 1)  # a folder path reads the same way


def test_idx_reader_reads_every_type_code(tmp_path):
    for code, dtype in ((0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32),
                        (0x0E, np.float64)):
        array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if code != 0x08 else np.arange(24, dtype=dtype).reshape(2, 3, 4)
        back = tf_awt._idx.read_idx(write_idx(str(tmp_path / f"a{code}"), array, type_code=code))
        np.testing.assert_array_equal(back, array)


BAD_FILES = [
    ("magic", {"train_images_idx3_ubyte": {"magic": b"\x08\x03\x00\x00"}}, r"not an IDX file \(magic number 08030000"),
    ("truncated", {"train_images_idx3_ubyte": {"cut": 7}}, r"truncated: the header gives shape \(30, 8, 8\)"),
    ("count", {"train_labels_idx1_ubyte": {"array": np.zeros(29, np.uint8)}}, r"holds 29 labels but .* holds 30 images"),
    ("labels", {"t10k_labels_idx1_ubyte": {"array": np.full(10, 12, np.uint8)}}, r"label 12 at index 0 is outside \[0, 10\)"),
]


@pytest.mark.parametrize("case,broken,message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_idx_file_is_one_clear_line_through_the_cli_and_leaves_no_output(tmp_path, capsys, case, broken, message):
    import re

    folder, _ = mnist_folder(tmp_path / "m", **broken)  # "labels": test labels beyond the training labels' 10 classes
    recipe = tiny_recipe(tmp_path, dataset=f"idx:{folder}")
    out = tmp_path / "never"
    assert cli.main(["run", recipe, "--out", str(out), "--no-mlflow", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tf-awt: error: ") and re.search(message, err[0]), err
    assert not out.exists()


def test_a_missing_fashion_mnist_names_all_three_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN", str(tmp_path / "absent"))
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match=r"--data-dir DIR or TFDS_DATA_DIR.*four IDX files.*apt-get install dataset-fashion-mnist"):
        data.load("fashion-mnist", data_dir=str(tmp_path))
    folder, arrays = mnist_folder(tmp_path / "mine")  # a --data-dir holding the four files is the second way
    split = data.load("fashion-mnist", data_dir=folder)
    assert split.name == "fashion-mnist" and split.num_classes == 10 and len(split.y_train) == 30


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="needs `apt-get install dataset-fashion-mnist` (.ci/run installs it)")
def test_fashion_mnist_is_the_real_70000_images():
    split = data.load("fashion-mnist")
    assert split.x_train.shape == (60000, 28, 28, 1) and split.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(split.y_train).tolist() == [6000] * 10 and np.bincount(split.y_test).tolist() == [1000] * 10
    assert split.x_train.dtype == np.float32 and split.x_train.min() == 0.0 and split.x_train.max() == 1.0
    assert split.y_train[:5].tolist() == [9, 0, 0, 3, 0]  # the published first labels: ankle boot, T-shirt, ...


def test_a_registered_data_set_is_a_name_like_the_built_in_ones(tmp_path, capsys):
    x = np.random.default_rng(0).uniform(0, 1, (40, 6, 6, 1)).astype("float32")
    y = (x.reshape(40, -1)[:, :3].argmax(axis=1)).astype("int64")
    entry = data.register_dataset("my-digits", lambda data_dir: data.Split(x[:30], y[:30], x[30:], y[30:], 3, "my-digits"),
                                  num_classes=3, description="a test set")
    try:
        assert "my-digits" in data.dataset_names() and entry.num_classes == 3
        assert data.load("my-digits").x_train.shape == (30, 6, 6, 1)
        out = tmp_path / "run"
        assert cli.main(["run", tiny_recipe(tmp_path, dataset="my-digits"), "--out", str(out), "--no-mlflow", "--quiet"]) == 0
        assert (out / "summary.json").exists()
    finally:
        data._REGISTRY.pop("my-digits", None)
    for bad in ("", "a/b", "x.npz", "idx:x"):
        with pytest.raises(ValueError, match="You passed"):
            data.register_dataset(bad, lambda d: None)
    with pytest.raises(ValueError, match=r"dataset must be one of \['mnist-5k', 'fashion-mnist'.*You passed: 'nope'"):
        data.load("nope")


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="needs `apt-get install dataset-fashion-mnist` (.ci/run installs it)")
def test_tf_awt_run_fashion_mlp_trains_on_the_60000_images_and_reports_the_worst_case(tmp_path, capsys):
    """The bundled full-size recipe through the CLI, on the real files, shortened by --set (one
    training epoch, the one-shot magnitude ticket, the attacks on 100 test images)."""
    import json

    out = tmp_path / "run"
    assert cli.main(["run", "fashion-mlp", "--out", str(out), "--no-mlflow", "--quiet", "--set", "method=magnitude",
                     "--set", "train.epochs=1", "--set", "eval.max_examples=100", "--set", "eval.steps=10",
                     "--set", "eval.restarts=1", "--set", "eval.apgd_iterations=10", "--set", "eval.fab_iterations=10", "--set", "eval.square_queries=100",
                     "--set", "export.tflite=false", "--set", "export.plots=false"]) == 0
    summary = json.load(open(out / "summary.json"))
    history = json.load(open(out / "history.json"))
    assert summary["dataset"] == "fashion-mnist" and summary["robust_accuracy_attacks"].startswith("worst case of PGD-10 ×1")
    assert summary["natural_accuracy"] > 0.5  # one epoch on 60,000 images learns (chance is 0.1)
    assert set(summary["evaluation_seconds"]) >= {"pgd", "apgd-ce", "apgd-t", "fab-t", "square"}
    assert {"search", "train", "evaluate"} <= set(summary["phase_seconds"]), summary["phase_seconds"]
    assert history and summary["density"] == pytest.approx(0.036, abs=1e-3)


@pytest.mark.parametrize("content", ["garbage", "objects"])
def test_a_corrupt_npz_is_one_line_that_never_advises_unpickling(tmp_path, capsys, content):
    path = tmp_path / "bad.npz"
    if content == "garbage":
        path.write_bytes(b"this is not a zip archive at all" * 10)
    else:
        np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    out = tmp_path / "never"
    assert cli.main(["run", tiny_recipe(tmp_path, dataset=str(path)), "--out", str(out), "--no-mlflow", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a readable .npz file" in err[0] and "pickle" not in err[0], err
    assert not out.exists()
