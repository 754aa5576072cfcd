"""The weighting methods against numpy references of their papers' updates,
and the training step that feeds them (replicas, loss scaling, state)."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_problem import make_batch, make_model, two_replica_strategy

from mtl_keras import weighting as wl
from mtl_keras.weighting import base

# Three task gradients on 4 parameters: a conflicts with c, b agrees with both.
G3 = np.array(
    [[1.0, 0.5, 0.0, -0.2], [0.3, 1.0, 0.4, 0.0], [-0.8, 0.1, 0.9, 0.3]], "float64"
)
G2 = np.array([[1.0, 0.2], [-0.9, 0.6]], "float64")
PROBLEMS = {"two": G2, "three": G3}


def _weights(method, g, losses=None, present=None, step=0):
    method.build_for_tasks([f"t{i}" for i in range(len(g))])
    gram = tf.constant(g @ g.T, "float32")
    return method.gradient_weights(gram, losses, present, step).numpy().astype("float64")


# --- numpy references -------------------------------------------------------


def _pcgrad_reference(g, orders):
    """Yu et al. 2020, Algorithm 1, with the other tasks visited in `orders[i]`."""
    update = np.zeros(g.shape[1])
    for i, order in enumerate(orders):
        gi = g[i].copy()
        for j in order:
            dot = gi @ g[j]
            if dot < 0:
                gi -= dot / (g[j] @ g[j]) * g[j]
        update += gi
    return update


def _min_quadratic_above(gram, lower):
    """Exact `argmin u^T G u` s.t. `u >= lower`, by enumerating active sets (KKT)."""
    t = len(lower)
    best = None
    for active in itertools.product([False, True], repeat=t):
        active = np.array(active)
        u = lower.astype("float64").copy()
        free = ~active
        if free.any():
            rhs = -gram[np.ix_(free, active)] @ lower[active]
            u[free] = np.linalg.lstsq(gram[np.ix_(free, free)], rhs, rcond=None)[0]
        multipliers = gram @ u  # the KKT gradient: 0 on free, >= 0 on active
        if np.all(u >= lower - 1e-9) and np.all(multipliers[active] >= -1e-9):
            value = u @ gram @ u
            if best is None or value < best[0] - 1e-12:
                best = (value, u)
    return best[1]


def _upgrad_reference(g):
    """Quinton and Rey 2024: sum of the projections of each g_i onto the dual cone."""
    gram = g @ g.T
    gram = gram / np.trace(gram) + 1e-4 * np.eye(len(g))
    return sum(_min_quadratic_above(gram, np.eye(len(g))[i]) for i in range(len(g))) @ g


def _cagrad_reference(g, alpha=0.5):
    """Liu et al. 2021: min over the simplex of g_w.g0 + c|g_w|, by a fine search."""
    t = len(g)
    g0 = g.mean(0)
    c = alpha * np.linalg.norm(g0)

    def objective(w):
        gw = w @ g
        return gw @ g0 + c * np.sqrt(gw @ gw + 1e-8)

    steps = 200
    grid = [
        np.array(w) / steps
        for w in itertools.product(range(steps + 1), repeat=t - 1)
        if sum(w) <= steps
    ]
    grid = [np.append(w, 1 - w.sum()) for w in grid]
    w = min(grid, key=objective)
    for scale in (1e-3, 1e-4, 1e-5):  # refine around the best grid point
        for _ in range(2000):
            candidates = [w] + [
                np.clip(w + scale * (np.eye(t)[i] - np.eye(t)[j]), 0, 1)
                for i in range(t)
                for j in range(t)
                if i != j
            ]
            w = min((v / v.sum() for v in candidates), key=objective)
    gw = w @ g
    return t * (g0 + c / np.linalg.norm(gw) * gw) / (1 + alpha**2)


def _imtl_g_reference(g):
    """Liu et al. 2021 (ICLR), eq. 7, on explicit vectors."""
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = g[0] - g[1:]
    uu = u[0] - u[1:]
    alpha_rest = g[0] @ uu.T @ np.linalg.inv(d @ uu.T)
    alpha = np.concatenate([[1 - alpha_rest.sum()], alpha_rest])
    return len(g) * alpha @ g


# --- the methods against them -----------------------------------------------


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("step", [0, 5])
def test_pcgrad_matches_the_paper_for_some_task_order(problem, step):
    g = PROBLEMS[problem]
    update = _weights(wl.PCGrad(seed=1), g, step=step) @ g
    t = len(g)
    others = [[j for j in range(t) if j != i] for i in range(t)]
    candidates = [
        _pcgrad_reference(g, orders)
        for orders in itertools.product(*(itertools.permutations(o) for o in others))
    ]
    assert min(np.abs(update - c).max() for c in candidates) < 1e-5


def test_pcgrad_leaves_agreeing_gradients_alone():
    g = np.array([[1.0, 0.2], [0.5, 0.6]])
    np.testing.assert_allclose(_weights(wl.PCGrad(), g), [1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_upgrad_matches_the_exact_quadratic_programs(problem):
    g = PROBLEMS[problem]
    update = _weights(wl.UPGrad(), g) @ g
    np.testing.assert_allclose(update, _upgrad_reference(g), atol=2e-4)
    assert np.all(g @ update >= -1e-4)  # no task is made worse, to first order


@pytest.mark.parametrize("problem", PROBLEMS)
def test_cagrad_matches_the_solved_problem(problem):
    g = PROBLEMS[problem]
    update = _weights(wl.CAGrad(), g) @ g
    np.testing.assert_allclose(update, _cagrad_reference(g), atol=2e-3)


def test_cagrad_with_alpha_zero_is_the_sum():
    np.testing.assert_allclose(_weights(wl.CAGrad(alpha=0.0), G3), [1, 1, 1], atol=1e-6)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_imtl_g_matches_the_closed_form(problem):
    g = PROBLEMS[problem]
    update = _weights(wl.IMTLG(), g) @ g
    np.testing.assert_allclose(update, _imtl_g_reference(g), atol=1e-4)
    cosines = (g @ update) / np.linalg.norm(g, axis=1)
    np.testing.assert_allclose(cosines, cosines[0], atol=1e-4)


def _assign(updates):
    for variable, value in updates:
        variable.assign(value)


def test_famo_follows_the_paper_for_three_updates():
    losses = np.array([[2.0, 1.0, 0.5], [1.5, 0.9, 0.5], [1.2, 0.9, 0.45], [1.0, 0.85, 0.44]])
    method = wl.FAMO()
    method.build_for_tasks(["a", "b", "c"])
    present = tf.constant([True] * 3)
    # Reference: Algorithm 1 with torch.optim.Adam(lr=0.025, weight_decay=0.01).
    xi, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    for k in range(3):
        z = np.exp(xi) / np.exp(xi).sum()
        expected = 3 * (z / losses[k]) / (z / losses[k]).sum()
        actual = method.task_weights(tf.constant(losses[k], "float32"), present, k).numpy()
        np.testing.assert_allclose(actual, expected, rtol=1e-5)
        delta = np.log(losses[k]) - np.log(losses[k + 1])
        grad = z * (delta - z @ delta) + 0.01 * xi
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        xi = xi - 0.025 * (m / (1 - 0.9 ** (k + 1))) / (np.sqrt(v / (1 - 0.999 ** (k + 1))) + 1e-8)
        _assign(method.after_step_updates(
            tf.constant(losses[k], "float32"), tf.constant(losses[k + 1], "float32"), present
        ))
        np.testing.assert_allclose(method.logits.numpy(), xi, rtol=1e-4, atol=1e-7)


def test_dwa_follows_the_paper_over_periods():
    method = wl.DynamicWeightAverage(period_steps=2, temperature=2.0)
    method.build_for_tasks(["a", "b"])
    present = tf.constant([True, True])
    period_losses = [[1.0, 2.0], [0.5, 1.9], [0.45, 1.0]]
    for k, mean in enumerate(period_losses):
        expected = [1.0, 1.0]
        if k >= 2:
            r = np.array(period_losses[k - 1]) / np.array(period_losses[k - 2])
            expected = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
        np.testing.assert_allclose(method.task_weights(None, present, 0).numpy(), expected, rtol=1e-5)
        for offset in (-0.1, 0.1):  # two steps whose mean is the period's
            _assign(method.state_updates(tf.constant(mean, "float32") + offset, present, 0))


def test_uncertainty_gradients_are_kendalls():
    method = wl.UncertaintyWeighting()
    method.build_for_tasks(["a", "b"])
    method.log_variance.assign([0.5, -1.0])
    losses = tf.constant([2.0, 0.3])
    with tf.GradientTape() as tape:
        tape.watch(losses)
        objective = method.objective(losses, losses, tf.constant([True, True]), 0, 1)
    d_losses, d_s = tape.gradient(objective, [losses, method.log_variance.value])
    s = np.array([0.5, -1.0])
    np.testing.assert_allclose(d_losses.numpy(), np.exp(-s), rtol=1e-6)
    np.testing.assert_allclose(d_s.numpy(), -np.exp(-s) * [2.0, 0.3] + 0.5, rtol=1e-6)


def test_rlw_draws_normalized_weights_by_step():
    method = wl.RandomLossWeighting(seed=2)
    method.build_for_tasks(["a", "b", "c"])
    draws = np.stack([method.task_weights(None, None, k).numpy() for k in range(400)])
    np.testing.assert_allclose(draws.sum(1), 3.0, rtol=1e-5)
    assert not np.allclose(draws[0], draws[1])
    np.testing.assert_array_equal(draws[7], method.task_weights(None, None, 7).numpy())
    np.testing.assert_allclose(draws.mean(0), 1.0, atol=0.08)  # no task favoured


def test_project_to_simplex_is_the_euclidean_projection():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = rng.normal(size=4)
        p = base.project_to_simplex(tf.constant(v, "float32")).numpy()
        assert p.min() >= 0 and p.sum() == pytest.approx(1.0, abs=1e-5)
        for _ in range(50):  # no point of the simplex is closer
            q = rng.dirichlet(np.ones(4))
            assert np.linalg.norm(v - p) <= np.linalg.norm(v - q) + 1e-5


def test_unknown_method_suggests_the_name():
    with pytest.raises(ValueError, match="did you mean 'famo'|Did you mean 'famo'"):
        wl.get_weighting("fano")


# --- the step that feeds them ----------------------------------------------


def _uneven_batches():
    batches = []
    for seed in (9, 10):
        x, y, w = make_batch(16, seed=seed)
        w["topic"][:] = np.array([1] * 7 + [0] + [1] + [0] * 7, "float32")
        w["positive"][8:] = 0.0  # the second replica has no `positive` labels
        batches.append((x, y, w))
    return batches


METHODS = {
    "static": lambda: wl.StaticWeighting({"topic": 2.0}),
    "uncertainty": wl.UncertaintyWeighting,
    "dwa": lambda: wl.DynamicWeightAverage(period_steps=1),
    "rlw": wl.RandomLossWeighting,
    "famo": wl.FAMO,
    "pcgrad": wl.PCGrad,
    "cagrad": wl.CAGrad,
    "upgrad": wl.UPGrad,
    "imtl_g": wl.IMTLG,
}


def _train(strategy, weights, method, batches):
    with strategy.scope():
        model = make_model(weighting=METHODS[method]())
        model.set_weights(weights)
        model.compile(learning_rate=0.01)  # the default AdamW, global_clipnorm 1.0
    dataset = tf.data.Dataset.from_tensor_slices(
        tuple(tf.nest.map_structure(lambda *a: np.stack(a), *batches))
    )
    history = model.fit(dataset, epochs=1, verbose=0)
    return model, {k: v[-1] for k, v in history.history.items()}


@pytest.mark.parametrize("method", [  # two in the default run, every method in CI (.ci/run)
    m if m in ("static", "pcgrad") else pytest.param(m, marks=pytest.mark.slow) for m in METHODS])
def test_two_replicas_equal_one_device(method):
    """Per-task gradients are summed over replicas before they are combined."""
    weights = make_model(weighting=METHODS[method]()).get_weights()
    batches = _uneven_batches()
    one, logs_one = _train(tf.distribute.get_strategy(), weights, method, batches)
    two, logs_two = _train(two_replica_strategy(), weights, method, batches)
    assert set(logs_one) == set(logs_two)
    for key in logs_one:
        # The logged effective weights come out of the methods' own solvers (CAGrad's
        # inner steps, PCGrad's projections), which amplify round-off as the
        # weighting state below does: rel 1e-4 there, 1e-5 for losses and metrics.
        # A combination made per replica moves them by far more (~1e-1).
        rel = 1e-4 if key.endswith("_weight") else 1e-5
        assert logs_two[key] == pytest.approx(logs_one[key], rel=rel, abs=1e-5), key
    for a, b in zip(one.weighting.weights, two.weighting.weights):
        # rtol: PCGrad divides by small squared norms, which amplifies round-off.
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    for variable, a, b in zip(one.weights, one.get_weights(), two.get_weights()):
        # The attention key bias has an exactly zero gradient (softmax ignores a
        # shift shared by all keys); Adam turns its round-off into +-lr steps.
        # atol: 0.5% of one Adam step (lr 0.01); Adam magnifies the round-off
        # of near-zero gradients, while a real difference moves weights by ~lr.
        if not variable.path.endswith("key/bias"):
            np.testing.assert_allclose(a, b, atol=5e-5, err_msg=variable.path)
    assert not np.allclose(one.get_weights()[0], weights[0])  # it trained


class _OnesOnGradients(wl.GradientWeighting):
    def __init__(self, uses, **kwargs):
        super().__init__(**kwargs)
        self.uses = uses

    def gradient_weights(self, gram, losses, present, step):
        return tf.ones_like(losses)


@pytest.mark.parametrize("uses", ["shared_gradients", "feature_gradients"])
def test_unit_weights_on_task_gradients_equal_the_plain_sum(uses):
    """The per-task paths (encoder weighted, heads their own) add up to the sum."""
    x, y, w = make_batch(32, seed=6, missing=0.3)
    results = []
    reference = make_model().get_weights()
    for method in (wl.EqualWeighting(), _OnesOnGradients(uses)):
        model = make_model(weighting=method)
        model.set_weights(reference)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.train_on_batch(x, y, sample_weight=w)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("method", ["pcgrad", "imtl_g"])
def test_mixed_float16_unscales_each_task_gradient(method):
    """The weights under loss scaling are those of float32 on the same batch."""
    x, y, w = make_batch(16, seed=4)
    logged = {}
    reference = make_model(weighting=METHODS[method]()).get_weights()
    for precision in ("float32", "mixed_float16"):
        model = make_model(precision=precision, weighting=METHODS[method]())
        model.set_weights(reference)
        optimizer = keras.optimizers.AdamW()
        if precision == "mixed_float16":  # a scale that does not overflow at once
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**10)
        model.compile(optimizer=optimizer)
        logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
        assert logs.get("skipped_steps", 0) == 0
        logged[precision] = model.weighting.last_weights.numpy()
    np.testing.assert_allclose(logged["mixed_float16"], logged["float32"], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("method", ["dwa", "famo", "pcgrad"])
def test_a_skipped_fp16_step_leaves_the_method_state_unchanged(method):
    model = make_model(precision="mixed_float16", weighting=METHODS[method]())
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.AdamW(), initial_scale=2.0**120)
    model.compile(optimizer=optimizer)  # 2^120 overflows float16: the step is skipped
    before = [v.numpy().copy() for v in model.weighting.weights]
    x, y, w = make_batch(16, seed=4)
    logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
    assert logs["skipped_steps"] == 1
    for v, old in zip(model.weighting.weights, before):
        np.testing.assert_array_equal(v.numpy(), old, err_msg=v.path)


@pytest.mark.parametrize("method", ["uncertainty", "dwa", "famo"])
def test_method_state_is_saved_with_the_model(tmp_path, method):
    model = make_model(weighting=METHODS[method]())
    model.compile(learning_rate=0.01)
    x, y, w = make_batch(16, seed=4)
    for _ in range(3):
        model.train_on_batch(x, y, sample_weight=w)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored.weighting) is type(model.weighting)
    for a, b in zip(model.weighting.weights, restored.weighting.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(model.weighting.last_weights.numpy(), 1.0)  # it learned


def test_uncertainty_log_variances_are_not_weight_decayed():
    model = make_model(weighting=wl.UncertaintyWeighting())
    model.compile(weight_decay=0.5)
    assert not model.optimizer._use_weight_decay(model.weighting.log_variance)
    assert model.optimizer._use_weight_decay(model.heads["topic"].kernel)
