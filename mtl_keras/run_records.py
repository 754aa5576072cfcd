"""The records of a run directory: what was run, how, and how to use what came out.

`write_run_records(out, result, ...)` (called by `train.run_training`)
writes three files beside the model:

    metrics.json   {"tasks": {task: {"kind", "examples", "<metric>": value}},
                    "run": the run record (`run_record`)}
    history.json   history.csv as {log key: [value per epoch]} (`null` for
                   a value that is not a finite number)
    README.md      the model card (`model_card`): tasks and labels, data
                   sizes, dev metrics, how to load, predict and serve

metrics.json keeps the per-task results and the record of the run apart, so
that no task name is reserved and `metrics["tasks"]` is exactly what
`mtl-keras evaluate --json` writes. `read_task_metrics(path)` reads it.
"""

import datetime
import json
import math
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

from mtl_keras.export import build_metadata
from mtl_keras.kinds import get_kind
from mtl_keras.progress import read_history
from mtl_keras.run_files import HISTORY

METRICS = "metrics.json"
HISTORY_JSON = "history.json"
MODEL_CARD = "README.md"
# The distributions whose versions a run records (as importlib.metadata names them).
PACKAGES = ("mtl_keras", "keras", "keras-hub", "tensorflow", "tensorflow-text", "numpy")


def package_versions():
    """The installed versions of `PACKAGES` (None if absent) and Python's.

    Example:
    >>> versions = package_versions()
    >>> list(versions) == [*PACKAGES, "python"], versions["python"] == platform.python_version()
    (True, True)
    """
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    return found


def python_command(function):
    """How a run started from Python is recorded: the function and the process's argv.

    Example:
    >>> python_command("mtl_keras.train.run_training").startswith(
    ...     "mtl_keras.train.run_training() called from Python (sys.argv: ")
    True
    """
    return f"{function}() called from Python (sys.argv: {shlex.join(sys.argv)})"


def metric_columns(metrics):
    """The numeric metric keys of `{task: result}`, loss and headlines first.

    Example:
    >>> metric_columns({"spam": {"kind": "binary", "examples": 10, "auc": 0.8, "loss": 0.3}})
    ['loss', 'auc']
    """
    columns = []
    for result in metrics.values():
        headline = get_kind(result["kind"]).headline_in(result) if "kind" in result else None
        for key in ["loss", headline] + sorted(result):
            numeric = isinstance(result.get(key), (int, float))  # not `per_type`
            if numeric and key not in ("kind", "examples") and key not in columns:
                columns.append(key)
    return columns


def _cells(metrics):
    columns = metric_columns(metrics)
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
    return header, rows


def format_metrics_table(metrics):
    """A plain-text table: one row per task, one column per metric.

    Example:
    >>> print(format_metrics_table({"spam": {"kind": "binary", "examples": 10, "accuracy": 0.9}}))
    task  kind    examples  accuracy
    --------------------------------
    spam  binary        10    0.9000
    """
    header, rows = _cells(metrics)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        )

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def markdown_table(header, rows, right=None):
    """A markdown table; the columns numbered in `right` (default: from the third) right-aligned.

    Example:
    >>> print(markdown_table(["task", "kind", "examples"], [["spam", "binary", "10"]]))
    | task | kind | examples |
    | --- | --- | ---: |
    | spam | binary | 10 |
    """
    right = range(2, len(header)) if right is None else right
    rule = ["---:" if i in right else "---" for i in range(len(header))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *rows])


def history_data(run_dir):
    """history.csv of a run directory as JSON-ready data; non-finite values as None.

    Example:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = (run / HISTORY).write_text("epoch,loss,val_loss\\n0,1.5,1.6\\n1,0.5,\\n")
    >>> history_data(run)
    {'loss': [1.5, 0.5], 'val_loss': [1.6, None]}
    """
    return {
        key: [v if math.isfinite(v) else None for v in values]
        for key, values in read_history(Path(run_dir) / HISTORY).items()
    }


