"""The multi-task model: a shared encoder, one head per task, one training step."""

import keras
import tensorflow as tf

from mtl_keras import _compat, guards, step
from mtl_keras.backbone import SharedEncoder  # noqa: F401 (registers it for loading)
from mtl_keras.optimizers import EncoderAdamW
from mtl_keras.preprocess import TextPreprocessor, text_inputs
from mtl_keras.serving import TextServing
from mtl_keras.step import global_sum
from mtl_keras.tasks import validate_tasks
from mtl_keras.weighting import LossWeighting, get_weighting


@keras.saving.register_keras_serializable(package="mtl_keras")
class MultiTaskModel(TextServing, _compat.PrebuiltFunctionalModel):
    """A shared encoder feeding one Dense head per task, with named outputs.

    Takes `{"token_ids": int [B, L], "padding_mask": bool [B, L]}` and
    returns `{task_name: logits}` (float32 under any precision). Per-token
    tasks (`tagging`) read the encoder's sequence output, the others its
    pooled output. With a `preprocessor` the model also takes raw strings in
    `predict` (and `predict_labels`), and a `.keras` file of it is
    self-contained: vocabulary included.

    Training (`fit`, or `mtl_keras.loop.train_loop`, which calls the same
    `train_step`) takes batches `(x, y, sample_weight)` with `y` and
    `sample_weight` dicts keyed by task name. `sample_weight[task]` is the
    task's label mask: each task's loss is the mean over the examples that
    carry its label, over the *global* batch (all replicas), so unlabelled
    rows neither contribute nor dilute the mean, and a batch without labels
    for a task contributes exactly 0. The task losses are combined by a
    `LossWeighting` strategy (a weighted sum by default). Under
    `mixed_float16` the loss is scaled through the optimizer
    (`LossScaleOptimizer`); the unscaled loss is what is logged, with
    `skipped_steps`. The embedding's sparse gradient is made dense before the
    optimizer sees it, and a step whose loss is not finite is not applied.

    Args:
        tasks: a list of `Task`s (or their config dicts).
        encoder: a `SharedEncoder` (or any functional model with the same
            inputs and `sequence_output` / `pooled_output` outputs).
        preprocessor: the `TextPreprocessor` that turns strings into the
            encoder's inputs; optional, but needed for strings in
            `predict`, `predict_labels` and `export_saved_model`.
        weighting: a `LossWeighting` (`mtl_keras.weighting`), or a method
            name (`"pcgrad"`) or `{"method": ..., **arguments}`; default:
            `static`, the tasks' `loss_weight`s.
        frozen_tasks: names of tasks whose heads are not trained
            (`trainable = False`), e.g. the old tasks after
            `mtl_keras.add_task.add_task`; the config records the heads
            frozen at saving time.

    Example:
    >>> import numpy as np
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> texts = ["the match was great", "the vote was close", "a great vote"]
    >>> preprocessor = TextPreprocessor.from_texts(texts, vocabulary_size=40,
    ...                                            sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8,
    ...                                          num_layers=1, num_heads=2)
    >>> model = MultiTaskModel([Task("topic", "multiclass", 3),
    ...                         Task("positive", "binary")], encoder, preprocessor)
    >>> model.compile()
    >>> x = preprocessor(texts)
    >>> y = {"topic": np.array([0, 1, 1]), "positive": np.array([1., 0., 1.])}
    >>> mask = {"topic": np.ones(3, "float32"), "positive": np.array([1., 1., 0.], "float32")}
    >>> history = model.fit(x, y, sample_weight=mask, epochs=1, verbose=0)
    >>> sorted(model.predict(["a close match"], verbose=0))
    ['positive', 'topic']
    >>> sorted(model.predict_labels(["a close match"])[0]["topic"])
    ['label', 'probabilities']
    """

    def __init__(
        self,
        tasks,
        encoder,
        preprocessor=None,
        weighting=None,
        frozen_tasks=None,
        **kwargs,
    ):
        tasks = validate_tasks(tasks)
        frozen_tasks = list(frozen_tasks or [])
        unknown = set(frozen_tasks) - {task.name for task in tasks}
        if unknown:
            raise ValueError(
                f"frozen_tasks {sorted(unknown)} are not tasks of the model."
            )
        weighting = get_weighting("static" if weighting is None else weighting, tasks)
        if not isinstance(weighting, LossWeighting):
            raise TypeError(
                f"weighting must be a LossWeighting, got {type(weighting).__name__}."
            )
        if preprocessor is not None and not isinstance(preprocessor, TextPreprocessor):
            raise TypeError(f"preprocessor must be a TextPreprocessor, got {preprocessor!r}.")
        if preprocessor is not None:
            preprocessor.check_encoder(encoder)
        # === Layers ===
        self.encoder = encoder
        self.heads = {
            task.name: keras.layers.Dense(
                task.head_units, dtype="float32", name=f"{task.name}_head"
            )
            for task in tasks
        }
        self.head_dropout = keras.layers.Dropout(
            encoder.get_config().get("dropout", 0.1), name="head_dropout"
        )

        # === Functional graph ===
        inputs = {
            "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input(shape=(None,), dtype="bool", name="padding_mask"),
        }
        features = encoder(inputs)
        pooled = self.head_dropout(features["pooled_output"])
        sequence = features["sequence_output"]
        outputs = {
            task.name: self.heads[task.name](sequence if task.per_token else pooled)
            for task in tasks
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        for name in frozen_tasks:
            self.heads[name].trainable = False

        # === Config and state ===
        self.tasks = tasks
        self.preprocessor = preprocessor
        self.weighting = weighting
        weighting.build_for_tasks(self.task_names)
        self.losses_by_task = {task.name: task.loss() for task in tasks}
        # Counts every train step, including the ones a LossScaleOptimizer
        # skips (which do not advance `optimizer.iterations`).
        self.train_step_counter = keras.Variable(
            0,
            dtype="int64",
            trainable=False,
            aggregation="only_first_replica",
            name="train_step_counter",
        )
        self._combined_loss_tracker = keras.metrics.Mean(name="loss")
        self._task_loss_trackers = {
            task.name: keras.metrics.Mean(name=f"{task.name}_loss") for task in tasks
        }
        self._task_metrics = {task.name: task.metrics() for task in tasks}
        # Each task's effective weight, averaged over the epoch's steps.
        self._weight_trackers = {
            task.name: keras.metrics.Mean(name=f"{task.name}_weight")
            for task in tasks
            if weighting.logs_weights
        }

    @property
    def task_names(self):
        return [task.name for task in self.tasks]

    @property
    def precision(self):
        return self.encoder.get_config().get("dtype", "float32")

    # --- Training -----------------------------------------------------------

    def compile(
        self,
        optimizer=None,
        learning_rate=1e-3,
        weight_decay=0.01,
        loss_scale=True,
        encoder_learning_rate=None,
        **kwargs,
    ):
        """Configures training with defaults that suit the task kinds.

        The optimizer is built here, for the trainable variables and also
        for the frozen weights of the encoder and heads, so that unfreezing
        them later (`mtl_keras.pretrained.UnfreezeEncoder`) keeps the same
        optimizer.

        Args:
            optimizer: a Keras optimizer; default AdamW(`learning_rate`,
                `weight_decay`, global_clipnorm 1.0: the norm of all gradients).
            encoder_learning_rate: if set, the default optimizer is an
                `EncoderAdamW` that updates the encoder at this rate and the
                heads at `learning_rate` (a float). With a schedule, pass
                `optimizer=EncoderAdamW(schedule,
                encoder_learning_rate_multiplier=...)` instead.
            loss_scale: under `mixed_float16`, wrap the optimizer in a
                `LossScaleOptimizer` (dynamic loss scaling) unless it is one.
            **kwargs: passed to `keras.Model.compile` (`steps_per_execution`,
                `jit_compile`, ...). Losses and metrics come from the tasks;
                passing `loss` or `metrics` is an error.
        """
        for key in ("loss", "metrics", "loss_weights"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"MultiTaskModel.compile() takes no `{key}`: each Task's kind "
                    "defines its loss and metrics, and `weighting` combines them."
                )
        if optimizer is not None and encoder_learning_rate is not None:
            raise ValueError(
                "Pass either an optimizer or encoder_learning_rate; for your own "
                "optimizer use EncoderAdamW(encoder_learning_rate_multiplier=...)."
            )
        if optimizer is None and encoder_learning_rate is not None:
            if not isinstance(learning_rate, (int, float)):
                raise ValueError(
                    "encoder_learning_rate needs a float learning_rate; with a "
                    "schedule pass optimizer=EncoderAdamW(schedule, "
                    "encoder_learning_rate_multiplier=...)."
                )
            optimizer = EncoderAdamW(
                learning_rate=learning_rate,
                encoder_learning_rate_multiplier=encoder_learning_rate / learning_rate,
                weight_decay=weight_decay,
                global_clipnorm=1.0,
            )
        elif optimizer is None:
            optimizer = keras.optimizers.AdamW(
                learning_rate=learning_rate, weight_decay=weight_decay, global_clipnorm=1.0
            )
        else:
            optimizer = keras.optimizers.get(optimizer)
        if (
            self.precision == "mixed_float16"
            and loss_scale
            and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        ):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        kwargs.setdefault("jit_compile", False)
        if self.weighting.trainable_weights:  # e.g. uncertainty's log variances
            inner = getattr(optimizer, "inner_optimizer", optimizer)
            if not inner.built:
                inner.exclude_from_weight_decay(var_list=self.weighting.trainable_weights)
        super().compile(optimizer=optimizer, auto_scale_loss=False, **kwargs)
        self._build_optimizer()

    def _build_optimizer(self):
        optimizer = self.optimizer
        if optimizer.built:
            return
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        if isinstance(inner, EncoderAdamW):
            inner.set_encoder_variables(self.encoder.weights)
        with self.distribute_strategy.scope():
            optimizer.build(self.optimizer_variables())

    def optimizer_variables(self):
        """The variables the optimizer is built for, in a fixed order.

        The trainable variables, and the frozen (float) weights of the
        encoder and the heads, which may be unfrozen later.
        """
        freezable = {
            id(v)
            for layer in (self.encoder, *self.heads.values())
            for v in layer.weights
            if "float" in str(v.dtype)
        }
        return [v for v in self.weights if v.trainable or id(v) in freezable]

    @property
    def metrics(self):
        tracked = [self._combined_loss_tracker]
        for name in self.task_names:
            tracked.append(self._task_loss_trackers[name])
            tracked.extend(self._task_metrics[name])
        return tracked + list(self._weight_trackers.values())

    def track_weights(self, weights):
        """Logs each task's weight (`<task>_weight`, averaged over the epoch)."""
        for tracker, weight in zip(self._weight_trackers.values(), tf.unstack(weights)):
            tracker.update_state(weight)

    def compute_task_losses(
        self, y, y_pred, sample_weight=None, update_metrics=True, return_counts=False
    ):
        """Each labelled task's mean loss over the labelled units of the global batch.

        Returns `{task: scalar}` for the tasks present in `y` (and, with
        `return_counts`, `{task: global labelled count}` too). Each replica
        returns its share (its sum divided by the global labelled count), so
        summing the replicas' gradients gives the gradient of the true mean;
        no further division by the replica count is needed.
        """
        sample_weight = sample_weight or {}
        task_losses, counts = {}, {}
        for task in self.tasks:
            if task.name not in y:
                continue
            labels, logits = task.task_kind.loss_inputs(y[task.name], y_pred[task.name])
            per_unit = self.losses_by_task[task.name](labels, logits)
            mask = sample_weight.get(task.name)
            if mask is None:
                mask = tf.ones_like(per_unit)
            mask = tf.reshape(tf.cast(mask, per_unit.dtype), tf.shape(per_unit))
            local_sum = tf.reduce_sum(per_unit * mask)
            global_count = counts[task.name] = global_sum(tf.reduce_sum(mask))
            task_losses[task.name] = tf.math.divide_no_nan(local_sum, global_count)
            if update_metrics:
                self._update_task_metrics(task, y[task.name], y_pred[task.name], per_unit, mask)
        return (task_losses, counts) if return_counts else task_losses

    def _update_task_metrics(self, task, labels, logits, per_unit, mask):
        # Metrics count labelled units: rows, or words (first pieces) for
        # tagging tasks, whose metrics take `[B, L]` labels and mask.
        self._task_loss_trackers[task.name].update_state(
            tf.reshape(per_unit, (-1,)), sample_weight=tf.reshape(mask, (-1,))
        )
        labels, logits = task.task_kind.metric_inputs(task, labels, logits)
        for metric in self._task_metrics[task.name]:
            metric.update_state(labels, logits, sample_weight=mask)

    def train_step(self, data):
        """One update (`mtl_keras.step.train_step`: read it for the details)."""
        return _compat.reducible_logs(step.train_step(self, data), self.distribute_strategy)

    def call_with_features(self, x, training=False):
        """`(outputs, encoder features)`: the model's graph, keeping the encoder's output.

        For the weighting methods that use the gradients with respect to the
        shared features (`uses = "feature_gradients"`).
        """
        features = self.encoder(x, training=training)
        pooled = self.head_dropout(features["pooled_output"], training=training)
        outputs = {
            task.name: self.heads[task.name](
                features["sequence_output"] if task.per_token else pooled
            )
            for task in self.tasks
        }
        return outputs, features

    @property
    def loss_weight_vector(self):
        """The tasks' `loss_weight`s (what the logged `loss` weighs the tasks by)."""
        return tf.constant([task.loss_weight for task in self.tasks], "float32")

    def apply_if_finite(self, finite, gradients, variables):
        """Applies the gradients if `finite` (a bool, the same on every replica).

        The step passes whether the *global* loss is finite, so every replica
        takes the same branch (`FailOnNonFinite` then stops `fit`). Under a
        strategy whose update is a merge call (MirroredStrategy and
        MultiWorkerMirroredStrategy outside XLA), a `tf.cond` in replica
        context cannot hold it; as Keras's `LossScaleOptimizer` does, the
        condition is taken in cross-replica context and each replica applies
        its gradients inside the branch.
        """
        optimizer = self.optimizer

        def apply(gradients):
            optimizer.apply_gradients(zip(gradients, variables))

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1 or not (
            _compat.update_is_a_merge_call()
        ):
            tf.cond(finite, lambda: apply(gradients), lambda: None)
            return

        def in_cross_replica_context(strategy, finite, gradients):
            finite = strategy.experimental_local_results(finite)[0]

            def each_replica():
                strategy.extended.call_for_each_replica(apply, args=(gradients,))

            tf.cond(finite, each_replica, lambda: None)

        context.merge_call(in_cross_replica_context, args=(finite, gradients))

    def count_step(self, loss, step_counter=None):
        """Logs `loss` (this replica's share) and advances `step_counter`."""
        # Tie the counters to the loss: when Keras runs a step past the end of
        # a dataset of unknown length, the step fails on `get_next` and these
        # updates must not run either (they would, having no data input).
        with tf.control_dependencies([loss]):
            if step_counter is not None:
                step_counter.assign_add(1)
            self._combined_loss_tracker.update_state(global_sum(loss))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        task_losses = self.compute_task_losses(y, y_pred, sample_weight)
        logged = tf.reduce_sum(self.loss_weight_vector * self.weighting.as_vector(task_losses))
        self.track_weights(tf.convert_to_tensor(self.weighting.last_weights))
        self.count_step(logged)
        return _compat.reducible_logs(self.get_metrics_result(), self.distribute_strategy)

    def get_metric(self, name):
        """The metric object logged as `name` (e.g. `"topic_accuracy"`)."""
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"No metric {name!r}; logged: {[m.name for m in self.metrics]}.")

    def get_metrics_result(self):
        return {metric.name: metric.result() for metric in self.metrics}

    def predict(self, x, batch_size=None, **kwargs):
        """`keras.Model.predict`; also takes raw strings when the model has a
        preprocessor: a list of texts, or `{"text": [...], "text_pair": [...]}`
        for sentence pairs. Returns `{task: logits}` (numpy)."""
        texts = text_inputs(x)
        if texts is not None:
            x = self._text_batches(texts, batch_size or 32)
            batch_size = None
        return super().predict(x, batch_size=batch_size, **kwargs)

    def fit(self, x=None, y=None, *args, unlabelled_tasks=(), callbacks=None, **kwargs):
        """`keras.Model.fit`, with the label keys checked first.

        Label and sample-weight keys must name tasks of the model (a
        misspelled key is an error with a suggestion). Every task that is
        not frozen needs labels, unless listed in `unlabelled_tasks` (then
        it is not trained). A `guards.FailOnNonFinite` callback is added:
        a non-finite task loss stops training with an error naming the task.
        """
        labels, weights = guards.fit_label_keys(x, y, kwargs.get("sample_weight"))
        if labels is not None or not isinstance(x, tf.data.Dataset):
            guards.check_label_keys(self, labels, weights, unlabelled_tasks)
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # Keras ignores it for datasets, with a warning
        callbacks = list(callbacks or [])
        if not any(isinstance(c, guards.FailOnNonFinite) for c in callbacks):
            callbacks.insert(0, guards.FailOnNonFinite())
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    def evaluate(self, x=None, y=None, *args, steps=None, **kwargs):
        """`keras.Model.evaluate`; refuses data that would not count each example once.

        (A repeating dataset, `drop_remainder=True` batches, or `steps` other
        than the dataset's length: see `guards.check_evaluation_data`.)
        """
        guards.check_evaluation_data(x, steps)
        return super().evaluate(x, y, *args, steps=steps, **kwargs)

    # --- Serialization -------------------------------------------------------

    def get_config(self):
        return {
            "tasks": [task.get_config() for task in self.tasks],
            "encoder": keras.layers.serialize(self.encoder),
            "preprocessor": None
            if self.preprocessor is None
            else keras.layers.serialize(self.preprocessor),
            "weighting": keras.layers.serialize(self.weighting),
            "frozen_tasks": [n for n in self.task_names if not self.heads[n].trainable],
            "name": self.name,
        }

    def get_compile_config(self):
        if not self.compiled:
            return None
        return {
            "optimizer": keras.optimizers.serialize(self.optimizer),
            "steps_per_execution": self.steps_per_execution,
            "jit_compile": self.jit_compile,
        }

    def compile_from_config(self, config):
        config = dict(config)
        config["optimizer"] = keras.optimizers.deserialize(config["optimizer"])
        self.compile(**config)  # builds the optimizer

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.layers.deserialize(config["encoder"])
        if config.get("preprocessor") is not None:
            config["preprocessor"] = keras.layers.deserialize(config["preprocessor"])
        config["weighting"] = keras.layers.deserialize(config["weighting"])
        return cls(**config)

