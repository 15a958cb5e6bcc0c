"""tf-awt compare: equal tuning budgets on a validation split, the test split once, tables, plot, MLflow."""
import csv
import json
import os
import re

import pytest

from conftest import digits_recipe, tf_awt_main, tiny_recipe
from tf_awt.running import compare as compare_module
from tf_awt.running.recipes import load_recipe
from tf_awt.running.run_inputs import RunInputs
from tf_awt.tickets.methods import METHODS

SPACE = ["--space", "magnitude:search.scope=global,layer"]


@pytest.fixture
def split_reads(monkeypatch):
    """Every data split a run reads: (method, eval.split, search.scope, seed)."""
    reads = []
    original = RunInputs.split.fget

    def spy(self):
        if self._split is None:
            r = self.recipe
            reads.append((r.method, r.eval.split, r.search.scope, r.init, r.seed))
        return original(self)

    monkeypatch.setattr(RunInputs, "split", property(spy))
    return reads


def _chosen_from(selection_csv):
    """Each method's chosen try, recomputed from the selection table: best mean robust, then natural, then first."""
    rows = list(csv.DictReader(open(selection_csv)))
    best = {}
    for r in rows:
        if not r["robust_mean"]:
            continue
        key = (float(r["robust_mean"]), float(r["natural_mean"]), -int(r["try"]))
        if r["method"] not in best or key > best[r["method"]][0]:
            best[r["method"]] = (key, r["settings"])
    return {m: settings for m, (_, settings) in best.items()}


