"""``tf-awt``: the command line.

    tf-awt run [RECIPE] [--set KEY=VALUE ...] [--out DIR] [--quiet] [--no-mlflow] [--register-as NAME | --no-register] [--force] [--debug]
    tf-awt search|train|evaluate|export --out DIR [RECIPE] [--set ...]
    tf-awt evaluate --model DIR/saved_model (--dataset NAME | --data FILE.npz) [--norm linf --eps 0.3
                    --steps 100 --restarts 5] [--json OUT]
    tf-awt sweep RECIPE --densities 0.01,0.05 --methods awt,random [--seeds 3] [--out DIR] [--workers N | --address ADDR]
    tf-awt compare RECIPE --methods awt,snip,magnitude,dense [--density D] [--tries 4] [--select-seeds 2] [--seeds 3]
                   [--space METHOD:KEY=V1,V2 ...] [--out DIR] [--workers N | --address ADDR]
    tf-awt graft RUN_DIR [--examples 500] [--no-mlflow]
    tf-awt recipes

Errors are one line on stderr (what was wrong, what is allowed) with exit code 2; ``--debug``
shows the traceback.

TensorFlow is imported only inside the functions that need it, after the recipe is checked and the
output directory locked: a bad command fails in 0.1–0.2 s.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import traceback
from typing import Optional

from tf_awt.errors import CheckpointError, DirectoryBusy, TrainingCollapsed

EXIT_COLLAPSED = 3
"""``tf-awt run``'s exit code when training collapsed and the recipe sets ``train.fail_on_collapse``."""

EXIT_USAGE = 2


class _Progress:
    """Builds a Keras callback drawing one tqdm bar per phase (ETA + live metrics), or log lines."""

    def __init__(self, quiet: bool):
        # a bar redrawn into a file is hundreds of lines of log: log lines when stderr is not a terminal
        self.quiet = quiet or not sys.stderr.isatty()

    def __call__(self, phase: str, total_steps: int):
        import tf_keras

        quiet = self.quiet

        class Bar(tf_keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.bar = None
                if not quiet:
                    from tqdm.auto import tqdm

                    self.bar = tqdm(total=total_steps, desc=phase, unit="step", dynamic_ncols=True, file=sys.stderr)

            def on_train_batch_end(self, batch, logs=None):
                if self.bar is not None:
                    self.bar.update(1)
                    self.bar.set_postfix({k: f"{v:.4g}" for k, v in (logs or {}).items() if k != "loss" or phase == "search"}, refresh=False)

            def on_epoch_end(self, epoch, logs=None):
                if quiet:
                    shown = ", ".join(f"{k} {v:.4g}" for k, v in (logs or {}).items())
                    print(f"{phase} epoch {epoch + 1}: {shown}", file=sys.stderr, flush=True)

            def on_train_end(self, logs=None):
                if self.bar is not None:
                    self.bar.close()

        return Bar()

    def attacks(self, label: str, total: int):
        """The evaluation's progress for one attack suite (``evaluate(progress=)``): a tqdm bar with
        an ETA on a terminal, else a line as it starts and one when it ends (with its seconds)."""
        if not self.quiet:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=f"evaluate {label}", unit="example", dynamic_ncols=True, file=sys.stderr)
        return _AttackLines(label)


