"""Does the test suite catch the bugs it exists for? Plants plausible bugs and runs the tests.

    python tools/mutation_check.py                 # every mutation; writes docs/mutation_check.md
    python tools/mutation_check.py --only 3,7      # some of them (no report written)

Each mutation replaces one exact piece of source text (which must occur exactly once) in a fresh
copy of ``tf_awt/`` and ``tests/``, then runs the tests that should notice, in that copy
(``PYTHONPATH`` puts the copy first; the script checks that the copy is what gets imported). A
mutation is *caught* when pytest reports a failing test (exit code 1); before any mutation the
same tests are run on the unmutated copy and must pass, so a catch is the mutation's doing. The
tests listed per mutation are the ones expected to notice; a mutation they catch is caught by the
default ``pytest -q`` too (it runs them all). Not part of CI: minutes per mutation.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutation:
    area: str
    bug: str
    path: str
    old: str
    new: str
    tests: tuple


MUTATIONS = [
    Mutation("kernel", "a Dense layer on rank > 2 inputs ignores its mask in the kernel", "tf_awt/engine/kernel.py",
             "kept = mask if first_tr and not count_pruned else None",
             "kept = mask if first_tr and not count_pruned and not (type(inner).__name__ == 'Dense' and a.shape.rank > 2) else None",
             ("tests/test_kernel.py::test_kernel_matches_reference_float64",)),
    Mutation("kernel", "Conv2D and other per-example-gradient layers ignore the mask in the contraction", "tf_awt/engine/kernel.py",
             "block = _contract.contract(g1, g2, mask, diagonal, precision)",
             "block = _contract.contract(g1, g2, None, diagonal, precision)",
             ("tests/test_kernel.py::test_kernel_matches_reference_float64",)),
    Mutation("kernel", "the full student kernel (issue 25) keeps the mask after all", "tf_awt/engine/kernel.py",
             'count_pruned = student_kernel == "full"', "count_pruned = False",
             ("tests/test_kernel.py::test_full_student_kernel_and_its_gradient_match_the_float64_reference",)),
    Mutation("search", "the student is attacked with the teacher's PGD inputs", "tf_awt/tickets/search.py",
             "x_adv_s = pgd(self._student_fn, x, y, attack, seed=tf.stack([tf.constant(seed + 1, tf.int64), step]))",
             "x_adv_s = x_adv_t",
             ("tests/test_search.py::test_first_step_distances_equal_an_independent_computation",)),
    Mutation("search", "the teacher's outputs are the student's", "tf_awt/tickets/search.py",
             "f_t = tf.stop_gradient(self._teacher_fn(x_adv_t))", "f_t = tf.stop_gradient(self._student_fn(x_adv_t))",
             ("tests/test_search.py::test_first_step_distances_equal_an_independent_computation",)),
    Mutation("search", "the kernel term is weighted by γ instead of γ² (eq. 13)", "tf_awt/tickets/search_config.py",
             "return self.gamma**2 if self.kernel_weight is None else float(self.kernel_weight)",
             "return self.gamma if self.kernel_weight is None else float(self.kernel_weight)",
             ("tests/test_search.py::test_first_step_distances_equal_an_independent_computation",)),
    Mutation("search", "the ticket is not rewound to θ0 (keeps the learned weights)", "tf_awt/tickets/search.py",
             'if to == "init":', 'if to == "initial":',
             ("tests/test_search.py::test_mask_is_frozen_after_the_search_and_rewind_restores_theta0",)),
    Mutation("search", "the mask is never updated after m0 (T_m schedule broken)", "tf_awt/tickets/search.py",
             "should_update, _ = self.schedule(self.optimizer.iterations)",
             "should_update = tf.constant(False)",
             ("tests/test_search.py",)),
    Mutation("search", "NTT's decay (λ/density)·‖m⊙w‖² loses its 1/density", "tf_awt/tickets/search.py",
             'scale = c.weight_decay / c.density if c.weight_decay_form == "l2_per_density" else c.weight_decay',
             "scale = c.weight_decay",
             ("tests/test_search.py::test_weight_decay_in_the_loss_is_beta_or_ntts_lambda_over_density",)),
    Mutation("training", "adversarial training trains on the clean inputs", "tf_awt/adversarial/training.py",
             "x_adv = pgd(self._inference, x, y, self.attack, seed=self._attack_seed(0), scale=scale)",
             "x_adv = x",
             ("tests/test_training.py::test_one_training_step_descends_the_loss_on_the_seeded_pgd_inputs",)),
    Mutation("evaluation", "PGD runs one start whatever `restarts` says", "tf_awt/adversarial/attack_suites.py",
             "for _ in range(self.restarts):", "for _ in range(1):",
             ("tests/test_evaluation.py::test_pgd_runs_as_many_starts_as_restarts_says",)),
    Mutation("evaluation", "robust if any suite (not every suite) fails to fool the model", "tf_awt/adversarial/evaluation.py",
             "rob &= survived", "rob = rob & survived if suite is chosen[0] else rob | (survived & nat)",
             ("tests/test_evaluation.py::test_robust_accuracy_is_the_worst_case_over_every_set_of_every_suite",)),
    Mutation("evaluation", "robust within a suite if any (not every) restart fails", "tf_awt/adversarial/evaluation.py",
             "survived &= predict.all(adv) == y", "survived |= predict.all(adv) == y",
             ("tests/test_evaluation.py::test_robust_accuracy_is_the_worst_case_over_every_set_of_every_suite",)),
    Mutation("validation", "a label equal to the number of classes is accepted (1-indexed labels)", "tf_awt/_validate.py",
             "((y < 0) | (y >= num_classes))", "((y < 0) | (y > num_classes))",
             ("tests/test_validate.py::test_every_api_entry_point_refuses_bad_data",)),
    Mutation("validation", "inputs slightly above clip_max are accepted", "tf_awt/_validate.py",
             '(clip_max, "above", np.greater)', '(clip_max, "above", lambda a, b: np.greater(a, b + 1e-3))',
             ("tests/test_validate.py::test_every_api_entry_point_refuses_bad_data",)),
    Mutation("CLI", "`tf-awt evaluate --model` ignores --eps", "tf_awt/running/cli.py",
             "attack = evaluation_attack(args.eps, args.norm, args.steps)", "attack = evaluation_attack(0.3, args.norm, args.steps)",
             ("tests/test_evaluation.py::test_cli_evaluate_equals_the_library_at_a_non_default_attack",)),
    Mutation("CLI", "`tf-awt run --no-register` registers anyway", "tf_awt/running/cli.py",
             "register=None if args.no_register else _registered_name(args)", "register=_registered_name(args)",
             ("tests/test_cli.py::test_run_register_as_no_register_and_force",)),
    Mutation("baselines", "SNIP degenerates into magnitude pruning", "tf_awt/tickets/baselines.py",
             "scores = [tf.abs(g * k) for g, k in zip(grads, kernels)]", "scores = [tf.abs(k) for g, k in zip(grads, kernels)]",
             ("tests/test_baselines.py",)),
    Mutation("baselines", "SynFlow degenerates into magnitude pruning", "tf_awt/tickets/baselines.py",
             "scores = [tf.abs(g * l.kernel) for g, l in zip(grads, layers)]", "scores = [tf.abs(l.kernel) for g, l in zip(grads, layers)]",
             ("tests/test_baselines.py",)),
    Mutation("baselines", "the Frankle–Carbin allocation prunes the output layer as fast as the hidden ones", "tf_awt/tickets/_selection.py",
             'FRANKLE_CARBIN_KEEP = {"hidden": 0.8, "conv": 0.9, "output": 0.9}',
             'FRANKLE_CARBIN_KEEP = {"hidden": 0.8, "conv": 0.9, "output": 0.8}',
             ("tests/test_search.py::test_frankle_carbin_allocation_gives_the_papers_density_grid",)),
]

EQUIVALENT = [
    ("search", "the teacher's kernel and outputs without `stop_gradient`",
     "equivalent: the optimizer differentiates w.r.t. the student's weights (or scores) only, and the teacher "
     "shares no variable with the student (it is a clone), so the gradient is unchanged; no test can catch it"),
]


def _copy(dst):
    for name in ("tf_awt", "tests"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(dst, name),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(os.path.join(ROOT, "pytest.ini"), dst)


def _pytest(copy, tests, timeout):
    env = dict(os.environ, PYTHONPATH=copy, TF_CPP_MIN_LOG_LEVEL="3")
    where = subprocess.run([sys.executable, "-c", "import tf_awt; print(tf_awt.__file__)"], cwd=copy, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(copy):
        raise SystemExit(f"the copy is not what gets imported ({where}); is tf_awt installed non-editable?")
    args = [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider", *tests]
    start = time.time()
    try:
        proc = subprocess.run(args, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.time() - start, ""
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    return proc.returncode, time.time() - start, summary


def check(mutation: Mutation, timeout: int):
    with tempfile.TemporaryDirectory(prefix="tf_awt-mutant-") as copy:
        _copy(copy)
        code, _, summary = _pytest(copy, mutation.tests, timeout)
        if code != 0:
            return "tests fail unmutated", summary
        path = os.path.join(copy, mutation.path)
        text = open(path, encoding="utf-8").read()
        if text.count(mutation.old) != 1:
            return f"source text found {text.count(mutation.old)} times", ""
        open(path, "w", encoding="utf-8").write(text.replace(mutation.old, mutation.new))
        code, seconds, summary = _pytest(copy, mutation.tests, timeout)
        verdict = {1: "caught", 0: "NOT CAUGHT"}.get(code, f"error (pytest exit {code})")
        return verdict, f"{summary} ({seconds:.0f} s)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated mutation numbers (1-based); no report is written")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per pytest call (default 900)")
    args = parser.parse_args(argv)
    chosen = [int(i) for i in args.only.split(",")] if args.only else range(1, len(MUTATIONS) + 1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "tf_awt", "tests"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip())
    rows = []
    for i in chosen:
        mutation = MUTATIONS[i - 1]
        verdict, detail = check(mutation, args.timeout)
        rows.append((i, mutation, verdict, detail))
        print(f"{i:2d} [{mutation.area}] {mutation.bug}: {verdict} {detail}", flush=True)
    caught = sum(v == "caught" for _, _, v, _ in rows)
    print(f"{caught} of {len(rows)} caught")
    if args.only:
        return 0 if caught == len(rows) else 1
    lines = ["# Mutation check: does the suite catch the bugs it exists for?", "",
             f"`python tools/mutation_check.py` on commit `{commit}`{' (with uncommitted changes)' if dirty else ''}: "
             f"**{caught} of {len(rows)} planted bugs caught**. Each bug is planted alone in a copy of the code; the tests "
             "listed are run there (all of them run in the default `pytest -q`).", "",
             "| # | area | planted bug | tests run | result |", "| --- | --- | --- | --- | --- |"]
    for i, mutation, verdict, detail in rows:
        tests = ", ".join(f"`{t.replace('tests/', '')}`" for t in mutation.tests)
        lines.append(f"| {i} | {mutation.area} | {mutation.bug} | {tests} | {verdict}: {detail} |")
    lines += ["", "Not on the list, because no test can catch them (equivalent mutants):", ""]
    lines += [f"- [{area}] {bug}: {why}." for area, bug, why in EQUIVALENT]
    with open(os.path.join(ROOT, "docs", "mutation_check.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
