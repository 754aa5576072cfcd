"""The training job: config in, run directory out.

`run_training(config, out_dir)` runs `pipeline.fit_run` and writes the run
directory:

    out_dir/
      model.keras        the model with its preprocessor (vocabulary included)
      mtl_keras_manifest.json  the SHA-256 of model.keras, checked on loading
      saved_model/       strings-in SavedModel (`export_saved_model`)
      vocabulary.txt     the WordPiece vocabulary, one token per line
      config.yaml        the resolved config (absolute data_root, precision)
      history.csv        per-epoch logs of `fit` (`CSVLogger`)
      history.json       the same as {log key: [value per epoch]}
      metrics.json       {"tasks": final per-task dev metrics, "run": the run
                         record: versions, seed, date, command, epochs run,
                         vocabulary, times, the resolved config}
      README.md          the model card: tasks, labels, data sizes, metrics,
                         how to load, predict and serve
      plots/             learning_curves.png and one figure per task, as its
                         kind draws it (confusion matrix, predictions);
                         diagnostics.png with `diagnostics_every_steps`
      diagnostics.csv    per-task gradient diagnostics (if asked for)
      dev_split.json     with `data.split`: the dev rows of each training source

`run_evaluation(model_path, config)` evaluates a saved model on the dev
data of a config (or its test or train data, or a file laid out like them).
"""

import dataclasses
import json
import time
from pathlib import Path

from mtl_keras import plots
from mtl_keras.config import ConfigError
from mtl_keras.config_checks import columns
from mtl_keras.data import FileSource, validate
from mtl_keras.diagnostics import plot_diagnostics, read_diagnostics
from mtl_keras.distribute import worker_role
from mtl_keras.export import export_saved_model, load_keras_model
from mtl_keras.manifest import write_manifest
from mtl_keras.model import MultiTaskModel
from mtl_keras.paths import check_run_directory
from mtl_keras.pipeline import evaluate_tasks, fit_run, read_history
from mtl_keras.run_files import DEV_SPLIT, DIAGNOSTICS, FAILED
from mtl_keras.run_records import (  # format_metrics_table: also imported from here
    HISTORY_JSON,
    METRICS,
    MODEL_CARD,
    format_metrics_table,
    write_run_records,
)


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


