"""Replica safety: 2 replicas on the same global batch log and update like 1."""

import numpy as np
import pytest
import tensorflow as tf
from toy_problem import make_batch, make_model

from mtl_keras import loop


def _two_replica_strategy():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (set in conftest.py)")
    return tf.distribute.MirroredStrategy(
        [d.name for d in devices[:2]],
        cross_device_ops=tf.distribute.ReductionToOneDevice(),
    )


def _batch_with_uneven_labels():
    x, y, w = make_batch(16, seed=9)
    # The first replica's half carries most topic labels, the second few:
    # a mean of per-replica means would differ from the true mean.
    w["topic"][:] = np.array([1] * 7 + [0] + [1] + [0] * 7, "float32")
    w["score"][:] = 0.0  # a task with no labels in this batch
    w["positive"][8:] = 0.0
    return x, y, w


def _train_once(strategy, weights, use_loop):
    with strategy.scope():
        model = make_model()
        model.set_weights(weights)
        model.compile(learning_rate=0.01)  # the default AdamW with clipnorm 1.0
    dataset = tf.data.Dataset.from_tensors(_batch_with_uneven_labels())
    if use_loop:
        history = loop.train_loop(model, dataset, epochs=1, verbose=0)
    else:
        history = model.fit(dataset, epochs=1, verbose=0)
    logs = {k: v[-1] for k, v in history.history.items()}
    return model, logs


@pytest.mark.parametrize("use_loop", [False, True], ids=["fit", "train_loop"])
def test_two_replicas_equal_one(use_loop):
    weights = make_model().get_weights()
    one, logs_one = _train_once(tf.distribute.get_strategy(), weights, use_loop)
    two, logs_two = _train_once(_two_replica_strategy(), weights, use_loop)
    assert two.distribute_strategy.num_replicas_in_sync == 2
    assert set(logs_one) == set(logs_two)
    for key in logs_one:
        assert logs_two[key] == pytest.approx(logs_one[key], abs=1e-5), key
    assert logs_one["score_loss"] == 0.0
    for variable, a, b in zip(one.weights, one.get_weights(), two.get_weights()):
        # The attention key bias has an exactly zero gradient (softmax ignores a
        # shift shared by all keys); Adam turns its round-off into +-lr steps.
        if not variable.path.endswith("key/bias"):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=variable.path)
    assert int(two.train_step_counter.numpy()) == 1


def _labelled_count(model, metric_name):
    # Read in cross-replica context: the sum over both replicas.
    return float(tf.convert_to_tensor(model.get_metric(metric_name).count.value))


def test_evaluation_counts_each_example_once_on_two_replicas():
    strategy = _two_replica_strategy()
    x, y, w = make_batch(37, seed=10, missing=0.3)  # odd size: partial batches
    with strategy.scope():
        model = make_model()
        model.compile()
    dataset = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(8)
    logs = model.evaluate(dataset, return_dict=True, verbose=0)
    assert _labelled_count(model, "topic_loss") == w["topic"].sum()
    assert _labelled_count(model, "pos_loss") == w["pos"].sum()  # tokens
    # The same metrics as one device on the same data.
    one = make_model()
    one.set_weights(model.get_weights())
    one.compile()
    single = one.evaluate(dataset, return_dict=True, verbose=0)
    for key in logs:
        assert logs[key] == pytest.approx(single[key], abs=1e-5), key
