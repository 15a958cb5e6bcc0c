#!/bin/bash
# issue 14: Cosentino et al. at ε = 0.3 with an ε warm-up in every round (search.eps_warmup_epochs),
# chosen on the validation split (0.5 or 2.5 of the 5 epochs per round), then 2 test seeds.

cd "$(dirname "$0")/.."  # the repository root
export PYTHONPATH=$PWD
EPS="--set attack.eps=0.3 --set attack.step_size=0.075 --set train.step_size=0.075 --set train.epochs=100 --set train.eps_warmup_epochs=10"
COS="--set method=cosentino --set search.rounds=5 --set search.epochs=5 --set density=0.036"
for w in 0.5 2.5; do
  out=runs/mask-select/eps0.3-cosentino/w$w
  [ -f $out/summary.json ] || taskset -c 0 python -m tf_awt.running.cli run mnist5k-mlp --out $out --quiet --no-mlflow $EPS $COS \
      --set eval.split=validation --set search.eps_warmup_epochs=$w
done
best=$(python - <<'PY'
import json
r = {w: json.load(open(f"runs/mask-select/eps0.3-cosentino/w{w}/summary.json")) for w in ("0.5", "2.5")}
print(max(r, key=lambda w: (r[w]["robust_accuracy"], r[w]["natural_accuracy"])))
PY
)
echo "chosen eps_warmup_epochs=$best"
for s in 0 1; do
  out=runs/mask-table-eps0.3/cosentino-warmup-d0.036-s$s
  [ -f $out/summary.json ] || taskset -c 0 python -m tf_awt.running.cli run mnist5k-mlp --out $out --quiet --no-mlflow $EPS $COS \
      --set seed=$s --set search.eps_warmup_epochs=$best
done
echo done
