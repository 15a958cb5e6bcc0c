#!/bin/bash
# issue 39: the paper's Figure 1 at CPU scale. NTT (a mask at θ0 that keeps the dense dynamics) against
# Dynamic Network Surgery (a mask found while training) on mnist5k-mlp at 2%, natural training (ε = 0):
# both search 20 epochs at batch 64, then train 50 epochs (NTT: m ⊙ θ0 from scratch, DNS: fine-tunes
# its own weights, train.rewind=learned, as the paper does), with the distances to the dense θ0 on a
# fixed probe of 64 training digits after every epoch (train.track_distances) and, during the search,
# NTT's per-step distances and DNS's at every surgery. Both with their recipe/default settings (the
# paper's figure is a qualitative claim; `tf-awt compare` is where methods are tuned). Seeds 0 and 1.
# Usage: experiments/figure1.sh [RUNS_DIR]   (resumable: a finished run is kept)
cd "$(dirname "$0")/.."  # the repository root
export PYTHONPATH=$PWD
RUNS=${1:-runs/figure1}
COMMON="--set density=0.02 --set attack.eps=0 --set search.epochs=20 --set search.batch_size=64 --set train.epochs=50
        --set train.track_distances=true --set eval.attacks=pgd --set eval.restarts=1 --quiet --no-mlflow"
for s in 0 1; do
  for m in ntt dns; do
    extra=""; [ $m = dns ] && extra="--set train.rewind=learned"
    python -m tf_awt.running.cli run mnist5k-mlp --out $RUNS/$m-s$s --set method=$m --set seed=$s $COMMON $extra
  done
done
python - "$RUNS" <<'PY'
import json, sys
runs = sys.argv[1]
for m in ("ntt", "dns"):
    for s in (0, 1):
        h = json.load(open(f"{runs}/{m}-s{s}/history.json"))
        t = json.load(open(f"{runs}/{m}-s{s}/summary.json"))
        print(m, s, "test accuracy %.4f" % t["natural_accuracy"], "kernel distance epoch 1 / 50: %.3g / %.3g" % (h["kernel_distance"][0], h["kernel_distance"][-1]),
              "target distance epoch 1 / 50: %.3g / %.3g" % (h["target_distance"][0], h["target_distance"][-1]))
PY
