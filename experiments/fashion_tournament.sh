#!/usr/bin/env bash
# The full-scale tournament (docs/results.md, "Full-size Fashion-MNIST"): `tf-awt compare fashion-mlp`
# at 3.6% and 1.8% density, every method with 3 tries on the validation split (1 seed, the first 2,000
# of its 12,000 images), then 3 seeds of each chosen try on the 10,000 test images (worst case of
# PGD-100 x5 and the standard AutoAttack).
#
#   experiments/fashion_tournament.sh run      # both comparisons, resumable (finished cells are kept)
#   experiments/fashion_tournament.sh harvest  # copy finished cells' numbers into docs/results/fashion-tournament/
#   experiments/fashion_tournament.sh restore  # put harvested cells back into $RUNS (a new machine resumes)
#
# Run it from a worktree pinned at the commit named in docs/results.md, so that a refactor under way
# cannot change the cells: `git worktree add /work/pin-tournament COMMIT`, then
# `cd /work/pin-tournament && nohup experiments/fashion_tournament.sh run > tournament.log 2>&1 &`.
set -euo pipefail
RUNS=${RUNS:-/work/runs/fashion-tournament}
KEEP=${KEEP:-$(git rev-parse --show-toplevel)/docs/results/fashion-tournament}
METHODS=awt,ntt,cosentino,snip,magnitude,erk,dense
# AWT's and NTT's declared space with search.epochs sized for 60,000 images (1 or 2 passes: about 75
# or 150 mask updates) instead of the 4,000-digit recipes' 2 or 10; every other knob as declared.
SEARCH_SPACE=""
for m in awt ntt; do
  SEARCH_SPACE+=" --space $m:search.epochs=1,2 --space $m:search.update_every=20,100"
  SEARCH_SPACE+=" --space $m:search.weight_decay=0.0,1.0e-4 --space $m:search.student_kernel=masked,full"
  SEARCH_SPACE+=" --space $m:search.scope=global,frankle_carbin --space $m:search.normalization=per_example,per_entry"
done

compare() {  # density
  python -m tf_awt.running.cli compare fashion-mlp --density "$1" --methods "$METHODS" --tries 3 --select-seeds 1 \
    --seeds 3 --select-examples 2000 $SEARCH_SPACE --no-mlflow --quiet --out "$RUNS/d$1"
}

case "${1:-run}" in
  run)
    compare 0.036
    # dense keeps every weight at any density: its three test cells are the 3.6% comparison's
    mkdir -p "$RUNS/d0.018/final"
    for s in 0 1 2; do
      [ -e "$RUNS/d0.018/final/dense-s$s" ] || cp -r "$RUNS/d0.036/final/dense-s$s" "$RUNS/d0.018/final/"
    done
    compare 0.018
    ;;
  harvest)
    for d in "$RUNS"/d*; do
      [ -e "$d/compare.json" ] || continue
      mkdir -p "$KEEP/$(basename "$d")"
      cp "$d/compare.json" "$KEEP/$(basename "$d")/"
      for f in selection.csv selection.md final.csv final.md verdict.md robust_vs_natural.png robust_vs_cost.png; do
        [ -e "$d/$f" ] && cp "$d/$f" "$KEEP/$(basename "$d")/"
      done
      for cell in "$d"/select/* "$d"/final/*; do
        [ -e "$cell/summary.json" ] || continue
        rel=${cell#"$d"/}
        mkdir -p "$KEEP/$(basename "$d")/$rel"
        for f in summary.json evaluation.json run.json; do
          [ -e "$cell/$f" ] && cp "$cell/$f" "$KEEP/$(basename "$d")/$rel/"
        done
      done
    done
    ;;
  restore)
    for d in "$KEEP"/d*; do
      mkdir -p "$RUNS/$(basename "$d")"
      cp -rn "$d"/. "$RUNS/$(basename "$d")/"
    done
    ;;
  *) echo "usage: $0 run|harvest|restore" >&2; exit 2 ;;
esac
