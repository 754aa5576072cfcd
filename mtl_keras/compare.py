"""Multi-task versus single-task, on the same data, at a stated budget, over seeds.

`compare(config, seeds=3)` trains the multi-task model of a run config and
one single-task model per task, K times (seeds `training.seed`, +1, ...),
and reports per task the dev metrics of both (mean ± sd over seeds), their
difference, and the compute each run used.

**The budget rule.** Let E = `training.epochs` and n_t the labelled training
rows of task t.

* Single-task model for task t: E passes over the n_t rows of its task
  (E·n_t examples) — what `mtl-keras train` does with a config that holds
  task t alone (`single_task_config`): the same model size, precision,
  optimizer, learning-rate schedule (over its own steps), batch size and
  seed, and no other task's labels.
* Multi-task model: B = ρ · Σ_t E·n_t examples, ρ = `multitask_budget`
  (default 1/K for K tasks: the cost of the average single-task run), drawn
  by the config's sampler: the first B examples of the `Mixture` stream
  (temperature, annealed, ... over ⌈B / N⌉ mixture epochs of N = Σ n_t
  examples), or of the jointly labelled rows, reshuffled each pass
  (`sampler: joint`). With ρ = 1/K and jointly labelled rows that carry every
  task, that is E passes: each single-task model sees exactly the rows the
  multi-task model saw, with one label instead of K.
* Vocabulary: by default every model uses one WordPiece vocabulary learned
  once from the training texts of all tasks (`vocabulary="shared"`), so the
  models differ only in the labels they learn from; `vocabulary="own"`
  learns one per model from its own training texts.

Compute is counted, not estimated: the examples and batches each run
trained on (all of its stream; steps = batches), the token positions it
processed (padded, as batched by `make_batches`, and real), the labelled
examples of each task, and the wall and CPU seconds of `fit`. Every model is
evaluated once, after its last step (no checkpoint picked on dev data), on
each task's dev rows (`train.evaluate_tasks`); binary and multiclass tasks
also get the Matthews correlation (`mcc`), computed from the predictions.

The pieces are those of `mtl_keras.train` (`prepare_data`,
`vocabulary_texts`, `learn_vocabulary`, `TextPreprocessor`, `make_batches`,
`build_model`, `learning_rate`, `evaluate_tasks`); `train_and_evaluate` only
puts them together without the run directory, for a given number of
training examples.

Example:
>>> from mtl_keras.config import load_config
>>> report = compare(load_config(epochs=1), seeds=1, out_dir="/tmp/cmp")  # doctest: +SKIP
>>> sorted(report["tasks"])  # doctest: +SKIP
['rating', 'sentiment', 'topic']
"""

import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import data as data_lib
from mtl_keras.config import SamplerConfig
from mtl_keras.preprocess import TextPreprocessor, learn_vocabulary, make_batches
from mtl_keras.train import (
    HEADLINE_METRIC,
    _with_pair,
    build_model,
    build_source,
    evaluate_tasks,
    finite_batches,
    learning_rate,
    prepare_data,
    vocabulary_texts,
)

MULTI_TASK = "multi_task"
SINGLE_TASK = "single_task"
# The metrics compared, per task kind (the first is the headline).
COMPARED_METRICS = {
    "binary": ("accuracy", "mcc", "auc"),
    "multiclass": ("accuracy", "macro_f1", "mcc"),
    "multilabel": ("macro_f1", "auc"),
    "regression": ("mae", "mse"),
    "tagging": ("token_accuracy",),
}
# Metrics shown as percentages (×100) in the markdown table.
PERCENT_METRICS = ("accuracy", "macro_f1", "mcc", "auc", "token_accuracy")
VOCABULARY_MODES = ("shared", "own")


# --------------------------------------------------------------------------
# Configs.