class _AttackLines:
    """tqdm's ``update``/``close`` as two log lines: ``evaluate: LABEL ...`` and ``... done (N s)``."""

    def __init__(self, label: str):
        import time

        self.label, self.start, self.clock = label, time.time(), time.time
        print(f"evaluate: {label} ...", file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        print(f"evaluate: {self.label} done ({self.clock() - self.start:.0f} s)", file=sys.stderr, flush=True)


def _recipe_args(sp, out_required, out_default="runs/<recipe name>"):
    """The arguments every command that reads a recipe takes."""
    sp.add_argument("recipe", nargs="?", default="quickstart", help="bundled recipe name or YAML path (default: quickstart)")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key, e.g. --set attack.eps=0.1 (repeatable)")
    sp.add_argument("--out", required=out_required, default=None,
                    help="output directory" + ("" if out_required else f" (default: {out_default})"))
    sp.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    sp.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    sp.add_argument("--force", action="store_true",
                    help="discard what --out holds (a finished or interrupted run) and start over")
    sp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    sp.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    return sp


def _run_commands(sub):
    run = sub.add_parser("run", help="search -> adversarial training -> evaluation -> export")
    _recipe_args(run, out_required=False)
    run.add_argument("--no-mlflow", action="store_true", help="do not track the run in MLflow")
    run.add_argument("--register-as", metavar="NAME",
                     help="register the model in MLflow's model registry under NAME (default: tf_awt-RECIPE)")
    run.add_argument("--no-register", action="store_true", help="log the model in MLflow without registering it")
    for name, text in (("search", "find the ticket (writes ticket.npz)"), ("train", "adversarially train the ticket"),
                       ("export", "export the sparse SavedModel")):
        phase = _recipe_args(sub.add_parser(name, help=text), out_required=True)
        if name == "train":
            _dense_from_arg(phase)
    _dense_from_arg(run)


def _dense_from_arg(parser):
    parser.add_argument("--dense-from", metavar="RUN_DIR",
                        help="with train.dense_reference: copy RUN_DIR's dense reference instead of training it again "
                             "(it depends on no method or density: RUN_DIR must have the same data, model, init, seed, "
                             "attack and train settings, and the same θ0; checked)")


def _evaluate_command(sub):
    ev = sub.add_parser("evaluate", help="natural and robust accuracy of a run's model or of any SavedModel")
    _recipe_args(ev, out_required=False)
    ev.add_argument("--model", help="an exported SavedModel directory (instead of --out DIR)")
    ev.add_argument("--dataset", help="a tf_awt.data name (with --model)")
    ev.add_argument("--data", help="an .npz with x (N,H,W,C) in [0,1] and integer y (with --model)")
    ev.add_argument("--attacks", default="pgd,autoattack",
                    help="comma-separated attack suites, run in order; robust accuracy is the per-example worst case "
                         "(default pgd,autoattack: PGD, then the standard AutoAttack's APGD-CE, APGD-T, FAB-T and Square; "
                         "pgd alone is the paper's PGD-only figure; also apgd-ce, apgd-t, fab-t, square, art-autoattack)")
    ev.add_argument("--square-queries", type=int, default=5000, help="the Square attack's queries per example (default 5000)")
    ev.add_argument("--square-examples", type=int, default=None,
                    help="run Square on the first N examples only (default: all); the output says so")
    ev.add_argument("--norm", default=None, choices=["linf", "l2"],
                    help="the attack's norm (default: the run's recipe's attack.norm when --model is a run's saved_model, else linf)")
    ev.add_argument("--eps", type=float, default=None,
                    help="the attack's budget ε (default: the run's recipe's attack.eps when --model is a run's saved_model, "
                         "else 0.3); L∞: at most the data range")
    ev.add_argument("--steps", type=int, default=100, help="PGD steps (default 100; step size 2.5·ε/steps)")
    ev.add_argument("--restarts", type=int, default=5, help="PGD random restarts, worst case counted (default 5)")
    ev.add_argument("--max-examples", type=int, default=None, help="evaluate the first N test examples only")
    ev.add_argument("--json", dest="json_out", help="write the result as JSON here")


def _grid_commands(sub):
    sw = sub.add_parser("sweep", help="a resumable grid of runs: methods x densities x seeds")
    _recipe_args(sw, out_required=False, out_default="runs/sweep-<recipe name>")
    sw.add_argument("--densities", required=True, help="comma-separated, e.g. 0.01,0.02,0.05")
    sw.add_argument("--methods", default="awt,random,magnitude,snip,dense", help="comma-separated methods")
    sw.add_argument("--seeds", type=int, default=1)
    cp = sub.add_parser("compare", help="every method tuned with the same budget on a validation split, then the "
                                        "chosen settings once on the test split")
    _recipe_args(cp, out_required=False, out_default="runs/compare-<recipe name>")
    cp.add_argument("--methods", default="awt,cosentino,snip,magnitude,random,dense",
                    help="comma-separated methods (default awt,cosentino,snip,magnitude,random,dense)")
    cp.add_argument("--density", type=float, default=None, help="fraction of weights kept (default: the recipe's)")
    cp.add_argument("--tries", type=int, default=4, help="settings tried per method, on the validation split (default 4)")
    cp.add_argument("--select-seeds", type=int, default=2, help="seeds per try on the validation split (default 2)")
    cp.add_argument("--seeds", type=int, default=3, help="seeds of each chosen setting on the test split (default 3)")
    cp.add_argument("--space", action="append", default=[], metavar="METHOD:KEY=V1,V2",
                    help="a knob of METHOD's search space (repeatable); a method given any --space has exactly the grid "
                         "of its --space knobs instead of its declared space")
    cp.add_argument("--space-seed", type=int, default=0, help="draws the tries from a space larger than --tries (default 0)")
    cp.add_argument("--select-examples", type=int, default=None, metavar="N",
                    help="evaluate each try on the first N validation examples (default: all); the test split as the recipe says")
    for sp in (sw, cp):
        sp.add_argument("--no-mlflow", action="store_true", help=f"do not track the {sp.prog.split()[-1]} in MLflow")
        sp.add_argument("--workers", type=int, default=1,
                        help="cells run at once as Ray tasks on a local Ray instance (default 1: one after another, no Ray)")
        sp.add_argument("--address", default=None,
                        help="run the cells on this existing Ray cluster (default: RAY_ADDRESS if set; see docs/distributed.md)")


def _parser():
    p = argparse.ArgumentParser(prog="tf-awt", description="Adversarial Winning Tickets: search, adversarial training, evaluation, export.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines (hidden by default)")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_run_commands, _evaluate_command, _grid_commands):
        add(sub)
    gr = sub.add_parser("graft", help="graft a run's ticket and dense reference at every epoch and layer (train.dense_reference)")
    gr.add_argument("run_dir", help="a run directory made with --set train.dense_reference=true")
    gr.add_argument("--examples", type=int, default=500, help="the first N examples of the run's evaluation split (default 500)")
    gr.add_argument("--no-mlflow", action="store_true", help="do not log the graft to the run's MLflow run")
    gr.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("recipes", help="list the bundled recipes")
    return p


