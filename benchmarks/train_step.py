"""Training throughput: our `fit` and loop against a plain Keras multi-output model.

Every candidate trains the same architecture (a `SharedEncoder` and one
Dense head per task) on the same fixed-shape synthetic batches (three
tasks: multiclass with 4 classes, binary and regression, with some labels
masked), in interleaved rounds (see `harness.py`):

- `ours_fit_fp32`: `MultiTaskModel.fit`, float32.
- `ours_loop_fp32`: `mtl_keras.loop.train_loop`, float32.
- `keras_fit_fp32` (the baseline): a plain `keras.Model(inputs, outputs)`
  with `compile(loss={...}, loss_weights={...})` and `fit`, float32.
- `ours_fit_best`: our `fit` with the fastest legitimate settings found on
  this CPU: `mixed_bfloat16` and `steps_per_execution` (XLA measured slower
  on CPU in both precisions, so `--best-jit` is off by default).
- `keras_fit_bf16`: the plain Keras model under `mixed_bfloat16`.

With `--diagnostics`, also: our fit with no metrics beyond the losses, the
plain Keras model with our metrics (these two price the metrics), and our
fit with bf16 alone and with `steps_per_execution` alone.

What to expect on a 2-core AMX CPU: bf16 makes the matmuls ~4x faster but
the exact GELU and dropout ~1.3-2x slower, so at hidden 128 (where those
elementwise ops take about half the step) bf16 gains only ~1.05x; at
hidden 512 it gains ~1.5x. On a shared machine read the CPU-time columns:
wall time there mostly measures the neighbours.

Usage:
    python benchmarks/train_step.py [--rounds 5] [--steps 16] [--batch-size 64]
        [--seq-len 128] [--hidden 128] [--layers 2] [--out results.json]
        [--diagnostics] [--smoke]
"""

import argparse
import functools
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from mtl_keras import MultiTaskModel, SharedEncoder, Task  # noqa: E402
from mtl_keras.loop import train_loop  # noqa: E402

TASKS = (
    Task("topic", "multiclass", num_classes=4),
    Task("positive", "binary"),
    Task("score", "regression", loss_weight=0.5),
)
MISSING = {"topic": 0.1, "positive": 0.3, "score": 0.5}  # share of masked labels
DISTINCT_BATCHES = 8  # the dataset cycles through this many batches
BASELINE = "keras_fit_fp32"


class LossOnlyTask(Task):
    """A task that logs its loss but keeps no other metric (diagnostics)."""

    def metrics(self):
        return []


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16, help="train steps per round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=5000)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument(
        "--best-steps-per-execution",
        type=int,
        default=16,
        help="steps_per_execution of ours_fit_best (capped at --steps)",
    )
    parser.add_argument(
        "--best-precision",
        default="mixed_bfloat16",
        choices=("float32", "mixed_bfloat16"),
    )
    parser.add_argument(
        "--best-jit",
        action="store_true",
        help="jit_compile=True for ours_fit_best (XLA; slower on this CPU)",
    )
    parser.add_argument("--diagnostics", action="store_true")
    parser.add_argument("--out", default="train_step_results.json")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, 1 round of 2 steps: checks that everything runs",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.hidden, args.seq_len, args.batch_size = 16, 16, 8
        args.rounds, args.steps, args.layers, args.vocab = 1, 2, 1, 100
    args.best_steps_per_execution = max(
        1, min(args.best_steps_per_execution, args.steps)
    )
    return args


# --- Data ----------------------------------------------------------------------


