#!/bin/bash
# issue 41, part 2: are the search's cheaper settings the same search? On the validation split (eval.split:
# validation, the first 500 of its 1,000 digits, worst case of PGD-100 x5 and the standard AutoAttack), at
# 3.6% and 1.8%, seeds 0 and 1, each variant against the recipe's own setting ("base"):
#   mlp (mnist5k-mlp, exact kernel, 2 search epochs): sketch K = 4, sketch K = 1, student PGD-3, student FGSM
#       with a random start (step 1.25 eps), and the teacher cache (2 epochs: epoch 2 reuses epoch 1's X~0);
#   cnn (mnist5k-cnn, sketch K = 4, 1 search epoch): K = 1, K = 2, student PGD-3, student FGSM, and K = 1 with
#       student PGD-3 or FGSM (about 0.54 and 0.50 of the step by the bench's single changes: what would make the
#       sketched step about 2x faster; a one-epoch search gains nothing from the teacher cache).
# For each: mask overlap |m ∩ m_base| / |m_base| (same seed) against the overlap of base's two seeds, the
# validation robust/natural accuracy after the recipe's training, and the search's seconds.
# Resumable (a finished run is kept). Usage: experiments/search_cost.sh mlp|cnn [RUNS_DIR] [DENSITIES]
# STAGE=search runs the searches only (`tf-awt search`: the overlaps and seconds, no training); a later
# full run in the same RUNS_DIR reuses each ticket and trains it.
# ONLY="base sketch1" runs those variants only (default: every one); EVAL="--set KEY=VALUE ..." changes the
# evaluation (default: the recipe's worst case). Order: each density, each seed, each variant, so a partial run
# compares whole (density, seed) pairs.
set -f  # the --set values hold brackets: no globbing
cd "$(dirname "$0")/.."  # the repository root
export PYTHONPATH=$PWD
MODEL=${1:?usage: experiments/search_cost.sh mlp|cnn [RUNS_DIR] [DENSITIES]}
RUNS=${2:-runs/search_cost}/$MODEL
DENSITIES=${3:-0.036 0.018}
if [ "$MODEL" = mlp ]; then
  RECIPE=mnist5k-mlp
  VARIANTS="base|
sketch4|--set search.kernel=sketch --set search.probes=4
sketch1|--set search.kernel=sketch --set search.probes=1
pgd3|--set search.student_steps=3
fgsm|--set search.student_steps=1 --set search.student_step_size=0.125
cache|--set search.teacher_cache=true"
else
  RECIPE=mnist5k-cnn
  VARIANTS="base|
sketch1|--set search.probes=1
sketch2|--set search.probes=2
pgd3|--set search.student_steps=3
fgsm|--set search.student_steps=1 --set search.student_step_size=0.125
sketch1pgd3|--set search.probes=1 --set search.student_steps=3
sketch1fgsm|--set search.probes=1 --set search.student_steps=1 --set search.student_step_size=0.125"
fi
EXPORT="--set export.tflite=false --set export.plots=false"
NOMLFLOW=--no-mlflow; [ "${STAGE:-run}" = search ] && NOMLFLOW=""  # `search` tracks nothing
for d in $DENSITIES; do
  for s in 0 1; do
    while IFS='|' read -r name settings; do
      [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && continue
      python -m tf_awt.running.cli ${STAGE:-run} $RECIPE --out $RUNS/d$d/$name-s$s --set density=$d --set seed=$s \
          --set eval.split=validation --set eval.max_examples=500 $EXPORT ${EVAL:-} $settings --quiet $NOMLFLOW || exit 1
    done <<< "$VARIANTS"
  done
done
python experiments/search_cost_table.py "$RUNS" > "$RUNS/table.md" && cat "$RUNS/table.md"