def _evaluate_inputs(args):
    """``evaluate --model``'s arguments and data, checked before TensorFlow loads (a mistake is
    answered in well under a second): (x, y, split, EvalConfig)."""
    import numpy as np

    from tf_awt import data as data_mod
    from tf_awt.running.run_inputs import check_eps_in_range

    if (args.dataset is None) == (args.data is None):
        raise ValueError("evaluate --model needs exactly one of --dataset NAME or --data FILE.npz")
    config = _eval_config(args)
    if not os.path.isfile(os.path.join(args.model, "saved_model.pb")):
        raise ValueError(f"--model {args.model} is not a SavedModel directory (no saved_model.pb in it)")
    _attack_defaults(args)
    split = data_mod.load(args.data or args.dataset, getattr(args, "data_dir", None))
    check_eps_in_range(args.eps, args.norm, split, "--eps")
    x = np.concatenate([split.x_train, split.x_test]) if args.data else split.x_test
    y = np.concatenate([split.y_train, split.y_test]) if args.data else split.y_test
    if args.max_examples:
        x, y = x[: args.max_examples], y[: args.max_examples]
    return x, y, split, config


def _evaluate_saved_model(args):
    x, y, split, config = _evaluate_inputs(args)
    _import_tensorflow(args.verbose)
    import tensorflow as tf

    from tf_awt.adversarial.evaluation import evaluation_attack
    from tf_awt._files import atomic_write_json
    from tf_awt.running.report import evaluate_quietly, warning_line

    try:
        loaded = tf.saved_model.load(args.model)
    except Exception as err:  # TensorFlow's wording (MetaGraphs, tags=) says nothing to a user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--model {args.model} is not a readable SavedModel ({first[:200]})") from None
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"{args.model} has no serving_default signature")
    fn = loaded.signatures["serving_default"]
    spec = list(fn.structured_input_signature[1].values())[0]
    out_spec = list(fn.structured_outputs.values())[0]
    from tf_awt._validate import check_arrays

    check_arrays(x, y, args.data or args.dataset, input_shape=tuple(spec.shape[1:]),
                 num_classes=out_spec.shape[-1], clip_min=split.clip_min, clip_max=split.clip_max)
    key = list(fn.structured_input_signature[1])[0]

    import tf_keras

    class Wrapped(tf_keras.Model):
        def call(self, inputs, training=False):
            return list(fn(**{key: inputs}).values())[0]

    model = Wrapped(name=os.path.basename(os.path.normpath(args.model)))
    attack = evaluation_attack(args.eps, args.norm, args.steps).replace(clip_min=split.clip_min, clip_max=split.clip_max)
    result = evaluate_quietly(model, (x, y), attack=attack, config=config, progress=_Progress(args.quiet).attacks)
    out = result.to_dict()
    echo = {"norm": args.norm, "eps": args.eps, "steps": args.steps, "restarts": args.restarts,
            "attacks": list(config.attacks), "robust_accuracy_attacks": result.attack_label}
    print(f"natural accuracy {out['natural_accuracy']:.4f}, robust accuracy {out['robust_accuracy']:.4f} "
          f"({result.attack_label}; {args.norm} ε = {args.eps:g}, "
          f"{out['num_examples']} examples{'; ε and norm from ' + args.attack_source if args.attack_source else ''})",
          file=sys.stderr)
    for message in result.warnings:
        print(warning_line(message), file=sys.stderr)
    print(json.dumps({"natural_accuracy": out["natural_accuracy"], "robust_accuracy": out["robust_accuracy"],
                      "suites": out["suites"], "broken_by": out["broken_by"], "num_examples": out["num_examples"],
                      "attack": echo, "warnings": out["warnings"]}))
    if args.json_out:
        atomic_write_json(args.json_out, out)