def single_task_config(config, task_name):
    """The config with task `task_name` alone: its sources, its columns.

    Sources that do not carry the task are dropped; a jointly labelled source
    keeps only the task's column (rows without its label are then skipped).
    The sampler becomes `joint`: one pass over the task's rows per epoch.
    """
    names = [t.name for t in config.tasks]
    if task_name not in names:
        raise ValueError(f"No task {task_name!r} in the config (tasks: {names}).")

    def only(sources):
        kept = []
        for source in sources:
            if task_name not in source.tasks:
                continue
            label_map = source.label_map
            if label_map is not None:
                label_map = {k: v for k, v in label_map.items() if k == task_name}
            kept.append(
                dataclasses.replace(
                    source,
                    tasks={task_name: source.tasks[task_name]},
                    label_map=label_map or None,
                )
            )
        return tuple(kept)

    data = dataclasses.replace(
        config.data, train=only(config.data.train), dev=only(config.data.dev)
    )
    tasks = tuple(t for t in config.tasks if t.name == task_name)
    return dataclasses.replace(
        config, tasks=tasks, data=data, sampler=SamplerConfig("joint")
    )


def with_seed(config, seed):
    return config.replace(seed=int(seed))


def task_sizes(config):
    """`{task: labelled training rows}` (what its single-task run trains on)."""
    sources = [build_source(s, config) for s in config.data.train]
    tables = data_lib.validate(config.tasks, sources, empty_text=config.data.empty_text)
    return {
        t.name: int(sum(table.masks[t.name].sum() for table in tables))
        for t in config.tasks
    }


@dataclasses.dataclass(frozen=True)
class Budget:
    """The examples each model trains on (see the module docstring).

    Args:
        epochs: E, the single-task runs' passes over their task's rows.
        sizes: `{task: n_t}`, labelled training rows per task.
        multitask_fraction: ρ, the multi-task run's share of the sum of the
            single-task runs' examples.
    """

    epochs: int
    sizes: dict
    multitask_fraction: float

    @property
    def single_task_examples(self):
        return {name: self.epochs * n for name, n in self.sizes.items()}

    @property
    def single_task_total(self):
        return sum(self.single_task_examples.values())

    @property
    def multitask_examples(self):
        return max(1, int(round(self.multitask_fraction * self.single_task_total)))

    def to_dict(self):
        return {
            "rule": (
                "single-task model t: E passes over its n_t labelled rows (E*n_t "
                "examples); multi-task model: rho * sum_t E*n_t examples drawn by "
                "the config's sampler"
            ),
            "epochs": self.epochs,
            "train_rows": dict(self.sizes),
            "multitask_fraction": self.multitask_fraction,
            "single_task_examples": self.single_task_examples,
            "single_task_total_examples": self.single_task_total,
            "multitask_examples": self.multitask_examples,
        }


def multitask_config(config, budget):
    """The config whose sampler covers the multi-task budget.

    A mixture sampler draws `Mixture.epoch_size` = Σ n_t examples per epoch,
    so the config gets ⌈B / Σ n_t⌉ epochs (the annealing length) and the run
    takes the first B examples of the stream.
    """
    if config.sampler.name == "joint":
        return config
    epoch_size = sum(budget.sizes.values())
    epochs = max(1, math.ceil(budget.multitask_examples / epoch_size))
    return config.replace(epochs=epochs)


# --------------------------------------------------------------------------
# One run.


class _Counter:
    """Counts what a finite batch stream delivered (read it once it is spent)."""

    def __init__(self, task_names):
        def zero():
            return tf.Variable(0, dtype=tf.int64, trainable=False)

        self.batches, self.examples = zero(), zero()
        self.padded_tokens, self.tokens = zero(), zero()
        self.labelled = {name: zero() for name in task_names}

    def __call__(self, x, y, sample_weight):
        mask = x["padding_mask"]
        updates = [
            self.batches.assign_add(1),
            self.examples.assign_add(tf.shape(mask, out_type=tf.int64)[0]),
            self.padded_tokens.assign_add(tf.size(mask, out_type=tf.int64)),
            self.tokens.assign_add(tf.reduce_sum(tf.cast(mask, tf.int64))),
        ]
        for name, count in self.labelled.items():
            if name in sample_weight:
                labelled = tf.reduce_sum(tf.cast(sample_weight[name] > 0, tf.int64))
                updates.append(count.assign_add(labelled))
        with tf.control_dependencies(updates):
            x = tf.nest.map_structure(tf.identity, x)
        return x, y, sample_weight

    def result(self):
        return {
            "batches": int(self.batches.numpy()),
            "examples": int(self.examples.numpy()),
            "padded_tokens": int(self.padded_tokens.numpy()),
            "tokens": int(self.tokens.numpy()),
            "labelled_examples": {n: int(v.numpy()) for n, v in self.labelled.items()},
        }


