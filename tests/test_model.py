import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_problem import TASKS, make_batch, make_model

from mtl_keras import MultiTaskModel, StaticWeighting, Task


def _dataset(n, batch_size=32, seed=0, missing=0.0):
    x, y, w = make_batch(n, seed=seed, missing=missing)
    return tf.data.Dataset.from_tensor_slices((x, y, w)).batch(batch_size)


def test_outputs_are_named_float32_logits_of_the_right_width():
    model = make_model(precision="mixed_bfloat16")
    x, _, _ = make_batch(4)
    outputs = model(x)
    assert sorted(outputs) == sorted(t.name for t in TASKS)
    shapes = {name: tuple(v.shape) for name, v in outputs.items()}
    assert shapes == {
        "topic": (4, 3),
        "positive": (4, 1),
        "tags": (4, 3),
        "score": (4, 1),
        "pos": (4, 12, 3),
    }
    assert all(v.dtype == "float32" for v in outputs.values())


def test_every_task_kind_learns():
    model = make_model()
    model.compile(learning_rate=3e-3)
    train = _dataset(512, seed=0, missing=0.2).shuffle(16, seed=0)
    dev = _dataset(256, seed=1)
    before = model.evaluate(dev, return_dict=True, verbose=0)
    model.fit(train, epochs=12, verbose=0)
    after = model.evaluate(dev, return_dict=True, verbose=0)
    for task in TASKS:
        assert after[f"{task.name}_loss"] < 0.5 * before[f"{task.name}_loss"], task.name
    assert after["topic_accuracy"] > 0.9  # chance 1/3
    assert after["topic_macro_f1"] > 0.9
    assert after["positive_accuracy"] > 0.9 and after["positive_auc"] > 0.95
    assert after["tags_accuracy"] > 0.9 and after["tags_macro_f1"] > 0.9
    assert after["score_mae"] < 0.3  # target std ~1.1
    assert after["pos_token_accuracy"] > 0.9  # chance 1/3


def test_metric_counts_equal_labelled_rows():
    model = make_model()
    model.compile()
    x, y, w = make_batch(64, seed=3, missing=0.4)
    w["score"][:] = 0.0  # no labels at all for one task
    model.evaluate(x, y, sample_weight=w, batch_size=16, verbose=0)
    for name in ("topic", "positive", "tags"):
        expected = w[name].sum()
        assert float(model.get_metric(f"{name}_loss").count) == expected
        assert float(model.get_metric(f"{name}_accuracy").count) == expected
    assert float(model.get_metric("pos_loss").count) == w["pos"].sum()
    assert float(model.get_metric("score_loss").count) == 0.0


def test_masked_mean_is_not_diluted_and_empty_task_gives_zero():
    model = make_model()
    model.compile()
    x, y, w = make_batch(16, seed=4, missing=0.5)
    w["score"][:] = 0.0
    y_pred = model(x)
    losses = model.compute_task_losses(y, y_pred, w, update_metrics=False)
    keep = w["topic"] > 0
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        y["topic"][keep], np.asarray(y_pred["topic"])[keep]
    )
    np.testing.assert_allclose(losses["topic"], expected, rtol=1e-5)
    assert float(losses["score"]) == 0.0
    logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())


def test_a_task_without_labels_does_not_move_its_head():
    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y, w = make_batch(16, seed=5)
    w["score"][:] = 0.0
    head = model.get_layer("score_head")
    before = [v.numpy().copy() for v in head.weights]
    model.train_on_batch(x, y, sample_weight=w)
    for old, new in zip(before, head.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_train_and_test_step_log_the_same_keys():
    model = make_model()
    model.compile()
    x, y, w = make_batch(32)
    train_logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
    test_logs = model.test_on_batch(x, y, sample_weight=w, return_dict=True)
    assert set(train_logs) == set(test_logs)
    assert "loss" in train_logs
    for task in TASKS:
        assert f"{task.name}_loss" in train_logs
        for metric in task.metric_names():
            assert f"{task.name}_{metric}" in train_logs


def test_logged_loss_is_the_weighted_sum_of_task_losses():
    tasks = [Task("topic", "multiclass", 3, loss_weight=2.0), Task("positive", "binary", loss_weight=0.5)]
    model = make_model(tasks=tasks)
    model.compile()
    x, y, w = make_batch(32)
    y = {k: y[k] for k in ("topic", "positive")}
    w = {k: w[k] for k in ("topic", "positive")}
    logs = model.test_on_batch(x, y, sample_weight=w, return_dict=True)
    expected = 2.0 * logs["topic_loss"] + 0.5 * logs["positive_loss"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_compile_rejects_losses_and_metrics():
    model = make_model()
    with pytest.raises(ValueError, match="takes no `loss`"):
        model.compile(loss="mse")
    with pytest.raises(ValueError, match="takes no `metrics`"):
        model.compile(metrics=["accuracy"])


def test_default_compile_is_adamw():
    model = make_model()
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.AdamW)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_keras_round_trip_gives_identical_outputs(tmp_path, precision):
    model = make_model(precision=precision, weighting=StaticWeighting({"topic": 2.0}))
    model.compile()
    x, y, w = make_batch(8)
    model.train_on_batch(x, y, sample_weight=w)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored, MultiTaskModel)
    assert restored.tasks == model.tasks
    assert restored.precision == precision
    assert restored.weighting.weight("topic") == 2.0
    expected, actual = model.predict(x, verbose=0), restored.predict(x, verbose=0)
    for name in expected:
        np.testing.assert_array_equal(expected[name], actual[name])
    # The optimizer state came back too: training continues from it.
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations)
    restored.train_on_batch(x, y, sample_weight=w)


def test_get_config_lists_the_constructor_arguments():
    import inspect

    model = make_model()
    config = model.get_config()
    params = set(inspect.signature(MultiTaskModel.__init__).parameters) - {"self", "kwargs"}
    assert params <= set(config)
    encoder_config = model.encoder.get_config()
    encoder_params = set(inspect.signature(type(model.encoder).__init__).parameters)
    assert encoder_params - {"self", "kwargs"} <= set(encoder_config)


def test_datasets_of_unknown_length_count_each_step_once():
    """Keras runs one step past the end of such a dataset; it must not count."""
    x, y, w = make_batch(32, seed=12)
    known = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(16)
    unknown = known.filter(lambda *batch: True)
    assert int(unknown.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    logs = {}
    for name, dataset in (("known", known), ("unknown", unknown)):
        keras.utils.set_random_seed(3)
        model = make_model()
        model.compile(optimizer=keras.optimizers.SGD(0.0))
        history = model.fit(dataset, epochs=2, verbose=0)
        assert int(model.train_step_counter) == 4, name
        logs[name] = (history.history["loss"], model.evaluate(dataset, verbose=0, return_dict=True)["loss"])
    np.testing.assert_allclose(logs["known"][0], logs["unknown"][0], rtol=1e-6)
    assert logs["known"][1] == pytest.approx(logs["unknown"][1], rel=1e-6)
