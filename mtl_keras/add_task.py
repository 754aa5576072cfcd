"""Adding a task to a trained multi-task model."""

import keras

from mtl_keras.model import MultiTaskModel
from mtl_keras.tasks import Task
from mtl_keras.weighting import StaticWeighting


def add_task(model, task, freeze=True, weighting=None, name=None):
    """A new `MultiTaskModel`: `model`'s tasks with their weights, plus `task`.

    The encoder and the old heads are copies of `model`'s (same weights, new
    variables), so training the new model leaves `model` untouched. The new
    task's head is freshly initialized.

    Two ways to train the result:

    - `freeze=True` (default): the encoder and the old heads are frozen
      (`trainable = False`; the old heads are recorded in `frozen_tasks`, so
      this survives a `.keras` round trip). Only the new head learns, from
      the new task's data alone, and the old tasks' outputs stay
      bit-identical.
    - `freeze=False`: everything trains. Mix the old tasks' data back in
      (replay, e.g. a `mtl_keras.data.Mixture` of the old and new sources),
      or the old tasks drift; consider a small encoder learning rate
      (`compile(encoder_learning_rate=...)`). The old tasks' metrics before
      and after tell how much they moved.

    Args:
        model: a trained `MultiTaskModel`.
        task: the new `Task` (or its config dict); its name must be new.
        freeze: freeze the encoder and the old heads (see above).
        weighting: the new model's `LossWeighting`. Default: the method of
            `model` (a `StaticWeighting` with the new task at its
            `loss_weight`; a learned method's state starts afresh).
        name: the new model's name; default `model`'s.

    Returns:
        The new, uncompiled `MultiTaskModel`.

    Example:
    >>> import numpy as np
    >>> from mtl_keras import SharedEncoder, TextPreprocessor
    >>> texts = ["a good film", "a bad film", "a good song", "a bad song"]
    >>> preprocessor = TextPreprocessor.from_texts(texts, vocabulary_size=30,
    ...                                            sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8,
    ...                                          num_layers=1, num_heads=2)
    >>> model = MultiTaskModel([Task("positive", "binary")], encoder, preprocessor)
    >>> bigger = add_task(model, Task("medium", "binary", label_names=["film", "song"]))
    >>> bigger.task_names, bigger.get_config()["frozen_tasks"]
    (['positive', 'medium'], ['positive'])
    >>> bigger.compile(learning_rate=1e-2)
    >>> x = preprocessor(texts)
    >>> history = bigger.fit(x, {"medium": np.array([0., 0., 1., 1.])}, epochs=2,
    ...                      verbose=0)  # the new task's labels alone
    >>> bool(np.array_equal(model(x)["positive"], bigger(x)["positive"]))  # bit-identical
    True
    >>> bigger.preprocessor is preprocessor  # it still takes strings
    True
    """
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"Expected a MultiTaskModel, got {type(model).__name__}.")
    task = task if isinstance(task, Task) else Task(**task)
    if task.name in model.task_names:
        raise ValueError(f"The model already has a task named {task.name!r}.")
    weighting = (
        _extended_weighting(model.weighting, task) if weighting is None else weighting
    )

    encoder = keras.layers.deserialize(keras.layers.serialize(model.encoder))
    encoder.set_weights(model.encoder.get_weights())
    old_frozen = [n for n in model.task_names if not model.heads[n].trainable]
    bigger = MultiTaskModel(
        [*model.tasks, task],
        encoder,
        model.preprocessor,
        weighting=weighting,
        frozen_tasks=model.task_names if freeze else old_frozen,
        name=name or model.name,
    )
    for old in model.task_names:
        bigger.heads[old].set_weights(model.heads[old].get_weights())
    if freeze:
        bigger.encoder.trainable = False
    return bigger


def _extended_weighting(weighting, task):
    """The same method for one more task; learned state starts afresh."""
    if type(weighting) is StaticWeighting:
        return StaticWeighting({**weighting.weights_by_task, task.name: task.loss_weight})
    return type(weighting).from_config(weighting.get_config())