def run_record(result, *, command, history, wall_seconds=None, date=None):
    """The record of a run: versions, seed, date, command, epochs, sizes, config.

    Args:
        result: the `pipeline.RunResult`.
        command: how the run was started (`mtl-keras train ...` from the
            command line; see `python_command` for Python calls).
        history: `{log key: [value per epoch]}` of the whole run (a resumed
            run's earlier epochs included).
        wall_seconds: the wall time of the whole job, if measured.
        date: a `datetime` (default: now, UTC).

    Returns:
        A JSON-ready dict: `date` (UTC, ISO 8601), `command`, `seed`,
        `versions`, `epochs` (asked), `epochs_run` (fewer when early stopping
        stopped the run), `stopped_early`, `examples_per_epoch`, `train_rows`
        (training rows carrying each task's label), `dev_examples`,
        `vocabulary` (`asked`: the config's `preprocessor.vocabulary_size`,
        None for a preset's tokenizer; `learned`: the model's), `parameters`,
        `train_seconds` (training of this invocation: a resumed run counts
        only its own part), `wall_seconds` and `config` (the resolved config
        as data, the same as config.yaml).

    Example (an untrained model stands in for `fit_run`'s):
    >>> from mtl_keras import TextPreprocessor
    >>> from mtl_keras.config import load_config
    >>> from mtl_keras.pipeline import RunResult, build_model
    >>> config = load_config(epochs=3)
    >>> preprocessor = TextPreprocessor.from_texts(["the match"], 20, 32, align_words=True)
    >>> metrics = {"topic": {"kind": "multiclass", "examples": 337, "accuracy": 0.9}}
    >>> result = RunResult(build_model(config, preprocessor), {}, metrics, {},
    ...                    {"parameters": 1000}, 2000, config, {"topic": 1500})
    >>> record = run_record(result, command="mtl-keras train", history={"loss": [0.9, 0.5]})
    >>> record["seed"], record["epochs_run"], record["stopped_early"], record["vocabulary"]
    (0, 2, True, {'asked': 1000, 'learned': 17})
    >>> record["config"]["training"]["epochs"], record["dev_examples"]
    (3, {'topic': 337})
    """
    config, model = result.config, result.model
    date = date or datetime.datetime.now(datetime.timezone.utc)
    epochs_run = len(history.get("loss", []))
    return {
        "date": date.isoformat(timespec="seconds"),
        "command": command,
        "seed": config.training.seed,
        "versions": package_versions(),
        "epochs": config.training.epochs,
        "epochs_run": epochs_run,
        "stopped_early": epochs_run < config.training.epochs,
        "examples_per_epoch": result.examples_per_epoch,
        "train_rows": dict(result.train_rows),
        "dev_examples": {name: m.get("examples") for name, m in result.metrics.items()},
        "vocabulary": {
            "asked": config.preprocessor.get("vocabulary_size"),
            "learned": int(model.preprocessor.vocabulary_size),
        },
        "parameters": result.compute.get("parameters"),
        "train_seconds": result.compute.get("train_seconds"),
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 2),
        "config": json.loads(json.dumps(config.to_dict())),
    }


def _metric_rows(metrics):
    """Per task: kind, examples, loss and its other metrics (headline first) in one cell."""
    rows = []
    for name, result in metrics.items():
        headline = get_kind(result["kind"]).headline_in(result)
        keys = [k for k in [headline, *sorted(result)] if k not in ("kind", "examples", "loss")
                and isinstance(result.get(k), (int, float))]
        shown = ", ".join(f"{k} {result[k]:.4f}" for k in dict.fromkeys(keys))
        loss = f"{result['loss']:.4f}" if "loss" in result else "-"
        rows.append([name, result["kind"], str(result.get("examples", "-")), loss, shown])
    return rows


def _labels(task):
    return ", ".join(task.classes) if task.classes else "(a number)"


