"""Sequential sweep vs its cells on Ray workers: the same grid, both ways, in one run.

    python benchmarks/sweep_bench.py [--workers 2] [--recipe quickstart] [--out runs/sweep_bench]

Runs ``tf-awt sweep RECIPE --densities 0.05 --methods awt,magnitude --seeds 2`` (four
quickstart-sized cells) once with one worker (cells one after another, no Ray) and once with
``--workers N`` (cells as Ray tasks on a local Ray instance), each as a fresh ``tf-awt`` process
without MLflow, and reports the wall-clock times, their ratio and whether every cell's evaluation
and per-epoch history are identical. ``--two-node`` adds the same sweep sent with ``--address`` to a
two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``, one CPU per node): its time,
whether its cells are identical too, and how many nodes ran cells. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

GRID = ["--densities", "0.05", "--methods", "awt,magnitude", "--seeds", "2"]


def _sweep(recipe: str, out: str, workers: int, address=None):
    """(seconds, the nodes the cells finished on)."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    where = ["--address", address] if address else ["--workers", str(workers)]
    proc = subprocess.run([sys.executable, "-m", "tf_awt.running.cli", "sweep", recipe, *GRID, "--out", out, "--quiet",
                           "--no-mlflow", *where], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return time.time() - t0, set(re.findall(r"finished on \S+ \(node (\w+)\)", proc.stderr))


def _two_node(recipe: str, out: str):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        return _sweep(recipe, out, 1, address=cluster.address)
    finally:
        cluster.shutdown()


def _cells(out: str) -> dict:
    cells = os.path.join(out, "cells")
    return {name: (json.load(open(os.path.join(cells, name, "evaluation.json"))),
                   json.load(open(os.path.join(cells, name, "history.json")))) for name in sorted(os.listdir(cells))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recipe", default="quickstart")
    parser.add_argument("--out", default=os.path.join("runs", "sweep_bench"))
    parser.add_argument("--two-node", action="store_true", help="also the sweep on a two-node local Ray cluster")
    args = parser.parse_args()
    sequential, _ = _sweep(args.recipe, os.path.join(args.out, "sequential"), 1)
    parallel, _ = _sweep(args.recipe, os.path.join(args.out, "ray"), args.workers)
    a, b = _cells(os.path.join(args.out, "sequential")), _cells(os.path.join(args.out, "ray"))
    same = a == b
    print(f"# sweep_bench: {platform.machine()}, {os.cpu_count()} CPUs, recipe {args.recipe}, grid {' '.join(GRID)}")
    print("| cells | sequential (s) | Ray, --workers {w} (s) | ratio | identical cells |".format(w=args.workers))
    print("| --- | --- | --- | --- | --- |")
    print(f"| {len(a)} | {sequential:.1f} | {parallel:.1f} | {parallel / sequential:.2f}× | {'yes' if same else 'NO'} |")
    if args.two_node:
        seconds, nodes = _two_node(args.recipe, os.path.join(args.out, "two_node"))
        c = _cells(os.path.join(args.out, "two_node"))
        print("\n| cells | two-node cluster, 1 CPU each (s) | ratio to sequential | identical cells | nodes that ran cells |")
        print("| --- | --- | --- | --- | --- |")
        print(f"| {len(c)} | {seconds:.1f} | {seconds / sequential:.2f}× | {'yes' if c == a else 'NO'} | {len(nodes)} |")
    for name in a:
        print(f"  {name}: robust {a[name][0]['robust_accuracy']:.4f} / {b.get(name, ({}, {}))[0].get('robust_accuracy')}")


if __name__ == "__main__":
    main()
