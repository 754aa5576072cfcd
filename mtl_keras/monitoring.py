"""What "best" means in a run: the monitored value, the best weights, early stopping.

`training.monitor` names a logged validation key (`val_loss`,
`val_<task>_<metric>`) or `{key: weight}` for a weighted mean, logged as
`val_monitor`; losses and errors are minimized, other metrics maximized
(`training_settings.lower_is_better`). With `training.checkpoint`, Keras's
`ModelCheckpoint` keeps the best epoch's weights; with
`training.early_stopping_patience`, training stops after that many epochs
without a better value. Both count the whole run: a resumed run starts from
the history its run directory holds.
"""

import difflib

import keras

from mtl_keras.config_checks import ConfigError
from mtl_keras.training_settings import lower_is_better, monitored_keys

MEAN_KEY = "val_monitor"  # the log key of a weighted mean of several keys


def monitor_key(monitor):
    """The log key that is compared: the one key, or `val_monitor` for a mean.

    Example:
    >>> monitor_key("val_topic_accuracy"), monitor_key({"val_a_mcc": 1, "val_b_mcc": 1})
    ('val_topic_accuracy', 'val_monitor')
    """
    keys = monitored_keys(monitor)
    return next(iter(keys)) if len(keys) == 1 else MEAN_KEY


def check_monitor(monitor, tasks):
    """Raises `ConfigError` for a monitored key that training will not log.

    Example:
    >>> from mtl_keras import Task
    >>> check_monitor("val_topic_acuracy", [Task("topic", "multiclass", num_classes=3)])
    Traceback (most recent call last):
    ...
    mtl_keras.config_files.ConfigError: training.monitor: 'val_topic_acuracy' is not logged; did you mean 'val_topic_accuracy'? Logged: val_loss, val_topic_loss, val_topic_accuracy, val_topic_macro_f1, val_topic_mcc.
    """
    logged = ["val_loss"] + [
        f"val_{task.name}_{name}" for task in tasks for name in ("loss", *task.metric_names())
    ]
    for key in monitored_keys(monitor):
        if key not in logged:
            close = difflib.get_close_matches(key, logged, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ConfigError(
                f"training.monitor: {key!r} is not logged{hint} Logged: {', '.join(logged)}."
            )


def best_of(values, key):
    """The best of `values` of the logged `key` (None for none).

    Example:
    >>> best_of([0.5, 0.3, 0.4], "val_loss"), best_of([0.5, 0.7], "val_topic_accuracy")
    (0.3, 0.7)
    """
    if not values:
        return None
    return min(values) if lower_is_better(key) else max(values)


def epochs_since_best(values, key):
    """Epochs after the (first) best value in `values` of `key`.

    Example:
    >>> epochs_since_best([0.5, 0.3, 0.4, 0.35], "val_loss")
    2
    """
    if not values:
        return 0
    return len(values) - 1 - values.index(best_of(values, key))


class MonitoredMean(keras.callbacks.Callback):
    """Adds the weighted mean of the monitored keys to each epoch's logs (`val_monitor`).

    Example:
    >>> logs = {"val_a_mcc": 0.2, "val_b_mcc": 0.6}
    >>> MonitoredMean({"val_a_mcc": 1, "val_b_mcc": 3}).on_epoch_end(0, logs)
    >>> round(logs["val_monitor"], 3)
    0.5
    """

    def __init__(self, monitor):
        super().__init__()
        self.weights = monitored_keys(monitor)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        missing = [key for key in self.weights if key not in logs]
        if missing:
            raise ValueError(f"training.monitor: {missing} not in the epoch's logs {sorted(logs)}.")
        total = sum(self.weights.values())
        logs[MEAN_KEY] = sum(w * float(logs[k]) for k, w in self.weights.items()) / total


class EarlyStopping(keras.callbacks.Callback):
    """Stops training after `patience` epochs without a better monitored value.

    Keras's `EarlyStopping` forgets its count at every `fit` call, and a run
    resumed mid-epoch trains with several (`epochs.train_epochs`); this one
    counts over the run's whole history, `previous` (the epochs before the
    resume) included, so an interrupted run stops where an uninterrupted one
    would.

    Example:
    >>> stopper = EarlyStopping("val_loss", patience=2, previous=[0.5, 0.3])
    >>> stopper.stopped_before  # one epoch since the best
    False
    """

    def __init__(self, key, patience, previous=()):
        super().__init__()
        self.key, self.patience = key, patience
        self.values = [float(v) for v in previous]
        self.stopped_before = self._exhausted()  # a resumed run that had stopped
        self.stopped_epoch = None

    def _exhausted(self):
        return epochs_since_best(self.values, self.key) >= self.patience

    def on_epoch_end(self, epoch, logs=None):
        if not logs or self.key not in logs:
            raise ValueError(f"training.monitor: {self.key!r} not in the epoch's logs.")
        self.values.append(float(logs[self.key]))
        if self._exhausted():
            self.stopped_epoch = epoch
            self.model.stop_training = True


def callbacks(training, best_weights=None, previous=None):
    """The callbacks of `training`'s monitor: the mean, the best weights, early stopping.

    `best_weights` is where `ModelCheckpoint` keeps the best epoch's weights
    (with `training.checkpoint`); `previous` is the history (`{key:
    values}`) of the epochs before a resume.

    Example:
    >>> from mtl_keras.training_settings import Training
    >>> training = Training(monitor={"val_a_mcc": 1, "val_b_mcc": 1}, early_stopping_patience=2)
    >>> [type(c).__name__ for c in callbacks(training)]
    ['MonitoredMean', 'EarlyStopping']
    """
    previous = previous or {}
    key = monitor_key(training.monitor)
    found = [MonitoredMean(training.monitor)] if key == MEAN_KEY else []
    if training.checkpoint and best_weights is not None:
        best_weights.parent.mkdir(parents=True, exist_ok=True)
        found.append(
            keras.callbacks.ModelCheckpoint(
                str(best_weights),
                monitor=key,
                mode="min" if lower_is_better(key) else "max",
                save_best_only=True,
                save_weights_only=True,
                initial_value_threshold=best_of(previous.get(key, []), key),
            )
        )
    if training.early_stopping_patience:
        found.append(EarlyStopping(key, training.early_stopping_patience, previous.get(key, [])))
    return found