class _Heartbeat(keras.callbacks.Callback):
    """Prints the step count and speed every `seconds` (long runs in a log)."""

    def __init__(self, label, total_steps, batch_size, seconds=60.0):
        super().__init__()
        self.label, self.total, self.batch_size = label, total_steps, batch_size
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self.last >= self.seconds:
            self.last = now
            steps = batch + 1
            rate = steps * self.batch_size / (now - self.start)
            loss = (logs or {}).get("loss")
            loss = "" if loss is None else f", loss {float(loss):.3f}"
            print(
                f"    {self.label}: step ~{steps}/{self.total} ({rate:.0f} ex/s{loss})",
                flush=True,
            )


def matthews_correlation(task, labels, outputs):
    """MCC of a binary (logit > 0) or multiclass (arg-max) task's predictions."""
    if task.kind == "binary":
        predicted = (np.reshape(outputs, -1) > 0).astype("int64")
        truth = np.reshape(labels, -1).astype("int64")
        classes = 2
    elif task.kind == "multiclass":
        predicted = np.argmax(outputs, axis=-1).astype("int64")
        truth = np.reshape(labels, -1).astype("int64")
        classes = task.num_classes
    else:
        raise ValueError(f"No MCC for a {task.kind} task.")
    matrix = np.zeros((classes, classes), "float64")
    np.add.at(matrix, (truth, predicted), 1)
    # Gorodkin's R_K; for two classes it is (tp·tn − fp·fn) / sqrt(...).
    total = matrix.sum()
    correct = np.trace(matrix)
    true_counts, predicted_counts = matrix.sum(1), matrix.sum(0)
    numerator = correct * total - true_counts @ predicted_counts
    denominator = math.sqrt(
        (total**2 - predicted_counts @ predicted_counts)
        * (total**2 - true_counts @ true_counts)
    )
    return float(numerator / denominator) if denominator else 0.0


def add_mcc(metrics, model, preprocessor, prepared, batch_size, config):
    """Adds `mcc` to the metrics of binary and multiclass tasks (one `predict`)."""
    tasks = [t for t in prepared.tasks if t.kind in ("binary", "multiclass")]
    if not tasks:
        return
    datasets = data_lib.eval_datasets(
        prepared.tasks, prepared.dev_sources, empty_text=config.data.empty_text
    )
    for task in tasks:
        dataset = datasets[task.name]
        if prepared.pair:
            dataset = dataset.map(_with_pair)
        batches = finite_batches(dataset, preprocessor, batch_size)
        labels = np.concatenate([y[task.name].numpy() for _, y, _ in batches])
        outputs = model.predict(batches.map(lambda x, y, w: x), verbose=0)
        metrics[task.name]["mcc"] = matthews_correlation(
            task, labels, outputs[task.name]
        )


@dataclasses.dataclass
class RunResult:
    """What `train_and_evaluate` returns."""

    metrics: dict  # {task: {"kind", "examples", metric: value}}
    compute: dict  # counts and seconds, see `train_and_evaluate`
    vocabulary: list


