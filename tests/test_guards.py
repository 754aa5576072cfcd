"""Failing loudly: label keys, evaluation data, non-finite losses, the exact update."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_config import write_tiny_config

from mtl_keras import MultiTaskModel, SharedEncoder, Task
from mtl_keras.cli import main
from mtl_keras.guards import NonFiniteLossError


def _model(tasks=None, seed=0, optimizer=None):
    keras.utils.set_random_seed(seed)
    tasks = tasks or [Task("score", "regression"), Task("spam", "binary")]
    model = MultiTaskModel(tasks, SharedEncoder(50, 8, hidden_dim=8, num_layers=1))
    model.compile(optimizer=optimizer)
    return model


def _x(n=8):
    rng = np.random.default_rng(0)
    return {"token_ids": rng.integers(1, 50, (n, 8)).astype("int32"),
            "padding_mask": np.ones((n, 8), bool)}


def test_a_misspelled_label_key_is_an_error_with_a_suggestion():
    model = _model()
    with pytest.raises(ValueError, match="Label key 'scroe' names no task.*did you mean 'score'"):
        model.fit(_x(), {"scroe": np.ones(8), "spam": np.ones(8)}, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(
        (_x(), {"score": np.ones(8), "spam": np.ones(8)}, {"spma": np.ones(8)})).batch(4)
    with pytest.raises(ValueError, match="Sample-weight key 'spma'.*did you mean 'spam'"):
        model.fit(dataset, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_a_task_without_labels_must_be_declared():
    model = _model()
    with pytest.raises(ValueError, match=r"No labels for task\(s\) \['spam'\].*unlabelled_tasks"):
        model.fit(_x(), {"score": np.ones(8)}, verbose=0)
    model.fit(_x(), {"score": np.ones(8)}, unlabelled_tasks=["spam"], verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 1


def test_evaluation_data_that_would_not_count_each_example_once_is_refused():
    model = _model()
    data = tf.data.Dataset.from_tensor_slices((_x(10), {"score": np.ones(10), "spam": np.ones(10)}))
    with pytest.raises(ValueError, match="repeats forever"):
        model.evaluate(data.batch(4).repeat(), steps=5, verbose=0)
    with pytest.raises(ValueError, match="drop_remainder"):
        model.evaluate(data.batch(4, drop_remainder=True), verbose=0)
    with pytest.raises(ValueError, match=r"steps=2.*has 3 batches"):
        model.evaluate(data.batch(4), steps=2, verbose=0)
    model.evaluate(data.batch(4), verbose=0)
    assert int(model.get_metric("spam_accuracy").count.numpy()) == 10


def test_a_non_finite_loss_stops_fit_naming_the_task_and_the_step_is_not_applied():
    model = _model()
    x, spam = _x(8), np.ones(8)
    model.fit(x, {"score": np.ones(8), "spam": spam}, batch_size=4, verbose=0)
    before = [v.numpy() for v in model.trainable_variables]
    score = np.ones(8)
    score[5] = np.inf  # the second batch
    with pytest.raises(NonFiniteLossError, match=r"Task 'score': the training loss became inf at training step 4"):
        model.fit(x, {"score": score, "spam": spam}, batch_size=4, verbose=0)
    after = [v.numpy() for v in model.trainable_variables]
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, after))
    assert changed > 0  # the first (finite) batch was applied ...
    assert all(np.isfinite(a).all() for a in after)  # ... the infinite one was not
    assert int(model.optimizer.iterations.numpy()) == 3


def test_an_absurd_regression_target_is_reported_before_training(tmp_path, capsys):
    from mtl_keras.data import BUNDLED_DIR

    lines = (BUNDLED_DIR / "sample" / "train.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    cells = lines[40].split("\t")
    cells[header.index("rating")] = "1e30"  # finite, but its squared error is inf
    lines[40] = "\t".join(cells)
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    config = write_tiny_config(tmp_path, epochs=1)
    config.write_text(config.read_text().replace("file: sample/train.tsv", f"file: {tmp_path / 'train.tsv'}"))
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "Task 'rating' (regression): the target 1e+30 is" in error
    assert "train.tsv, line 41" in error
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_cli_fails_loudly_when_training_diverges(tmp_path, capsys):
    # A learning rate of 1e25 sends the weights, then the regression loss, to inf.
    config = write_tiny_config(tmp_path, epochs=1, batch_size=64, learning_rate=1e25,
                               warmup_fraction=0.0, checkpoint_every_steps=1)
    run = tmp_path / "run"
    code = main(["train", "--config", str(config), "--out", str(run), "--quiet"])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 1, error
    assert "the training loss became" in error and "FAILED.json" in error
    assert not (run / "metrics.json").exists() and not (run / "model.keras").exists()
    failed = json.loads((run / "FAILED.json").read_text())
    assert failed["error"].startswith("Task ")
    weights = _checkpoint_weights(run)
    assert weights and all(np.isfinite(w).all() for w in weights)


def _checkpoint_weights(run):
    reader = tf.train.load_checkpoint(str(run / "checkpoints"))
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith("model/")]
    return [reader.get_tensor(n) for n in names if "OPTIMIZER" not in n]


def _token_batch():
    x = _x(8)
    x["token_ids"][:, :4] = 7  # token 7 four times in every row
    y = {"score": np.linspace(0, 1, 8).astype("float32"), "spam": np.ones(8, "float32")}
    return x, y


def _unclipped():
    # Keras's global-norm clipping (the default) multiplies each gradient, which
    # turns slices dense itself; without clipping they reach Adam as slices.
    return keras.optimizers.AdamW(weight_decay=0.01)


def _train_by_hand(x, y, transform, steps=3):
    """`steps` steps of AdamW without clipping, with gradients `transform`ed first."""
    model = _model(seed=3, optimizer=_unclipped())

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = model.weighting.combine(model.compute_task_losses(y, outputs, update_metrics=False))
        gradients = [transform(g) for g in tape.gradient(loss, model.trainable_variables)]
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    for _ in range(steps):
        step()
    return [v.numpy() for v in model.trainable_variables]


def _summed_duplicates(g):
    """The textbook sparse gradient: one slice per distinct index."""
    if not isinstance(g, tf.IndexedSlices):
        return g
    unique, position = tf.unique(g.indices)
    values = tf.math.unsorted_segment_sum(g.values, position, tf.shape(unique)[0])
    return tf.IndexedSlices(values, unique, g.dense_shape)


def _largest_difference(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def test_a_dense_embedding_gradient_gives_the_textbook_update_exactly():
    x, y = _token_batch()
    dense = _train_by_hand(x, y, tf.convert_to_tensor)
    summed = _train_by_hand(x, y, _summed_duplicates)
    raw = _train_by_hand(x, y, lambda g: g)  # duplicates unsummed, as tape.gradient gives them
    # The two sums round differently (~6e-6 after 3 Adam steps, which normalize
    # tiny gradients to full-size updates): the stated tolerance is 1e-4.
    assert _largest_difference(dense, summed) < 1e-4
    assert _largest_difference(dense, raw) > 1e-3  # the error the densifying avoids


def test_the_training_step_makes_the_dense_update():
    """`fit` (AdamW without clipping) lands on the dense-gradient update, not the raw one.

    The two graphs differ in float rounding (~1e-5 after Adam's normalization),
    far below the raw update's error (~5e-3 here).
    """
    x, y = _token_batch()
    model = _model(seed=3, optimizer=_unclipped())
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    got = [v.numpy() for v in model.trainable_variables]
    assert _largest_difference(got, _train_by_hand(x, y, tf.convert_to_tensor)) < 1e-4
    assert _largest_difference(got, _train_by_hand(x, y, lambda g: g)) > 1e-3
