"""Figures of a run: learning curves per task and confusion matrices.

Uses matplotlib's current backend (the CLI picks Agg; Jupyter shows the
figures inline). Each function returns a `matplotlib.figure.Figure`;
`save_figure` writes it as a PNG and closes it.

Example:
>>> history = {"loss": [1.0, 0.5], "topic_loss": [1.0, 0.5],
...            "val_topic_loss": [1.1, 0.7], "topic_accuracy": [0.5, 0.9]}
>>> figure = plot_learning_curves(history, ["topic"])
>>> figure.axes[0].get_xlabel()
'epoch'
"""

import numpy as np


def _pyplot():
    # The backend is the caller's choice: inline in Jupyter, Agg in the CLI
    # (which sets MPLBACKEND) and on machines without a display.
    import matplotlib.pyplot as plt

    return plt


def _metric_names(history, task_names):
    """Metric suffixes logged for at least one task, `loss` first.

    Only metrics with a dev counterpart (`val_<task>_<metric>`) or alone in
    the history: not the training-only diagnostics (`<task>_grad_norm`).
    """
    has_dev = any(key.startswith("val_") for key in history)
    names = {
        key[len(task) + 1 :]
        for key in history
        for task in task_names
        if key.startswith(task + "_") and (not has_dev or "val_" + key in history)
    }
    return sorted(names, key=lambda n: (n != "loss", n))


def plot_learning_curves(history, task_names):
    """One panel per metric, one line per task: train solid, dev dashed.

    Example:
    >>> history = {"topic_loss": [1.0, 0.5], "val_topic_loss": [1.1, 0.7]}
    >>> plot_learning_curves(history, ["topic"]).axes[0].get_title()
    'loss'

    Args:
        history: `{log key: [value per epoch]}`, as `History.history` or
            the CSV log gives it (`<task>_<metric>`, `val_<task>_<metric>`).
        task_names: the tasks, in order (they fix the colours).
    """
    plt = _pyplot()
    metrics = _metric_names(history, task_names) or ["loss"]
    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False
    )
    colours = plt.get_cmap("tab10")
    for ax, metric in zip(axes.flat, metrics):
        for i, task in enumerate(task_names):
            for prefix, style, split in (("", "-", "train"), ("val_", "--", "dev")):
                values = history.get(f"{prefix}{task}_{metric}")
                if values is not None:
                    epochs = np.arange(1, len(values) + 1)
                    ax.plot(epochs, values, style, marker="o", markersize=3,
                            color=colours(i % 10), label=f"{task} ({split})")  # fmt: skip
        title = metric.replace("_", " ")
        ax.set(title=title, xlabel="epoch", ylabel=title)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines:
            ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.remove()
    figure.suptitle("Learning curves per task (solid: train, dashed: dev)")
    figure.tight_layout()
    return figure


def _counts_heatmap(counts, figsize, colorbar_label, annotate=True):
    """`(figure, ax)`: each row's shares as a heatmap, cells annotated with counts."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure, ax = _pyplot().subplots(figsize=figsize)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    figure.colorbar(image, ax=ax, label=colorbar_label)
    if annotate:
        for (i, j), count in np.ndenumerate(counts):
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, str(int(count)), ha="center", va="center", color=colour, fontsize=7)
    return figure, ax


def _finish(figure, ax, xlabel, ylabel, title):
    """Labels the axes, lays the figure out and returns it."""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    figure.tight_layout()
    return figure


def plot_confusion_matrix(matrix, label_names, task_name=""):
    """A confusion matrix: rows are true labels, columns predicted ones.

    Args:
        matrix: `[C, C]` counts.
        label_names: the C class names.
        task_name: shown in the title.

    Example:
    >>> figure = plot_confusion_matrix([[5, 1], [0, 4]], ["no", "yes"], "spam")
    >>> figure.axes[0].get_xlabel()
    'predicted label'
    """
    size = max(3.5, 0.55 * len(label_names) + 2.0)
    figure, ax = _counts_heatmap(
        matrix, (size + 1.0, size), "share of the true label's examples",
        annotate=len(label_names) <= 12,
    )  # fmt: skip
    ticks = np.arange(len(label_names))
    ax.set_xticks(ticks, label_names, rotation=45, ha="right")
    ax.set_yticks(ticks, label_names)
    title = f"{task_name}: confusion matrix (dev)"
    return _finish(figure, ax, "predicted label", "true label", title)


def plot_multilabel_confusion(counts, label_names, task_name=""):
    """Per-label outcomes of a multilabel task: `[C, 4]` counts of TN, FP, FN, TP.

    Example:
    >>> figure = plot_multilabel_confusion([[3, 1, 0, 2]], ["joy"], "emotions")
    >>> [t.get_text() for t in figure.axes[0].get_xticklabels()][-1]
    'true pos'
    """
    height = max(3.0, 0.3 * len(label_names) + 1.5)
    figure, ax = _counts_heatmap(counts, (6.0, height), "share of examples")
    ax.set_xticks(np.arange(4), ["true neg", "false pos", "false neg", "true pos"])
    ax.set_yticks(np.arange(len(label_names)), label_names)
    title = f"{task_name}: per-label confusion (dev)"
    return _finish(figure, ax, "outcome (threshold 0.5)", "label", title)


def plot_regression(y_true, y_pred, task_name=""):
    """Predicted against true values of a regression task.

    Example:
    >>> plot_regression([1.0, 2.0], [1.5, 1.8], "rating").axes[0].get_ylabel()
    'predicted value'
    """
    y_true = np.asarray(y_true, "float64").ravel()
    y_pred = np.asarray(y_pred, "float64").ravel()
    figure, ax = _pyplot().subplots(figsize=(4.5, 4.5))
    ax.scatter(y_true, y_pred, s=8, alpha=0.4)
    if y_true.size:
        low = min(y_true.min(), y_pred.min())
        high = max(y_true.max(), y_pred.max())
        ax.plot([low, high], [low, high], "k--", linewidth=1, label="y = x")
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    title = f"{task_name}: predictions (dev)"
    return _finish(figure, ax, "true value", "predicted value", title)


def save_figure(figure, path):
    """Writes `figure` as a PNG at `path` and closes it; returns `path`.

    Example:
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/curves.png"
    >>> save_figure(plot_regression([1.0], [1.0]), path) == path
    True
    """
    plt = _pyplot()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
