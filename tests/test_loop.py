import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_problem import LENGTH, make_batch, make_model

from mtl_keras import loop


def _dataset():
    x, y, w = make_batch(48, seed=11, missing=0.3)
    return tf.data.Dataset.from_tensor_slices((x, y, w)).batch(16)


def test_train_loop_and_fit_take_the_same_steps():
    reference = make_model().get_weights()
    results = {}
    for name in ("fit", "loop"):
        model = make_model()
        model.set_weights(reference)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        if name == "fit":
            history = model.fit(_dataset(), epochs=2, validation_data=_dataset(), verbose=0)
        else:
            history = loop.train_loop(
                model, _dataset(), epochs=2, validation_data=_dataset(), verbose=0
            )
        results[name] = (model.get_weights(), history.history)
    (fit_weights, fit_logs), (loop_weights, loop_logs) = results["fit"], results["loop"]
    for a, b in zip(fit_weights, loop_weights):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert set(fit_logs) == set(loop_logs)
    for key in fit_logs:
        np.testing.assert_allclose(fit_logs[key], loop_logs[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_train_loop_shows_progress_and_calls_callbacks(capsys):
    model = make_model()
    model.compile()
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    history = loop.train_loop(model, _dataset(), epochs=2, callbacks=[callback], verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "topic_loss" in out and "3/3" in out
    assert seen == [0, 1]
    assert len(history.history["loss"]) == 2
    assert int(model.train_step_counter) == 6


def test_train_loop_stops_on_request():
    model = make_model()
    model.compile()
    history = loop.train_loop(
        model,
        _dataset(),
        epochs=5,
        callbacks=[keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=100.0)],
        verbose=0,
    )
    assert len(history.history["loss"]) == 2


def test_train_loop_needs_a_compiled_model():
    with pytest.raises(ValueError, match="compile"):
        loop.train_loop(make_model(), _dataset())


@pytest.mark.parametrize("runner", ["fit", "loop"])
def test_a_backup_resumes_at_the_restored_epoch_as_in_fit(tmp_path, runner):
    """BackupAndRestore in both: a second run starts after the backed-up epoch
    with the backed-up weights; `initial_epoch` is honoured the same way."""

    def train(model, epochs, callbacks=(), initial_epoch=0):
        if runner == "fit":
            return model.fit(_dataset(), epochs=epochs, initial_epoch=initial_epoch,
                             callbacks=list(callbacks), verbose=0)  # fmt: skip
        return loop.train_loop(model, _dataset(), epochs=epochs, initial_epoch=initial_epoch,
                               callbacks=list(callbacks), verbose=0)  # fmt: skip

    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    train(model, 2, [backup])
    saved = model.get_weights()
    resumed = make_model()
    resumed.compile(optimizer=keras.optimizers.SGD(0.05))
    epochs = []
    seen = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))
    history = train(resumed, 3, [keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), seen])
    assert epochs == [2] and len(history.history["loss"]) == 1
    assert not all(np.array_equal(a, b) for a, b in zip(saved, resumed.get_weights()))
    started = []
    later = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(epoch))
    train(make_model_compiled(), 3, [later], initial_epoch=1)
    assert started == [1, 2]


def make_model_compiled():
    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


def test_train_loop_traces_its_step_once_for_batches_of_several_shapes(monkeypatch):
    """Bucketed batches differ in length and the last one in size: one trace."""
    from mtl_keras import MultiTaskModel

    traces = []
    train_step = MultiTaskModel.train_step

    def counting_step(self, data):
        traces.append(tuple(data[0]["token_ids"].shape))  # runs only while tracing
        return train_step(self, data)

    monkeypatch.setattr(MultiTaskModel, "train_step", counting_step)
    x, y, w = make_batch(40, seed=3)

    def rows(start, stop, length):  # per-token labels and masks are cut like the ids
        def cut(v):
            return v[start:stop, :length] if v.ndim == 2 and v.shape[1] == LENGTH else v[start:stop]

        return tuple({k: cut(v) for k, v in part.items()} for part in (x, y, w))

    batches = tf.data.Dataset.from_tensors(rows(0, 16, 12))
    for part in (rows(16, 32, 8), rows(32, 40, 4)):  # other lengths, a smaller last batch
        batches = batches.concatenate(tf.data.Dataset.from_tensors(part))
    model = make_model()
    model.compile()
    loop.train_loop(model, batches, epochs=2, verbose=0)
    assert len(traces) == 1, traces
    assert traces[0] == (None, None)
