"""A small harness for side-by-side benchmarks on a shared, noisy machine.

Absolute speed drifts with whatever else the machine is doing, so candidates
are measured in *interleaved rounds* in one process: every round runs every
candidate once (the order rotates from round to round), after untimed
warm-up. Each candidate reports the median and the min-max of its per-round
values, and its *paired ratio* to a baseline: the median over rounds of
(candidate / baseline) measured in the same round, which cancels most of the
drift that both share.

A candidate's `run()` does one round of work and returns how many items it
processed (the harness times the call), or `(items, seconds)` or
`(items, seconds, cpu_seconds)` when it times itself (for example to leave
out a per-call setup). Values are throughput (items/s, higher is better) or
latency (ms per item, lower is better); ratios are always speed-ups, so > 1
means faster than the baseline.

Each round also records the process CPU time (all threads), giving items
per CPU-second and CPU-time ratios. When other processes compete for the
cores, wall time stretches by however long we wait for a core while CPU
time barely moves, so the CPU-time ratio is the steadier comparison on a
shared machine (it does not see idle waits, so read it with the wall one).

Also here: the matmul ceiling of this CPU (`matmul_ceiling`) and analytic
matmul FLOP counts of our encoder (`model_matmul_flops`), for model FLOP
utilization (MFU = achieved FLOP/s / ceiling); and the plain Keras
multi-output model the training benchmarks compare against
(`plain_keras_model`), with each task's loss and metrics taken from its kind.

Example:
>>> import time
>>> result = run_interleaved(
...     [Candidate("sleepy", lambda: (time.sleep(0.002), 10)[1]),
...      Candidate("quick", lambda: 10)],
...     rounds=2, baseline="sleepy", title="demo", log=None)
>>> result.candidates["quick"].ratio > 1
True
"""

import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import keras

THROUGHPUT = "throughput"
LATENCY = "latency"


@dataclasses.dataclass
class Candidate:
    """One thing to measure.

    Args:
        name: short identifier (a table row and a JSON key).
        run: does one round of work; returns the items processed, or
            `(items, seconds)` or `(items, seconds, cpu_seconds)` if it
            times itself.
        warmup: called before the timed rounds (untimed); defaults to `run`.
        description: one line for the table.
        flops_per_item: matmul FLOPs per item, for MFU (optional).
        peak_flops: the FLOP/s ceiling MFU is relative to (optional).
        peak_flops_per_cpu_second: the same ceiling per CPU-second, for a
            CPU-time MFU that competing processes distort less (optional).
        info: anything else to record in the JSON (settings, dtypes, ...).
    """

    name: str
    run: Callable
    warmup: Callable | None = None
    description: str = ""
    flops_per_item: float | None = None
    peak_flops: float | None = None
    peak_flops_per_cpu_second: float | None = None
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CandidateResult:
    name: str
    description: str
    values: list  # per round: items/s, or ms per item
    ratios: list  # per round: speed-up vs the baseline
    cpu_values: list  # per round: items per CPU-second, or CPU-ms per item
    cpu_ratios: list
    info: dict
    flops_per_item: float | None = None
    peak_flops: float | None = None
    peak_flops_per_cpu_second: float | None = None

    @property
    def median(self):
        return statistics.median(self.values)

    @property
    def ratio(self):
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def cpu_median(self):
        return statistics.median(self.cpu_values)

    @property
    def cpu_ratio(self):
        return statistics.median(self.cpu_ratios) if self.cpu_ratios else None

    def achieved_flops(self, mode):
        if mode != THROUGHPUT or not self.flops_per_item:
            return None
        return self.median * self.flops_per_item

    def mfu(self, mode):
        achieved = self.achieved_flops(mode)
        if achieved is None or not self.peak_flops:
            return None
        return achieved / self.peak_flops

    def cpu_mfu(self, mode):
        if mode != THROUGHPUT or not self.flops_per_item:
            return None
        if not self.peak_flops_per_cpu_second:
            return None
        return self.cpu_median * self.flops_per_item / self.peak_flops_per_cpu_second

    def to_dict(self, mode):
        return {
            "description": self.description,
            "values": self.values,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "ratio": self.ratio,
            "ratios": self.ratios,
            "ratio_min": min(self.ratios) if self.ratios else None,
            "ratio_max": max(self.ratios) if self.ratios else None,
            "cpu_values": self.cpu_values,
            "cpu_median": self.cpu_median,
            "cpu_ratio": self.cpu_ratio,
            "cpu_ratios": self.cpu_ratios,
            "flops_per_item": self.flops_per_item,
            "achieved_flops": self.achieved_flops(mode),
            "peak_flops": self.peak_flops,
            "mfu": self.mfu(mode),
            "peak_flops_per_cpu_second": self.peak_flops_per_cpu_second,
            "cpu_mfu": self.cpu_mfu(mode),
            "info": self.info,
        }


