"""The training job: config in, run directory out.

`run_training(config, out_dir)` runs `pipeline.fit_run` and writes the run
directory:

    out_dir/
      model.keras        the model with its preprocessor (vocabulary included)
      saved_model/       strings-in SavedModel (`export_saved_model`)
      vocabulary.txt     the WordPiece vocabulary, one token per line
      config.yaml        the resolved config (absolute data_root, precision)
      history.csv        per-epoch logs of `fit` (`CSVLogger`)
      metrics.json       final per-task dev metrics
      plots/             learning_curves.png and one figure per task, as its
                         kind draws it (confusion matrix, predictions);
                         diagnostics.png with `diagnostics_every_steps`
      diagnostics.csv    per-task gradient diagnostics (if asked for)

`run_evaluation(model_path, config)` evaluates a saved model on the dev
data of a config.
"""

import json
import time
from pathlib import Path

from mtl_keras import plots
from mtl_keras.config import ConfigError
from mtl_keras.data import validate
from mtl_keras.diagnostics import plot_diagnostics, read_diagnostics
from mtl_keras.distribute import worker_role
from mtl_keras.export import export_saved_model, load_keras_model
from mtl_keras.kinds import get_kind
from mtl_keras.model import MultiTaskModel
from mtl_keras.pipeline import evaluate_tasks, fit_run, read_history
from mtl_keras.run_files import DIAGNOSTICS, FAILED


class RunError(ValueError):
    """A problem with a model path or a run directory; says what to fix."""


def write_plots(directory, history, tasks, predictions):
    """Writes the run's PNGs (learning curves, each task's figure); returns their paths.

    Example:
    >>> import tempfile, numpy as np
    >>> from mtl_keras import Task
    >>> history = {"topic_loss": [1.0, 0.5], "val_topic_loss": [1.1, 0.7]}
    >>> predictions = {"topic": {"labels": np.array([0, 1]), "outputs": np.eye(2)}}
    >>> paths = write_plots(tempfile.mkdtemp(), history, [Task("topic", "multiclass")], predictions)
    >>> [p.name for p in paths]
    ['learning_curves.png', 'topic_confusion.png']
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = [t.name for t in tasks]
    figure = plots.plot_learning_curves(history, names)
    written = [plots.save_figure(figure, directory / "learning_curves.png")]
    for task in tasks:
        if task.name not in predictions:
            continue
        found = task.task_kind.plot(
            task, predictions[task.name]["labels"], predictions[task.name]["outputs"]
        )
        if found is not None:
            figure, suffix = found
            written.append(plots.save_figure(figure, directory / f"{task.name}_{suffix}.png"))
    return written


def format_metrics_table(metrics):
    """A plain-text table: one row per task, one column per metric.

    Example:
    >>> print(format_metrics_table({"spam": {"kind": "binary", "examples": 10, "accuracy": 0.9}}))
    task  kind    examples  accuracy
    --------------------------------
    spam  binary        10    0.9000
    """
    columns = []
    for result in metrics.values():
        headline = get_kind(result["kind"]).headline_in(result) if "kind" in result else None
        ordered = ["loss", headline] + sorted(result)
        for key in ordered:
            numeric = isinstance(result.get(key), (int, float))  # not `per_type`
            if numeric and key not in ("kind", "examples") and key not in columns:
                columns.append(key)
    header = ["task", "kind", "examples", *columns]
    rows = [
        [
            name,
            result.get("kind", ""),
            str(result.get("examples", "")),
            *(f"{result[c]:.4f}" if c in result else "-" for c in columns),
        ]
        for name, result in metrics.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        )

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def run_training(config, out_dir, verbose=1, restart=False, allow_changed_settings=False,
                 strategy=None):
    """Trains the model a `RunConfig` describes and writes a run directory.

    A run directory that holds checkpoints is resumed from the newest one
    (`restart=True` deletes them and starts over). A run that fails (a
    non-finite loss) leaves `FAILED.json` and no model or metrics.

    Args:
        config: a `RunConfig` (see `mtl_keras.config.load_config`).
        out_dir: the run directory (created; the results are replaced).
        verbose: 0 silent, 1 progress lines and final table.
        restart: start over even if the directory holds checkpoints.
        allow_changed_settings: resume although the training settings
            changed (see `pipeline.fit_run`).
        strategy: a `tf.distribute.Strategy` (`distribute.make_strategy`);
            with several workers only the chief writes the run directory.

    Returns:
        The `pipeline.RunResult`; its `metrics` are written to `metrics.json`:
        `{task: {"kind": ..., "examples": n, "<metric>": value, ...}}`.

    Example:
    >>> import tempfile
    >>> from mtl_keras.config import load_config
    >>> config = load_config(epochs=1, overrides=["data.train.0.max_rows=600"])
    >>> result = run_training(config, tempfile.mkdtemp(), verbose=0)
    >>> sorted(result.metrics)
    ['aspects', 'mentions', 'rating', 'sentiment', 'topic']
    """
    start = time.perf_counter()
    out = Path(out_dir)
    chief = worker_role(strategy).is_chief
    if chief:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", FAILED):
            (out / name).unlink(missing_ok=True)
    result = fit_run(config, run_dir=out, verbose=verbose, restart=restart,
                     allow_changed_settings=allow_changed_settings, strategy=strategy)
    if not chief:
        if verbose:
            print(f"This worker is done; the chief writes the run directory {out}.")
        return result
    model, config = result.model, result.config
    vocabulary = model.preprocessor.tokenizer.get_vocabulary()
    (out / "vocabulary.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    model.save(out / "model.keras")
    export_saved_model(model, out / "saved_model")
    (out / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    (out / "metrics.json").write_text(
        json.dumps(result.metrics, indent=2) + "\n", encoding="utf-8"
    )
    write_plots(out / "plots", read_history(out / "history.csv"), config.tasks, result.predictions)
    if (out / DIAGNOSTICS).exists():
        figure = plot_diagnostics(read_diagnostics(out / DIAGNOSTICS), model.task_names)
        plots.save_figure(figure, out / "plots" / "diagnostics.png")
    if verbose:
        print()
        print(format_metrics_table(result.metrics))
        print(f"\nRun directory: {out} ({time.perf_counter() - start:.0f} s)")
    return result


def load_run_model(path):
    """The `MultiTaskModel` of a run directory or a `.keras` file (safe mode).

    Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor.from_texts(["good film"], 20, sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1)
    >>> run = Path(tempfile.mkdtemp())
    >>> MultiTaskModel([Task("liked", "binary")], encoder, preprocessor).save(run / "model.keras")
    >>> load_run_model(run).task_names
    ['liked']
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise RunError(
            f"No model at {path}: pass a run directory (with model.keras) or a "
            ".keras file."
        )
    try:
        loaded = load_keras_model(str(path), compile=False)
    except ValueError as error:
        raise RunError(str(error)) from None
    if not isinstance(loaded, MultiTaskModel):
        raise RunError(f"{path} holds a {type(loaded).__name__}, not a MultiTaskModel.")
    if loaded.preprocessor is None:
        raise RunError(
            f"{path} holds a model without its preprocessor; build it as "
            "MultiTaskModel(tasks, encoder, preprocessor) to take text."
        )
    return loaded


