"""The training step: task losses -> the weighting method -> one update.

`MultiTaskModel.train_step` is `train_step(model, data)`, so `fit` and the
explicit loop (`mtl_keras.loop`) run this. In order:

1. The forward pass and each task's loss share (`compute_task_losses`: the
   replica's sum over the *global* labelled count), and the global losses
   (summed over replicas) that the weighting method sees.
2. The gradients, as the method's `uses` asks (`mtl_keras.weighting.base`):
   of the method's objective (loss methods), or per task -- of the shared
   encoder's variables (`shared_gradients`) or of the encoder's output
   (`feature_gradients`) -- unscaled, in float32, *summed over the replicas
   before* their Gram matrix is formed, so the non-linear combination sees
   the global batch's gradients, as on one device. Heads get their own
   task's gradient. There is no switch on method names: only on `uses`.
3. Under a strategy with more than one replica, every gradient is summed
   over the replicas here, and only the first replica hands it on: the
   optimizer's own sum then reproduces it exactly, and its clipping
   (`clipnorm`, `global_clipnorm`) and `LossScaleOptimizer`'s finiteness
   check see the global gradient, as on one device -- not each replica's
   part. (Keras clips before it sums; this costs a second all-reduce.)
4. The update (skipped when a task's global loss is not finite, on every
   replica alike; `FailOnNonFinite` then stops `fit`), the
   method's state updates (only when the gradients are finite, so a step
   the loss scale skips leaves them unchanged), the counters and the logs.
"""

import keras
import tensorflow as tf


def num_replicas():
    """Replicas in sync in the current replica context (1 outside a strategy).

    Example:
    >>> num_replicas()
    1
    """
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def global_sum(value):
    """Sums `value` (a tensor or nest) over the replicas (identity on one).

    Example:
    >>> float(global_sum(tf.constant(2.0)))
    2.0
    """
    if num_replicas() == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def dense(gradient):
    """The gradient as a tensor (None stays None).

    The embedding's gradient is an IndexedSlices with one slice per token
    occurrence. Dense, its duplicates are summed before the clip norm and
    Adam's square (else a token seen k times gets sum g^2, not (sum g)^2),
    and an all-reduce sums it exactly.

    Example:
    >>> slices = tf.IndexedSlices(tf.ones((2, 1)), tf.constant([0, 0]), tf.constant([3, 1]))
    >>> dense(slices).numpy().ravel().tolist()  # token 0 seen twice
    [2.0, 0.0, 0.0]
    """
    if isinstance(gradient, tf.IndexedSlices):
        return tf.convert_to_tensor(gradient)
    return gradient


def loss_scale(optimizer):
    """The optimizer's current loss scale (1.0 without a `LossScaleOptimizer`).

    Example:
    >>> float(loss_scale(keras.optimizers.SGD()))
    1.0
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(tf.convert_to_tensor(optimizer.dynamic_scale), "float32")
    return tf.constant(1.0)


def gram_matrix(task_gradients):
    """`gram[i, j] = sum over variables of <g_i, g_j>` (float32, [T, T]).

    `task_gradients` is a list (per task) of lists (per variable) of
    tensors or None (zero).

    Example:
    >>> a = [tf.constant([1.0, 0.0]), tf.constant([[2.0]])]
    >>> b = [tf.constant([0.0, 3.0]), None]
    >>> gram_matrix([a, b]).numpy().tolist()
    [[5.0, 0.0], [0.0, 9.0]]
    """
    t = len(task_gradients)
    gram = tf.zeros((t, t))
    for per_task in zip(*task_gradients):
        if all(g is None for g in per_task):
            continue
        reference = next(g for g in per_task if g is not None)
        rows = tf.stack(
            [
                tf.reshape(tf.zeros_like(reference) if g is None else g, (-1,))
                for g in per_task
            ]
        )
        gram += tf.matmul(rows, rows, transpose_b=True)
    return gram


def combine(weights, task_gradients):
    """`sum_t weights[t] * g_t` per variable (None where no task has one).

    Example:
    >>> float(combine(tf.constant([1.0, 2.0]), [[tf.constant(1.0)], [tf.constant(3.0)]])[0])
    7.0
    """
    combined = []
    for per_task in zip(*task_gradients):
        terms = [weights[i] * g for i, g in enumerate(per_task) if g is not None]
        combined.append(tf.add_n(terms) if terms else None)
    return combined


def train_step(model, data):
    """One training step of `model` on the batch `(x, y, sample_weight)`; returns the logs.

    Example:
    >>> import numpy as np
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> encoder = SharedEncoder(vocabulary_size=20, sequence_length=8, hidden_dim=8,
    ...                         num_layers=1, num_heads=2)
    >>> model = MultiTaskModel([Task("spam", "binary"), Task("long", "binary")], encoder,
    ...                        weighting="pcgrad")
    >>> model.compile()
    >>> x = {"token_ids": np.ones((2, 8), "int32"), "padding_mask": np.ones((2, 8), bool)}
    >>> y = {"spam": np.array([0.0, 1.0]), "long": np.array([1.0, 1.0])}
    >>> logs = train_step(model, (x, y))
    >>> int(model.train_step_counter.numpy()), sorted(logs)[:3]
    (1, ['long_accuracy', 'long_auc', 'long_f1'])
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    weighting = model.weighting
    optimizer = model.optimizer
    variables = model.trainable_variables
    step = tf.convert_to_tensor(model.train_step_counter)
    uses = weighting.uses
    with tf.GradientTape(persistent=uses != "losses") as tape:
        if uses == "feature_gradients":
            y_pred, features = model.call_with_features(x, training=True)
        else:
            y_pred = model(x, training=True)
        task_losses, counts = model.compute_task_losses(
            y, y_pred, sample_weight, return_counts=True
        )
        local = weighting.as_vector(task_losses)
        losses = tf.stop_gradient(global_sum(local))
        present = weighting.as_vector(counts) > 0
        if uses == "losses":
            objective = weighting.objective(local, losses, present, step, num_replicas())
            scaled_objective = optimizer.scale_loss(objective)
    scale = loss_scale(optimizer)
    if uses == "losses":
        gradients = [dense(g) for g in tape.gradient(scaled_objective, variables)]
        summed = [False] * len(gradients)
        weights = weighting.effective_weights(losses, present, step)
    else:
        gradients, summed, weights = _task_gradient_update(
            model, tape, task_losses,
            features["sequence_output"] if uses == "feature_gradients" else None,
            losses, present, step, scale, variables,
        )
        del tape
    gradients = _summed_over_replicas(gradients, summed)
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None])
    gradients = _first_replica_only(gradients)
    _assign_if(finite, weighting.state_updates(losses, present, step))
    weights = tf.where(finite, weights, tf.convert_to_tensor(weighting.last_weights))
    _assign_if(finite, [(weighting.last_weights, weights)])
    model.track_weights(weights)
    logged = tf.reduce_sum(model.loss_weight_vector * local)
    # The global losses: every replica takes the same branch.
    model.apply_if_finite(tf.reduce_all(tf.math.is_finite(losses)), gradients, variables)
    if weighting.needs_losses_after_step:
        after, _ = model.compute_task_losses(
            y, model(x, training=False), sample_weight, update_metrics=False, return_counts=True
        )
        after = global_sum(weighting.as_vector(after))
        finite_after = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(after)))
        _assign_if(finite_after, weighting.after_step_updates(losses, after, present))
    model.count_step(logged, model.train_step_counter)
    logs = model.get_metrics_result()
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # Steps the loss scale skipped (non-finite fp16 gradients): normal, logged.
        logs["skipped_steps"] = model.train_step_counter - optimizer.iterations
    return logs