def train_and_evaluate(config, examples=None, vocabulary=None, label=None, verbose=0):
    """Trains `config`'s model on `examples` training examples, evaluates it.

    The training stream is that of `train.prepare_data` (the config's
    sampler and seed), repeated as needed and cut after `examples` (default:
    `training.epochs` epochs of it); it is batched with `make_batches` and
    trained in one `fit` call that consumes all of it, with the config's
    learning-rate schedule over ⌈examples / batch_size⌉ steps.

    Args:
        config: a resolved `RunConfig` (see `RunConfig.resolved`).
        examples: training examples; default `training.epochs` epochs.
        vocabulary: a vocabulary to reuse (it only depends on the training
            texts); default: learned from them, as `mtl-keras train` does.
        label: a name for progress lines.
        verbose: 1 prints a line every minute of training.

    Returns:
        A `RunResult`: per-task dev `metrics` (plus `mcc` for binary and
        multiclass tasks); `compute` with `steps` (train steps run),
        `batches`, `examples`, `padded_tokens`, `tokens`,
        `labelled_examples` per task, `train_seconds` and
        `train_cpu_seconds` of `fit`, `vocabulary_seconds` and
        `total_seconds`; and the `vocabulary`.
    """
    start = time.perf_counter()
    training = config.training
    keras.utils.set_random_seed(training.seed)
    prepared = prepare_data(config)
    prepare_seconds = time.perf_counter() - start
    vocabulary_seconds = 0.0
    if vocabulary is None:
        vocabulary = learn_vocabulary(
            vocabulary_texts(prepared.train_examples),
            config.model.vocabulary_size,
            lowercase=config.model.lowercase,
        )
        vocabulary_seconds = time.perf_counter() - start - prepare_seconds
    preprocessor = TextPreprocessor(
        vocabulary,
        sequence_length=config.model.sequence_length,
        lowercase=config.model.lowercase,
        pair=prepared.pair,
    )
    if examples is None:
        examples = prepared.examples_per_epoch * training.epochs
    stream = prepared.train_raw
    if config.sampler.name == "joint":
        stream = stream.repeat()  # a fresh shuffle each pass
    counter = _Counter([t.name for t in prepared.tasks])
    batches = make_batches(
        stream.take(examples), preprocessor, training.batch_size, seed=training.seed
    ).map(counter)
    total_steps = max(1, math.ceil(examples / training.batch_size))

    model = build_model(config, len(vocabulary), config.precision)
    model.compile(
        learning_rate=learning_rate(training, total_steps),
        weight_decay=training.weight_decay,
        steps_per_execution=training.steps_per_execution,
    )
    callbacks = [keras.callbacks.TerminateOnNaN()]
    if verbose:
        callbacks.append(_Heartbeat(label or "run", total_steps, training.batch_size))
    fit_start, fit_cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        # The stream is finite on purpose: `fit` stops when it is spent.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        model.fit(batches, epochs=1, callbacks=callbacks, shuffle=False, verbose=0)
    train_seconds = time.perf_counter() - fit_start
    train_cpu_seconds = time.process_time() - fit_cpu

    evaluate_start = time.perf_counter()
    metrics, _ = evaluate_tasks(
        model,
        preprocessor,
        prepared.dev_sources,
        training.batch_size,
        empty_text=config.data.empty_text,
        with_predictions=False,
    )
    add_mcc(metrics, model, preprocessor, prepared, training.batch_size, config)
    evaluate_seconds = time.perf_counter() - evaluate_start
    compute = counter.result()
    compute.update(
        # Each batch is one training step. (`fit` on a finite stream of unknown
        # length makes one more train-function call that finds no batch; it
        # advances step counters, so they are not used here.)
        steps=compute["batches"],
        parameters=int(model.count_params()),
        train_seconds=round(train_seconds, 2),
        train_cpu_seconds=round(train_cpu_seconds, 2),
        prepare_seconds=round(prepare_seconds, 2),
        vocabulary_seconds=round(vocabulary_seconds, 2),
        evaluate_seconds=round(evaluate_seconds, 2),
        total_seconds=round(time.perf_counter() - start, 2),
    )
    return RunResult(metrics, compute, list(vocabulary))


# --------------------------------------------------------------------------
# The comparison.


def _summary(values):
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "values": values,
    }