def model_card(result, record, run_dir):
    """The run directory's README.md: what the model does, how well, how to use it.

    Example (an untrained model stands in for `fit_run`'s):
    >>> from mtl_keras import TextPreprocessor
    >>> from mtl_keras.config import load_config
    >>> from mtl_keras.pipeline import RunResult, build_model
    >>> config = load_config()
    >>> preprocessor = TextPreprocessor.from_texts(["the match"], 20, 32, align_words=True)
    >>> metrics = {"topic": {"kind": "multiclass", "examples": 337, "accuracy": 0.9}}
    >>> result = RunResult(build_model(config, preprocessor), {}, metrics, {},
    ...                    {"parameters": 1000}, 2000, config, {"topic": 1500})
    >>> record = run_record(result, command="mtl-keras train", history={"loss": [0.5]})
    >>> card = model_card(result, record, "runs/sample")
    >>> card.splitlines()[0]
    '# Model card: runs/sample'
    >>> print(card[card.index("| topic"):].splitlines()[0])
    | topic | multiclass | sports, politics, tech, food | 1500 | 337 |
    """
    model, tasks = result.model, result.config.tasks
    served = build_metadata(model)
    run = str(run_dir)
    pair = served["pair"]
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items() if v)
    task_rows = [
        [t.name, t.kind, _labels(t), str(record["train_rows"].get(t.name, "-")),
         str(record["dev_examples"].get(t.name, "-"))]
        for t in tasks
    ]
    vocabulary = record["vocabulary"]
    asked = "" if vocabulary["asked"] is None else f" (asked {vocabulary['asked']})"
    outputs = [o for t in served["tasks"] for o in t["outputs"]]
    example = "$'a premise\\tits hypothesis'" if pair else '"a text"'  # bash: TAB between
    inputs = ('text=tf.constant(["a premise"]), text_pair=tf.constant(["its hypothesis"])'
              if pair else 'text=tf.constant(["a text"])')
    lines = [
        f"# Model card: {run}",
        "",
        f"A multi-task text model trained with mtl_keras on {record['date']}, "
        f"seed {record['seed']}: one shared encoder, one head per task"
        + (", on sentence pairs." if pair else "."),
        "",
        f"Command: `{record['command']}`",
        "",
        "## Tasks and data",
        "",
        markdown_table(["task", "kind", "labels", "train rows", "dev examples"], task_rows,
                       right=(3, 4)),
        "",
        f"{record['examples_per_epoch']} training examples per epoch; "
        f"{record['epochs_run']} of {record['epochs']} epochs run"
        + (" (early stopping)" if record["stopped_early"] else "")
        + f"; vocabulary {vocabulary['learned']}{asked}; "
        f"{record['parameters'] or 0:,} parameters; precision {result.config.precision}; "
        f"sequence length {served['sequence_length']}.",
        "",
        "## Dev metrics (the final model)",
        "",
        markdown_table(["task", "kind", "dev examples", "loss", "metrics"],
                       _metric_rows(result.metrics), right=(2, 3)),
        "",
        "## Use",
        "",
        "Load the Keras model (its preprocessor and vocabulary are inside):",
        "",
        "```python",
        "import keras",
        "import mtl_keras  # registers the model's classes",
        "",
        f'model = keras.saving.load_model("{run}/model.keras")',
        "print(model.predict_labels("
        + ('["a premise"], text_pairs=["its hypothesis"]' if pair else '["a text"]') + "))",
        "```",
        "",
        "Predict from the command line (one JSON line per text, the text first):",
        "",
        "```bash",
        f"mtl-keras predict {shlex.quote(run)} {example} --top-k 3",
        "```",
        "",
        "Serve `saved_model/` (TF Serving, or plain TensorFlow; the tokenizer is in the "
        "graph, so it needs the tensorflow-text ops registered):",
        "",
        "```python",
        "import tensorflow as tf",
        "import tensorflow_text  # noqa: F401  (registers the tokenizer ops)",
        "",
        f'served = tf.saved_model.load("{run}/saved_model")',
        f'outputs = served.signatures["serving_default"]({inputs})',
        "```",
        "",
        f"`serving_default` takes {' and '.join(f'`{i}`' for i in served['inputs'])} "
        f"(string `[B]`) and returns {', '.join(f'`{o}`' for o in outputs)} and "
        "`num_tokens`"
        + (" (and `words`, `num_words`, `word_start`, `word_end`, `cut_words` for the "
           "per-word tasks)" if any(t.per_token for t in tasks) else "")
        + "; `serve_token_ids` takes packed ids, and `metadata` returns the tasks as JSON.",
        "",
        "## Versions",
        "",
        versions + ".",
        "",
        "The full record (config included) is `metrics.json[\"run\"]`; the per-epoch "
        "logs are history.csv / history.json.",
        "",
    ]
    return "\n".join(lines)


def write_run_records(out, result, *, command=None, wall_seconds=None):
    """Writes metrics.json, history.json and the model card README.md; returns the record.

    Args:
        out: the run directory (with history.csv, as `fit_run` writes it).
        result: the `pipeline.RunResult`.
        command: how the run was started (default: `python_command` of
            `mtl_keras.train.run_training`).
        wall_seconds: the wall time of the job so far.

    Example (an untrained model and a one-epoch history stand in for `fit_run`'s):
    >>> import tempfile
    >>> from mtl_keras import TextPreprocessor
    >>> from mtl_keras.config import load_config
    >>> from mtl_keras.pipeline import RunResult, build_model
    >>> config, run = load_config(), Path(tempfile.mkdtemp())
    >>> preprocessor = TextPreprocessor.from_texts(["the match"], 20, 32, align_words=True)
    >>> metrics = {"topic": {"kind": "multiclass", "examples": 337, "accuracy": 0.9}}
    >>> result = RunResult(build_model(config, preprocessor), {}, metrics, {},
    ...                    {"parameters": 1000}, 2000, config, {"topic": 1500})
    >>> _ = (run / HISTORY).write_text("epoch,loss,val_loss\\n0,0.9,1.0\\n")
    >>> record = write_run_records(run, result)  # from Python: the record says so
    >>> record["command"].startswith("mtl_keras.train.run_training() called from Python")
    True
    >>> sorted(json.loads((run / METRICS).read_text())), read_task_metrics(run) == metrics
    (['run', 'tasks'], True)
    >>> json.loads((run / HISTORY_JSON).read_text()), (run / MODEL_CARD).is_file()
    ({'loss': [0.9], 'val_loss': [1.0]}, True)
    """
    out = Path(out)
    history = history_data(out)
    if command is None:
        command = python_command("mtl_keras.train.run_training")
    record = run_record(result, command=command, history=history, wall_seconds=wall_seconds)
    (out / HISTORY_JSON).write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    report = {"tasks": result.metrics, "run": record}
    (out / METRICS).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / MODEL_CARD).write_text(model_card(result, record, out), encoding="utf-8")
    return record


def read_task_metrics(path):
    """`{task: {"kind", "examples", "<metric>": value}}` of a run's metrics.json.

    `path` is the run directory or its metrics.json.

    Example:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = (run / METRICS).write_text('{"tasks": {"spam": {"kind": "binary"}}, "run": {}}')
    >>> read_task_metrics(run)
    {'spam': {'kind': 'binary'}}
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    return json.loads(path.read_text(encoding="utf-8"))["tasks"]