def _eval_config(args):
    """``evaluate --model``'s suites and budgets as an EvalConfig (checked before TensorFlow loads)."""
    from tf_awt.adversarial.phase_config import EvalConfig

    try:
        return EvalConfig(attacks=args.attacks, restarts=args.restarts, steps=args.steps, square_queries=args.square_queries,
                          square_examples=args.square_examples)
    except ValueError as err:
        text = str(err)
        for field in ("attacks", "restarts", "steps", "square_queries", "square_examples"):
            if text.startswith(field + " "):
                text = "--" + field.replace("_", "-") + text[len(field):]
        raise ValueError(text) from None


def _attack_defaults(args) -> None:
    """``--eps``/``--norm`` not given: the run's own attack when ``--model`` is ``<run>/saved_model``
    (its ``recipe.yaml`` beside it), else L∞ ε = 0.3. Sets ``args.attack_source`` (the recipe's path or "")."""
    args.attack_source = ""
    recipe_path = os.path.join(os.path.dirname(os.path.normpath(args.model)), "recipe.yaml")
    if (args.eps is None or args.norm is None) and os.path.isfile(recipe_path):
        from tf_awt.running.recipes import load_recipe

        attack = load_recipe(recipe_path).attack
        args.eps = attack.eps if args.eps is None else args.eps
        args.norm = attack.norm if args.norm is None else args.norm
        args.attack_source = recipe_path
    args.eps = 0.3 if args.eps is None else args.eps
    args.norm = "linf" if args.norm is None else args.norm


def _spaces(items):
    """``--space METHOD:KEY=V1,V2`` (repeatable) -> {method: {key: [values]}}; values are YAML scalars."""
    from tf_awt.running.recipes import _load_yaml

    spaces = {}
    for item in items:
        method, _, knob = item.partition(":")
        key, _, values = knob.partition("=")
        if not (method.strip() and key.strip() and values.strip()):
            raise ValueError(f"--space takes METHOD:KEY=V1,V2 (e.g. awt:search.epochs=2,20). You passed: {item!r}")
        spaces.setdefault(method.strip(), {})[key.strip()] = [_load_yaml(v.strip()) for v in values.split(",")]
    return spaces