def run_evaluation(model_path, config, verbose=0, split="dev"):
    """Evaluates a saved model on the dev (or test) data of `config`, task by task.

    Args:
        model_path: a run directory or a `.keras` file.
        config: a `RunConfig` whose `split` sources carry the model's tasks.
        verbose: 1 prints the metrics table.
        split: `dev`, or `test` for the config's `data.test` sources.

    Returns:
        `{task: {"kind": ..., "examples": n, "<metric>": value}}`.

    Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from mtl_keras import TextPreprocessor
    >>> from mtl_keras.config import load_config
    >>> from mtl_keras.pipeline import build_model
    >>> preprocessor = TextPreprocessor.from_texts(["the match"], 20, sequence_length=32, align_words=True)
    >>> run = Path(tempfile.mkdtemp())
    >>> build_model(load_config(), preprocessor).save(run / "model.keras")  # untrained
    >>> metrics = run_evaluation(run, load_config())
    >>> metrics["topic"]["examples"], metrics["topic"]["kind"]
    (347, 'multiclass')
    """
    if split not in ("dev", "test") or not getattr(config.data, split):
        raise ConfigError(
            f"The config {config.source or ''} has no data.{split} sources to "
            "evaluate on (splits: dev, and test where the config lists it)."
        )
    model = load_run_model(model_path)
    config_tasks = {t.name: t for t in config.tasks}
    for task in model.tasks:
        if task.name not in config_tasks:
            raise ConfigError(
                f"The model has a task {task.name!r} that the config "
                f"{config.source or ''} does not define (config tasks: "
                f"{', '.join(config_tasks)}). Use the config the model was "
                "trained with (its run directory has config.yaml)."
            )
        if config_tasks[task.name] != task:
            raise ConfigError(
                f"Task {task.name!r} differs between the model ({task}) and the "
                f"config ({config_tasks[task.name]})."
            )
    model.compile()
    config = config.with_tasks(model.task_names)
    sources = config.sources(split)
    validate(model.tasks, sources, empty_text=config.data.empty_text, split="evaluation")
    metrics, _ = evaluate_tasks(
        model,
        sources,
        config.training.batch_size,
        empty_text=config.data.empty_text,
        with_predictions=False,
    )
    if verbose:
        print(format_metrics_table(metrics))
    return metrics
