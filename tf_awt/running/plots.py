"""PNG plots of a run: distance curves, accuracy curves, per-layer density (matplotlib, Agg).

matplotlib is imported inside the functions that draw.
"""
from __future__ import annotations

import io
import os

NAMES = ("distances.png", "accuracy.png", "density.png", "training_distances.png")
"""What a run may draw; ``training_distances.png`` only with ``train.track_distances``."""


def save(fig, path):
    """Writes ``fig`` as a PNG to ``path`` atomically."""
    from tf_awt._files import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def search_axis(history: dict):
    """(unit, values) of a search history's x axis: its "step" (awt, ntt, dns) or "round" (cosentino);
    ("step", []) when it has neither (the one-shot methods: nothing to draw)."""
    for unit in ("step", "round"):
        if history.get(unit):
            return unit, list(history[unit])
    return "step", []


def write_all(out: str, ticket, history: dict) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    hist = ticket.history or {}
    unit, axis = search_axis(hist)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key in zip(axes, ("kernel_distance", "target_distance")):
        if hist.get(key):
            ax.plot(axis, hist[key], marker="o" if unit == "round" else None)
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, f"no search ({ticket.method})", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel(f"search {unit}")
    save(fig, os.path.join(out, NAMES[0]))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    held_out = [k for k in history if k.endswith(("_nat_accuracy", "_adv_accuracy")) and k.split("_")[0] in ("test", "validation", "val")]
    for key in ("nat_accuracy", "adv_accuracy", *sorted(held_out)):  # training batches, then the held-out curves
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], label=key.replace("nat_", "natural ").replace("adv_", "adversarial "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no training epochs", ha="center", va="center", transform=ax.transAxes)
    save(fig, os.path.join(out, NAMES[1]))
    plt.close(fig)

    if history.get("kernel_distance"):
        _training_distances(plt, history, os.path.join(out, NAMES[3]))

    fig, ax = plt.subplots(figsize=(5, 3.2))
    names = list(ticket.layer_density)
    ax.bar(range(len(names)), [ticket.layer_density[n] for n in names])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, fontsize=7)
    ax.set_ylabel("density")
    ax.set_title(f"overall density {ticket.density:.4f}")
    save(fig, os.path.join(out, NAMES[2]))
    plt.close(fig)


def _training_distances(plt, history: dict, path: str) -> None:
    """The distances to the dense θ0 after every training epoch (``train.track_distances``)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key in zip(axes, ("kernel_distance", "target_distance")):
        ax.plot(range(1, len(history[key]) + 1), history[key], marker="o")
        ax.set_yscale("log")
        ax.set_title(f"{key.replace('_', ' ')} to the dense θ0 (probe)")
        ax.set_xlabel("training epoch")
    save(fig, path)
    plt.close(fig)
