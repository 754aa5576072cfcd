import keras
import numpy as np
import pytest
from toy_problem import make_batch, make_model


def _one_sgd_step(precision, weights, batch, learning_rate=0.5):
    model = make_model(precision=precision)
    model.set_weights(weights)
    optimizer = keras.optimizers.SGD(learning_rate)
    if precision == "mixed_float16":
        # A scale that does not overflow on the first step of this problem.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**8)
    model.compile(optimizer=optimizer)
    x, y, w = batch
    logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
    return model, logs


def _reference_weights():
    return make_model().get_weights()


def test_mixed_float16_wraps_the_optimizer_in_loss_scaling():
    model = make_model(precision="mixed_float16")
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.optimizer.initial_scale > 1.0
    for precision in ("float32", "mixed_bfloat16"):
        other = make_model(precision=precision)
        other.compile()
        assert not isinstance(other.optimizer, keras.optimizers.LossScaleOptimizer)


def test_fp16_update_matches_fp32_update():
    weights = _reference_weights()
    batch = make_batch(32, seed=2, missing=0.2)
    fp32, logs32 = _one_sgd_step("float32", weights, batch)
    fp16, logs16 = _one_sgd_step("mixed_float16", weights, batch)
    # The logged loss is the unscaled one, not loss * 256.
    assert logs16["loss"] == pytest.approx(logs32["loss"], rel=2e-2)
    assert int(fp16.optimizer.iterations) == 1
    deltas32 = np.concatenate([(a - w).ravel() for a, w in zip(fp32.get_weights(), weights)])
    deltas16 = np.concatenate([(a - w).ravel() for a, w in zip(fp16.get_weights(), weights)])
    # Scaling was applied and undone: same direction and size of the update.
    cosine = deltas16 @ deltas32 / (np.linalg.norm(deltas16) * np.linalg.norm(deltas32))
    assert cosine > 0.99
    assert np.linalg.norm(deltas16) / np.linalg.norm(deltas32) == pytest.approx(1.0, abs=0.03)


def test_bf16_update_matches_fp32_update():
    weights = _reference_weights()
    batch = make_batch(32, seed=2)
    fp32, _ = _one_sgd_step("float32", weights, batch)
    bf16, logs = _one_sgd_step("mixed_bfloat16", weights, batch)
    assert np.isfinite(logs["loss"])
    deltas32 = np.concatenate([(a - w).ravel() for a, w in zip(fp32.get_weights(), weights)])
    deltas16 = np.concatenate([(a - w).ravel() for a, w in zip(bf16.get_weights(), weights)])
    cosine = deltas16 @ deltas32 / (np.linalg.norm(deltas16) * np.linalg.norm(deltas32))
    assert cosine > 0.95


def test_overflowing_step_is_skipped_and_the_scale_drops():
    weights = _reference_weights()
    model = make_model(precision="mixed_float16")
    model.set_weights(weights)
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.1), initial_scale=2.0**8
        )
    )
    x, y, w = make_batch(16)
    model.train_on_batch(x, y, sample_weight=w)  # builds; a normal step
    assert int(model.optimizer.iterations) == 1
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.optimizer.dynamic_scale.assign(2.0**100)  # gradients overflow to inf
    logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
    assert np.isfinite(logs["loss"])  # the unscaled loss is still logged
    assert logs["skipped_steps"] == 1  # a skipped step is logged as such, not a failure
    assert float(model.optimizer.dynamic_scale) == 2.0**99
    assert int(model.optimizer.iterations) == 1  # the optimizer skipped it...
    assert int(model.train_step_counter) == 2  # ...our own counter did not
    for old, new in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(old, new.numpy())
