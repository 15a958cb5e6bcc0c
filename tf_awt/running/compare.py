"""``tf-awt compare``: which pruning method gives the best robust ticket, tuned like a reviewer would.

Every method gets the same tuning budget and the test split is read once:

1. **Tries.** Each method's declared search space (:attr:`tf_awt.tickets.methods.TicketMethod.space`: the knobs
   that matter for *that* method) gives ``tries`` settings (:meth:`tf_awt.tickets.search_space.SearchSpace.tries`: the
   same number for every method, drawn with ``space_seed``; a smaller space is tried whole, and a
   method with nothing to choose, such as ``dense``, runs once).
2. **Selection, on a validation split.** Every try runs with ``select_seeds`` seeds and
   ``eval.split: validation``: it trains on 80% of the training data and is evaluated on the other
   20%; the test split is not read, and no model is exported, logged or plotted
   (``export.saved_model: false``, ``export.plots: false``: only the numbers are used). A method's
   chosen try has the best mean validation robust accuracy (ties: natural accuracy, then the first
   try).
3. **The test split, once.** Each method's chosen try runs with ``seeds`` seeds on the test split.
   The final table gives mean ± std over seeds and, for every method, its gap to the best one and
   whether the gap exceeds the sum of their standard deviations.

Every run is a cell (:mod:`tf_awt.running.cells`): ``OUT/select/<method>-t<try>-s<seed>`` and
``OUT/final/<method>-s<seed>``, resumable (a cell with a ``summary.json`` is kept, an interrupted
one continues from its checkpoints), one after another or on Ray (``workers``, ``address``).
``OUT/compare.json`` holds what was asked; the same command resumes, a different one on the same
directory is refused. Outputs: ``selection.csv``/``.md``, ``final.csv``/``.md``,
``robust_vs_natural.png``, ``verdict.md``; with MLflow one parent run (the tables, the plot, the
verdict as its description) and a child run per cell.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from tf_awt import _validate
from tf_awt._files import atomic_write_json
from tf_awt.running.cells import Cell, check_parallel, run_cells, unfinished
from tf_awt.running.grid import mean_std, pyplot, read_summary, write_csv, write_markdown
from tf_awt.running.plots import save
from tf_awt.running.recipes import Recipe, from_dict
from tf_awt.running.report import attacks_note, search_and_training_passes
from tf_awt.running.run_inputs import check_inputs
from tf_awt.running.tracking import NullTracker, Tracker
from tf_awt.tickets.methods import get_method, method_names
from tf_awt.tickets.search_space import SearchSpace

__all__ = ["compare", "Comparison", "plan_comparison", "with_settings"]

OUTPUTS = ("selection.csv", "selection.md", "final.csv", "final.md", "robust_vs_natural.png", "robust_vs_cost.png", "verdict.md")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found.

    Attributes:
      selection: one row per try (method, try, settings, per-seed and mean validation accuracies).
      chosen: method -> its chosen try's settings.
      final: one row per method (test split: seeds, natural/robust mean and std, gap to the best,
        whether it exceeds the spread).
      verdict: the one-paragraph summary (``verdict.md``).
    """

    selection: List[dict]
    chosen: Dict[str, Dict[str, Any]]
    final: List[dict]
    verdict: str


def with_settings(recipe: Recipe, settings: Mapping[str, Any], where: str = "compare") -> Recipe:
    """``recipe`` with flat recipe keys set (``{"search.scope": "erk", "seed": 1}``), validated."""
    data = recipe.to_dict()
    for key, value in settings.items():
        section, _, name = key.rpartition(".")
        if section:
            if not isinstance(data.get(section), dict):
                raise ValueError(f"{where}: {key!r} is not a recipe key (no section {section!r}). You passed: {key}={value!r}")
            data[section] = {**data[section], name: value}
        else:
            data[name] = value
    return from_dict(data, source=where)