def make_dataset(args, seed=0):
    """Endless `(x, y, sample_weight)` batches of a fixed shape, cycling."""
    n = DISTINCT_BATCHES * args.batch_size
    rng = np.random.default_rng(seed)
    lengths = rng.integers(args.seq_len // 2, args.seq_len + 1, size=n)
    padding_mask = np.arange(args.seq_len)[None, :] < lengths[:, None]
    token_ids = rng.integers(1, args.vocab, size=(n, args.seq_len)).astype("int32")
    token_ids = np.where(padding_mask, token_ids, 0).astype("int32")
    x = {"token_ids": token_ids, "padding_mask": padding_mask}
    y = {
        "topic": rng.integers(0, 4, size=n).astype("int32"),
        "positive": rng.integers(0, 2, size=n).astype("float32"),
        "score": rng.normal(size=n).astype("float32"),
    }
    masks = {name: (rng.random(n) >= MISSING[name]).astype("float32") for name in y}
    return (
        tf.data.Dataset.from_tensor_slices((x, y, masks))
        .batch(args.batch_size, drop_remainder=True)
        .cache()
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )


# --- Models --------------------------------------------------------------------


def make_encoder(args, precision):
    return SharedEncoder(
        vocabulary_size=args.vocab,
        sequence_length=args.seq_len,
        hidden_dim=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        dropout=args.dropout,
        dtype=precision,
    )


def build_ours(args, precision="float32", tasks=TASKS, **compile_kwargs):
    # No preprocessor: the batches are token ids already.
    model = MultiTaskModel(list(tasks), make_encoder(args, precision))
    model.compile(optimizer=harness.default_optimizer(), **compile_kwargs)
    return model


def build_plain(args, precision="float32", with_metrics=False, **compile_kwargs):
    """The same layers as a plain functional multi-output Keras model."""
    return harness.plain_keras_model(
        make_encoder(args, precision),
        TASKS,
        harness.default_optimizer(),
        dropout=args.dropout,
        with_metrics=with_metrics,
        **compile_kwargs,
    )


# --- Runners -------------------------------------------------------------------


def fit_runner(model, dataset, steps, batch_size):
    """One round of `fit`; counts the steps actually run (steps_per_execution)."""

    def run():
        before = int(model.optimizer.iterations)
        model.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
        return (int(model.optimizer.iterations) - before) * batch_size

    return run


class _SteadyStateTimer(keras.callbacks.Callback):
    """Times a `train_loop` call, whole and from the start of its second step."""

    def on_train_begin(self, logs=None):
        self.call_start = (time.perf_counter(), time.process_time())
        self.start = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 1:
            self.start = (time.perf_counter(), time.process_time())

    def on_train_end(self, logs=None):
        self.end = (time.perf_counter(), time.process_time())


def loop_runner(model, dataset, steps, batch_size, call_seconds):
    """One round of `train_loop`, timed without its first (tracing) step.

    `train_loop` builds a new `tf.function` at every call, so its first step
    re-traces the whole train step each time. That cost is paid once per
    training run, as `fit` pays its own once per model, so it is left out of
    the throughput; the whole-call wall time is appended to `call_seconds`.
    """
    timer = _SteadyStateTimer()
    data = dataset.take(steps)

    def run():
        before = int(model.optimizer.iterations)
        train_loop(model, data, epochs=1, callbacks=[timer], verbose=0)
        done = int(model.optimizer.iterations) - before
        call_seconds.append(round(timer.end[0] - timer.call_start[0], 3))
        if timer.start is not None and done >= 2:
            items, start = (done - 1) * batch_size, timer.start
        else:  # a single step: only the whole call to time
            items, start = done * batch_size, timer.call_start
        wall, cpu = (end - begin for end, begin in zip(timer.end, start))
        return items, wall, cpu

    return run


# --- Main ----------------------------------------------------------------------


def build_candidates(args, dataset):
    """Builds, compiles and describes every candidate; returns `Candidate`s."""
    steps, batch, spe = args.steps, args.batch_size, args.best_steps_per_execution
    specs = [  # name, description, precision, model, extra info
        (
            "ours_fit_fp32",
            "(a) MultiTaskModel.fit, float32",
            "float32",
            build_ours(args, "float32"),
            {},
        ),
        (
            "ours_loop_fp32",
            "(b) mtl_keras.loop.train_loop, float32 (steady state)",
            "float32",
            build_ours(args, "float32"),
            {"call_seconds": []},
        ),
        (
            BASELINE,
            "(c) plain keras.Model, compile(loss=…, loss_weights=…), float32",
            "float32",
            build_plain(args, "float32"),
            {},
        ),
        (
            "ours_fit_best",
            f"(d) MultiTaskModel.fit, {args.best_precision}, steps_per_execution={spe}"
            + (", jit_compile=True" if args.best_jit else ""),
            args.best_precision,
            build_ours(
                args,
                args.best_precision,
                steps_per_execution=spe,
                jit_compile=args.best_jit,
            ),
            {"steps_per_execution": spe, "jit_compile": args.best_jit},
        ),
        (
            "keras_fit_bf16",
            "(e) plain Keras model, mixed_bfloat16",
            "mixed_bfloat16",
            build_plain(args, "mixed_bfloat16"),
            {},
        ),
    ]
    if args.diagnostics:
        loss_only = [LossOnlyTask(**task.get_config()) for task in TASKS]
        specs += [
            (
                "ours_fit_fp32_lossonly",
                "diagnostic: (a) without metrics beyond losses",
                "float32",
                build_ours(args, "float32", tasks=loss_only),
                {},
            ),
            (
                "keras_fit_fp32_metrics",
                "diagnostic: (c) with our metrics (each task kind's, as logged by (a))",
                "float32",
                build_plain(args, "float32", with_metrics=True),
                {},
            ),
            (
                "ours_fit_bf16",
                "diagnostic: (a) in mixed_bfloat16 alone",
                "mixed_bfloat16",
                build_ours(args, "mixed_bfloat16"),
                {},
            ),
            (
                "ours_fit_fp32_spe",
                f"diagnostic: (a) with steps_per_execution={spe}",
                "float32",
                build_ours(args, "float32", steps_per_execution=spe),
                {},
            ),
        ]

    candidates = []
    for name, description, precision, model, info in specs:
        matmul_dtype = "bfloat16" if precision == "mixed_bfloat16" else "float32"
        if name == "ours_loop_fp32":
            run = loop_runner(model, dataset, steps, batch, info["call_seconds"])
            warmup = functools.partial(
                train_loop, model, dataset.take(2), epochs=1, verbose=0
            )
        else:
            run = fit_runner(model, dataset, steps, batch)
            # Traces the train function (runs max(2, steps_per_execution) steps).
            warmup = functools.partial(
                model.fit,
                dataset,
                epochs=1,
                steps_per_epoch=2,
                shuffle=False,
                verbose=0,
            )
        candidates.append(
            harness.Candidate(
                name=name,
                run=run,
                warmup=warmup,
                description=description,
                flops_per_item=harness.model_matmul_flops(model, args.seq_len),
                peak_flops=harness.matmul_ceiling(matmul_dtype),
                peak_flops_per_cpu_second=harness.matmul_ceiling(
                    matmul_dtype, clock="cpu"
                ),
                info={"precision": precision, "model": model, **info},
            )
        )
    return candidates


def _train_function_traces(model):
    """How often each `tf.function` behind `fit` was traced (1 = never re-traced).

    Keras wraps its compiled step in a plain Python function; the
    `tf.function`s are found in that wrapper's closure.
    """
    counts = {}
    wrapper = getattr(model, "train_function", None)
    for cell in getattr(wrapper, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if hasattr(value, "experimental_get_tracing_count"):
            counts[getattr(value, "name", "?")] = value.experimental_get_tracing_count()
    return counts or None


def main(argv=None):
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # fit's retracing warning counts all models
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    dataset = make_dataset(args)
    candidates = build_candidates(args, dataset)
    print(
        "matmul ceiling (best of a few, wall): "
        f"float32 {harness.matmul_ceiling('float32') / 1e9:.0f} GFLOP/s, "
        f"bfloat16 {harness.matmul_ceiling('bfloat16') / 1e9:.0f} GFLOP/s; "
        f"{candidates[0].flops_per_item / 1e6:.0f} matmul MFLOP per training example",
        flush=True,
    )
    result = harness.run_interleaved(
        candidates,
        rounds=args.rounds,
        baseline=BASELINE,
        unit="ex/s",
        title=(
            f"Train step: batch {args.batch_size}, seq {args.seq_len}, hidden "
            f"{args.hidden}, {args.layers} layers, {args.steps} steps per round"
        ),
        config=vars(args),
        log=lambda *a: print(*a, flush=True),
    )
    for candidate in result.candidates.values():
        model = candidate.info.pop("model")
        candidate.info["train_function_traces"] = _train_function_traces(model)
    ours, best = result.candidates["ours_fit_fp32"], result.candidates["ours_fit_best"]
    targets = {
        "ours_fit_fp32 >= 1.0x": ours.ratio >= 1.0,
        "ours_fit_best >= 1.5x": best.ratio >= 1.5,
        "ours_fit_fp32 >= 1.0x by CPU time": ours.cpu_ratio >= 1.0,
        "ours_fit_best >= 1.5x by CPU time": best.cpu_ratio >= 1.5,
    }
    result.config["targets_met"] = targets
    result.config["wall_seconds"] = round(time.perf_counter() - start, 1)
    print()
    print(result.to_markdown())
    calls = result.candidates["ours_loop_fp32"].info["call_seconds"]
    print(
        f"\ntrain_loop whole call (re-trace included): median {np.median(calls):.1f} s "
        f"for {args.steps} steps"
    )
    print(
        "targets: "
        + "; ".join(
            f"{name}: {'met' if met else 'MISSED'}" for name, met in targets.items()
        )
    )
    result.save(args.out)
    print(f"wrote {args.out} ({result.config['wall_seconds']:.0f} s in all)")
    return result


if __name__ == "__main__":
    main()