def _registered_name(args) -> str:
    """``--register-as NAME``, else ``tf_awt-<recipe stem>``; checked like MLflow's own names."""
    name = args.register_as if args.register_as is not None else f"tf_awt-{_recipe_stem(args.recipe)}"
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"--register-as takes a model name of letters, digits, '-', '_' and '.'. You passed: {name!r}")
    return name


def _recipe_stem(recipe: str) -> str:
    """``quickstart`` -> ``quickstart``; ``path/to/my.yaml`` -> ``my``."""
    base = os.path.basename(recipe)
    return base.rsplit(".", 1)[0] if base.endswith((".yaml", ".yml")) else base


def _main(argv):
    args = _parser().parse_args(argv)
    args.verbose = "--verbose" in argv  # global or after the command (a subparser's default would hide the global flag)
    if args.command == "recipes":
        from tf_awt.running.recipes import bundled_recipes

        for name, text in bundled_recipes().items():
            print(f"{name:16s} {text}")
        return 0
    if args.command == "evaluate" and args.model:
        _evaluate_saved_model(args)
        return 0
    if args.command == "graft":
        return _graft(args)
    from tf_awt.running.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)  # checked before TensorFlow loads: a bad recipe fails at once
    if args.command == "run" and not args.out:
        args.out = os.path.join("runs", _recipe_stem(args.recipe))
    if args.command == "evaluate" and not args.out:
        raise ValueError("evaluate needs --out DIR (a run) or --model DIR/saved_model")
    if getattr(args, "dense_from", None) is not None:
        from tf_awt.running.grafts import check_dense_source

        check_dense_source(recipe, args.dense_from)  # before anything is written
    densities = None
    if args.command == "sweep":
        try:
            densities = [float(d) for d in args.densities.split(",") if d.strip()]
        except ValueError:
            raise ValueError(f"--densities takes comma-separated numbers. You passed: {args.densities!r}") from None
        args.out = args.out or os.path.join("runs", f"sweep-{_recipe_stem(args.recipe)}")
    if args.command == "compare":
        from tf_awt.running.compare import plan_comparison

        args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        args.spaces = _spaces(args.space)
        plan_comparison(recipe, args.methods, args.density, args.tries, args.spaces, args.space_seed)  # before TensorFlow
        if args.select_examples is not None:
            from tf_awt._validate import integer

            integer(args.select_examples, "--select-examples", low=1)
        args.out = args.out or os.path.join("runs", f"compare-{_recipe_stem(args.recipe)}")
    if args.command in ("sweep", "compare"):
        from tf_awt.running.cells import check_parallel

        check_parallel(args.workers, args.address)  # a missing Ray is one line, before anything is written
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    from tf_awt._files import DirectoryLock

    with DirectoryLock(args.out) as lock:  # before TensorFlow loads: a busy directory is refused at once
        if lock.took_over:
            log(f"{args.out}: took over the lock of a process that no longer runs (pid {lock.took_over})")
        try:
            _import_tensorflow(args.verbose)
            return _dispatch(args, recipe, densities, log)
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: said once the lock is released (main)
            stop.tf_awt_line = _stopped_line(stop, args.out, argv)
            raise


