"""The IDX file format of MNIST (LeCun et al.) and of every data set written like it.

An IDX file is a 4-byte magic number — two zero bytes, a type code, the number of dimensions d —
then d big-endian uint32 sizes, then the values in C order. MNIST and Fashion-MNIST use type 0x08
(unsigned bytes): ``*-images-idx3-ubyte`` (N, H, W) and ``*-labels-idx1-ubyte`` (N,). Files may be
gzipped (``.gz``), as they are distributed.

:func:`read_idx` checks everything it reads (the magic number, the sizes against the bytes there
are) and raises a ValueError naming the file and what is wrong, so nothing is half-loaded.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import Optional, Tuple

import numpy as np

_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
"""IDX type code -> the dtype of its values."""

SPLIT_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
"""The four files of an MNIST-format folder (each also read as ``NAME.gz``)."""


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from None
    if raw[:2] == b"\x1f\x8b":  # gzip's magic number
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: a damaged or truncated gzip file ({err})") from None
    return raw


def read_idx(path: str) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzipped or not), in its native byte order."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES or raw[3] == 0:
        raise ValueError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'}; an IDX file starts with "
                         f"00 00, a type code in {[f'{t:02x}' for t in _TYPES]} and a number of dimensions >= 1)")
    dtype, dims = _TYPES[raw[2]], raw[3]
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, the header of {dims} dimensions needs {header})")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(f"{path}: {what}: the header gives shape {shape}, i.e. {expected} bytes, the file holds {len(raw)}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def find_split_files(folder: str) -> Optional[dict]:
    """``{"train": (images, labels), "test": (...)}`` paths in ``folder`` (plain or ``.gz``), or
    None when one of the four is missing."""
    found = {}
    for split, names in SPLIT_FILES.items():
        paths = []
        for name in names:
            path = next((os.path.join(folder, n) for n in (name, name + ".gz") if os.path.isfile(os.path.join(folder, n))), None)
            if path is None:
                return None
            paths.append(path)
        found[split] = tuple(paths)
    return found


def read_images_and_labels(images_path: str, labels_path: str, num_classes: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(x, y): x float32 in [0, 1] of shape (N, H, W, 1), y int64, checked against each other and,
    when given, ``num_classes``. Peak memory: the bytes read plus x, under 1.3× x's float32 size."""
    images = read_idx(images_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: images must be unsigned bytes of shape (N, height, width). "
                         f"It holds {images.dtype} of shape {images.shape}")
    labels = read_idx(labels_path)
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise ValueError(f"{labels_path}: labels must be integers of shape (N,). It holds {labels.dtype} of shape {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{labels_path} holds {len(labels)} labels but {images_path} holds {len(images)} images")
    high = num_classes if num_classes is not None else 256
    bad = np.flatnonzero((labels < 0) | (labels >= high))
    if len(bad):
        raise ValueError(f"{labels_path}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside [0, {high})"
                         f"{f' (the data set has {num_classes} classes)' if num_classes is not None else ''}")
    x = images.astype(np.float32)[..., None]
    np.divide(x, np.float32(255), out=x)  # in place: no second float array
    return x, labels.astype(np.int64)