def _compute_totals(computes):
    keys = (
        "steps",
        "examples",
        "padded_tokens",
        "tokens",
        "train_seconds",
        "train_cpu_seconds",
    )
    return {k: sum(c[k] for c in computes) for k in keys}


def compare(
    config,
    seeds=3,
    out_dir=None,
    multitask_budget=None,
    vocabulary="shared",
    verbose=1,
):
    """Multi-task model against one single-task model per task, over seeds.

    Args:
        config: a `RunConfig` with two or more tasks.
        seeds: K; runs use seeds `training.seed + i`, i < K.
        out_dir: where to write `compare.json`, `compare.md` and the configs
            of every model (`configs/<model>.yaml`); None writes nothing.
        multitask_budget: ρ, the multi-task run's examples as a share of the
            single-task runs' sum (default 1/K for K tasks).
        vocabulary: `shared`: every model uses the vocabulary learned from
            the training texts of all tasks (learned once; the models then
            differ only in the labels they learn from); `own`: each model
            learns one from its own training texts, as `mtl-keras train`
            would on a single-task config.
        verbose: 1 prints progress and the final table.

    Returns:
        The report (what `compare.json` holds): `budget`, per-task
        `tasks[name]["metrics"][metric]` with `multi_task`, `single_task`
        and `difference` (multi − single, paired by seed) as
        `{"mean", "sd", "values"}`, `compute` per model (per seed and
        per-seed mean) with the ratios of the multi-task run to the sum of
        the single-task runs, and `runs` (every run's metrics and compute).
    """
    wall_start = time.perf_counter()
    config = config.resolved()
    if len(config.tasks) < 2:
        raise ValueError("compare needs a config with two or more tasks.")
    seeds = int(seeds)
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}.")
    names = [t.name for t in config.tasks]
    if multitask_budget is None:
        multitask_budget = 1.0 / len(names)
    if vocabulary not in VOCABULARY_MODES:
        raise ValueError(
            f"vocabulary must be one of {VOCABULARY_MODES}, got {vocabulary!r}."
        )
    if not 0 < multitask_budget:
        raise ValueError(f"multitask_budget must be > 0, got {multitask_budget}.")
    budget = Budget(config.training.epochs, task_sizes(config), multitask_budget)
    configs = {MULTI_TASK: multitask_config(config, budget)}
    for name in names:
        configs[name] = single_task_config(config, name)
    examples = {MULTI_TASK: budget.multitask_examples}
    examples.update(budget.single_task_examples)
    seed_values = [config.training.seed + i for i in range(seeds)]
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        (out / "configs").mkdir(parents=True, exist_ok=True)
        for model_name, model_config in configs.items():
            (out / "configs" / f"{model_name}.yaml").write_text(
                model_config.to_yaml(), encoding="utf-8"
            )
    if verbose:
        print(
            f"Comparing a multi-task model on {', '.join(names)} with "
            f"{len(names)} single-task models, {seeds} seed(s), "
            f"{config.precision}.\nBudget: single-task {budget.epochs} epoch(s) "
            + ", ".join(f"{n} {budget.single_task_examples[n]:,}" for n in names)
            + f" examples (sum {budget.single_task_total:,}); multi-task "
            f"{budget.multitask_examples:,} examples (rho = {multitask_budget:.3f}, "
            f"sampler {config.sampler.to_dict()}).",
            flush=True,
        )

    vocabularies = {}  # learned once per model (or once for all), reused
    runs = []
    report = None
    for seed in seed_values:
        for model_name, model_config in configs.items():
            label = f"seed {seed} {model_name}"
            result = train_and_evaluate(
                with_seed(model_config, seed),
                examples=examples[model_name],
                vocabulary=vocabularies.get(_vocabulary_key(model_name, vocabulary)),
                label=label,
                verbose=verbose,
            )
            vocabularies[_vocabulary_key(model_name, vocabulary)] = result.vocabulary
            runs.append(
                {
                    "seed": seed,
                    "model": model_name,
                    "metrics": result.metrics,
                    "compute": result.compute,
                }
            )
            if verbose:
                c = result.compute
                headline = ", ".join(
                    f"{task} {_headline(metrics)}"
                    for task, metrics in result.metrics.items()
                )
                print(
                    f"  {label}: {c['examples']:,} examples, {c['steps']} steps, "
                    f"fit {c['train_seconds']:.0f} s "
                    f"({c['examples'] / max(c['train_seconds'], 1e-9):.0f} ex/s); "
                    f"{headline}",
                    flush=True,
                )
            report = build_report(config, budget, seed_values, runs)
            report["vocabulary"] = vocabulary
            report["wall_seconds"] = round(time.perf_counter() - wall_start, 1)
            if out is not None:
                write_report(report, out)
    if verbose:
        print()
        print(format_report(report))
        if out is not None:
            print(f"\nWritten: {out / 'compare.json'}, {out / 'compare.md'}")
    return report


