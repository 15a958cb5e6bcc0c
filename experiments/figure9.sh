#!/bin/bash
# issue 39: the paper's Figure 9 (network grafting) at CPU scale: AWT against random and magnitude tickets on
# mnist5k-cnn at 1, 3 and 5%, adversarial training (the recipe's), 2 seeds; every run also trains its dense
# reference from the same θ0 and seeds (train.dense_reference), then `tf-awt graft` grafts the two at every
# epoch and layer. Resumable: a finished run or graft is kept. Order: AWT and random at every density with
# seed 0, then seed 1, then magnitude (seed 0, then 1), so a partial run still answers the main question (AWT
# against random). Each run's own evaluation (not what Figure 9 measures) is PGD-100 x5 on the first 50 test
# digits only: the worst case with AutoAttack took 1.5 h of the first cell's 2.3 h (awt-d0.01-s0, made at
# 36e7b00 with it, 200 digits), and even PGD-only runs the missing suites on its check subset (random-d0.01-s0,
# 876fdec, 200 digits: 20 min). The dense reference depends on the seed only (measured: awt-d0.01-s0's and random-d0.01-s0's
# were bit-identical at every epoch), so each seed trains it once and the other cells copy it (--dense-from):
# a cell costs its ticket's training, not twice that. Usage: experiments/figure9.sh [RUNS_DIR]
cd "$(dirname "$0")/.."  # the repository root
export PYTHONPATH=$PWD
RUNS=${1:-runs/figure9}
cell() {  # method density seed: the first cell of a seed (awt at 1%) trains the dense reference, the others copy it
  out=$RUNS/$1-d$2-s$3
  dense=$RUNS/awt-d0.01-s$3
  from=(); [ "$out" != "$dense" ] && from=(--dense-from $dense)
  [ -f $out/summary.json ] || python -m tf_awt.running.cli run mnist5k-cnn --out $out --set method=$1 --set density=$2 \
      --set seed=$3 --set train.dense_reference=true --set eval.max_examples=50 --set "eval.attacks=[pgd]" --quiet --no-mlflow \
      "${from[@]}"
  [ -f $out/graft.json ] || python -m tf_awt.running.cli graft $out --examples 500
}
for methods in "awt random" magnitude; do
  for s in 0 1; do
    for d in 0.01 0.03 0.05; do
      for m in $methods; do cell $m $d $s; done
    done
  done
done
python - "$RUNS" <<'PY'
import json, os, sys
import numpy as np
runs = sys.argv[1]
for d in ("0.01", "0.03", "0.05"):
    for m in ("awt", "random", "magnitude"):
        g = [json.load(open(f)) for f in (f"{runs}/{m}-d{d}-s{s}/graft.json" for s in (0, 1)) if os.path.exists(f)]
        if not g:
            continue
        nat = [x["mean_natural_increase"] for x in g]
        adv = [x["mean_adversarial_increase"] for x in g]
        print(f"{m:9s} {d}: mean increase natural {np.mean(nat):+.4f} ± {np.std(nat, ddof=1):.4f}, "
              f"adversarial {np.mean(adv):+.4f} ± {np.std(adv, ddof=1):.4f} ({len(g)} seeds)")
PY
