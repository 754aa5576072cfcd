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
each task's dev rows, with every metric of the task's kind (MCC included).
Each run is one `pipeline.fit_run`, the same as `mtl-keras train`.
"""

import dataclasses
import math
import time
from pathlib import Path

from mtl_keras import data as data_lib
from mtl_keras import weighting as weighting_lib
from mtl_keras.compare_report import (
    MULTI_TASK,
    build_report,
    format_report,
    multi_task_key,
    write_report,
)
from mtl_keras.config_checks import ConfigError, check_weighting
from mtl_keras.kinds import get_kind
from mtl_keras.pipeline import fit_run

VOCABULARY_MODES = ("shared", "own")


# --------------------------------------------------------------------------
# Configs.


def single_task_config(config, task_name):
    """The config with task `task_name` alone: its sources, its columns.

    Sources that do not carry the task are dropped; a jointly labelled source
    keeps only the task's column (rows without its label are then skipped).
    The sampler becomes `joint`: one pass over the task's rows per epoch.

    Example:
    >>> from mtl_keras.config import load_config
    >>> [t.name for t in single_task_config(load_config(), "topic").tasks]
    ['topic']
    """
    names = [t.name for t in config.tasks]
    if task_name not in names:
        raise ValueError(f"No task {task_name!r} in the config (tasks: {names}).")
    return config.with_tasks([task_name])


def task_sizes(config):
    """`{task: labelled training rows}` (what its single-task run trains on).

    Example:
    >>> from mtl_keras.config import load_config
    >>> sorted(task_sizes(load_config()))
    ['aspects', 'mentions', 'rating', 'sentiment', 'topic']
    """
    tables = data_lib.validate(
        config.tasks, config.sources("train"), empty_text=config.data.empty_text
    )
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

    Example:
    >>> budget = Budget(epochs=3, sizes={"sst2": 100, "cola": 50}, multitask_fraction=0.5)
    >>> budget.single_task_total, budget.multitask_examples
    (450, 225)
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

    Example:
    >>> from mtl_keras.config import load_config
    >>> config = load_config("glue_agnews_files", check_files=False)
    >>> budget = Budget(3, {"sst2": 100, "cola": 50, "ag_news": 50}, 0.4)
    >>> multitask_config(config, budget).training.epochs  # 240 examples, 200 per epoch
    2
    """
    if config.sampler_object() is None:
        return config
    epoch_size = sum(budget.sizes.values())
    epochs = max(1, math.ceil(budget.multitask_examples / epoch_size))
    return config.replace(epochs=epochs)


# --------------------------------------------------------------------------
# The comparison.