@dataclasses.dataclass
class BenchmarkResult:
    title: str
    mode: str
    unit: str
    baseline: str
    rounds: int
    candidates: dict  # name -> CandidateResult, in the order given
    environment: dict
    config: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        return {
            "title": self.title,
            "mode": self.mode,
            "unit": self.unit,
            "baseline": self.baseline,
            "rounds": self.rounds,
            "config": self.config,
            "environment": self.environment,
            "candidates": {
                name: c.to_dict(self.mode) for name, c in self.candidates.items()
            },
        }

    def save(self, path):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, default=str)

    def to_markdown(self):
        """A markdown table: medians, min-max, paired ratios, MFU, description."""
        cands = list(self.candidates.values())
        has_mfu = any(c.mfu(self.mode) is not None for c in cands)
        has_cpu_mfu = any(c.cpu_mfu(self.mode) is not None for c in cands)
        cpu_unit = "per CPU-s" if self.mode == THROUGHPUT else "CPU-ms/item"
        header = [
            "candidate",
            f"median {self.unit}",
            "min–max",
            f"× vs `{self.baseline}` (min–max)",
            cpu_unit,
            "× by CPU time",
        ]
        if has_mfu:
            header.append("MFU")
        if has_cpu_mfu:
            header.append("MFU (CPU time)")
        header.append("what")
        lines = [
            f"**{self.title}** ({self.rounds} interleaved rounds; × = median of "
            "per-round speed-ups vs the baseline)",
            "",
            machine_line(self.environment),
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
        ]
        for c in cands:
            row = [
                f"`{c.name}`",
                _fmt(c.median),
                f"{_fmt(min(c.values))}–{_fmt(max(c.values))}",
                f"{c.ratio:.2f}× ({min(c.ratios):.2f}–{max(c.ratios):.2f})",
                _fmt(c.cpu_median),
                f"{c.cpu_ratio:.2f}×",
            ]
            if has_mfu:
                row.append(_pct(c.mfu(self.mode)))
            if has_cpu_mfu:
                row.append(_pct(c.cpu_mfu(self.mode)))
            row.append(c.description)
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)


def _pct(value):
    return "—" if value is None else f"{100 * value:.1f}%"


def _fmt(value):
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


# The CPU features that decide matmul speed: bf16 pays on AMX, much less on AVX512_BF16.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_description():
    """`(model, flags)`: the CPU model and which of `CPU_FLAGS` it has (/proc/cpuinfo)."""
    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    return model, [f for f in CPU_FLAGS if f in flags]


def machine_line(env):
    """One line naming the machine of `env` (an `environment()`), for reports."""
    gpus = env.get("gpus") or ["no GPU"]
    return (f"CPU: {env.get('cpu', 'unknown')} ({' '.join(env.get('cpu_flags', [])) or 'no listed flags'}; "
            f"{env.get('cpu_count')} cores), {', '.join(gpus)}")


def environment():
    """The facts that make two runs comparable (or not): versions, CPU, GPUs, load."""
    model, flags = cpu_description()
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": model,
        "cpu_flags": flags,
        "cpu_count": os.cpu_count(),
    }
    if "tensorflow" in sys.modules:
        env["gpus"] = [d.name for d in sys.modules["tensorflow"].config.list_physical_devices("GPU")]
    for module in ("tensorflow", "keras", "keras_hub", "numpy"):
        if module in sys.modules:
            env[module] = getattr(sys.modules[module], "__version__", "?")
    if hasattr(os, "getloadavg"):
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return env