def _describe(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "the recipe's settings"


def plan_comparison(recipe: Recipe, methods: Sequence[str], density: Optional[float] = None, tries: int = 4,
                    spaces: Optional[Mapping[str, Any]] = None, space_seed: int = 0) -> Dict[str, List[Dict[str, Any]]]:
    """method -> the settings of its tries, each checked against ``recipe`` (what :func:`compare`
    runs; no TensorFlow, so a command line checks it before anything loads). Arguments as :func:`compare`'s."""
    methods = list(methods)
    bad = [m for m in methods if m not in method_names()]
    if bad or not methods or len(set(methods)) != len(methods):
        raise ValueError(f"methods must be a non-empty list of distinct methods from {method_names()}. You passed: {methods}")
    density = recipe.density if density is None else density
    if not (_validate.is_real(density) and 0 < density <= 1):
        raise ValueError(f"density must be a number in (0, 1]. You passed: {density!r}")
    tries = _validate.integer(tries, "tries", low=1)
    space_seed = _validate.integer(space_seed, "space_seed", low=0)
    spaces = dict(spaces or {})
    unknown = [m for m in spaces if m not in methods]
    if unknown:
        raise ValueError(f"spaces names methods that are not compared: {unknown}. Compared: {methods}")
    plan = {}
    for method in methods:
        space = spaces.get(method, get_method(method).space)
        space = space if isinstance(space, SearchSpace) else SearchSpace.grid(space)
        plan[method] = space.tries(tries, space_seed)
        for i, settings in enumerate(plan[method], 1):
            with_settings(recipe, {**settings, "method": method, "density": density}, f"compare: {method} try {i}")
    return plan


_EXPORTS = ("export.saved_model", "export.tflite", "export.keras3", "export.plots")
"""What a selection cell turns off."""


def _cell(recipe, method, settings, density, seed, split, out, name, recipe_name, data_dir, force=False,
          select_examples=None):
    """A selection cell (``split="validation"``) exports no model and no plot: only its numbers are used;
    with ``select_examples`` it is evaluated on the validation split's first that many examples."""
    numbers_only = {key: False for key in _EXPORTS} if split == "validation" else {}
    if split == "validation" and select_examples is not None:
        numbers_only["eval.max_examples"] = select_examples
    run = with_settings(recipe, {**settings, "method": method, "density": density if get_method(method).prunes else 1.0,
                                 "seed": seed, "eval.split": split, **numbers_only}, f"compare: {name}")
    return Cell(name, run, os.path.join(out, name), recipe_name, data_dir, force)


def _summary(cell: Cell) -> dict:
    return read_summary(cell.out)


def _check_state(out: str, spec: dict) -> dict:
    path = os.path.join(out, "compare.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        state = json.load(fh)
    keys = (set(spec) | set(state)) - {"parent_run_id"}
    differs = sorted(k for k in keys if json.dumps(state.get(k), sort_keys=True) != json.dumps(spec.get(k), sort_keys=True))
    if differs:
        raise ValueError(f"{out} holds a comparison with other settings ({', '.join(differs)} differ): its cells would mix. "
                         f"Use another --out, or delete {out}. You passed: "
                         + "; ".join(f"{k}={json.dumps(spec.get(k), sort_keys=True)[:80]}" for k in differs))
    return state


def compare(recipe: Recipe, out: str, methods: Sequence[str], density: Optional[float] = None, tries: int = 4,
            select_seeds: int = 2, seeds: int = 3, spaces: Optional[Mapping[str, Any]] = None, space_seed: int = 0,
            recipe_name: str = "", data_dir: Optional[str] = None, progress=None, track: bool = True,
            log: Callable[[str], None] = print, workers: int = 1, address: Optional[str] = None,
            verbose: bool = False, force: bool = False, select_examples: Optional[int] = None) -> Comparison:
    """Tunes every method with the same budget on a validation split, then runs each chosen try on
    the test split (see the module docstring); resumable.

    Args:
      recipe: the runs' recipe (its method and density are replaced per cell).
      out: the comparison's directory.
      methods: registered methods to compare (``dense`` is a reference: nothing to tune).
      density: fraction of weights kept (default None: the recipe's).
      tries: settings tried per method (default 4).
      select_seeds: seeds per try on the validation split (default 2).
      seeds: seeds of each chosen try on the test split (default 3).
      spaces: method -> a :class:`tf_awt.tickets.search_space.SearchSpace` or {recipe key: values} replacing the
        method's declared space (default None: the declared ones).
      space_seed: the seed that draws the tries from a space larger than ``tries`` (default 0).
      recipe_name, data_dir, progress: as :class:`tf_awt.running.pipeline.Run`'s.
      track: one MLflow parent run, a child run per cell (default True).
      log: progress lines (default ``print``).
      workers, address, verbose: as :func:`tf_awt.sweep`'s (default 1, None, False).
      force: run every cell again and replace what ``out`` holds, a different comparison included
        (default False: finished cells are kept, a different comparison is refused).
      select_examples: evaluate each selection try on the first this many validation examples
        (default None: the whole validation split, or the recipe's ``eval.max_examples``); the test
        split is always evaluated as the recipe says. A cheaper selection for large data sets.
    """
    density = recipe.density if density is None else density
    plan = plan_comparison(recipe, methods, density, tries, spaces, space_seed)
    methods, density = list(plan), float(density)
    select_seeds, seeds = (_validate.integer(v, n, low=1) for v, n in ((select_seeds, "select_seeds"), (seeds, "seeds")))
    if select_examples is not None:
        select_examples = _validate.integer(select_examples, "select_examples", low=1)
    workers = check_parallel(workers, address)
    check_inputs(recipe, data_dir)
    os.makedirs(out, exist_ok=True)
    spec = {"recipe": recipe.to_dict(), "density": density, "tries": plan, "select_seeds": select_seeds, "seeds": seeds}
    if select_examples is not None:  # absent when unused: directories of earlier comparisons still resume
        spec["select_examples"] = select_examples
    state = {} if force else _check_state(out, spec)
    parent = Tracker() if track else NullTracker()
    state["parent_run_id"] = parent.start_parent(
        f"compare-{recipe_name or 'recipe'}-d{density:g}",
        {"compare.methods": ",".join(methods), "compare.density": density, "compare.tries": tries,
         "compare.select_seeds": select_seeds, "compare.seeds": seeds, "compare.space_seed": space_seed},
        run_id=state.get("parent_run_id"))
    atomic_write_json(os.path.join(out, "compare.json"), {**spec, "parent_run_id": state["parent_run_id"]})
    run = dict(workers=workers, address=address, parent_run_id=parent.run_id, track=track, log=log, verbose=verbose,
               progress=progress)
    try:
        cells = {(m, i, s): _cell(recipe, m, settings, density, s, "validation", out, f"select/{m}-t{i}-s{s}", recipe_name, data_dir,
                                     force, select_examples)
                 for m in methods if len(plan[m]) > 1 for i, settings in enumerate(plan[m], 1) for s in range(select_seeds)}
        run_cells(unfinished(cells.values(), log, "compare"), label="compare: selection", **run)
        selection = _selection_rows(plan, cells, select_seeds)
        chosen = {m: _chosen(plan[m], [r for r in selection if r["method"] == m]) for m in methods}
        finals = {(m, s): _cell(recipe, m, chosen[m], density, s, "test", out, f"final/{m}-s{s}", recipe_name, data_dir, force)
                  for m in methods for s in range(seeds)}
        run_cells(unfinished(finals.values(), log, "compare"), label="compare: test split", **run)
        final = _final_rows(methods, finals, seeds)
        verdict = _verdict(recipe_name, recipe, density, final, tries, select_seeds, plan)
        _write_outputs(out, selection, chosen, final, verdict)
        for name in OUTPUTS:
            parent.log_artifact(os.path.join(out, name))
        parent.describe(verdict)
        return Comparison(selection, chosen, final, verdict)
    finally:
        parent.end_all()


# --------------------------------------------------------------------------- tables
def _selection_rows(plan, cells, select_seeds) -> List[dict]:
    rows = []
    for method, settings_list in plan.items():
        for i, settings in enumerate(settings_list, 1):
            if len(settings_list) == 1:
                rows.append({"method": method, "try": 1, "settings": _describe(settings), "chosen": True, "seeds": 0})
                continue
            found = [_summary(cells[method, i, s]) for s in range(select_seeds)]
            nat, rob = [f["natural_accuracy"] for f in found], [f["robust_accuracy"] for f in found]
            rows.append({"method": method, "try": i, "settings": _describe(settings), "seeds": select_seeds,
                         "natural": nat, "robust": rob, "natural_mean": float(np.mean(nat)), "robust_mean": float(np.mean(rob)),
                         "collapsed": sum(bool(f.get("collapsed")) for f in found), "chosen": False,
                         "robust_accuracy_attacks": attacks_note(found)})
    return rows


def _chosen(settings_list, rows) -> Dict[str, Any]:
    """The try with the best mean validation robust accuracy; ties: natural accuracy, then the first."""
    if len(settings_list) == 1:
        return settings_list[0]
    best = max(rows, key=lambda r: (r["robust_mean"], r["natural_mean"], -r["try"]))
    best["chosen"] = True
    return settings_list[best["try"] - 1]


def _final_rows(methods, finals, seeds) -> List[dict]:
    rows = []
    for method in methods:
        found = [_summary(finals[method, s]) for s in range(seeds)]
        (nat_mean, nat_std), (rob_mean, rob_std) = mean_std(found, "natural_accuracy"), mean_std(found, "robust_accuracy")
        rows.append({"method": method, "seeds": seeds, "natural_mean": nat_mean, "natural_std": nat_std,
                     "robust_mean": rob_mean, "robust_std": rob_std, "density": float(found[0]["density"]),
                     "collapsed": sum(bool(f.get("collapsed")) for f in found),
                     "robust": [float(f["robust_accuracy"]) for f in found],
                     "natural": [float(f["natural_accuracy"]) for f in found],
                     "robust_accuracy_attacks": attacks_note(found), **_costs(found)})
    tickets = [r for r in rows if get_method(r["method"]).prunes] or rows
    best = max(tickets, key=lambda r: (r["robust_mean"], r["natural_mean"]))
    for r in rows:
        r["gap_to_best"] = r["robust_mean"] - best["robust_mean"]
        # one seed has no spread: no gap can be said to exceed it
        r["exceeds_spread"] = None if seeds < 2 else bool(abs(r["gap_to_best"]) > r["robust_std"] + best["robust_std"])
        r["best"] = r is best
    return sorted(rows, key=lambda r: (not get_method(r["method"]).prunes, -r["robust_mean"], -r["natural_mean"]))


def _costs(found) -> dict:
    """What a method's runs cost: wall seconds of search + training (mean, std over seeds), its CPU
    seconds and its passes and Jacobians (means; None for runs made before they were recorded) and the
    evaluation's wall seconds."""
    wall = np.array([f["phase_seconds"].get("search", 0.0) + f["phase_seconds"].get("train", 0.0) for f in found])
    cpu = [f["phase_cpu_seconds"].get("search", 0.0) + f["phase_cpu_seconds"].get("train", 0.0)
           for f in found if f.get("phase_cpu_seconds")]
    counted = [search_and_training_passes(f) for f in found]
    mean = lambda key: None if any(c[key] is None for c in counted) else float(np.mean([c[key] for c in counted]))  # noqa: E731
    return {"cost_mean": float(wall.mean()), "cost_std": float(wall.std()),
            "cpu_mean": float(np.mean(cpu)) if len(cpu) == len(found) else None,
            "passes_mean": mean("passes"), "jacobians_mean": mean("jacobians"),
            "evaluate_seconds_mean": float(np.mean([f["phase_seconds"].get("evaluate", 0.0) for f in found]))}


def _passes(row) -> str:
    """The table's passes cell: forward + backward passes (and exact-kernel Jacobians) per seed."""
    if row.get("passes_mean") is None:
        return "—"
    jacobians = f" + {row['jacobians_mean']:.3g} Jacobians" if row.get("jacobians_mean") else ""
    return f"{row['passes_mean']:.3g}{jacobians}"


def _cheapest_line(final) -> str:
    """The verdict's sentence on cost: the cheapest ticket whose robust accuracy is within the spread of the best
    and, when no other ticket is within it, the cheapest ticket of all and what it gives up."""
    best = next(r for r in final if r["best"])
    tickets = [r for r in final if get_method(r["method"]).prunes]
    within = [r for r in tickets if r is best or r["exceeds_spread"] is False]
    if not within:  # no ticket compared (the dense reference alone)
        return ""
    cheapest = min(within, key=lambda r: (r["cost_mean"], -r["robust_mean"]))
    cost = f"{best['cost_mean']:.0f} s of search and training per seed"
    if cheapest is not best:
        return (f" The cheapest ticket within the spread of the best is **{cheapest['method']}**: {cheapest['cost_mean']:.0f} s "
                f"of search and training per seed against {best['cost_mean']:.0f} s for {best['method']}.")
    if len(within) > 1:
        return f" The best ticket is also the cheapest of the {len(within)} tickets within its spread: {cost}."
    overall = min(tickets, key=lambda r: (r["cost_mean"], -r["robust_mean"]))
    if overall is best:
        return f" No other ticket is within its spread, and none costs less: {cost}."
    return (f" No other ticket is within its spread; it costs {cost}, while the cheapest ticket, **{overall['method']}**, "
            f"costs {overall['cost_mean']:.0f} s and is {best['robust_mean'] - overall['robust_mean']:.3f} less robust.")


def _verdict(recipe_name, recipe, density, final, tries, select_seeds, plan) -> str:
    best = next(r for r in final if r["best"])
    tickets = [r for r in final if get_method(r["method"]).prunes and r is not best]
    attack = recipe.eval_attack()
    tuned = any(len(t) > 1 for t in plan.values())
    how = (f"every method tuned with up to {tries} tries on a validation split ({_seeds(select_seeds)} each) and its "
           "chosen try run once on the test split" if tuned else
           "every method run with one setting (its first draw, or its only one), not tuned: nothing ran on a validation "
           "split, so this compares untuned methods; it ran on the test split")
    text = (f"On {recipe_name or 'the recipe'} at density {density:g} ({recipe.dataset}, {recipe.model}, {attack.norm} "
            f"ε = {attack.eps:g}), {how} "
            f"({_seeds(best['seeds'])}), the best ticket by robust accuracy is **{best['method']}**: "
            f"{best['robust_mean']:.3f} ± {best['robust_std']:.3f} robust, {best['natural_mean']:.3f} ± {best['natural_std']:.3f} natural.")
    text += f" {_note(final) or 'Robust accuracy: PGD-only (attacks not recorded).'}"
    text += _cheapest_line(final)
    if tickets:
        runner = tickets[0]
        if runner["exceeds_spread"] is None:
            return text + (f" Its lead over {runner['method']} is {-runner['gap_to_best']:.3f}; with one seed per method "
                           "there is no spread to compare it with.") + _notes(final, tries, plan)
        text += (f" Its lead over {runner['method']} ({runner['robust_mean']:.3f} ± {runner['robust_std']:.3f}) is "
                 f"{-runner['gap_to_best']:.3f}, which {'exceeds' if runner['exceeds_spread'] else 'does not exceed'} the sum "
                 "of their standard deviations")
        beaten = [r["method"] for r in tickets[1:] if r["exceeds_spread"]]
        within = [r["method"] for r in tickets[1:] if not r["exceeds_spread"]]
        text += "." + (f" The lead also exceeds the spread over {', '.join(beaten)}." if beaten else "") + \
                (f" Within the spread of {best['method']}: {', '.join(within)}." if within else "")
    return text + _notes(final, tries, plan)


def _notes(final, tries, plan) -> str:
    """The verdict's closing sentences: smaller spaces, collapses, the dense reference."""
    text = ""
    smaller = [m for m, t in plan.items() if get_method(m).prunes and len(t) < tries]
    if smaller:
        text += f" Fewer than {tries} tries (the whole space): {', '.join(f'{m} ({len(plan[m])})' for m in smaller)}."
    collapsed = [f"{r['method']} ({r['collapsed']} of {r['seeds']})" for r in final if r["collapsed"]]
    if collapsed:
        text += f" Training collapsed for {', '.join(collapsed)}: their means count chance-level seeds."
    dense = [r for r in final if not get_method(r["method"]).prunes]
    for r in dense:
        text += f" Reference, {r['method']}: {r['robust_mean']:.3f} ± {r['robust_std']:.3f} robust, {r['natural_mean']:.3f} natural."
    return text


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _note(rows) -> str:
    """The tables' attack line: every row's (they are the same unless the recipe changed)."""
    notes = sorted({r["robust_accuracy_attacks"] for r in rows if r.get("robust_accuracy_attacks")})
    return " ".join(notes)


def _write_outputs(out, selection, chosen, final, verdict) -> None:
    fields = ("method", "try", "settings", "seeds", "natural", "robust", "natural_mean", "robust_mean", "collapsed", "chosen")
    write_csv(os.path.join(out, "selection.csv"), fields, selection)
    lines = ["| method | try | settings | validation natural (per seed) | validation robust (per seed) | mean robust | chosen |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in selection:
        if not r["seeds"]:
            lines.append(f"| {r['method']} | 1 | {r['settings']} (nothing to choose: not run on validation) | — | — | — | yes |")
            continue
        per = lambda key: ", ".join(f"{v:.3f}" for v in r[key])  # noqa: E731
        lines.append(f"| {r['method']} | {r['try']} | {r['settings']} | {per('natural')} | {per('robust')} | "
                     f"{r['robust_mean']:.3f} | {'**yes**' if r['chosen'] else ''} |")
    lines += ["", _note(selection)]
    write_markdown(os.path.join(out, "selection.md"), lines)
    fields = ("method", "seeds", "density", "natural_mean", "natural_std", "robust_mean", "robust_std", "gap_to_best",
              "exceeds_spread", "collapsed", "natural", "robust", "cost_mean", "cost_std", "cpu_mean", "passes_mean", "jacobians_mean",
              "evaluate_seconds_mean")
    write_csv(os.path.join(out, "final.csv"), fields, final)
    lines = ["| method | chosen try | seeds | density | natural | robust | robust gap to the best | exceeds the spread | "
             "search + training (s per seed) | search + training (passes per seed) | collapsed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in final:
        gap = "best" if r["best"] else f"{r['gap_to_best']:+.3f}"
        lines.append(f"| {r['method']} | {_describe(chosen[r['method']])} | {r['seeds']} | {r['density']:.4f} | "
                     f"{r['natural_mean']:.3f} ± {r['natural_std']:.3f} | {r['robust_mean']:.3f} ± {r['robust_std']:.3f} | "
                     f"{gap} | {'' if r['best'] else {None: 'one seed', True: 'yes', False: 'no'}[r['exceeds_spread']]} | "
                     f"{r['cost_mean']:.0f} ± {r['cost_std']:.0f} | {_passes(r)} | {r['collapsed']} of {r['seeds']} |")
    lines += ["", _note(final)]
    write_markdown(os.path.join(out, "final.md"), lines)
    write_markdown(os.path.join(out, "verdict.md"), [verdict])
    _plot(out, selection, final)


def _plot(out, selection, final) -> None:
    plt = pyplot()
    fig, (ax_select, ax_final) = plt.subplots(1, 2, figsize=(10, 4))
    colors = {r["method"]: f"C{i % 10}" for i, r in enumerate(final)}
    for r in selection:
        if r["seeds"]:
            ax_select.scatter(r["natural_mean"], r["robust_mean"], color=colors[r["method"]], marker="*" if r["chosen"] else "o",
                              s=160 if r["chosen"] else 30, alpha=1 if r["chosen"] else 0.5)
    for r in final:
        ax_final.errorbar(r["natural_mean"], r["robust_mean"], xerr=r["natural_std"], yerr=r["robust_std"], fmt="o",
                          color=colors[r["method"]], capsize=3, label=r["method"])
    if not any(r["seeds"] for r in selection):  # --tries 1: no panel that looks like an empty tuning
        ax_select.text(0.5, 0.5, "nothing ran on the validation split:\none setting per method, not tuned",
                       ha="center", va="center", transform=ax_select.transAxes)
    ax_select.set_title("validation split: every try (★ chosen), mean over seeds", fontsize=9)
    ax_final.set_title("test split: the chosen tries, mean ± std over seeds", fontsize=9)
    for ax in (ax_select, ax_final):
        ax.set_xlabel("natural accuracy")
        ax.set_ylabel("robust accuracy")
    ax_final.legend(fontsize=7)
    save(fig, os.path.join(out, "robust_vs_natural.png"))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in final:
        ax.errorbar(r["cost_mean"], r["robust_mean"], xerr=r["cost_std"], yerr=r["robust_std"], fmt="o",
                    color=colors[r["method"]], capsize=3, label=r["method"])
    ax.set_xlabel("search + training, wall seconds per seed")
    ax.set_ylabel("robust accuracy (test split)")
    ax.set_title("what each method's robustness costs, mean ± std over seeds", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, os.path.join(out, "robust_vs_cost.png"))
    plt.close(fig)
