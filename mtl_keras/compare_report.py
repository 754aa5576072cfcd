"""The report of `mtl-keras compare`: mean ± sd over seeds, paired Δ, compute.

`build_report` turns the runs of `compare.compare` into the dict written to
`compare.json`; `format_report` and `write_report` make its markdown tables.

Example:
>>> round(summary([0.5, 0.7])["mean"], 6)
0.6
"""

import dataclasses
import datetime
import json
import os
import platform
import statistics
from pathlib import Path

import keras
import tensorflow as tf

MULTI_TASK = "multi_task"
SINGLE_TASK = "single_task"
# Metrics shown as percentages (×100) in the markdown table.
PERCENT_METRICS = (
    "accuracy", "macro_f1", "mcc", "auc", "precision", "recall", "f1", "token_accuracy",
)


def summary(values):
    """Mean, sample sd (None for one value) and the values.

    Example:
    >>> summary([0.5, 0.7])["values"]
    [0.5, 0.7]
    """
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "values": values,
    }


COMPUTE_KEYS = (
    "steps", "examples", "padded_tokens", "tokens", "train_seconds", "train_cpu_seconds",
)


def _compute_totals(computes):
    return {k: sum(c[k] for c in computes) for k in COMPUTE_KEYS}


def multi_task_key(method=None):
    """The model name of a multi-task run: `multi_task`, or `multi_task:<method>`.

    Example:
    >>> multi_task_key("famo"), multi_task_key()
    ('multi_task:famo', 'multi_task')
    """
    return MULTI_TASK if method is None else f"{MULTI_TASK}:{method}"


def _suffix(model):
    """`""` for `multi_task`, `":famo"` for `multi_task:famo`."""
    return model[len(MULTI_TASK):]


def relative_change(multi, single, metric):
    """The relative change of a metric in %, positive when multi-task is better.

    Lower is better for losses and errors (`mae`, `mse`). Δm (Maninis et al.
    2019) averages it over the tasks' headline metrics.

    Example:
    >>> relative_change(0.55, 0.5, "accuracy"), relative_change(0.4, 0.5, "mae")
    (10.000000000000009, 19.999999999999996)
    """
    if not single:
        return None
    sign = -1.0 if metric in ("mae", "mse", "loss") else 1.0
    return sign * 100.0 * (multi - single) / abs(single)


