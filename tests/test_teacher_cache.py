"""search.teacher_cache (the teacher attacked once per example) and the student's own attack (search.student_steps)."""
import json
import os

import numpy as np
import pytest
import yaml
import tensorflow as tf

import tf_awt
from tf_awt import SearchConfig
from tf_awt.adversarial.attacks import pgd
from tf_awt.checkpoint import epoch_batches
from tf_awt.tickets.search import TicketSearch
from tf_awt.tickets.teacher_cache import TeacherCache
from conftest import ATTACK, _StopAfterSecondEpoch, tf_awt_main, tiny_data, tiny_model, tiny_recipe

SETTINGS = dict(density=0.3, batch_size=16, update_every=2, seed=5, attack=ATTACK)


def _search(epochs, data=None, **changes):
    return tf_awt.find_ticket(tiny_model(), data or tiny_data(), epochs=epochs, **{**SETTINGS, **changes})


def _same_masks(a, b):
    return all(np.array_equal(m, n) for m, n in zip(a.masks.values(), b.masks.values()))


def test_the_cache_holds_the_first_epochs_teacher_inputs_row_by_example():
    x, y = tiny_data()
    model = tiny_model()
    search = TicketSearch(model, SearchConfig.from_settings(SETTINGS))
    cache = TeacherCache.replay(search.teacher, epoch_batches(x, y, 16, 5, 0, 1, with_index=True), 5, ATTACK)
    for step, (xb, yb, index) in enumerate(epoch_batches(x, y, 16, 5, 0, 1, with_index=True)):
        expected = pgd(lambda z: search.teacher(z), xb, yb, ATTACK, seed=tf.constant([10, step], tf.int64))
        cached, logits = cache.lookup(index)
        np.testing.assert_allclose(cached.numpy(), expected.numpy(), atol=1e-6)
        np.testing.assert_allclose(logits.numpy(), search.teacher(expected).numpy(), atol=1e-5)
    assert np.abs(cache.inputs.numpy() - x).max() > 0.05  # attacked, not the clean inputs
    with pytest.raises(ValueError, match="every example once"):
        TeacherCache.replay(search.teacher, epoch_batches(x, y, 16, 5, 0, 2, with_index=True), 5, ATTACK)


def test_a_cached_search_is_the_uncached_one_in_its_first_epoch_and_reuses_the_inputs_after_it():
    one = [_search(1), _search(1, teacher_cache=True)]
    assert _same_masks(*one) and one[0].history == one[1].history
    three = [_search(3), _search(3, teacher_cache=True)]
    steps = len(one[0].history["step"])
    a, b = (t.history["target_distance"] for t in three)
    assert a[:steps] == b[:steps] and a[steps:] != b[steps:]  # later epochs see the first epoch's starts


def test_a_resumed_cached_search_continues_the_uninterrupted_one(tmp_path):
    directory = str(tmp_path / "search")
    whole = _search(3, teacher_cache=True)
    with pytest.raises(KeyboardInterrupt):
        _search(3, teacher_cache=True, checkpoint_dir=directory, callbacks=[_StopAfterSecondEpoch()])
    assert json.load(open(os.path.join(directory, "state.json")))["epoch"] == 2
    resumed = _search(3, teacher_cache=True, checkpoint_dir=directory)
    assert _same_masks(whole, resumed) and whole.history == resumed.history
    with pytest.raises(ValueError, match="belongs to another run"):  # an uncached search does not continue a cached one
        _search(3, checkpoint_dir=directory)


@pytest.mark.parametrize("change", ["data", "seed", "attack"])
def test_the_cache_follows_the_data_the_seed_and_the_attack(change):
    _search(1, teacher_cache=True)  # a cached search of the first setting, in this process
    changes = {"data": dict(data=tiny_data(seed=1)), "seed": dict(seed=6),
               "attack": dict(attack=ATTACK.replace(eps=0.2, step_size=0.1))}[change]
    cached, uncached = _search(1, teacher_cache=True, **changes), _search(1, **changes)
    assert _same_masks(cached, uncached) and cached.history == uncached.history
    assert cached.history != _search(1).history


def test_the_cache_needs_arrays_and_a_boolean():
    x, y = tiny_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(ValueError, match=r"teacher_cache needs the training data as \(x, y\) arrays.*BatchDataset"):
        tf_awt.find_ticket(tiny_model(), dataset, epochs=1, teacher_cache=True, **SETTINGS)
    with pytest.raises(ValueError, match=r"teacher_cache must be true or false. You passed: 'yes'"):
        SearchConfig.from_settings(dict(density=0.3, teacher_cache="yes"))


# ----------------------------------------------------------------------------- the student's attack
def test_the_student_attack_defaults_to_the_search_attack_and_takes_its_own_steps():
    config = SearchConfig(0.3, attack=ATTACK)
    assert config.student_attack == ATTACK
    assert SearchConfig.from_settings(dict(density=0.3, attack=ATTACK, student_steps=1)).student_attack == ATTACK.replace(steps=1, step_size=1.25 * ATTACK.eps)  # FGSM
    fgsm = SearchConfig.from_settings(dict(density=0.3, attack=ATTACK, student_steps=1, student_step_size=0.125)).student_attack
    assert (fgsm.steps, fgsm.step_size, fgsm.random_start, fgsm.eps) == (1, 0.125, True, 0.1)
    assert SearchConfig.from_settings(dict(density=0.3, attack=ATTACK, student_step_size=0.01)).student_attack == ATTACK.replace(step_size=0.01)
    assert SearchConfig.from_settings(dict(density=0.3, method="ntt", attack=ATTACK, student_steps=1)).student_attack.eps == 0.0
    for field, value, allowed in (("student_steps", 0, ">= 1"), ("student_step_size", -0.1, "> 0"), ("student_steps", 1.5, "integer")):
        with pytest.raises(ValueError, match=rf"{field}.*{allowed}.*{value}"):
            SearchConfig.from_settings(dict(density=0.3, **{field: value}))


def test_compare_chooses_awts_student_attack_and_probes_on_the_recipe_it_compares():
    """AWT's space: the teacher's PGD, PGD-3 or FGSM (1.25ε) for the student, K = 1 or 4 (issue 41)."""
    from tf_awt.running.compare import plan_comparison, with_settings
    from tf_awt.running.recipes import load_recipe

    recipe = load_recipe("mnist5k-cnn")
    points = plan_comparison(recipe, ["awt"], tries=10 ** 6)["awt"]
    assert {p["search.student_steps"] for p in points} == {None, 3, 1} and {p["search.probes"] for p in points} == {1, 4}
    attacks = set()
    for p in points[:: len(points) // 24]:
        ticket_recipe = with_settings(recipe, p)
        assert ticket_recipe.search.options.probes == p["search.probes"]
        student = ticket_recipe.search.student_attack
        attacks.add((student.steps, round(student.effective_step_size / student.eps, 6)))
    assert attacks == {(10, 0.25), (3, round(2.5 / 3, 6)), (1, 1.25)}, attacks


def test_the_student_attack_changes_the_search_and_its_default_is_the_teacher_attack():
    base = _search(1)
    assert _search(1, student_steps=ATTACK.steps, student_step_size=ATTACK.step_size).history == base.history
    assert _search(1, student_steps=1, student_step_size=0.125).history != base.history


def test_tf_awt_run_takes_the_cache_and_the_student_attack_as_recipe_keys(tmp_path, capsys):
    out = tmp_path / "o"
    proc = tf_awt_main(capsys, "run", tiny_recipe(tmp_path, search={"epochs": 2, "update_every": 2, "batch_size": 32}),
                       "--set", "search.teacher_cache=true", "--set", "search.student_steps=1", "--out", out, "--quiet", "--no-mlflow")
    assert proc.returncode == 0, proc.stderr
    search = yaml.safe_load(open(out / "recipe.yaml"))["search"]  # the resolved recipe the run ran
    assert search["teacher_cache"] is True and search["student_steps"] == 1
    proc = tf_awt_main(capsys, "run", tiny_recipe(tmp_path), "--set", "search.student_steps=0", "--out", tmp_path / "bad")
    assert proc.returncode == 2 and "student_steps" in proc.stderr and "Traceback" not in proc.stderr
