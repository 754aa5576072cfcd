"""Replica safety: 2 replicas on the same global batches log and update like 1.

What users run: the default `compile()` (AdamW, weight decay, `global_clipnorm`
1.0) with a warm-up + cosine schedule, and MirroredStrategy with its default
all-reduce (collective ops, the path MultiWorkerMirroredStrategy uses).
"""

import numpy as np
import pytest
import tensorflow as tf
from toy_problem import make_batch, make_model, two_replica_strategy

from mtl_keras import loop
from mtl_keras.config import Training
from mtl_keras.guards import NonFiniteLossError
from mtl_keras.pipeline import learning_rate

STEPS = 3


def _batches_with_uneven_labels():
    batches = []
    for step in range(STEPS):
        x, y, w = make_batch(16, seed=9 + step)
        # The first replica's half carries most topic labels, the second few:
        # a mean of per-replica means would differ from the true mean.
        w["topic"][:] = np.array([1] * 7 + [0] + [1] + [0] * 7, "float32")
        w["score"][:] = 0.0  # a task with no labels in these batches
        w["positive"][8:] = 0.0
        batches.append((x, y, w))
    return tf.data.Dataset.from_tensor_slices(
        tuple(tf.nest.map_structure(lambda *a: np.stack(a), *batches))
    )


def _compile(model):
    schedule = learning_rate(Training(learning_rate=0.01, warmup_fraction=0.34), STEPS)
    model.compile(learning_rate=schedule)  # the default AdamW, global_clipnorm 1.0


def _train(strategy, weights, use_loop, dataset):
    with strategy.scope():
        model = make_model()
        model.set_weights(weights)
        _compile(model)
    logs = []
    for step in range(STEPS):  # one step per epoch: every step's logs are compared
        batch = dataset.skip(step).take(1)
        if use_loop:
            history = loop.train_loop(model, batch, epochs=1, verbose=0)
        else:
            history = model.fit(batch, epochs=1, verbose=0, shuffle=False)
        logs.append({k: v[-1] for k, v in history.history.items()})
    return model, logs


@pytest.mark.parametrize("use_loop", [False, True], ids=["fit", "train_loop"])
def test_two_replicas_equal_one_with_the_default_optimizer(use_loop):
    weights = make_model().get_weights()
    dataset = _batches_with_uneven_labels()
    one, logs_one = _train(tf.distribute.get_strategy(), weights, use_loop, dataset)
    two, logs_two = _train(two_replica_strategy(), weights, use_loop, dataset)
    assert two.distribute_strategy.num_replicas_in_sync == 2
    for step, (a, b) in enumerate(zip(logs_one, logs_two)):
        assert set(a) == set(b)
        for key in a:
            assert b[key] == pytest.approx(a[key], abs=1e-5), (step, key)
        assert a["score_loss"] == 0.0
    for variable, a, b in zip(one.weights, one.get_weights(), two.get_weights()):
        # The attention key bias has an exactly zero gradient (softmax ignores a
        # shift shared by all keys); Adam turns its round-off into +-lr steps.
        if not variable.path.endswith("key/bias"):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=variable.path)
    assert int(two.train_step_counter.numpy()) == STEPS
    assert int(two.optimizer.iterations.numpy()) == STEPS


def test_a_non_finite_step_is_skipped_on_every_replica():
    """Only the second replica's half holds the infinite target: neither applies it."""
    strategy = two_replica_strategy()
    with strategy.scope():
        model = make_model()
        _compile(model)
    x, y, w = make_batch(16, seed=3)
    y["score"][12] = np.inf
    before = [v.numpy() for v in model.trainable_variables]
    with pytest.raises(NonFiniteLossError, match="Task 'score'"):
        model.fit(tf.data.Dataset.from_tensors((x, y, w)), epochs=1, verbose=0)
    for a, b in zip(before, [v.numpy() for v in model.trainable_variables]):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations.numpy()) == 0


def _labelled_count(model, metric_name):
    # Read in cross-replica context: the sum over both replicas.
    return float(tf.convert_to_tensor(model.get_metric(metric_name).count.value))


def test_evaluation_counts_each_example_once_on_two_replicas():
    strategy = two_replica_strategy()
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