def _measure(candidate, mode):
    """Runs one round; returns (value, cpu_value) in the units of `mode`."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = candidate.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if isinstance(out, tuple):
        items, wall, cpu = (*out, cpu) if len(out) == 2 else out
    else:
        items = out
    if not items or items <= 0 or wall <= 0:
        raise ValueError(
            f"Candidate {candidate.name!r} reported {items} items in {wall} s."
        )
    cpu = max(cpu, 1e-9)
    if mode == THROUGHPUT:
        return items / wall, items / cpu
    return 1000.0 * wall / items, 1000.0 * cpu / items


def _speedups(values, base, mode):
    if mode == THROUGHPUT:
        return [v / b for v, b in zip(values, base)]
    return [b / v for v, b in zip(values, base)]


def run_interleaved(
    candidates,
    rounds=5,
    baseline=None,
    mode=THROUGHPUT,
    unit=None,
    warmup_rounds=1,
    title="benchmark",
    config=None,
    log=print,
):
    """Runs `candidates` in interleaved rounds; returns a `BenchmarkResult`.

    Args:
        candidates: a list of `Candidate`s (distinct names).
        rounds: timed rounds; each runs every candidate once.
        baseline: the name ratios are relative to (default: the first).
        mode: `THROUGHPUT` (items/s) or `LATENCY` (ms per item).
        unit: label for the values (default "items/s" or "ms/item").
        warmup_rounds: untimed calls of each candidate's `warmup` (or `run`)
            before the timed rounds.
        title: a heading for the table.
        config: the benchmark's settings, recorded in the JSON.
        log: a print-like function for progress, or None for silence.
    """
    if mode not in (THROUGHPUT, LATENCY):
        raise ValueError(f"mode must be {THROUGHPUT!r} or {LATENCY!r}, got {mode!r}.")
    names = [c.name for c in candidates]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"Candidates need distinct names, got {names}.")
    baseline = baseline or names[0]
    if baseline not in names:
        raise ValueError(f"Baseline {baseline!r} is not a candidate ({names}).")
    if rounds < 1:
        raise ValueError("rounds must be >= 1.")
    unit = unit or ("items/s" if mode == THROUGHPUT else "ms/item")
    log = log or (lambda *args, **kwargs: None)
    env_start = environment()

    for candidate in candidates:
        for _ in range(warmup_rounds):
            start = time.perf_counter()
            (candidate.warmup or candidate.run)()
            log(f"  warm-up {candidate.name}: {time.perf_counter() - start:.1f} s")

    values = {name: [] for name in names}
    cpu_values = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(candidates)
        order = candidates[shift:] + candidates[:shift]
        for candidate in order:
            value, cpu_value = _measure(candidate, mode)
            values[candidate.name].append(value)
            cpu_values[candidate.name].append(cpu_value)
        log(
            f"  round {r + 1}/{rounds} ({unit}): "
            + ", ".join(f"{n} {_fmt(values[n][-1])}" for n in names)
        )

    results = {}
    for candidate in candidates:
        name = candidate.name
        results[name] = CandidateResult(
            name=name,
            description=candidate.description,
            values=values[name],
            ratios=_speedups(values[name], values[baseline], mode),
            cpu_values=cpu_values[name],
            cpu_ratios=_speedups(cpu_values[name], cpu_values[baseline], mode),
            info=dict(candidate.info),
            flops_per_item=candidate.flops_per_item,
            peak_flops=candidate.peak_flops,
            peak_flops_per_cpu_second=candidate.peak_flops_per_cpu_second,
        )
    env = environment()
    env["load_average_at_start"] = env_start.get("load_average")
    return BenchmarkResult(
        title=title,
        mode=mode,
        unit=unit,
        baseline=baseline,
        rounds=rounds,
        candidates=results,
        environment=env,
        config=dict(config or {}),
    )


def write_results(path, payload, markdown):
    """Writes `payload` as JSON to `path` and `markdown` next to it (`.md`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    md_path = os.path.splitext(path)[0] + ".md"
    with open(md_path, "w") as f:
        f.write(markdown + "\n")
    print(f"wrote {path} and {md_path}")


# --- Compute ceiling and FLOP counts -------------------------------------------


@functools.cache
def _matmul_ceilings(dtype, size, chain, repeats):
    import tensorflow as tf

    dtype = tf.as_dtype(dtype)
    rng = tf.random.Generator.from_seed(0)
    a = tf.cast(rng.normal((size, size)), dtype)
    b = tf.cast(rng.normal((size, size)) / size**0.5, dtype)

    @tf.function
    def chained(x):
        for _ in range(chain):
            x = tf.matmul(x, b)
        return tf.reduce_sum(tf.cast(x[:1, :1], "float32"))

    chained(a).numpy()  # trace and warm up
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        chained(a).numpy()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    flops = 2.0 * size**3 * chain
    return flops / best_wall, flops / max(best_cpu, 1e-9)


def matmul_ceiling(dtype="float32", size=1024, chain=8, repeats=8, clock="wall"):
    """Measured peak matmul FLOP/s on this machine for `dtype`.

    Runs `chain` dependent `size`x`size` matmuls inside one `tf.function`
    (so dispatch is amortized) and keeps the best of `repeats` calls. The
    right-hand matrix is scaled by 1/sqrt(size) so values neither overflow
    nor sink into denormals. With `clock="cpu"`, FLOPs per CPU-second of
    the process (all threads). Cached per argument set.

    Example:
    >>> matmul_ceiling("float32", size=64, chain=2, repeats=2) > 0
    True
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}.")
    wall, cpu = _matmul_ceilings(str(dtype), size, chain, repeats)
    return wall if clock == "wall" else cpu


def encoder_matmul_flops(seq_len, hidden_dim, num_layers, intermediate_dim=None):
    """Forward matmul FLOPs per example of one of our Transformer encoders.

    Embeddings are free (a gather); per layer: Q, K, V and output
    projections `4·L·H²`, attention scores and weighted sum `2·L²·H`, and
    the feed-forward block `2·L·H·I` multiply-adds, at 2 FLOPs each.
    """
    intermediate_dim = intermediate_dim or 4 * hidden_dim
    L, H, inner = seq_len, hidden_dim, intermediate_dim
    per_layer = 2 * (4 * L * H * H) + 2 * (2 * L * L * H) + 2 * (2 * L * H * inner)
    return num_layers * per_layer


def model_matmul_flops(model, seq_len, training=True):
    """Matmul FLOPs per example of a model built on a `SharedEncoder`.

    Works for a `MultiTaskModel` and for a plain functional model with a
    `SharedEncoder` layer: the encoder (see `encoder_matmul_flops`) plus
    each top-level `Dense` head (`2·in·out`, per token when its output is a
    sequence). `training=True` multiplies by 3 (forward + backward).
    """
    from mtl_keras.backbone import SharedEncoder

    encoders = [layer for layer in model.layers if isinstance(layer, SharedEncoder)]
    if isinstance(model, SharedEncoder):
        encoders = [model]
    if len(encoders) != 1:
        raise ValueError(
            f"Expected one SharedEncoder in {model.name}, found {len(encoders)}."
        )
    encoder = encoders[0]
    flops = encoder_matmul_flops(
        seq_len, encoder.hidden_dim, encoder.num_layers, encoder.intermediate_dim
    )
    for layer in model.layers:
        if not hasattr(layer, "kernel") or not hasattr(layer, "units"):
            continue
        fan_in, fan_out = layer.kernel.shape
        per_token = False
        try:
            per_token = len(layer.output.shape) == 3
        except (AttributeError, ValueError):
            pass
        flops += 2 * fan_in * fan_out * (seq_len if per_token else 1)
    return flops * (3 if training else 1)


# --- The plain Keras baseline ----------------------------------------------------


def default_optimizer():
    """The optimizer `MultiTaskModel.compile()` builds by default, for any model."""
    return keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=0.01, global_clipnorm=1.0)


def mean_loss(task):
    """`task`'s loss (its kind's) with Keras' usual mean over the batch.

    `Task.loss()` returns one value per example (`reduction=None`: the
    `MultiTaskModel` step averages over the labelled rows itself); a plain
    `compile(loss=...)` wants the reduced loss, as a tutorial writes it.
    """
    loss = task.loss()
    return type(loss).from_config(
        {**loss.get_config(), "reduction": "sum_over_batch_size"}
    )


class KindShapedMetric(keras.metrics.Metric):
    """One of a task's metrics, fed as our training step feeds it.

    The step shapes labels and logits by the task's kind before a metric
    sees them (`TaskKind.metric_inputs`: binary labels `[B]` become
    `[B, 1]`, ...); this does the same inside a plain model's
    `compile(weighted_metrics=...)`.
    """

    def __init__(self, metric, task, **kwargs):
        super().__init__(name=metric.name, **kwargs)
        self.metric, self.task = metric, task

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = self.task.task_kind.metric_inputs(self.task, y_true, y_pred)
        self.metric.update_state(y_true, y_pred, sample_weight=sample_weight)

    def result(self):
        return self.metric.result()

    def reset_state(self):
        self.metric.reset_state()


def plain_keras_model(
    encoder, tasks, optimizer, dropout=0.1, with_metrics=False, **compile_kwargs
):
    """The layers of a `MultiTaskModel` as a plain functional multi-output model.

    `encoder` (a `SharedEncoder`), dropout on its pooled output and one
    float32 `Dense` head per task, compiled as a Keras tutorial does it:
    `compile(loss={task: loss}, loss_weights={task: weight})`, the label
    masks given to `fit` as per-output `sample_weight`s. With
    `with_metrics`, also each task's own metrics (`weighted_metrics`).
    """
    inputs = {
        "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input(shape=(None,), dtype="bool", name="padding_mask"),
    }
    pooled = keras.layers.Dropout(dropout, name="head_dropout")(
        encoder(inputs)["pooled_output"]
    )
    outputs = {
        task.name: keras.layers.Dense(
            task.head_units, dtype="float32", name=f"{task.name}_head"
        )(pooled)
        for task in tasks
    }
    model = keras.Model(inputs, outputs, name="plain_keras")
    metrics = None
    if with_metrics:
        metrics = {
            task.name: [KindShapedMetric(m, task) for m in task.metrics()]
            for task in tasks
        }
    model.compile(
        optimizer=optimizer,
        loss={task.name: mean_loss(task) for task in tasks},
        loss_weights={task.name: task.loss_weight for task in tasks},
        weighted_metrics=metrics,
        **compile_kwargs,
    )
    return model
