"""Input-pipeline throughput and length-aware batching, on the real text mix.

On the SST-2 + CoLA + AG News mix of `/work/shared/data` (the first `--rows`
training rows of each task, mixed by `mtl_keras.data.Mixture` with a
temperature-2 sampler), three candidates run in the same process, in
interleaved rounds (see `harness.py`); items are training examples:

- `pipeline`: one epoch of the whole input pipeline with no model: the mixed
  stream (`Mixture.epoch_dataset`) → tokenize and pack (`TextPreprocessor`)
  → length-bucketed batches (`make_batches`), built once and iterated to the
  end each round (see `PipelineRounds`). Reading the files and building the
  pipeline are one-offs per run, reported separately.
- `train_bucketed`: one epoch of `MultiTaskModel.fit` (hidden 64, 2 layers)
  on the same batches, tokenized once and cached, so only the training step
  is timed.
- `train_fixed128` (the baseline): the same model and examples, every batch
  padded to 128 tokens (`make_batches(..., pad_to_fixed_length=True)`).

Reported: the pipeline's margin over training (paired ratio
`pipeline / train_bucketed`, target ≥ 10×: the input pipeline must never be
the bottleneck) and the speed-up of length-aware batching
(`train_bucketed / train_fixed128`, target ≥ 3×). Both training models start
from the same initial weights; the untimed warm-up round is their first
epoch, after which each is evaluated on the dev sets (SST-2 dev, CoLA
in-domain dev, the first `--dev-rows` rows of AG News test) by
`mtl_keras.pipeline.evaluate_tasks`, so the two dev
accuracies after the same budget (1 epoch) show that bucketing does not
change what is learned.

Usage:
    python benchmarks/input_pipeline.py [--rows 2000] [--rounds 3]
        [--out benchmarks/results/input_pipeline.json] [--smoke]

The data folder is `$MTL_KERAS_SHARED_DATA`, else `<repo>/../shared/data`;
without it the script prints a message and exits 0. `--smoke` uses generated
texts, tiny sizes and 1 round (no shared data needed).
"""

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import peers  # noqa: E402  (reuse its data, vocabulary, batching and model code)

from mtl_keras.batching import make_batches  # noqa: E402
from mtl_keras.config import load_config  # noqa: E402
from mtl_keras.data import Mixture, Temperature  # noqa: E402
from mtl_keras.pipeline import evaluate_tasks  # noqa: E402
from mtl_keras.preprocess import TextPreprocessor  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TASKS = peers.TASKS
PIPELINE, BUCKETED, FIXED = "pipeline", "train_bucketed", "train_fixed128"
PIPELINE_TARGET, BUCKETING_TARGET = 10.0, 3.0