def _task_gradient_update(model, tape, task_losses, features, losses, present, step, scale, variables):
    """Gradients for a method that combines per-task gradients.

    Returns `(gradients per variable, whether each is already summed over
    the replicas, the weights)`.
    """
    weighting = model.weighting
    zero = tf.zeros(())
    targets = [task_losses.get(name, zero) for name in weighting.task_names]
    shared_ids = {id(v) for v in model.encoder.trainable_variables}
    shared = [v for v in variables if id(v) in shared_ids]
    own = [v for v in variables if id(v) not in shared_ids]
    seeds = [scale] * len(targets)  # backpropagate the scaled losses (fp16)

    def unscaled(gradients):
        return [None if g is None else tf.cast(dense(g), "float32") / scale for g in gradients]

    if features is None:
        per_task = [
            unscaled(tape.gradient(target, shared, output_gradients=scale)) for target in targets
        ]
        per_task = global_sum(per_task)
        weights = weighting.gradient_weights(gram_matrix(per_task), losses, present, step)
        shared_gradients = [None if g is None else g * scale for g in combine(weights, per_task)]
        shared_summed = True
    else:
        per_task = [
            unscaled([tape.gradient(target, features, output_gradients=scale)])
            for target in targets
        ]
        gram = global_sum(gram_matrix(per_task))
        weights = tf.stop_gradient(weighting.gradient_weights(gram, losses, present, step))
        shared_gradients = tape.gradient(
            targets, shared, output_gradients=[w * scale for w in tf.unstack(weights)]
        )
        shared_summed = False
    own_gradients = tape.gradient(targets, own, output_gradients=seeds)
    by_variable = dict(zip(map(id, shared), zip(shared_gradients, [shared_summed] * len(shared))))
    by_variable.update(zip(map(id, own), zip(own_gradients, [False] * len(own))))
    gradients = [dense(by_variable[id(v)][0]) for v in variables]
    summed = [by_variable[id(v)][1] for v in variables]
    return gradients, summed, weights


def _summed_over_replicas(gradients, summed):
    if num_replicas() == 1:
        return gradients
    todo = [i for i, g in enumerate(gradients) if g is not None and not summed[i]]
    reduced = global_sum([gradients[i] for i in todo])
    gradients = list(gradients)
    for i, g in zip(todo, reduced):
        gradients[i] = g
    return gradients


def _first_replica_only(gradients):
    if num_replicas() == 1:
        return gradients
    first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
    return [None if g is None else tf.where(first, g, tf.zeros_like(g)) for g in gradients]


def _assign_if(condition, updates):
    for variable, value in updates:
        kept = tf.convert_to_tensor(variable)
        variable.assign(tf.where(condition, tf.cast(value, kept.dtype), kept))
