"""Training settings: how long and how fast to train, and what "best" means.

The `training:` section of a run config (`mtl_keras.config`) builds a
`Training`; `monitored_keys` and `lower_is_better` are the one home of the
rules for the monitored value (`mtl_keras.monitoring` uses them).
"""

import dataclasses

SCHEDULES = ("constant", "cosine")
BATCHING = ("length", "every_task")
_LOWER_IS_BETTER = ("loss", "mae", "mse")


def lower_is_better(key):
    """Whether smaller values of the logged `key` are better (losses, errors).

    Example:
    >>> lower_is_better("val_rating_mae"), lower_is_better("val_topic_accuracy")
    (True, False)
    """
    return str(key).split("_")[-1] in _LOWER_IS_BETTER


def monitored_keys(monitor):
    """`{key: weight}` of a `monitor` setting (a key, or a mapping of keys to weights).

    Example:
    >>> monitored_keys("val_loss"), monitored_keys({"val_a_accuracy": 2, "val_b_mcc": 1})
    ({'val_loss': 1.0}, {'val_a_accuracy': 2.0, 'val_b_mcc': 1.0})
    """
    monitor = "val_loss" if monitor is None else monitor
    keys = {monitor: 1} if isinstance(monitor, str) else monitor
    if not isinstance(keys, dict) or not keys:
        raise ValueError(f"monitor must be a logged key or {{key: weight}}, got {monitor!r}.")
    for key, weight in keys.items():
        if not (isinstance(key, str) and key.startswith("val_")):
            raise ValueError(f"monitor: {key!r} is not a validation key (val_...).")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ValueError(f"monitor: the weight of {key!r} must be > 0, got {weight!r}.")
    directions = {lower_is_better(key) for key in keys}
    if len(directions) > 1:
        raise ValueError(
            f"monitor: {sorted(keys)} mixes keys to minimize and to maximize; "
            "a weighted mean needs keys that improve in the same direction."
        )
    return {key: float(weight) for key, weight in keys.items()}


@dataclasses.dataclass(frozen=True)
class Training:
    """How long and how fast to train.

    Args:
        epochs: passes over the training data (see the sampler).
        batch_size: examples per batch.
        learning_rate: peak learning rate of AdamW (the heads' rate).
        encoder_learning_rate: if set, the encoder's peak rate
            (`mtl_keras.optimizers.EncoderAdamW`), e.g. for a pretrained one.
        weight_decay: AdamW weight decay.
        warmup_fraction: share of the steps with a linear warm-up.
        schedule: `cosine` (decay to 0 after the warm-up) or `constant`.
        seed: seeds weights, dropout and shuffling.
        steps_per_execution: training steps per compiled call.
        checkpoint: keep the best weights (by `monitor`) and end with them.
        checkpoint_every_steps: in a run directory, also save the training
            state every this many steps (it is always saved at epoch ends).
        checkpoint_every_seconds: ... and every this many seconds.
        checkpoints_to_keep: how many checkpoints a run directory keeps.
        batching: `length` (batches of similar lengths, from the whole
            stream) or `every_task` (with a mixing sampler, every batch holds
            each source's share of the epoch; for the weighting methods
            that need every task in every batch).
        diagnostics_every_steps: log per-task gradient diagnostics every
            this many steps (`mtl_keras.diagnostics`; `diagnostics.csv` and
            a plot in a run directory).
        monitor: what "best" means for `checkpoint` and early stopping: a
            logged key (`val_loss`, `val_<task>_<metric>`, e.g.
            `val_topic_accuracy`), or `{key: weight, ...}` for their weighted
            mean; losses and errors are minimized, other metrics maximized.
            Default (null): `val_loss`.
        early_stopping_patience: stop after this many epochs without a
            better `monitor` value (null: never stop early).
        tensorboard: in a run directory, write TensorBoard logs to
            `tensorboard/` (every logged scalar per epoch, the learning rate).
        deterministic: make TensorFlow's ops deterministic
            (`tf.config.experimental.enable_op_determinism`), so a resumed run
            equals the uninterrupted one bit for bit.

    Example:
    >>> Training(epochs=2).batch_size
    32
    """

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3
    encoder_learning_rate: float = None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.0
    schedule: str = "constant"
    seed: int = 0
    steps_per_execution: int = 1
    checkpoint: bool = False
    checkpoint_every_steps: int = None
    checkpoint_every_seconds: float = 300.0
    checkpoints_to_keep: int = 3
    deterministic: bool = True
    batching: str = "length"
    diagnostics_every_steps: int = None
    monitor: object = None  # val_loss (None: the config checker then takes a mapping)
    early_stopping_patience: int = None
    tensorboard: bool = True

    def __post_init__(self):
        for key in ("epochs", "batch_size", "steps_per_execution", "checkpoints_to_keep"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be >= 1, got {value!r}.")
        if not self.learning_rate > 0:
            raise ValueError("learning_rate must be > 0.")
        if self.encoder_learning_rate is not None and not self.encoder_learning_rate >= 0:
            raise ValueError("encoder_learning_rate must be >= 0.")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError("warmup_fraction must be in [0, 1).")
        every = self.checkpoint_every_steps
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"checkpoint_every_steps must be >= 1 or null, got {every!r}.")
        if self.checkpoint_every_seconds is not None and not self.checkpoint_every_seconds > 0:
            raise ValueError("checkpoint_every_seconds must be > 0 or null.")
        patience = self.early_stopping_patience
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                     or patience < 1):
            raise ValueError(f"early_stopping_patience must be >= 1 or null, got {patience!r}.")
        monitored_keys(self.monitor)  # raises for a malformed monitor
        for key, choices in (("schedule", SCHEDULES), ("batching", BATCHING)):
            if getattr(self, key) not in choices:
                raise ValueError(f"{key} must be one of {choices}, got {getattr(self, key)!r}.")