class _Stopped(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill), raised where the program is, as Ctrl-C raises KeyboardInterrupt."""


def _raise_stopped(signum, frame):
    raise _Stopped()


@contextlib.contextmanager
def _sigterm_stops():
    """SIGTERM stops a command as Ctrl-C does (the lock released, finished files kept, one line said);
    the previous handler is back afterwards. Only the main thread can set a handler: elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _graft(args) -> int:
    """``tf-awt graft RUN_DIR``: the table, the heat map and the mean increase (:func:`tf_awt.running.grafts.graft`),
    logged to the run's own MLflow run when it was tracked (the store is reached before any grafting)."""
    from tf_awt._files import DirectoryLock
    from tf_awt._validate import integer

    integer(args.examples, "--examples", low=1)
    if not os.path.isfile(os.path.join(args.run_dir, "recipe.yaml")):
        raise ValueError(f"{args.run_dir} is not a run directory (no recipe.yaml)")
    from tf_awt.running.run_directory import RunDirectory

    run_id = None if args.no_mlflow else RunDirectory(args.run_dir, None).saved_state().get("mlflow_run_id")
    with DirectoryLock(args.run_dir):
        _import_tensorflow(args.verbose)
        from tf_awt.running.grafts import graft, log_graft
        from tf_awt.running.recipes import load_recipe
        from tf_awt.running.tracking import Tracker

        tracker = Tracker() if run_id else None
        try:
            if tracker:  # a store that does not know the run is one line before the work, not after it
                tracker.start(load_recipe(os.path.join(args.run_dir, "recipe.yaml")), run_id=run_id,
                              otherwise="--no-mlflow to write the files only")
            result = graft(args.run_dir, args.examples, log=lambda msg: print(msg, file=sys.stderr, flush=True))
            if tracker:
                log_graft(tracker, args.run_dir, result)
        finally:
            if tracker:
                tracker.end_all()
    print(f"mean error increase of a graft: natural {result['mean_natural_increase']:+.4f}, adversarial "
          f"{result['mean_adversarial_increase']:+.4f} ({len(result['epochs'])} epochs, {result['examples']} examples); "
          f"above the worse network: natural {result['mean_natural_above_worse']:+.4f}, adversarial "
          f"{result['mean_adversarial_above_worse']:+.4f} -> {args.run_dir}/ (graft.csv, graft.json, graft.png)"
          + (f"; logged to MLflow run {run_id}" if run_id else ""))
    return 0


def _stopped_line(stop, out: str, argv) -> str:
    """``tf-awt: stopped (SIGTERM); kept in DIR: ticket.npz (search), ...; resume: tf-awt run ...``."""
    import shlex

    from tf_awt.running.run_directory import kept

    how = "SIGTERM" if isinstance(stop, _Stopped) else "interrupted"
    again = shlex.join(["tf-awt", *(a for a in argv if a != "--force")])  # --force would discard what was kept
    return f"tf-awt: stopped ({how}); kept in {out}: {kept(out)}; resume with: {again}"


def _dispatch(args, recipe, densities, log) -> int:
    """The command, with TensorFlow loaded and ``args.out`` locked."""
    from tf_awt.running.pipeline import Run
    from tf_awt._distribute import is_chief

    tracker = None
    if args.command == "run" and not args.no_mlflow and is_chief():  # multi-worker: the chief tracks
        from tf_awt.running.tracking import Tracker

        tracker = Tracker(register=None if args.no_register else _registered_name(args))
    run = Run(recipe, args.out, recipe_name=args.recipe, data_dir=args.data_dir, progress=_Progress(args.quiet),
              tracker=tracker, log=log, force=args.force, dense_from=getattr(args, "dense_from", None))
    if args.command == "sweep":
        from tf_awt.running.sweep import sweep

        rows = sweep(recipe, args.out, [m.strip() for m in args.methods.split(",") if m.strip()], densities, args.seeds,
                     recipe_name=args.recipe, data_dir=args.data_dir, progress=_Progress(args.quiet),
                     track=not args.no_mlflow, log=log, force=args.force, workers=args.workers, address=args.address,
                     verbose=args.verbose)
        with open(os.path.join(args.out, "sweep.md"), encoding="utf-8") as fh:
            print(fh.read() + f"{len(rows)} cells -> {os.path.join(args.out, 'sweep.csv')}")
    elif args.command == "compare":
        from tf_awt.running.compare import compare

        result = compare(recipe, args.out, args.methods, args.density, args.tries, args.select_seeds, args.seeds,
                         args.spaces, args.space_seed, recipe_name=args.recipe, data_dir=args.data_dir,
                         progress=_Progress(args.quiet), track=not args.no_mlflow, log=log, workers=args.workers,
                         address=args.address, verbose=args.verbose, force=args.force,
                         select_examples=args.select_examples)
        with open(os.path.join(args.out, "final.md"), encoding="utf-8") as fh:
            print(fh.read() + "\n" + result.verdict + "\n")
        print(f"tables, plot, verdict -> {args.out}/ (selection.md, final.md, robust_vs_natural.png, verdict.md)")
    elif args.command == "run":
        summary = run.all()
        print(f"natural_accuracy {summary['natural_accuracy']:.4f}  robust_accuracy {summary['robust_accuracy']:.4f} "
              f"({summary.get('robust_accuracy_attacks', 'PGD-only')})  density {summary['density']:.4f}  -> {os.path.join(args.out, 'summary.json')}")
        if not args.quiet:
            print(closing_block(summary, args.out, recipe, num_classes=run.inputs.split.num_classes, ui_url=_run_page(tracker, summary.get("mlflow_run_id"))))
    else:
        if args.command == "search":
            run.inputs.split  # the data load first: a bad data set leaves nothing behind
            run.directory.write_recipe()
        run.phase(args.command)
    return 0