def run_training(config, out_dir, verbose=1, restart=False, allow_changed_settings=False,
                 strategy=None, command=None):
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
        command: how the run was started, for the run record (`mtl-keras
            train` passes its command line; default: this function, called
            from Python, and `sys.argv`).

    Returns:
        The `pipeline.RunResult`; its `metrics` are written to `metrics.json`
        under `"tasks"`: `{task: {"kind": ..., "examples": n, "<metric>": value}}`,
        beside the run record under `"run"` (see `mtl_keras.run_records`).

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
    if chief:  # the directory itself is made once the data passed its checks
        check_run_directory(out)  # nothing written through a symbolic link
        for name in (METRICS, HISTORY_JSON, MODEL_CARD, FAILED):
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
    save_run_model(model, out)
    export_saved_model(model, out / "saved_model")
    (out / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    write_run_records(out, result, command=command, wall_seconds=time.perf_counter() - start)
    write_plots(out / "plots", read_history(out / "history.csv"), config.tasks, result.predictions)
    if (out / DIAGNOSTICS).exists():
        figure = plot_diagnostics(read_diagnostics(out / DIAGNOSTICS), model.task_names)
        plots.save_figure(figure, out / "plots" / "diagnostics.png")
    if verbose:
        print()
        print(format_metrics_table(result.metrics))
        print(f"\nRun directory: {out} ({time.perf_counter() - start:.0f} s)")
    return result


def save_run_model(model, run_dir):
    """Saves `run_dir/model.keras` and the manifest `load_run_model` checks.

    Example:
    >>> import tempfile
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor.from_texts(["good film"], 20, sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1)
    >>> run = Path(tempfile.mkdtemp())
    >>> list(save_run_model(MultiTaskModel([Task("liked", "binary")], encoder, preprocessor), run)["files"])
    ['model.keras']
    """
    model.save(Path(run_dir) / "model.keras")
    return write_manifest(run_dir, ["model.keras"])


def load_run_model(path, trust_unverified=False):
    """The `MultiTaskModel` of a run directory or a `.keras` file (safe mode).

    A run directory's `model.keras` must match the directory's manifest
    (`save_run_model` writes it); so must a `.keras` file with a manifest
    beside it. `trust_unverified=True` skips the check.

    Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor.from_texts(["good film"], 20, sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1)
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = save_run_model(MultiTaskModel([Task("liked", "binary")], encoder, preprocessor), run)
    >>> load_run_model(run).task_names
    ['liked']
    """
    path = Path(path)
    run_dir = path.is_dir()
    if run_dir:
        path = path / "model.keras"
    if not path.is_file():
        raise RunError(
            f"No model at {path}: pass a run directory (with model.keras) or a "
            ".keras file."
        )
    try:
        loaded = load_keras_model(
            str(path), compile=False, trust_unverified=trust_unverified, require_manifest=run_dir
        )
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


def data_file_sources(config, path, tasks):
    """`FileSource`s reading `path` as the config's entries whose columns it has.

    The entries of `data.dev`, then `data.test`, then `data.train` are tried
    in turn with `path` as their `file` (its format from its suffix; no
    `max_rows`): an entry fits when `path` reads with its columns, and is
    kept unless an entry kept before carries one of its tasks (each task is
    evaluated once). `tasks` are the model's. A `ConfigError` says why no
    entry fits.

    Example:
    >>> from mtl_keras.config import load_config
    >>> from mtl_keras.data import BUNDLED_DIR
    >>> config = load_config()
    >>> [s.name for s in data_file_sources(config, BUNDLED_DIR / "sample/dev.tsv", config.tasks)]
    ['dev.tsv']
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"Data file {path} (--data) does not exist.")
    chosen, covered, problems = [], set(), []
    for split in ("dev", "test", "train"):
        for i, entry in enumerate(getattr(config.data, split)):
            names = set(columns(entry.get("tasks") or {}))
            if "file" not in entry or names & covered:
                continue
            kept = {k: v for k, v in entry.items() if k not in ("format", "max_rows", "name")}
            try:
                source = FileSource(**dict(kept, file=path, name=path.name))
                source.read(tasks, config.data.empty_text)  # kept by the source
            except ValueError as error:  # DataValidationError too
                problems.append(f"data.{split}[{i}] (tasks {', '.join(sorted(names))}): {error}")
                continue
            chosen.append(source)
            covered |= names
    if not chosen:
        raise ConfigError(
            f"Data file {path} fits no source entry of the config {config.source or ''}: "
            + "; ".join(problems or ["the config has no file entries"])
            + ". Give a file with the columns of one of them."
        )
    return chosen


def _check_recorded_split(model_path, record):
    """Raises when the run's `dev_split.json` lists other dev rows than `record`."""
    path = Path(model_path)
    path = (path if path.is_dir() else path.parent) / DEV_SPLIT
    if not path.is_file():
        return
    recorded = {e["source"]: e["dev_rows"] for e in json.loads(path.read_text())["sources"]}
    for entry in record["sources"]:
        if entry["source"] in recorded and recorded[entry["source"]] != entry["dev_rows"]:
            raise RunError(
                f"The dev rows of {entry['source']} made from the config differ from those "
                f"recorded in {path} at training: the data file or data.split changed "
                "since. Evaluate with the data and config the run was trained with."
            )


def run_evaluation(model_path, config, verbose=0, split="dev", data_file=None,
                   trust_unverified=False):
    """Evaluates a saved model on the dev (or test, or train) data of `config`, task by task.

    Args:
        model_path: a run directory or a `.keras` file.
        config: a `RunConfig` whose `split` sources carry the model's tasks.
        verbose: 1 prints which tasks `data_file` holds and the metrics table.
        split: `dev`, `test` (the config's `data.test`) or `train`. With
            `data.split`, `dev` is the run's dev rows (the same rows as at
            training: checked against the run's `dev_split.json`) and
            `train` the rest.
        data_file: instead, a file laid out like the config's sources
            (`data_file_sources`); the tasks it carries are evaluated.
        trust_unverified: load a model that has no (matching) manifest.

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
    >>> _ = save_run_model(build_model(load_config(), preprocessor), run)  # untrained
    >>> metrics = run_evaluation(run, load_config())
    >>> metrics["topic"]["examples"], metrics["topic"]["kind"]
    (347, 'multiclass')
    """
    if data_file is None and (split not in ("dev", "test", "train")
                              or not (getattr(config.data, split) or split == "dev")):
        raise ConfigError(
            f"The config {config.source or ''} has no data.{split} sources to "
            "evaluate on (splits: dev, train, and test where the config lists it)."
        )
    model = load_run_model(model_path, trust_unverified)
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
    if data_file is not None:  # no dev rows are taken from the training data
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, split=None))
    config = config.with_tasks(model.task_names)
    needed = None
    if data_file is not None:
        sources = data_file_sources(config, data_file, model.tasks)
        needed = [n for n in model.task_names if any(n in s.tasks for s in sources)]
        if verbose:
            missing = [n for n in model.task_names if n not in needed]
            print(f"Evaluating {sources[0].path} on {', '.join(needed)}"
                  + (f" (not in it: {', '.join(missing)})." if missing else "."))
    elif config.data.split is not None and split in ("train", "dev"):
        train, dev, record = config.train_and_dev()
        _check_recorded_split(model_path, record)
        sources = dev if split == "dev" else train
    else:
        sources = config.sources(split)
    validate(model.tasks, sources, empty_text=config.data.empty_text, split="evaluation",
             needed=needed)
    metrics, _ = evaluate_tasks(
        model,
        sources,
        config.training.batch_size,
        empty_text=config.data.empty_text,
        with_predictions=False,
        needed=needed,
    )
    if verbose:
        print(format_metrics_table(metrics))
    return metrics
