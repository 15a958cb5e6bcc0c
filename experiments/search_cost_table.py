"""The table of experiments/search_cost.sh: python experiments/search_cost_table.py RUNS/MODEL."""
import json
import os
import sys

import numpy as np

from tf_awt import Ticket


def overlap(a, b):
    """|m_a ∩ m_b| / |m_b| over every prunable weight."""
    kept = sum(float(np.sum(m)) for m in b.masks.values())
    return sum(float(np.sum(a.masks[k] * b.masks[k])) for k in b.masks) / kept


def main(root):
    print(f"| density | variant | overlap with base (s0, s1) | base seed-to-seed | validation robust (s0, s1) | mean | natural mean | search s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for d in sorted(os.listdir(root), reverse=True):
        if not d.startswith("d"):
            continue
        cells = os.path.join(root, d)
        names = sorted({n.rsplit("-s", 1)[0] for n in os.listdir(cells)}, key=lambda n: (n != "base", n))
        done = lambda n, s: os.path.exists(os.path.join(cells, f"{n}-s{s}", "ticket.npz"))  # noqa: E731
        trained = lambda n: all(os.path.exists(os.path.join(cells, f"{n}-s{s}", "summary.json")) for s in (0, 1))  # noqa: E731
        if not all(done("base", s) for s in (0, 1)):
            continue
        base = [Ticket.load(os.path.join(cells, f"base-s{s}", "ticket.npz")) for s in (0, 1)]
        seeds = overlap(base[1], base[0])
        for n in names:
            if not all(done(n, s) for s in (0, 1)):
                continue
            tickets = [Ticket.load(os.path.join(cells, f"{n}-s{s}", "ticket.npz")) for s in (0, 1)]
            states = [os.path.join(cells, f"{n}-s{s}", "run.json") for s in (0, 1)]
            # `tf-awt search` keeps run.json since commit 6ed3ede; searches made before it have no seconds here
            search = (f"{np.mean([json.load(open(p))['phase_seconds']['search'] for p in states]):.0f}"
                      if all(os.path.exists(p) for p in states) else "–")
            overlaps = ", ".join(f"{overlap(t, b):.3f}" for t, b in zip(tickets, base))
            accuracy = "not trained | – | –"
            if trained(n):
                summaries = [json.load(open(os.path.join(cells, f"{n}-s{s}", "summary.json"))) for s in (0, 1)]
                robust = [x["robust_accuracy"] for x in summaries]
                accuracy = (f"{robust[0]:.3f}, {robust[1]:.3f} | {np.mean(robust):.3f} | "
                            f"{np.mean([x['natural_accuracy'] for x in summaries]):.3f}")
            print(f"| {d[1:]} | {n} | {overlaps} | {seeds:.3f} | {accuracy} | {search} |")


if __name__ == "__main__":
    main(sys.argv[1])
