"""Task-gradient diagnostics: are the tasks balanced, do they conflict?

`GradientDiagnostics` is a Keras callback. Every `every_steps` training
steps it takes the next batch of its own data, computes each task's loss and
its gradient with respect to the shared encoder (in inference mode, so it
draws no dropout randomness and leaves the training run unchanged), and
records per task the loss, the gradient norm and the effective weight of
the weighting method, and per pair of tasks the cosine of their gradients,
with the fraction of pairs that conflict (cosine < 0). The rows go to a CSV
file, to TensorBoard scalars (with `log_dir`) and, averaged over the epoch,
into the epoch's logs (so `history` and `history.csv` hold them);
`plot_diagnostics` draws them.

How to read them (the README has the longer guide): gradient norms that
differ by 10x or more mean one task drives the encoder (imbalance: weigh it
down, or try `uncertainty` / `famo`); persistently negative cosines mean the
tasks pull the encoder apart (conflict: try `pcgrad`, `cagrad` or
`upgrad`, which need `batching: every_task`).
"""

import csv
import itertools
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.step import dense, gram_matrix


def task_gradient_statistics(model, batch):
    """`{name: value}` of one batch: losses, gradient norms, cosines, conflicts.

    Example:
    >>> import numpy as np
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> encoder = SharedEncoder(vocabulary_size=20, sequence_length=8, hidden_dim=8,
    ...                         num_layers=1, num_heads=2)
    >>> model = MultiTaskModel([Task("topic", "multiclass", 3), Task("spam", "binary")], encoder)
    >>> x = {"token_ids": np.arange(32).reshape(4, 8) % 20, "padding_mask": np.ones((4, 8), bool)}
    >>> y = {"topic": np.array([0, 1, 2, 0]), "spam": np.array([0.0, 1.0, 1.0, 0.0])}
    >>> stats = task_gradient_statistics(model, (x, y))
    >>> sorted(k for k in stats if k.startswith("topic"))
    ['topic_grad_norm', 'topic_loss', 'topic_weight']
    >>> 0.0 <= stats["conflicting_pairs"] <= 1.0
    True
    """
    names = model.task_names
    losses, gram = _losses_and_gram(model, batch)
    losses, gram = losses.numpy(), gram.numpy()
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    weights = model.weighting.last_weights.numpy()
    stats = {}
    for i, name in enumerate(names):
        stats.update({f"{name}_loss": losses[i], f"{name}_grad_norm": norms[i],
                      f"{name}_weight": weights[i]})
    pairs = []
    for i, j in itertools.combinations(range(len(names)), 2):
        cosine = gram[i, j] / (norms[i] * norms[j]) if norms[i] * norms[j] > 0 else 0.0
        stats[f"cosine_{names[i]}_{names[j]}"] = cosine
        pairs.append(cosine)
    stats["conflicting_pairs"] = float(np.mean(np.array(pairs) < 0)) if pairs else 0.0
    return {k: float(v) for k, v in stats.items()}


def _losses_and_gram(model, batch):
    function = getattr(model, "_diagnostics_function", None)
    if function is None:

        @tf.function(reduce_retracing=True)
        def function(batch):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
            shared = model.encoder.trainable_variables
            with tf.GradientTape(persistent=True) as tape:
                outputs = model(x, training=False)
                task_losses = model.compute_task_losses(y, outputs, sample_weight, update_metrics=False)
            zero = tf.zeros(())
            per_task = []
            for name in model.task_names:
                loss = task_losses.get(name, zero)
                per_task.append([None if g is None else tf.cast(dense(g), "float32")
                                 for g in tape.gradient(loss, shared)])
            del tape
            return model.weighting.as_vector(task_losses), gram_matrix(per_task)

        model._diagnostics_function = function
    return function(batch)