def build_report(config, budget, seeds, runs):
    """The report of `compare` from its runs (complete seeds only).

    Example:
    >>> from mtl_keras.compare import Budget
    >>> from mtl_keras.config import load_config
    >>> config = load_config().with_tasks(["topic"])
    >>> compute = dict.fromkeys(["steps", "examples", "padded_tokens", "tokens"], 10)
    >>> compute.update(train_seconds=1.0, train_cpu_seconds=1.0, labelled_examples={"topic": 10})
    >>> runs = [{"seed": 0, "model": m, "compute": compute,
    ...          "metrics": {"topic": {"kind": "multiclass", "accuracy": a}}}
    ...         for m, a in (("multi_task", 0.9), ("topic", 0.8))]
    >>> report = build_report(config, Budget(1, {"topic": 10}, 1.0), [0], runs)
    >>> round(report["tasks"]["topic"]["metrics"]["accuracy"]["difference"]["mean"], 6)
    0.1
    """
    names = [t.name for t in config.tasks]
    multi_models = list(dict.fromkeys(
        r["model"] for r in runs if r["model"].startswith(MULTI_TASK)
    )) or [MULTI_TASK]
    models = [*multi_models, *names]
    by_seed = {}
    for run in runs:
        by_seed.setdefault(run["seed"], {})[run["model"]] = run
    done = [s for s in seeds if len(by_seed.get(s, {})) == len(models)]

    def per_seed(model, key):  # the runs of `model` in the complete seeds
        return [by_seed[s][model][key] for s in done]

    tasks, delta_m = {}, {}
    for task in config.tasks:
        single = [m[task.name] for m in per_seed(task.name, "metrics")]
        metrics, seen = {}, {SINGLE_TASK: budget.single_task_examples[task.name]}
        for model in multi_models:
            multi = [m[task.name] for m in per_seed(model, "metrics")]
            for metric in task.metric_names():
                if done and metric in multi[0] and metric in single[0]:
                    m, s = [r[metric] for r in multi], [r[metric] for r in single]
                    entry = metrics.setdefault(metric, {SINGLE_TASK: summary(s)})
                    entry[model] = summary(m)
                    entry["difference" + _suffix(model)] = summary([a - b for a, b in zip(m, s)])
            counts = [c["labelled_examples"][task.name] for c in per_seed(model, "compute")]
            seen[model] = statistics.fmean(counts) if counts else None
        headline = task.headline_metric
        for model in multi_models:
            if headline in metrics:
                change = relative_change(metrics[headline][model]["mean"],
                                         metrics[headline][SINGLE_TASK]["mean"], headline)
                delta_m.setdefault(model, []).append(change)
        tasks[task.name] = {
            "kind": task.kind,
            "train_rows": budget.sizes[task.name],
            "dev_examples": single[0].get("examples") if done else None,
            "examples_seen": seen,
            "metrics": metrics,
        }
    compute = {}
    for model in models:
        computes = per_seed(model, "compute")
        mean = {}
        if computes:
            mean = {k: statistics.fmean(c[k] for c in computes) for k in COMPUTE_KEYS}
        compute[model] = {"per_seed": computes, "mean": mean}
    if done:
        single_total = _compute_totals([c for n in names for c in per_seed(n, "compute")])
        compute["single_task_sum"] = {
            "mean": {k: v / len(done) for k, v in single_total.items()}
        }
        for model in multi_models:
            multi_total = _compute_totals(per_seed(model, "compute"))
            compute["ratio" + _suffix(model)] = {
                k: multi_total[k] / single_total[k] if single_total[k] else None
                for k in single_total
            }
    return {
        "multi_task_models": multi_models,
        "delta_m": {
            m: statistics.fmean(v) for m, v in delta_m.items() if None not in v
        },
        "config": config.source,
        "tasks_order": names,
        "precision": config.precision,
        "sampler": config.sampler,
        "preprocessor": config.preprocessor,
        "encoder": config.encoder,
        "training": dataclasses.asdict(config.training),
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


def _row(cells):
    return "| " + " | ".join(cells) + " |"


# The columns of the compute table, with their number formats.
_COMPUTE_COLUMNS = {
    "examples": ",.0f", "steps": ",.0f", "padded_tokens": ",.0f",
    "train_seconds": ".0f", "train_cpu_seconds": ".0f",
}


def format_report(report):
    """Markdown: the metrics table and the compute table of a report.

    Example:
    >>> from mtl_keras.compare import Budget
    >>> from mtl_keras.config import load_config
    >>> budget = Budget(1, {"topic": 1, "sentiment": 1, "rating": 1, "aspects": 1, "mentions": 1}, 1.0)
    >>> format_report(build_report(load_config(), budget, [0], [])).splitlines()[0]
    'Dev metrics, mean ± sd over 0 seed(s) []; accuracy, F1, MCC and AUC ×100; Δ = multi − single, paired by seed.'
"""
    seeds = report["completed_seeds"]
    lines = [
        f"Dev metrics, mean ± sd over {len(seeds)} seed(s) {seeds}; accuracy, F1, "
        "MCC and AUC ×100; Δ = multi − single, paired by seed.",
        "",
    ]
    multi_models = report.get("multi_task_models", [MULTI_TASK])
    if multi_models != [MULTI_TASK]:
        return "\n".join(lines + _methods_tables(report, multi_models))
    lines += [
        "| task | metric | multi-task | single-task | Δ | examples seen (multi / single) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, task in report["tasks"].items():
        seen, seen_text = task["examples_seen"], ""
        if seen[MULTI_TASK] is not None:
            seen_text = f"{seen[MULTI_TASK]:,.0f} / {seen[SINGLE_TASK]:,}"
        for i, (metric, summaries) in enumerate(task["metrics"].items()):
            task_name, seen_text = (name, seen_text) if i == 0 else ("", "")
            values = [
                _format_value(metric, summaries[key], signed=key == "difference")
                for key in (MULTI_TASK, SINGLE_TASK, "difference")
            ]
            lines.append(_row([task_name, metric, *values, seen_text]))
    lines += [
        "",
        "Compute per seed (mean over seeds): training examples, steps (batches), "
        "token positions processed (padded), and the wall and CPU seconds of `fit`.",
        "",
        "| model | examples | steps | padded tokens | fit wall (s) | fit CPU (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    compute = report["compute"]
    titles = {MULTI_TASK: "multi-task", "single_task_sum": "**sum of single-task**"}
    for model in [MULTI_TASK, *report["tasks_order"], "single_task_sum"]:
        mean = compute.get(model, {}).get("mean")
        if mean:
            cells = [format(mean[k], spec) for k, spec in _COMPUTE_COLUMNS.items()]
            lines.append(_row([titles.get(model, f"single-task {model}"), *cells]))
    if compute.get("ratio"):
        cells = [f"{compute['ratio'][k]:.3f}" for k in _COMPUTE_COLUMNS]
        lines.append(_row(["**multi / sum of single**", *cells]))
    return "\n".join(lines)


def _methods_tables(report, models):
    """The tables of a comparison of several weighting methods."""
    methods = [m[len(MULTI_TASK) + 1 :] for m in models]
    lines = [
        "Each method's cell: multi-task mean ± sd (Δ vs single-task). Δm: the mean "
        "relative change of the tasks' headline metrics (%, + is better).",
        "",
        _row(["task", "metric", "single-task", *methods]),
        "|---|---|" + "---:|" * (1 + len(methods)),
    ]
    for name, task in report["tasks"].items():
        for i, (metric, summaries) in enumerate(task["metrics"].items()):
            cells = [name if i == 0 else "", metric, _format_value(metric, summaries[SINGLE_TASK])]
            for model in models:
                delta = _format_value(metric, summaries["difference" + _suffix(model)], True)
                cells.append(f"{_format_value(metric, summaries[model])} ({delta.split(' ')[0]})")
            lines.append(_row(cells))
    delta_m = report.get("delta_m", {})
    lines.append(_row(["**Δm**", "", "", *(
        f"{delta_m[m]:+.2f}%" if m in delta_m else "" for m in models)]))
    lines += [
        "",
        "Compute per seed (mean over seeds), and each multi-task run over the sum of "
        "the single-task runs.",
        "",
        "| model | examples | steps | padded tokens | fit wall (s) | fit CPU (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    compute = report["compute"]
    for model in [*models, "single_task_sum"]:
        mean = compute.get(model, {}).get("mean")
        if mean:
            cells = [format(mean[k], spec) for k, spec in _COMPUTE_COLUMNS.items()]
            lines.append(_row([model.replace(":", " "), *cells]))
    for model in models:
        ratio = compute.get("ratio" + _suffix(model))
        if ratio:
            cells = [f"{ratio[k]:.3f}" for k in _COMPUTE_COLUMNS]
            lines.append(_row([f"{model.replace(':', ' ')} / sum of single", *cells]))
    return lines


def write_report(report, out_dir):
    """Writes `compare.json` and `compare.md` into `out_dir`.

    Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from mtl_keras.compare import Budget
    >>> from mtl_keras.config import load_config
    >>> report = build_report(load_config(), Budget(1, {"topic": 1, "sentiment": 1, "rating": 1, "aspects": 1, "mentions": 1}, 1.0), [0], [])
    >>> out = Path(tempfile.mkdtemp())
    >>> write_report(report, out)
    >>> sorted(p.name for p in out.iterdir())
    ['compare.json', 'compare.md']
    """
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


