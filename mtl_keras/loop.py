"""The explicit training loop: `for epoch / for batch / GradientTape`, done right.

This is the loop a blog post writes by hand, compiled with `tf.function` and
calling the model's own `train_step`, so the loss logic exists once: the
label masks, the task weighting, loss scaling under `mixed_float16` and the
replica-safe reduction are exactly those of `model.fit`.
"""

import weakref

import keras
import tensorflow as tf

# model -> {(step name, id(optimizer)): compiled step}. The steps hold only a
# weak reference to the model, so the cache does not keep models alive.
_COMPILED_STEPS = weakref.WeakKeyDictionary()


def _compiled_step(model, name):
    """`model.<name>` compiled once per model and optimizer, not once per call."""
    steps = _COMPILED_STEPS.setdefault(model, {})
    key = (name, id(model.optimizer))
    if key not in steps:
        steps[key] = _make_step(weakref.ref(model), name)
    return steps[key]


def _make_step(model_ref, name):
    @tf.function(reduce_retracing=True)
    def step(batch):
        model = model_ref()
        strategy = model.distribute_strategy
        if strategy.num_replicas_in_sync > 1:
            strategy.run(getattr(model, name), args=(batch,))
        else:
            getattr(model, name)(batch)
        # Cross-replica context: the metrics aggregated over all replicas,
        # computed in the graph rather than eagerly after every step.
        return model.get_metrics_result()

    return step


def _floats(logs):
    return {name: float(tf.convert_to_tensor(value)) for name, value in logs.items()}


def evaluate(model, dataset, verbose=0):
    """Evaluates `model` on `dataset` with the same `test_step` as `model.evaluate`."""
    strategy = model.distribute_strategy
    if strategy.num_replicas_in_sync > 1:
        dataset = strategy.experimental_distribute_dataset(dataset)
    step = _compiled_step(model, "test_step")
    model.reset_metrics()
    progbar = keras.utils.Progbar(None, verbose=verbose)
    logs = None
    for i, batch in enumerate(dataset):
        logs = step(batch)
        if verbose:
            progbar.update(i + 1)
    return _floats(logs if logs is not None else model.get_metrics_result())


def train_loop(
    model,
    dataset,
    epochs=1,
    validation_data=None,
    callbacks=None,
    verbose=1,
):
    """Trains `model` with an explicit loop; returns a `keras.callbacks.History`.

    The model must be compiled (for the optimizer). Each epoch resets the
    metrics, runs the compiled step over every batch with a progress bar
    showing the combined and per-task logs, then evaluates on
    `validation_data` (logged as `val_<key>`). Keras callbacks receive the
    usual `on_epoch_*` / `on_train_batch_end` calls.

    Args:
        model: a compiled `MultiTaskModel`.
        dataset: a `tf.data.Dataset` of `(x, y, sample_weight)` batches.
        epochs: number of passes over `dataset`.
        validation_data: optional dataset evaluated after each epoch.
        callbacks: optional list of `keras.callbacks.Callback`.
        verbose: 0 silent, 1 progress bar.

    Example:
    >>> history = train_loop(model, train_ds, epochs=2)  # doctest: +SKIP
    >>> history.history["loss"]  # doctest: +SKIP
    """
    if not model.compiled:
        raise ValueError("Call model.compile() before train_loop().")
    strategy = model.distribute_strategy
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    steps_per_epoch = int(dataset.cardinality())
    if steps_per_epoch < 0:
        steps_per_epoch = None
    if strategy.num_replicas_in_sync > 1:
        dataset = strategy.experimental_distribute_dataset(dataset)
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*(callbacks or []), history],
        add_history=False,
        add_progbar=False,
        model=model,
        epochs=epochs,
        steps=steps_per_epoch,
        verbose=verbose,
    )
    step = _compiled_step(model, "train_step")
    metric_names = [metric.name for metric in model.metrics]
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}")
        progbar = keras.utils.Progbar(
            steps_per_epoch, verbose=verbose, stateful_metrics=metric_names
        )
        logs, seen = {}, 0
        for i, batch in enumerate(dataset):
            callback_list.on_train_batch_begin(i)
            logs = _floats(step(batch))
            seen = i + 1
            callback_list.on_train_batch_end(i, logs)
            if verbose:
                progbar.update(seen, values=list(logs.items()), finalize=False)
        if verbose:
            progbar.update(seen, values=list(logs.items()), finalize=True)
        if validation_data is not None:
            val_logs = evaluate(model, validation_data)
            logs.update({f"val_{key}": value for key, value in val_logs.items()})
            if verbose:
                print("  " + " - ".join(f"val_{k}: {v:.4f}" for k, v in val_logs.items()))
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return history
