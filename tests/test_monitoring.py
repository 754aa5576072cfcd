"""`training.monitor`, early stopping and TensorBoard logs, through `fit_run`."""

import numpy as np
import pytest
import tensorflow as tf
from tiny_config import write_tiny_config

from mtl_keras import monitoring
from mtl_keras.config import ConfigError, load_config
from mtl_keras.pipeline import fit_run, read_history
from mtl_keras.training_settings import Training, monitored_keys

MEAN = {"val_topic_accuracy": 1, "val_sentiment_accuracy": 3}


def test_monitor_settings_are_checked():
    with pytest.raises(ValueError, match="mixes keys to minimize and to maximize"):
        monitored_keys({"val_topic_accuracy": 1, "val_rating_mae": 1})
    with pytest.raises(ValueError, match="not a validation key"):
        Training(monitor="topic_accuracy")
    with pytest.raises(ValueError, match="early_stopping_patience must be >= 1"):
        Training(early_stopping_patience=0)


def test_early_stopping_counts_the_epochs_before_a_resume():
    stopper = monitoring.EarlyStopping("val_topic_accuracy", patience=2, previous=[0.5, 0.7])
    stopper.set_model(type("Model", (), {"stop_training": False})())
    stopper.on_epoch_end(2, {"val_topic_accuracy": 0.6})  # one epoch since the best
    assert not stopper.model.stop_training
    stopper.on_epoch_end(3, {"val_topic_accuracy": 0.7})  # equal is not better
    assert stopper.model.stop_training and stopper.stopped_epoch == 3
    assert monitoring.EarlyStopping("val_loss", 1, previous=[0.3, 0.4]).stopped_before


def test_an_unknown_monitor_fails_before_any_work(tmp_path):
    config = load_config(write_tiny_config(tmp_path), overrides=["training.monitor=val_topic_acuracy"])
    with pytest.raises(ConfigError, match="did you mean 'val_topic_accuracy'"):
        fit_run(config, run_dir=tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def _scalars(directory):
    """`{tag: [values]}` of every TensorBoard event file under `directory`."""
    from tensorflow.core.util import event_pb2

    found = {}
    for path in sorted(directory.rglob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                found.setdefault(f"{path.parent.name}/{value.tag}", []).append(
                    float(tf.make_ndarray(value.tensor)))
    return found


def test_a_stalled_monitor_stops_early_keeps_the_best_and_stays_stopped(tmp_path, capsys):
    # A learning rate of 1e-12 changes no prediction: the accuracies stay what
    # they were after epoch 0, so with patience 1 the run stops after epoch 1.
    path = write_tiny_config(tmp_path, epochs=5, batch_size=64, learning_rate=1e-12,
                             checkpoint=True, early_stopping_patience=1, monitor=MEAN)
    run = tmp_path / "run"
    result = fit_run(load_config(path), run_dir=run, verbose=0, with_predictions=False)
    history = read_history(run / "history.csv")
    assert len(history["loss"]) == 2  # epochs 0 and 1 of 5
    expected = (np.array(history["val_topic_accuracy"])
                + 3 * np.array(history["val_sentiment_accuracy"])) / 4
    np.testing.assert_allclose(history["val_monitor"], expected, rtol=1e-6)
    assert (run / "checkpoints" / "best.weights.h5").exists()
    assert result.compute["steps"] == 2 * -(-result.examples_per_epoch // 64)
    scalars = _scalars(run / "tensorboard")
    for tag in ("train/epoch_topic_accuracy", "validation/epoch_topic_accuracy",
                "train/epoch_mentions_loss", "train/epoch_learning_rate"):
        assert len(scalars[tag]) == 2, sorted(scalars)
    # Run again: the run directory says it stopped; nothing more is trained.
    again = fit_run(load_config(path), run_dir=run, verbose=0, with_predictions=False)
    assert "stopped early at epoch 2" in capsys.readouterr().out
    assert len(read_history(run / "history.csv")["loss"]) == 2
    assert again.compute["steps"] == result.compute["steps"]  # the checkpointed steps only
    for a, b in zip(again.model.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)  # both end with the best epoch's weights


def test_tensorboard_writes_epoch_scalars_and_does_no_work_per_batch(tmp_path, monkeypatch):
    # Keras's TensorBoard calls `summary.scalar` for every log entry after
    # every batch even when it writes per epoch only; EpochTensorBoard skips
    # that and still writes every epoch scalar.
    import keras

    from mtl_keras.run_files import EpochTensorBoard

    import tensorflow.summary as summary  # what the callback calls

    calls, scalar = [], summary.scalar

    def counting(name, *args, **kwargs):
        calls.append(name)
        return scalar(name, *args, **kwargs)

    monkeypatch.setattr(summary, "scalar", counting)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    x, y = np.ones((40, 3), "float32"), np.zeros((40, 1), "float32")
    for callback, batch_calls in ((EpochTensorBoard(tmp_path / "ours"), 0),
                                  (keras.callbacks.TensorBoard(tmp_path / "keras"), 10)):
        calls.clear()
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
        assert sum(name.startswith("batch_") for name in calls) == batch_calls
        assert calls.count("epoch_loss") == 2
    assert len(_scalars(tmp_path / "ours")["train/epoch_loss"]) == 2