def default_data_dir():
    env = os.environ.get("MTL_KERAS_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="training rows per task")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dev-rows", type=int, default=1000, help="at most this many dev rows per task"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--out", default=os.path.join(RESULTS, "input_pipeline.json"))
    parser.add_argument(
        "--smoke", action="store_true", help="generated texts, tiny sizes, 1 round"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.rounds, args.dev_rows, args.batch_size = 64, 1, 32, 16
        args.seq_len, args.hidden, args.layers, args.heads = 32, 16, 1, 2
        args.vocab = 300
    return args


# --- Data ----------------------------------------------------------------------


def real_sources(directory, rows, dev_rows):
    """(train, dev) `FileSource`s of `configs/glue_agnews_files.yaml`, capped."""
    config = load_config("glue_agnews_files", data_root=str(directory))

    def capped(entries, limit):
        return tuple(dict(entry, max_rows=limit) for entry in entries)

    data = dataclasses.replace(
        config.data,
        train=capped(config.data.train, rows),
        dev=capped(config.data.dev, dev_rows),
    )
    config = dataclasses.replace(config, data=data)
    return config.sources("train"), config.sources("dev")


def generated_sources(rows, dev_rows):
    lengths = {"sst2": 20, "cola": 12, "ag_news": 60}
    train = peers.generated_sources(rows)
    dev = [
        peers._Generated(task, dev_rows, 10 + i, lengths[task.name])
        for i, task in enumerate(TASKS)
    ]
    return train, dev


def read_speed(sources):
    """Rows per second of reading and validating the files (fresh sources)."""
    start = time.perf_counter()
    rows = sum(len(source.read(TASKS)) for source in sources)
    return rows, rows / (time.perf_counter() - start)


# --- Candidates ----------------------------------------------------------------


class PipelineRounds:
    """Epochs of one input pipeline, built once, as `fit` consumes it.

    The pipeline (`Mixture.epoch_dataset` → `make_batches`, which tokenizes
    and packs) is built once, like a training run builds it, and each round
    iterates a fresh iterator over it to the end (nothing is prefetched
    between rounds). Building it (tracing its functions) is timed apart
    (`build_seconds`): a one-off per run, like reading the files.
    """

    def __init__(self, mixture, preprocessor, batch_size):
        start = time.perf_counter()
        self.batches = make_batches(mixture.epoch_dataset(0), preprocessor, batch_size)
        self.build_seconds = time.perf_counter() - start

    def __call__(self):
        return sum(int(next(iter(w.values())).shape[0]) for _, _, w in self.batches)


def dev_accuracy(model, dev_sources, batch_size):
    """`{task: dev accuracy, "mean": their mean}` (`pipeline.evaluate_tasks`)."""
    metrics, _ = evaluate_tasks(model, dev_sources, batch_size, with_predictions=False)
    accuracy = {t.name: metrics[t.name]["accuracy"] for t in TASKS}
    accuracy["mean"] = float(np.mean(list(accuracy.values())))
    return accuracy


def fit_and_evaluate(model, batches, dev_sources, batch_size, accuracies, name):
    def warmup():
        model.fit(batches, epochs=1, shuffle=False, verbose=0)
        accuracies[name] = dev_accuracy(model, dev_sources, batch_size)

    return warmup


def padded_tokens(batches, examples):
    shapes = peers.batch_shapes(batches)
    return sum(b * n for b, n in shapes) / examples, len(shapes)


def paired_ratio(result, name, baseline):
    a = result.candidates[name]
    b = result.candidates[baseline]
    wall = [x / y for x, y in zip(a.values, b.values)]
    cpu = [x / y for x, y in zip(a.cpu_values, b.cpu_values)]
    return {
        "ratio": statistics.median(wall),
        "ratio_min": min(wall),
        "ratio_max": max(wall),
        "cpu_ratio": statistics.median(cpu),
    }


# --- Main ----------------------------------------------------------------------


def summary_markdown(summary, accuracies):
    p, b = summary["pipeline_vs_training"], summary["bucketed_vs_fixed128"]

    def met(value, target):
        return "met" if value >= target else "**not met**"

    lines = [
        "| comparison | × wall (min–max) | × CPU time | target |",
        "|---|---|---|---|",
        f"| `{PIPELINE}` / `{BUCKETED}` | {p['ratio']:.1f}× ({p['ratio_min']:.1f}–"
        f"{p['ratio_max']:.1f}) | {p['cpu_ratio']:.1f}× | ≥ {PIPELINE_TARGET:.0f}×: "
        f"{met(p['ratio'], PIPELINE_TARGET)} |",
        f"| `{BUCKETED}` / `{FIXED}` | {b['ratio']:.2f}× ({b['ratio_min']:.2f}–"
        f"{b['ratio_max']:.2f}) | {b['cpu_ratio']:.2f}× | ≥ {BUCKETING_TARGET:.0f}×: "
        f"{met(b['ratio'], BUCKETING_TARGET)} |",
        "",
        "| dev accuracy after 1 epoch | "
        + " | ".join(t.name for t in TASKS)
        + " | mean |",
        "|---|" + "---|" * (len(TASKS) + 1),
    ]
    for name in (BUCKETED, FIXED):
        acc = accuracies[name]
        lines.append(
            f"| `{name}` | "
            + " | ".join(f"{acc[t.name]:.3f}" for t in TASKS)
            + f" | {acc['mean']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    data_dir = default_data_dir()
    if peers.has_data(str(data_dir)) and not args.smoke:
        train, dev = real_sources(data_dir, args.rows, args.dev_rows)
        fresh_train, _ = real_sources(data_dir, args.rows, args.dev_rows)
        data_name = f"sst2 + cola + ag_news ({data_dir})"
    elif args.smoke:
        train, dev = generated_sources(args.rows, args.dev_rows)
        fresh_train, _ = generated_sources(args.rows, args.dev_rows)
        data_name = "generated texts"
    else:
        print(
            f"input_pipeline.py: no data at {data_dir} (sst2/, cola/, ag_news/); "
            "skipped. Set MTL_KERAS_SHARED_DATA, or pass --smoke."
        )
        return None
    tf.get_logger().setLevel("ERROR")
    start = time.perf_counter()
    read_rows, read_rate = read_speed(fresh_train)

    mixture = Mixture(TASKS, train, sampler=Temperature(2.0), seed=0)
    pool = peers.pool_of_examples(train, mixture.epoch_size)
    vocabulary = peers.word_vocabulary(pool.text.tolist(), args.vocab)
    preprocessor = TextPreprocessor(vocabulary, sequence_length=args.seq_len)
    counts = {t.name: int(pool.masks[t.name].sum()) for t in TASKS}
    examples = len(pool)
    print(
        f"{examples} examples per epoch from {data_name}: {counts}; vocabulary "
        f"{len(vocabulary)}; read {read_rows} rows at {read_rate:.0f} rows/s",
        flush=True,
    )

    # The pool is epoch 0 of the same mixture: the pipeline candidate builds it
    # from scratch each round, the training candidates replay it from a cache.
    bucketed = peers.cached_batches(pool, preprocessor, args.batch_size, fixed=False)
    fixed = peers.cached_batches(pool, preprocessor, args.batch_size, fixed=True)
    accuracies = {}
    models = {}
    for name in (BUCKETED, FIXED):
        keras.utils.set_random_seed(0)  # the same initial weights for both
        models[name] = peers.build_ours(args, preprocessor, "float32")
    tokens = {
        BUCKETED: padded_tokens(bucketed, examples),
        FIXED: padded_tokens(fixed, examples),
    }
    pipeline = PipelineRounds(mixture, preprocessor, args.batch_size)
    candidates = [
        harness.Candidate(
            name=PIPELINE,
            run=pipeline,
            description="Mixture epoch → tokenize/pack → make_batches (bucketed, "
            "vectorized), iterated, no model",
            info={
                "read_rows": read_rows,
                "read_rows_per_s": read_rate,
                "build_seconds": pipeline.build_seconds,
            },
        ),
    ]
    for name, batches, what in (
        (BUCKETED, bucketed, "length-bucketed batches (16/32/64/128)"),
        (FIXED, fixed, f"every batch padded to {args.seq_len}"),
    ):
        per_example, num_batches = tokens[name]
        candidates.append(
            harness.Candidate(
                name=name,
                run=peers.fit_round([(models[name], batches)], examples),
                warmup=fit_and_evaluate(
                    models[name], batches, dev, args.batch_size, accuracies, name
                ),
                description=f"MultiTaskModel.fit 1 epoch (hidden {args.hidden}, "
                f"{args.layers} layers), {what}, cached",
                info={
                    "batches": num_batches,
                    "padded_tokens_per_example": per_example,
                    "parameters": models[name].count_params(),
                },
            )
        )
    result = harness.run_interleaved(
        candidates,
        rounds=args.rounds,
        baseline=FIXED,
        unit="ex/s",
        warmup_rounds=1,
        title=(
            f"Input pipeline vs training step, {examples} examples per epoch "
            f"(SST-2 + CoLA + AG News, temperature-2 mix), batch {args.batch_size}"
        ),
        config=dict(vars(args), data=data_name),
        log=lambda *a: print(*a, flush=True),
    )
    summary = {
        "pipeline_vs_training": paired_ratio(result, PIPELINE, BUCKETED),
        "pipeline_build_seconds": pipeline.build_seconds,
        "bucketed_vs_fixed128": paired_ratio(result, BUCKETED, FIXED),
        "dev_accuracy_after_1_epoch": accuracies,
        "padded_tokens_per_example": {k: v[0] for k, v in tokens.items()},
        "targets": {
            "pipeline_vs_training": PIPELINE_TARGET,
            "bucketed_vs_fixed128": BUCKETING_TARGET,
        },
    }
    summary["targets_met"] = {
        "pipeline_vs_training": summary["pipeline_vs_training"]["ratio"]
        >= PIPELINE_TARGET,
        "bucketed_vs_fixed128": summary["bucketed_vs_fixed128"]["ratio"]
        >= BUCKETING_TARGET,
    }
    wall = time.perf_counter() - start
    command = "python benchmarks/input_pipeline.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    markdown = "\n".join(
        [
            "# Input pipeline and length-aware batching",
            "",
            f"`{command.strip()}`: {data_name}, {examples} examples per epoch "
            f"({counts}); padded tokens per example: bucketed "
            f"{tokens[BUCKETED][0]:.1f} vs fixed {tokens[FIXED][0]:.0f}; files read "
            f"at {read_rate:.0f} rows/s; building the pipeline (one-off) "
            f"{pipeline.build_seconds:.2f} s; {wall:.0f} s in all.",
            "",
            result.to_markdown(),
            "",
            summary_markdown(summary, accuracies),
        ]
    )
    print()
    print(markdown)
    if args.out:
        payload = dict(result.to_dict(), summary=summary, wall_seconds=round(wall, 1))
        harness.write_results(args.out, payload, markdown)
    return summary


if __name__ == "__main__":
    main()