def test_compare_tunes_on_validation_touches_the_test_split_only_for_the_chosen_tries_and_resumes(
        tmp_path, capsys, monkeypatch, split_reads):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    recipe = digits_recipe(tmp_path, epochs=1, density=0.1, export={"tflite": False, "plots": True})
    out = str(tmp_path / "cmp")
    args = ["compare", recipe, "--methods", "magnitude,random,dense", "--tries", "2", "--select-seeds", "1", "--seeds", "2",
            *SPACE, "--out", out, "--quiet"]
    proc = tf_awt_main(capsys, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(compare_module.OUTPUTS) <= set(os.listdir(out))

    # the selection: 2 tries per tuned method on the validation split, dense (nothing to choose) not run there
    validation = sorted(r for r in split_reads if r[1] == "validation")
    plan = json.load(open(os.path.join(out, "compare.json")))["tries"]
    assert [p["search.scope"] for p in plan["magnitude"]] == ["global", "layer"]  # --space replaced the declared space
    assert len(plan["random"]) == 2 and plan["dense"] == [{}]  # drawn from random's declared space (8 points)
    assert validation == sorted([("magnitude", "validation", scope, "glorot_uniform", 0) for scope in ("global", "layer")]
                                + [("random", "validation", p["search.scope"], p["init"], 0) for p in plan["random"]])

    # the test split: exactly each method's chosen try (recomputed from the table) x 2 seeds, nothing else
    chosen = _chosen_from(os.path.join(out, "selection.csv"))
    expected = []
    for method in ("magnitude", "random"):
        settings = dict(item.split("=") for item in chosen[method].split(", "))
        expected += [(method, "test", settings["search.scope"], settings.get("init", "glorot_uniform"), s) for s in (0, 1)]
    expected += [("dense", "test", "global", "glorot_uniform", s) for s in (0, 1)]
    assert sorted(r for r in split_reads if r[1] == "test") == sorted(expected)

    # a selection try's model is neither exported nor logged (only its numbers count); a final cell's is both
    for phase, has_model in (("select", False), ("final", True)):
        for name in os.listdir(os.path.join(out, phase)):
            summary = json.load(open(os.path.join(out, phase, name, "summary.json")))
            assert os.path.isdir(os.path.join(out, phase, name, "saved_model")) == has_model, name
            assert os.path.exists(os.path.join(out, phase, name, "density.png")) == has_model, name  # nor plotted
            assert (summary["model_uri"] is not None) == has_model and summary["model_size"]["sparse_gzip_bytes"] > 0

    final = list(csv.DictReader(open(os.path.join(out, "final.csv"))))
    assert [r["method"] for r in final][-1] == "dense" and len(final) == 3
    for r in final:
        robust = json.loads(r["robust"])
        assert len(robust) == 2 and abs(float(r["robust_mean"]) - sum(robust) / 2) < 1e-9
    best = max(final[:2], key=lambda r: float(r["robust_mean"]))
    verdict = open(os.path.join(out, "verdict.md")).read().strip()
    assert f"**{best['method']}**" in verdict and verdict in proc.stdout
    # what each method cost beside its accuracy: a column, the cheapest ticket within the spread, a plot
    assert all(float(r["cost_mean"]) > 0 and float(r["cpu_mean"]) > 0 for r in final)
    assert "| search + training (s per seed) | search + training (passes per seed) |" in open(os.path.join(out, "final.md")).read()
    for r in final:  # the mean over the method's test cells of their search + training passes
        cells = [json.load(open(os.path.join(out, "final", name, "summary.json"))) for name in os.listdir(os.path.join(out, "final"))
                 if name.startswith(r["method"] + "-")]
        counted = [sum(c["phase_passes"][p]["forward"] + c["phase_passes"][p]["backward"] for p in ("search", "train")) for c in cells]
        assert len(counted) == 2 and float(r["passes_mean"]) == sum(counted) / 2 > 0
    assert re.search(r"The (cheapest ticket within the spread of the best is \*\*\w+\*\*|best ticket is also the cheapest)"
                     r"|No other ticket is within its spread", verdict)
    assert "| method | chosen try |" in proc.stdout and "**yes**" in open(os.path.join(out, "selection.md")).read()

    # MLflow: one parent, a FINISHED child per cell, the verdict as the parent's description, the outputs as artifacts
    client = mlflow.tracking.MlflowClient(uri)
    parent_id = json.load(open(os.path.join(out, "compare.json")))["parent_run_id"]
    parent = client.get_run(parent_id)
    children = client.search_runs(parent.info.experiment_id, filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 4 + 6 and all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.params["eval.split"] for c in children).count("test") == 6
    assert parent.data.tags["mlflow.note.content"] == verdict
    assert set(compare_module.OUTPUTS) <= {a.path for a in client.list_artifacts(parent_id)}

    # the same command again: every cell kept (no data read), the same tables, the same parent run
    tables = {name: open(os.path.join(out, name)).read() for name in ("selection.md", "final.md", "verdict.md")}
    split_reads.clear()
    proc = tf_awt_main(capsys, *args)
    assert proc.returncode == 0 and split_reads == []
    assert tables == {name: open(os.path.join(out, name)).read() for name in tables}
    assert json.load(open(os.path.join(out, "compare.json")))["parent_run_id"] == parent_id

    # another comparison in the same directory is refused: its cells would mix
    proc = tf_awt_main(capsys, *args[:-3], "--seeds", "3", "--out", out, "--quiet")
    assert proc.returncode == 2 and "holds a comparison with other settings (seeds differ)" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--methods", "awt,grasp"], "methods must be a non-empty list of distinct methods from"),
    (["--methods", "snip,snip"], "You passed: ['snip', 'snip']"),
    (["--tries", "0"], "tries must be an integer >= 1. You passed: 0"),
    (["--density", "1.5"], "density must be a number in (0, 1]. You passed: 1.5"),
    (["--methods", "snip", "--space", "snip:search.scop=erk"], "snip try 1: unknown key 'search.scop' (did you mean 'search.scope'?)"),
    (["--methods", "snip", "--space", "snip:search.scope=diagonal"], "scope must be one of"),
    (["--methods", "snip", "--space", "snip=erk"], "--space takes METHOD:KEY=V1,V2"),
    (["--methods", "snip", "--space", "awt:search.epochs=2"], "spaces names methods that are not compared: ['awt']"),
])
def test_bad_compare_arguments_get_one_line_before_anything_runs(tmp_path, capsys, args, message):
    out = tmp_path / "cmp"
    proc = tf_awt_main(capsys, "compare", tiny_recipe(tmp_path), *args, "--out", str(out), "--no-mlflow")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_the_chosen_try_is_the_best_validation_robust_accuracy_then_natural_then_the_first():
    rows = [{"try": 1, "robust_mean": 0.5, "natural_mean": 0.8}, {"try": 2, "robust_mean": 0.6, "natural_mean": 0.7},
            {"try": 3, "robust_mean": 0.6, "natural_mean": 0.9}, {"try": 4, "robust_mean": 0.6, "natural_mean": 0.9}]
    settings = [{"k": i} for i in range(1, 5)]
    assert compare_module._chosen(settings, rows) == {"k": 3}
    assert [r.get("chosen") for r in rows] == [None, None, True, None]