def _run_page(tracker, run_id: Optional[str] = None) -> Optional[str]:
    """The run's page in ``mlflow ui`` (default address), in the UI's "Model training" mode: MLflow 3
    opens in its GenAI mode otherwise, whatever the experiment's kind (docs/screenshots/). ``run_id``
    (summary.json's) when the tracker started none: a rerun on a finished directory."""
    run_id = (tracker.run_id if tracker is not None else None) or run_id
    if not run_id:
        return None
    try:
        import mlflow

        experiment = mlflow.get_run(run_id).info.experiment_id
    except Exception:  # the store went away: the block still prints
        return None
    return f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"


def closing_block(summary: dict, out: str, recipe, num_classes=None, ui_url=None) -> str:
    """What to look at and run next after ``tf-awt run``: the headline against chance, the plots, the
    MLflow run and model, and the exact commands (``mlflow ui``, ``mlflow models serve``, AutoAttack)."""
    lines = [""]
    against = f" (chance {1 / num_classes:.3f})" if num_classes else ""
    lines.append(f"ticket: {summary.get('method', recipe.method)} at density {summary['density']:.4f}, "
                 f"natural {summary['natural_accuracy']:.4f}, robust {summary['robust_accuracy']:.4f} "
                 f"at {recipe.attack.norm} eps {recipe.attack.eps:g}{against}")
    if summary.get("robust_accuracy_attacks"):
        lines.append(f"robust accuracy = {summary['robust_accuracy_attacks']}"
                     + "".join(f"; after {k} {v:.4f}" for k, v in summary.get("suites", {}).items()))
    for message in summary.get("sanity_warnings") or []:
        lines.append(f"warning: {message}")
    if summary.get("collapsed"):
        lines.append("warning: training collapsed (see the warning above for what to try)"
                     + ("; its model is logged on the run but not registered" if summary.get("model_uri") else ""))
    plots = sorted(f for f in os.listdir(out) if f.endswith(".png")) if os.path.isdir(out) else []
    if plots:
        lines.append(f"plots:   {', '.join(os.path.join(out, p) for p in plots)}")
    if summary.get("mlflow_run_id"):
        lines.append(f"mlflow:  run {summary['mlflow_run_id']}" + (f", model {summary['model_uri']}" if summary.get("model_uri") else "")
                     + (f", registered as {summary['registered_model']}" if summary.get("registered_model") else ""))
    lines.append("next:")
    if summary.get("mlflow_run_id"):
        lines.append(f"  mlflow ui                      # from this directory, then open {ui_url or 'http://127.0.0.1:5000'}")
    if summary.get("registered_model"):
        lines.append(f"  mlflow models serve -m {summary['registered_model']} --env-manager local -p 5001")
    if summary.get("saved_model"):
        command, same = _evaluate_again(recipe, out)
        seconds = summary.get("phase_seconds", {}).get("evaluate")
        took = f"  # the run's evaluation again: {seconds:.0f} s here" if same and seconds is not None else ""
        lines.append(f"  {command}{took}")
    return "\n".join(lines)


