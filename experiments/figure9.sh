#!/bin/bash
# issue 39: the paper's Figure 9 (network grafting) at CPU scale: AWT against random and magnitude tickets on
# mnist5k-cnn at 1, 3 and 5%, adversarial training (the recipe's), 2 seeds; every run also trains its dense
# reference from the same θ0 and seeds (train.dense_reference), then `tf-awt graft` grafts the two at every
# epoch and layer. Resumable: a finished run or graft is kept. Seed 0 of every cell first, then seed 1, so a
# partial run still covers every method and density. Each run's own evaluation (not what Figure 9 measures)
# is the worst case on the first 200 test digits only, to save time. Usage: experiments/figure9.sh [RUNS_DIR]
cd "$(dirname "$0")/.."  # the repository root
export PYTHONPATH=$PWD
RUNS=${1:-runs/figure9}
for s in 0 1; do
  for d in 0.01 0.03 0.05; do
    for m in awt random magnitude; do
      out=$RUNS/$m-d$d-s$s
      python -m tf_awt.running.cli run mnist5k-cnn --out $out --set method=$m --set density=$d --set seed=$s \
          --set train.dense_reference=true --set eval.max_examples=200 --quiet --no-mlflow
      [ -f $out/graft.json ] || python -m tf_awt.running.cli graft $out --examples 500
    done
  done
done
python - "$RUNS" <<'PY'
import json, os, sys
import numpy as np
runs = sys.argv[1]
for d in ("0.01", "0.03", "0.05"):
    for m in ("awt", "random", "magnitude"):
        g = [json.load(open(f"{runs}/{m}-d{d}-s{s}/graft.json")) for s in (0, 1)]
        nat = [x["mean_natural_increase"] for x in g]
        adv = [x["mean_adversarial_increase"] for x in g]
        print(f"{m:9s} {d}: mean increase natural {np.mean(nat):+.4f} ± {np.std(nat, ddof=1):.4f}, "
              f"adversarial {np.mean(adv):+.4f} ± {np.std(adv, ddof=1):.4f}")
PY
