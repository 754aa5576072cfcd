"""The explicit training loop: `for epoch / for batch / GradientTape`, done right.

This is the loop a blog post writes by hand, compiled with `tf.function` and
calling the model's own `train_step`, so the loss logic exists once: the
label masks, the task weighting, loss scaling under `mixed_float16` and the
replica-safe reduction are exactly those of `model.fit`. (The tape itself is
in `MultiTaskModel.train_step`; notebook 03 writes it out by hand.)
Validation is `model.evaluate`, the one evaluation path.
"""

import weakref

import keras
import tensorflow as tf

from mtl_keras import _compat

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


def train_loop(
    model,
    dataset,
    epochs=1,
    initial_epoch=0,
    steps_per_epoch=None,
    validation_data=None,
    callbacks=None,
    verbose=1,
):
    """Trains `model` with an explicit loop; returns a `keras.callbacks.History`.

    The loop `fit` runs, written out: callbacks get the same calls
    (`on_train_begin`, `on_epoch_*`, `on_train_batch_*`), `initial_epoch`
    (or the epoch a `BackupAndRestore` restored) is where it starts, an
    epoch is one pass over `dataset` (or `steps_per_epoch` batches of one
    iterator kept across epochs), and each epoch ends with an evaluation on
    `validation_data`, logged as `val_<key>`.

    Args:
        model: a compiled `MultiTaskModel`.
        dataset: a `tf.data.Dataset` of `(x, y, sample_weight)` batches.
        epochs: the epoch to stop before (as in `fit`).
        initial_epoch: the epoch to start at (as in `fit`).
        steps_per_epoch: batches per epoch, read from one iterator.
        validation_data: optional dataset evaluated after each epoch.
        callbacks: optional list of `keras.callbacks.Callback`.
        verbose: 0 silent, 1 progress bar.

    Example:
    >>> import numpy as np
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> encoder = SharedEncoder(20, 8, hidden_dim=8, num_layers=1)
    >>> model = MultiTaskModel([Task("spam", "binary")], encoder)
    >>> model.compile()
    >>> x = {"token_ids": np.random.randint(1, 20, (8, 8)).astype("int32"),
    ...      "padding_mask": np.ones((8, 8), bool)}
    >>> labels = {"spam": np.ones(8, "float32")}
    >>> batches = tf.data.Dataset.from_tensor_slices((x, labels)).batch(4)
    >>> history = train_loop(model, batches, epochs=2, verbose=0)
    >>> len(history.history["loss"])
    2
    """
    if not model.compiled:
        raise ValueError("Call model.compile() before train_loop().")
    strategy = model.distribute_strategy
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    if steps_per_epoch is None and int(dataset.cardinality()) >= 0:
        steps = int(dataset.cardinality())
    else:
        steps = steps_per_epoch
    if strategy.num_replicas_in_sync > 1:
        dataset = strategy.experimental_distribute_dataset(dataset)
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*(callbacks or []), history],
        add_history=False,
        add_progbar=False,
        model=model,
        epochs=epochs,
        steps=steps,
        verbose=verbose,
    )
    step = _compiled_step(model, "train_step")
    # Traced once for the dataset's spec (batch and length dims None), so every
    # bucket's shape reuses it; retracing on shapes would trace twice more.
    step.get_concrete_function(dataset.element_spec)
    metric_names = [metric.name for metric in model.metrics]
    shared_iterator = iter(dataset) if steps_per_epoch is not None else None
    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(_compat.initial_epoch(model, initial_epoch), epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}")
        progbar = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=metric_names)
        batches = dataset if shared_iterator is None else _take(shared_iterator, steps)
        for i, batch in enumerate(batches):
            callback_list.on_train_batch_begin(i)
            logs = _floats(step(batch))
            callback_list.on_train_batch_end(i, logs)
            if verbose:
                progbar.update(i + 1, values=list(logs.items()))
            if model.stop_training:
                break
        if validation_data is not None:
            val_logs = model.evaluate(validation_data, verbose=0, return_dict=True)
            logs.update({f"val_{key}": value for key, value in val_logs.items()})
            if verbose:
                print("  " + " - ".join(f"val_{k}: {v:.4f}" for k, v in val_logs.items()))
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return history


def _take(iterator, count):
    for _ in range(count):
        yield next(iterator)