def test_every_tuned_built_in_method_declares_a_space_at_least_as_large_as_the_default_budget(tmp_path):
    """An equal budget needs spaces with room for it; every point is a valid setting of a bundled recipe."""
    import tf_awt

    recipe = load_recipe("mnist5k-mlp")
    plan = compare_module.plan_comparison(recipe, [m for m in METHODS if m != "random_layerwise"], tries=10 ** 6)
    for method, points in plan.items():
        assert len(points) >= (2 if method == "erk" else 4), method
        for point in points:
            compare_module.with_settings(recipe, point)  # raises on an invalid point


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_compare_on_two_ray_workers_equals_the_sequential_comparison(tmp_path, capsys):
    """``--workers 2``: the same selection, the same chosen tries and the same final numbers as one
    cell after another (its fast variant: the sequential test above; the Ray path is the sweep's,
    tested with killed workers in tests/test_sweep.py)."""
    recipe = digits_recipe(tmp_path, epochs=1, density=0.1)
    tables = {}
    for workers in ("1", "2"):
        out = str(tmp_path / f"w{workers}")
        proc = tf_awt_main(capsys, "compare", recipe, "--methods", "magnitude,dense", "--tries", "2", "--select-seeds", "1",
                           "--seeds", "2", *SPACE, "--out", out, "--quiet", "--no-mlflow", "--workers", workers)
        assert proc.returncode == 0, proc.stderr[-3000:]
        final = [{k: v for k, v in row.items() if not k.startswith(("cost_", "cpu_", "evaluate_seconds"))}  # wall time varies
                 for row in csv.DictReader(open(os.path.join(out, "final.csv")))]
        verdict = re.sub(r" (The (cheapest|best ticket is also)|No other ticket is within).*?(per seed[^.]*|less robust)\.", "", open(os.path.join(out, "verdict.md")).read())
        tables[workers] = [open(os.path.join(out, "selection.csv")).read(), final, verdict]
    assert "cells on Ray (2 local workers)" in proc.stderr
    assert tables["1"] == tables["2"]


