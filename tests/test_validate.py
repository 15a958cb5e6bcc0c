"""The data contract (tf_awt._validate) at every API entry point: bad data is refused with the first bad
entry named, datasets are checked as they are read, NumPy scalars are numbers, a corrupt file is named."""
import json

import numpy as np
import pytest
import tensorflow as tf

import tf_awt

from conftest import BAD_DATA, bad_data, good_data, small_mlp
from tf_awt.adversarial.training import AdversarialTrainer
from tf_awt.tickets.pruning_schedule import AWTSchedule


@pytest.mark.parametrize("case,message", BAD_DATA)
def test_every_api_entry_point_refuses_bad_data(case, message):
    model = small_mlp()
    data = bad_data(case)
    attack = tf_awt.Attack(eps=0.1, steps=1, step_size=0.1)
    with pytest.raises(ValueError, match=message):
        tf_awt.find_ticket(model, data, density=0.5, method="magnitude", attack=attack)
    with pytest.raises(ValueError, match=message):
        tf_awt.find_ticket(model, data, density=0.5, method="awt", attack=attack, epochs=1)
    with pytest.raises(ValueError, match=message):
        tf_awt.adversarial_fit(model, data, attack=attack, epochs=1)
    with pytest.raises(ValueError, match=message):
        tf_awt.adversarial_fit(model, good_data(), validation=data, attack=attack, epochs=1)
    with pytest.raises(ValueError, match=message):
        tf_awt.evaluate(model, data, attack=attack, config=tf_awt.EvalConfig(restarts=1))


@pytest.mark.parametrize("case", ["nan", "label_high", "range"])
def test_datasets_are_checked_as_they_are_read(case):
    model = small_mlp()
    x, y = bad_data(case)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    attack = tf_awt.Attack(eps=0.1, steps=1, step_size=0.1)
    expected = {"nan": "non-finite", "label_high": r"label >= 3; labels must be in \[0, 3\)", "range": "above the data range"}[case]
    with pytest.raises(ValueError, match=expected):
        tf_awt.find_ticket(model, ds, density=0.5, method="awt", attack=attack, epochs=1)
    with pytest.raises(ValueError, match=expected):
        tf_awt.adversarial_fit(model, ds, attack=attack, epochs=1)
    with pytest.raises(ValueError, match=[m for c, m in BAD_DATA if c == case][0]):
        tf_awt.evaluate(model, ds, attack=attack, config=tf_awt.EvalConfig(restarts=1))


def test_evaluate_accepts_a_dataset_like_the_other_entry_points():
    model = small_mlp()
    x, y = good_data(40)
    attack = tf_awt.Attack(eps=0.1, steps=2, step_size=0.05)
    arrays = tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(restarts=1))
    batched = tf_awt.evaluate(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(7), attack=attack, config=tf_awt.EvalConfig(restarts=1))
    unbatched = tf_awt.evaluate(model, tf.data.Dataset.from_tensor_slices((x, y)), attack=attack, config=tf_awt.EvalConfig(restarts=1))
    assert arrays.natural_accuracy == batched.natural_accuracy == unbatched.natural_accuracy
    assert arrays.num_examples == batched.num_examples == unbatched.num_examples == 40
    with pytest.raises(ValueError, match="infinite"):
        tf_awt.evaluate(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat(), attack=attack)


def test_numpy_scalars_are_numbers():
    model = small_mlp()
    data = good_data(32)
    attack = tf_awt.Attack(eps=np.float32(0.1), steps=np.int64(1), step_size=np.float64(0.1))
    assert type(attack.eps) is float and type(attack.steps) is int
    ticket = tf_awt.find_ticket(model, data, density=np.float32(0.5), method="awt", attack=attack,
                                epochs=np.int64(1), batch_size=np.int32(16), seed=np.int64(3), update_every=np.int16(1))
    assert abs(ticket.density - 0.5) < 0.02
    json.dumps(ticket.config)  # stored as Python numbers
    trainer = AdversarialTrainer(model, attack, seed=np.int64(0))
    assert trainer.seed == 0 and type(trainer.seed) is int
    tf_awt.adversarial_fit(model, data, attack=attack, epochs=np.int64(1), learning_rate=np.float32(1e-3),
                           batch_size=np.int64(16), seed=np.int32(1))
    result = tf_awt.evaluate(model, data, attack=attack, config=tf_awt.EvalConfig(restarts=np.int64(1)))
    assert result.restarts == 1
    assert AWTSchedule(np.float64(0.2), np.int32(5)).get_config()["config"]["update_every"] == 5
    for bad, message in ((True, "density must be in"), (np.float32("nan"), "density must be in"), ("0.1", "density must be in")):
        with pytest.raises(ValueError, match=message):
            tf_awt.find_ticket(model, data, density=bad, method="random")
    with pytest.raises(ValueError, match=r"seed must be an integer. You passed: 1.5"):
        AdversarialTrainer(model, attack, seed=1.5)


def test_corrupt_data_file_is_named(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 a zip file cut short")
    with pytest.raises(ValueError, match=r"broken.npz is not a readable .npz file \(BadZipFile"):
        tf_awt.data.load(str(bad))
    (tmp_path / "text.npz").write_bytes(b"this is not a zip")
    with pytest.raises(ValueError, match=r"text.npz is not a readable .npz file"):
        tf_awt.data.load(str(tmp_path / "text.npz"))
    np.savez(str(tmp_path / "keys.npz"), images=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"keys.npz must hold arrays 'x'.*It holds: \['images'\]"):
        tf_awt.data.load(str(tmp_path / "keys.npz"))