def _vocabulary_key(model_name, mode):
    # The multi-task model runs first in each seed: its vocabulary (from all
    # tasks' texts) is the shared one.
    return MULTI_TASK if mode == "shared" else model_name


def _headline(metrics):
    key = HEADLINE_METRIC.get(metrics.get("kind"))
    parts = [f"{key} {metrics[key]:.4f}"] if key in metrics else []
    if "mcc" in metrics and metrics.get("kind") == "binary":
        parts.append(f"mcc {metrics['mcc']:.4f}")
    return " ".join(parts)


def build_report(config, budget, seeds, runs):
    """The report of `compare` from its runs (complete seeds only)."""
    names = [t.name for t in config.tasks]
    models = [MULTI_TASK, *names]
    by_seed = {}
    for run in runs:
        by_seed.setdefault(run["seed"], {})[run["model"]] = run
    done = [s for s in seeds if len(by_seed.get(s, {})) == len(models)]
    tasks = {}
    for task in config.tasks:
        metrics = {}
        for metric in COMPARED_METRICS.get(task.kind, ()):
            multi = [by_seed[s][MULTI_TASK]["metrics"][task.name] for s in done]
            single = [by_seed[s][task.name]["metrics"][task.name] for s in done]
            if not done or metric not in multi[0] or metric not in single[0]:
                continue
            m = [r[metric] for r in multi]
            s = [r[metric] for r in single]
            metrics[metric] = {
                MULTI_TASK: _summary(m),
                SINGLE_TASK: _summary(s),
                "difference": _summary([a - b for a, b in zip(m, s)]),
            }
        seen = [
            by_seed[s][MULTI_TASK]["compute"]["labelled_examples"][task.name]
            for s in done
        ]
        tasks[task.name] = {
            "kind": task.kind,
            "train_rows": budget.sizes[task.name],
            "dev_examples": (
                by_seed[done[0]][task.name]["metrics"][task.name].get("examples")
                if done
                else None
            ),
            "examples_seen": {
                MULTI_TASK: statistics.fmean(seen) if seen else None,
                SINGLE_TASK: budget.single_task_examples[task.name],
            },
            "metrics": metrics,
        }
    compute = {}
    for model in models:
        per_seed = [by_seed[s][model]["compute"] for s in done]
        mean = {}
        if per_seed:
            mean = {
                k: statistics.fmean(c[k] for c in per_seed)
                for k in _compute_totals(per_seed)
            }
        compute[model] = {"per_seed": per_seed, "mean": mean}
    if done:
        single_total = _compute_totals(
            [by_seed[s][n]["compute"] for s in done for n in names]
        )
        multi_total = _compute_totals([by_seed[s][MULTI_TASK]["compute"] for s in done])
        compute["single_task_sum"] = {
            "mean": {k: v / len(done) for k, v in single_total.items()}
        }
        compute["ratio"] = {
            k: multi_total[k] / single_total[k] if single_total[k] else None
            for k in single_total
        }
    return {
        "config": config.source,
        "tasks_order": names,
        "precision": config.precision,
        "sampler": config.sampler.to_dict(),
        "model": config.model.to_dict(),
        "training": config.training.to_dict(),
        "seeds": seeds,
        "completed_seeds": done,
        "budget": budget.to_dict(),
        "tasks": tasks,
        "compute": compute,
        "runs": runs,
        "environment": _environment(),
    }