def test_force_replaces_a_different_comparison_in_the_same_directory(tmp_path, capsys):
    recipe, out = tiny_recipe(tmp_path, train={"epochs": 0, "batch_size": 32, "steps": 2, "step_size": 0.05}), str(tmp_path / "c")
    base = ["compare", recipe, "--methods", "dense", "--out", out, "--quiet", "--no-mlflow"]
    assert tf_awt_main(capsys, *base, "--seeds", "1").returncode == 0
    refused = tf_awt_main(capsys, *base, "--seeds", "2")
    assert refused.returncode == 2 and "(seeds differ)" in refused.stderr
    forced = tf_awt_main(capsys, *base, "--seeds", "2", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.load(open(os.path.join(out, "compare.json")))["seeds"] == 2
    assert "running final/dense-s0" in forced.stderr and "running final/dense-s1" in forced.stderr  # s0 run again


def test_compare_with_one_try_says_nothing_was_tuned(tmp_path, capsys, monkeypatch):
    """``--tries 1`` runs no selection on validation: the verdict must not say the methods were tuned,
    and the plot's validation panel says why it is empty."""
    from tf_awt.running import compare as compare_module

    drawn = {}
    save = compare_module.save
    monkeypatch.setattr(compare_module, "save", lambda fig, path: (drawn.setdefault(os.path.basename(path), fig), save(fig, path)))
    recipe = tiny_recipe(tmp_path, train={"epochs": 0, "batch_size": 32, "steps": 2, "step_size": 0.05})
    out = str(tmp_path / "c")
    proc = tf_awt_main(capsys, "compare", recipe, "--methods", "magnitude,dense", "--tries", "1", "--seeds", "1",
                       "--out", out, "--quiet", "--no-mlflow")
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdict = open(os.path.join(out, "verdict.md")).read()
    assert "tuned with up to" not in verdict and "not tuned: nothing ran on a validation split" in verdict
    validation_panel = drawn["robust_vs_natural.png"].axes[0]
    assert [t.get_text() for t in validation_panel.texts] == ["nothing ran on the validation split:\none setting per method, not tuned"]
    assert not os.path.exists(os.path.join(out, "select")) or not os.listdir(os.path.join(out, "select"))


def test_select_examples_evaluates_each_try_on_the_first_n_validation_examples_and_the_test_split_whole(tmp_path, capsys):
    """A large data set's selection evaluates each try on a subset; the final table still reads the whole test split."""
    recipe = tiny_recipe(tmp_path, train={"epochs": 0, "batch_size": 32, "steps": 2, "step_size": 0.05})
    out = str(tmp_path / "c")
    args = ["compare", recipe, "--methods", "magnitude,dense", "--tries", "2", "--select-seeds", "1", "--seeds", "1",
            *SPACE, "--out", out, "--quiet", "--no-mlflow"]
    proc = tf_awt_main(capsys, *args, "--select-examples", "7")
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = {}
    for phase in ("select", "final"):
        for name in os.listdir(os.path.join(out, phase)):
            counts[f"{phase}/{name}"] = json.load(open(os.path.join(out, phase, name, "evaluation.json")))["num_examples"]
    assert {k: v for k, v in counts.items() if k.startswith("select/")} == {"select/magnitude-t1-s0": 7, "select/magnitude-t2-s0": 7}
    split = RunInputs(load_recipe(recipe)).split
    assert counts["final/magnitude-s0"] == counts["final/dense-s0"] == len(split.y_test) > 7
    # the same directory with another subset, or with none, is another comparison: refused
    for other in (["--select-examples", "8"], []):
        refused = tf_awt_main(capsys, *args, *other)
        assert refused.returncode == 2 and "(select_examples differ)" in refused.stderr, refused.stderr


def test_a_bad_select_examples_is_one_line_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "c"
    proc = tf_awt_main(capsys, "compare", tiny_recipe(tmp_path), "--methods", "dense", "--select-examples", "0",
                       "--out", str(out), "--no-mlflow")
    assert proc.returncode == 2 and "--select-examples must be an integer >= 1. You passed: 0" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_compare_runs_dns_with_its_own_space_and_its_fine_tuning_choice(tmp_path, capsys):
    """``dns`` in a comparison: its tries are drawn from its declared space (surgery knobs and
    train.rewind), each runs on validation, the chosen one on the test split."""
    recipe = tiny_recipe(tmp_path, search={"epochs": 1, "update_every": 2, "batch_size": 32},
                         train={"epochs": 1, "batch_size": 32, "steps": 2, "step_size": 0.05})
    out = str(tmp_path / "c")
    proc = tf_awt_main(capsys, "compare", recipe, "--methods", "dns,magnitude", "--tries", "2", "--select-seeds", "1",
                       "--seeds", "1", "--space", "magnitude:search.scope=global", "--out", out, "--quiet", "--no-mlflow")
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.load(open(os.path.join(out, "compare.json")))["tries"]["dns"]
    assert len(plan) == 2 and {"search.hysteresis", "search.ramp_fraction", "train.rewind"} <= set(plan[0])
    assert len([n for n in os.listdir(os.path.join(out, "select")) if n.startswith("dns-")]) == 2  # each try ran
    final = {r["method"]: r for r in csv.DictReader(open(os.path.join(out, "final.csv")))}
    assert set(final) == {"dns", "magnitude"} and 0 <= float(final["dns"]["robust_mean"]) <= 1


def _row(method, robust, cost, best=False, exceeds=True):
    return {"method": method, "robust_mean": robust, "cost_mean": cost, "best": best,
            "exceeds_spread": None if best else exceeds}


@pytest.mark.parametrize("rows, expected", [
    # another ticket ties with the best and costs less: it is named
    ([_row("cosentino", 0.665, 1145, best=True), _row("snip", 0.660, 291, exceeds=False), _row("dense", 0.65, 245)],
     " The cheapest ticket within the spread of the best is **snip**: 291 s of search and training per seed against "
     "1145 s for cosentino."),
    # the best ties with others and is the cheapest of them
    ([_row("snip", 0.665, 291, best=True), _row("cosentino", 0.660, 1145, exceeds=False)],
     " The best ticket is also the cheapest of the 2 tickets within its spread: 291 s of search and training per seed."),
    # nothing ties: not "the cheapest within its spread" (vacuous), but the cheapest ticket of all and what it loses
    ([_row("cosentino", 0.665, 1145, best=True), _row("magnitude", 0.651, 329), _row("snip", 0.635, 291),
      _row("dense", 0.651, 245)],
     " No other ticket is within its spread; it costs 1145 s of search and training per seed, while the cheapest ticket, "
     "**snip**, costs 291 s and is 0.030 less robust."),
    ([_row("snip", 0.665, 291, best=True), _row("cosentino", 0.600, 1145)],
     " No other ticket is within its spread, and none costs less: 291 s of search and training per seed."),
])
def test_the_verdicts_cost_sentence_names_the_cheapest_ticket_and_is_never_vacuous(rows, expected):
    assert compare_module._cheapest_line(rows) == expected