def compare(
    config,
    seeds=3,
    out_dir=None,
    multitask_budget=None,
    vocabulary="shared",
    verbose=1,
    weightings=None,
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
        weightings: optional list of weighting methods (names or
            `{method: ..., **arguments}`): one multi-task model per method
            (`multi_task:<method>`), each against the same single-task
            models, with Δm per method. With a mixing sampler, a method that
            needs every task in every batch trains with `batching:
            every_task`. Default: the
            config's own weighting, one model `multi_task`.

    Returns:
        The report (what `compare.json` holds): `budget`, per-task
        `tasks[name]["metrics"][metric]` with `multi_task`, `single_task`
        and `difference` (multi − single, paired by seed) as
        `{"mean", "sd", "values"}`, `compute` per model (per seed and
        per-seed mean) with the ratios of the multi-task run to the sum of
        the single-task runs, and `runs` (every run's metrics and compute).

    Example:
    >>> import tempfile
    >>> from mtl_keras.config import load_config
    >>> config = load_config(epochs=1, batch_size=128, overrides=["data.train.0.max_rows=600"])
    >>> config = config.with_tasks(["topic", "sentiment"])
    >>> report = compare(config, seeds=1, out_dir=tempfile.mkdtemp(), verbose=0)
    >>> sorted(report["tasks"]), report["completed_seeds"]
    (['sentiment', 'topic'], [0])
    """
    wall_start = time.perf_counter()
    config = config.resolved()
    if len(config.tasks) < 2:
        raise ConfigError(
            f"compare needs a config with two or more tasks; {config.source or 'this'} "
            f"has {len(config.tasks)}."
        )
    seeds = int(seeds)
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}.")
    names = [t.name for t in config.tasks]
    if multitask_budget is None:
        multitask_budget = 1.0 / len(names)
    if vocabulary not in VOCABULARY_MODES:
        raise ConfigError(
            f"vocabulary must be one of {VOCABULARY_MODES}, got {vocabulary!r}."
        )
    if not 0 < multitask_budget:
        raise ConfigError(f"multitask_budget must be > 0, got {multitask_budget}.")
    budget = Budget(config.training.epochs, task_sizes(config), multitask_budget)
    configs = {}
    for spec in weightings or [None]:
        if spec is None:
            configs[MULTI_TASK] = multitask_config(config, budget)
            continue
        check_weighting(spec)  # a bad spec fails now, as a ConfigError
        name = weighting_lib.method_parts(spec)[0]
        method_config = dataclasses.replace(config, weighting=spec)
        if weighting_lib.METHODS[name].needs_every_task and config.sampler_object():
            method_config = method_config.replace(batching="every_task")  # a mixture
        configs[multi_task_key(name)] = multitask_config(method_config, budget)
    first_multi = next(iter(configs))
    configs.update({name: single_task_config(config, name) for name in names})
    examples = {m: budget.multitask_examples for m in configs}
    examples.update(budget.single_task_examples)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        (out / "configs").mkdir(parents=True, exist_ok=True)
        for model_name, model_config in configs.items():
            path = out / "configs" / f"{model_name}.yaml"
            path.write_text(model_config.to_yaml(), encoding="utf-8")
    if verbose:
        print(
            f"Comparing a multi-task model on {', '.join(names)} with "
            f"{len(names)} single-task models, {seeds} seed(s), "
            f"{config.precision}.\nBudget: single-task {budget.epochs} epoch(s) "
            + ", ".join(f"{n} {budget.single_task_examples[n]:,}" for n in names)
            + f" examples (sum {budget.single_task_total:,}); multi-task "
            f"{budget.multitask_examples:,} examples (rho = {multitask_budget:.3f}, "
            f"sampler {config.sampler}).",
            flush=True,
        )

    # The multi-task model runs first in each seed: with vocabulary="shared"
    # its vocabulary (learned from all tasks' texts) is every model's.
    vocabularies = {}
    runs, report = [], None
    seed_values = [config.training.seed + i for i in range(seeds)]
    for seed in seed_values:
        for model_name, model_config in configs.items():
            key = first_multi if vocabulary == "shared" else model_name
            label = f"seed {seed} {model_name}"
            result = fit_run(
                model_config.replace(seed=seed),
                examples=examples[model_name],
                preprocessor=vocabularies.get(key),
                label=label,
                verbose=0,
                with_predictions=False,
            )
            vocabularies[key] = result.model.preprocessor
            metrics, c = result.metrics, result.compute
            runs.append({"seed": seed, "model": model_name, "metrics": metrics, "compute": c})
            if verbose:
                headline = ", ".join(f"{t} {_headline(m)}" for t, m in metrics.items())
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


def _headline(metrics):
    key = get_kind(metrics["kind"]).headline_in(metrics)
    parts = [f"{key} {metrics[key]:.4f}"] if key in metrics else []
    if "mcc" in metrics and key != "mcc":
        parts.append(f"mcc {metrics['mcc']:.4f}")
    return " ".join(parts)


__all__ = [
    "Budget",
    "compare",
    "format_report",
    "multitask_config",
    "single_task_config",
    "task_sizes",
    "write_report",
]