def _environment():
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _format_value(metric, summary, signed=False):
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    digits = 2 if metric in PERCENT_METRICS else 4
    sign = "+" if signed else ""
    text = f"{scale * summary['mean']:{sign}.{digits}f}"
    if summary["sd"] is not None:
        text += f" ± {scale * summary['sd']:.{digits}f}"
    return text


def format_report(report):
    """Markdown: the metrics table and the compute table of a report."""
    seeds = report["completed_seeds"]
    lines = [
        f"Dev metrics, mean ± sd over {len(seeds)} seed(s) {seeds}; accuracy, F1, "
        "MCC and AUC ×100; Δ = multi − single, paired by seed.",
        "",
        "| task | metric | multi-task | single-task | Δ | examples seen (multi / single) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, task in report["tasks"].items():
        seen = task["examples_seen"]
        for i, (metric, summary) in enumerate(task["metrics"].items()):
            lines.append(
                "| "
                + " | ".join(
                    [
                        name if i == 0 else "",
                        metric,
                        _format_value(metric, summary[MULTI_TASK]),
                        _format_value(metric, summary[SINGLE_TASK]),
                        _format_value(metric, summary["difference"], signed=True),
                        f"{seen[MULTI_TASK]:,.0f} / {seen[SINGLE_TASK]:,}"
                        if i == 0 and seen[MULTI_TASK] is not None
                        else "",
                    ]
                )
                + " |"
            )
    lines += [
        "",
        "Compute per seed (mean over seeds): training examples, steps (batches), "
        "token positions processed (padded), and the wall and CPU seconds of `fit`.",
        "",
        "| model | examples | steps | padded tokens | fit wall (s) | fit CPU (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    compute = report["compute"]
    rows = [MULTI_TASK, *report["tasks_order"], "single_task_sum"]
    for model in rows:
        mean = compute.get(model, {}).get("mean")
        if not mean:
            continue
        title = {
            MULTI_TASK: "multi-task",
            "single_task_sum": "**sum of single-task**",
        }.get(model, f"single-task {model}")
        lines.append(
            f"| {title} | {mean['examples']:,.0f} | {mean['steps']:,.0f} | "
            f"{mean['padded_tokens']:,.0f} | {mean['train_seconds']:.0f} | "
            f"{mean['train_cpu_seconds']:.0f} |"
        )
    ratio = compute.get("ratio")
    if ratio:
        lines.append(
            f"| **multi / sum of single** | {ratio['examples']:.3f} | "
            f"{ratio['steps']:.3f} | {ratio['padded_tokens']:.3f} | "
            f"{ratio['train_seconds']:.3f} | {ratio['train_cpu_seconds']:.3f} |"
        )
    return "\n".join(lines)


def write_report(report, out_dir):
    """Writes `compare.json` and `compare.md` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(
        json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8"
    )
    budget = report["budget"]
    name = Path(report["config"]).name if report.get("config") else "config"
    header = [
        f"# Multi-task vs single-task: {name}",
        "",
        f"Budget: single-task {budget['epochs']} epoch(s) over each task's "
        f"rows ({budget['single_task_total_examples']:,} examples in all); "
        f"multi-task {budget['multitask_examples']:,} examples "
        f"(rho = {budget['multitask_fraction']:.3f}), sampler "
        f"`{report['sampler']}`, precision {report['precision']}, "
        f"{report.get('wall_seconds', 0):.0f} s in all.",
        "",
        "",
    ]
    (out / "compare.md").write_text(
        "\n".join(header) + format_report(report) + "\n", encoding="utf-8"
    )


__all__ = [
    "Budget",
    "RunResult",
    "compare",
    "format_report",
    "matthews_correlation",
    "multitask_config",
    "single_task_config",
    "task_sizes",
    "train_and_evaluate",
    "write_report",
]
