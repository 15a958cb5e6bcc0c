"""Sequential sweep vs its cells on Ray workers (issue 28): the same grid, both ways, in one run.

    python benchmarks/sweep_bench.py [--workers 2] [--recipe quickstart] [--out runs/sweep_bench]

Runs ``tf-awt sweep RECIPE --densities 0.05 --methods awt,magnitude --seeds 2`` (four
quickstart-sized cells) once with one worker (cells one after another, no Ray) and once with
``--workers N`` (cells as Ray tasks on a local Ray instance), each as a fresh ``tf-awt`` process
without MLflow, and reports the wall-clock times, their ratio and whether every cell's evaluation
and per-epoch history are identical. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

GRID = ["--densities", "0.05", "--methods", "awt,magnitude", "--seeds", "2"]


def _sweep(recipe: str, out: str, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "tf_awt.running.cli", "sweep", recipe, *GRID, "--out", out, "--quiet", "--no-mlflow",
                    "--workers", str(workers)], check=True, stdout=subprocess.DEVNULL)
    return time.time() - t0


def _cells(out: str) -> dict:
    cells = os.path.join(out, "cells")
    return {name: (json.load(open(os.path.join(cells, name, "evaluation.json"))),
                   json.load(open(os.path.join(cells, name, "history.json")))) for name in sorted(os.listdir(cells))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recipe", default="quickstart")
    parser.add_argument("--out", default=os.path.join("runs", "sweep_bench"))
    args = parser.parse_args()
    sequential = _sweep(args.recipe, os.path.join(args.out, "sequential"), 1)
    parallel = _sweep(args.recipe, os.path.join(args.out, "ray"), args.workers)
    a, b = _cells(os.path.join(args.out, "sequential")), _cells(os.path.join(args.out, "ray"))
    same = a == b
    print(f"# sweep_bench: {platform.machine()}, {os.cpu_count()} CPUs, recipe {args.recipe}, grid {' '.join(GRID)}")
    print("| cells | sequential (s) | Ray, --workers {w} (s) | ratio | identical cells |".format(w=args.workers))
    print("| --- | --- | --- | --- | --- |")
    print(f"| {len(a)} | {sequential:.1f} | {parallel:.1f} | {parallel / sequential:.2f}× | {'yes' if same else 'NO'} |")
    for name in a:
        print(f"  {name}: robust {a[name][0]['robust_accuracy']:.4f} / {b.get(name, ({}, {}))[0].get('robust_accuracy')}")


if __name__ == "__main__":
    main()