def _evaluate_again(recipe, out: str):
    """(the ``tf-awt evaluate --model`` command that repeats the run's evaluation, whether it does):
    the recipe's non-default suites and budgets as flags (ε and norm come from the run's recipe.yaml);
    an ``apgd_iterations``, ``fab_iterations`` or ``split`` the flags cannot give makes it another evaluation."""
    from tf_awt.adversarial.phase_config import EvalConfig

    e, default = recipe.eval, EvalConfig()
    flags = [f"--{name.replace('_', '-')} {','.join(value) if isinstance(value, tuple) else value}"
             for name in ("attacks", "steps", "restarts", "square_queries", "square_examples", "max_examples")
             for value in [getattr(e, name)] if value != getattr(default, name)]
    same = e.apgd_iterations == default.apgd_iterations and e.fab_iterations == default.fab_iterations and e.split == default.split
    return " ".join([f"tf-awt evaluate --model {os.path.join(out, 'saved_model')} --dataset {recipe.dataset}", *flags]), same


def _quiet_tensorflow(verbose: bool) -> None:
    """TensorFlow's C++ logs (oneDNN, CUDA probing, ...) and MLflow's INFO lines (a new store's table
    creation, "Creating a new experiment") off unless ``--verbose``; set before either is imported."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def _import_tensorflow(verbose: bool) -> None:
    """Imports TensorFlow, tf_keras and tfmot; unless ``verbose``, without their log lines (:func:`tf_awt.quiet`)."""
    if verbose:
        import importlib

        for name in ("tensorflow", "tf_keras", "tensorflow_model_optimization"):
            importlib.import_module(name)
        return
    from tf_awt.running.logs import quiet

    quiet()


_WRAPPERS = ("in user code", "Exception encountered when calling", "Graph execution error")
_NOISE = ("File ", "[[", "Call arguments received", "•", "Detected at node", "in user code")


def _cause_line(text: str):
    """The line of an error message that says what went wrong (None if it is empty)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    if not lines[0].startswith(_WRAPPERS):
        return lines[0]
    raised = [line for line in lines[1:] if re.match(r"^[\w.]*(Error|Exception)\b[^:]*: ", line)]
    if raised:
        return raised[-1]
    rest = [line for line in lines[1:] if not line.startswith(_NOISE)]
    return rest[-1] if rest else None


def error_message(err: BaseException) -> str:
    """One line saying what went wrong: the real cause, not Keras' "in user code:" preamble.

    Errors raised inside ``fit`` or a layer's ``call`` carry the traced function's traceback in
    their message ("in user code: File ..., line ...", "Exception encountered when calling
    layer ...", "Graph execution error: Detected at node ..."), with the actual error further
    down; the chained causes (``raise ... from``) are looked at too.
    """
    seen = set()
    current = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        line = _cause_line(str(current))
        if line:
            return line
        current = current.__cause__ or current.__context__
    return type(err).__name__


def _what_to_do(err: BaseException) -> str:
    """The command line's advice for a library error that names none (its options are the CLI's)."""
    if isinstance(err, CheckpointError):
        return (". Use another --out directory, or rerun with --force to discard it." if err.other_run else
                ", or rerun with --force.")
    if isinstance(err, DirectoryBusy):
        return ", or use another --out directory."
    return ""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    verbose = "--verbose" in argv
    _quiet_tensorflow(verbose)
    try:
        with _sigterm_stops():
            return _main(argv)
    except KeyboardInterrupt as stop:
        print(getattr(stop, "tf_awt_line", "tf-awt: interrupted"), file=sys.stderr)
        return 143 if isinstance(stop, _Stopped) else 130
    except TrainingCollapsed as err:
        print(f"tf-awt: error: {err}", file=sys.stderr)
        return EXIT_COLLAPSED
    except (ValueError, FileNotFoundError, ImportError) as err:
        if debug:
            traceback.print_exc()
        print(f"tf-awt: error: {error_message(err)}{_what_to_do(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # anything unexpected: still one line unless --debug
        if debug:
            traceback.print_exc()
        print(f"tf-awt: error: {type(err).__name__}: {error_message(err)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
