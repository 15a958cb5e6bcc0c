"""What a grid of runs (:mod:`tf_awt.running.sweep`, :mod:`tf_awt.running.compare`) shares: run
names, a finished cell's summary, mean ± std over seeds, the CSV and Markdown writers and the
plotting backend.

Nothing here imports TensorFlow; matplotlib is imported by :func:`pyplot` only.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from tf_awt._files import atomic_write_bytes

__all__ = ["cell_name", "run_name_of", "read_summary", "mean_std", "write_csv", "write_markdown", "pyplot"]


def cell_name(method: str, density: float, seed: int) -> str:
    """``<method>-d<density>-s<seed>``: a sweep's cell directory, and the end of every run's name."""
    return f"{method}-d{density:g}-s{seed}"


def run_name_of(recipe, recipe_name: str = "") -> str:
    """A run's MLflow name: ``<recipe name>-<method>-d<density>-s<seed>``."""
    return f"{recipe_name or 'recipe'}-{cell_name(recipe.method, recipe.density, recipe.seed)}"


def read_summary(directory: str) -> dict:
    """A finished run's ``summary.json``."""
    with open(os.path.join(directory, "summary.json"), encoding="utf-8") as fh:
        return json.load(fh)


def mean_std(rows: Iterable[dict], key: str) -> Tuple[float, float]:
    """Mean and (population) standard deviation of ``row[key]`` over seeds."""
    values = np.array([r[key] for r in rows], dtype=float)
    return float(values.mean()), float(values.std())


def write_csv(path: str, fields: Sequence[str], rows: List[Dict]) -> None:
    """``rows`` as CSV with the columns ``fields`` (other keys left out, lists as JSON), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows])
    atomic_write_bytes(path, buf.getvalue().encode())


def write_markdown(path: str, lines: Sequence[str]) -> None:
    """``lines`` as a Markdown file, atomically."""
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def pyplot():
    """matplotlib's ``pyplot`` with the file backend, chosen before pyplot loads."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt
