"""SearchSpace: what a method tunes, and the tries an equal budget draws from it."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tf_awt
from tf_awt.tickets.search_space import SearchSpace
from tf_awt.tickets.methods import get_method

KNOBS = st.dictionaries(st.sampled_from(["init", "search.scope", "search.epochs", "search.rounds"]),
                        st.lists(st.one_of(st.integers(0, 50), st.sampled_from(["a", "b", "c"]), st.none()),
                                 min_size=1, max_size=4, unique=True), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(knobs=KNOBS, count=st.integers(1, 30), seed=st.integers(0, 5))
def test_tries_are_distinct_points_of_the_space_drawn_reproducibly(knobs, count, seed):
    space = SearchSpace.grid(knobs)
    size = 1
    for values in knobs.values():
        size *= len(values)
    assert len(space) == size
    tries = space.tries(count, seed)
    assert len(tries) == min(count, size)
    points = [dict(p) for p in space.points]
    assert all(t in points for t in tries)
    assert len({json.dumps(t, sort_keys=True) for t in tries}) == len(tries)
    assert [points.index(t) for t in tries] == sorted(points.index(t) for t in tries)  # in the space's order
    assert space.tries(count, seed) == tries
    assert SearchSpace.from_config(json.loads(json.dumps(space.get_config()))) == space


def test_a_draw_is_uniform_over_the_points():
    space = SearchSpace.grid({"search.epochs": list(range(10))})
    counts = [0] * 10
    for seed in range(2000):
        for t in space.tries(3, seed):
            counts[t["search.epochs"]] += 1
    assert all(abs(c / 2000 - 0.3) < 0.04 for c in counts), counts  # 3 of 10 each: p = 0.3, std 0.01


def test_an_empty_space_is_one_try_with_the_recipes_settings():
    assert SearchSpace().tries(4) == [{}]
    assert get_method("dense").space == SearchSpace()


@pytest.mark.parametrize("make, message", [
    (lambda: SearchSpace.grid({"search.epochs": []}), "knob 'search.epochs' needs a non-empty list of values. You passed: []"),
    (lambda: SearchSpace.grid({"search.epochs": "25"}), "needs a non-empty list of values. You passed: '25'"),
    (lambda: SearchSpace([{"a.b.c": 1}]), "at most one dot). You passed: 'a.b.c'"),
    (lambda: SearchSpace([{"init": [1, 2]}]), "values are numbers, strings, booleans or null. You passed: init=[1, 2]"),
    (lambda: SearchSpace([{"init": "x"}, {"init": "x"}]), "point 1 repeats an earlier point: {'init': 'x'}"),
    (lambda: SearchSpace("init=x"), "points must be a list of mappings"),
    (lambda: SearchSpace([{"init": "x"}]).tries(0), "count (tries) must be an integer >= 1. You passed: 0"),
])
def test_bad_spaces_are_refused_with_what_is_allowed(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


def test_a_registered_method_declares_its_space_as_a_grid(tmp_path):
    from tf_awt.tickets import methods

    try:
        method = tf_awt.register_method("mine", lambda *a: None, space={"search.scope": ("global", "erk")})
        assert [dict(p) for p in method.space.points] == [{"search.scope": "global"}, {"search.scope": "erk"}]
    finally:
        methods._REGISTRY.pop("mine", None)