class GradientDiagnostics(keras.callbacks.Callback):
    """Logs per-task gradient statistics every `every_steps` steps.

    Args:
        data: a dataset of `(x, y, sample_weight)` batches (cycled), e.g. a
            few training batches; every task should have labels in each.
        every_steps: steps between two measurements (also one at step 1).
        csv_path: optional CSV file of every measurement (one row each).
        log_dir: optional TensorBoard directory for the scalars
            (`diagnostics/<name>`).

    Example:
    >>> import numpy as np
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> encoder = SharedEncoder(vocabulary_size=20, sequence_length=8, hidden_dim=8,
    ...                         num_layers=1, num_heads=2)
    >>> model = MultiTaskModel([Task("topic", "multiclass", 3), Task("spam", "binary")], encoder)
    >>> x = {"token_ids": np.arange(32).reshape(4, 8) % 20, "padding_mask": np.ones((4, 8), bool)}
    >>> y = {"topic": np.array([0, 1, 2, 0]), "spam": np.array([0.0, 1.0, 1.0, 0.0])}
    >>> model.compile()
    >>> data = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    >>> history = model.fit(data, epochs=2, verbose=0,
    ...                     callbacks=[GradientDiagnostics(data, every_steps=1)])
    >>> len(history.history["topic_grad_norm"]), "conflicting_pairs" in history.history
    (2, True)
    """

    def __init__(self, data, every_steps=100, csv_path=None, log_dir=None):
        super().__init__()
        if int(every_steps) < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps!r}.")
        self.data, self.every_steps = data, int(every_steps)
        self.csv_path = None if csv_path is None else Path(csv_path)
        self.log_dir = log_dir
        self.rows = []
        self._iterator = self._writer = None
        self._epoch_rows, self._step, self._seen = [], 0, 0

    def _next_batch(self):
        if self._iterator is None:
            self._iterator = iter(self.data.repeat())
        return next(self._iterator)

    def on_train_begin(self, logs=None):
        self._step = int(self.model.train_step_counter.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_rows, self._seen = [], 0

    def on_train_batch_end(self, batch, logs=None):
        # Counted here, not read from the model: a read would sync every step.
        self._step += batch + 1 - self._seen  # one step per batch (steps_per_execution too)
        self._seen = batch + 1
        step = self._step
        if step != 1 and step % self.every_steps:
            return
        row = {"step": step, **task_gradient_statistics(self.model, self._next_batch())}
        self.rows.append(row)
        self._epoch_rows.append(row)
        self._write(row)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self._epoch_rows:
            return
        for key in self._epoch_rows[0]:
            if key != "step":
                logs[key] = float(np.mean([r[key] for r in self._epoch_rows]))

    def _write(self, row):
        if self.csv_path is not None:
            new = not self.csv_path.exists()
            with self.csv_path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)
        if self.log_dir is not None:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(self.log_dir))
            with self._writer.as_default(step=row["step"]):
                for key, value in row.items():
                    if key != "step":
                        tf.summary.scalar(f"diagnostics/{key}", value)
            self._writer.flush()


def read_diagnostics(path):
    """The rows of a diagnostics CSV as `{column: [values]}`.

    Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "d.csv")
    >>> _ = open(path, "w").write("step,a_grad_norm\\n1,0.5\\n2,0.25\\n")
    >>> read_diagnostics(path)["a_grad_norm"]
    [0.5, 0.25]
    """
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(r[key]) for r in rows] for key in (rows[0] if rows else {})}


def plot_diagnostics(columns, task_names):
    """Gradient norms, effective weights and pairwise cosines over the steps.

    Example:
    >>> columns = {"step": [1, 2], "a_grad_norm": [1.0, 0.5], "b_grad_norm": [0.2, 0.3],
    ...            "a_weight": [1, 1], "b_weight": [1, 1], "cosine_a_b": [0.1, -0.2]}
    >>> [ax.get_title() for ax in plot_diagnostics(columns, ["a", "b"]).axes]
    ['gradient norm (shared encoder)', 'effective weight', 'cosine of task gradients']
    """
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = columns["step"]
    for name in task_names:
        axes[0].plot(steps, columns[f"{name}_grad_norm"], label=name)
        axes[1].plot(steps, columns[f"{name}_weight"], label=name)
    for key in (k for k in columns if k.startswith("cosine_")):
        axes[2].plot(steps, columns[key], label=key[len("cosine_"):].replace("_", " / ", 1))
    axes[0].set_yscale("log")
    axes[2].axhline(0.0, color="grey", linewidth=0.8)
    titles = ("gradient norm (shared encoder)", "effective weight", "cosine of task gradients")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
