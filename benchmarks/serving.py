"""Serving latency: the strings-in signature vs the ids-in signature.

Builds a small untrained model (hidden 64, 2 layers) whose preprocessor
learns its vocabulary from SST-2 sentences (or generated ones if the data is
missing: `TextPreprocessor.from_texts`), exports it with
`mtl_keras.export.export_saved_model`, loads it back and times, in the same
process and in interleaved rounds:

- `serving_default(text)`: tokenization in the graph, then the model;
- `serve_token_ids(token_ids, padding_mask)`: the model on the same ids,
  packed beforehand (cut to the batch's longest text, as the strings-in
  signature does), so the difference is the cost of the in-graph tokenizer.

Usage: python benchmarks/serving.py --rounds 5 --out serving.json [--smoke]

`--smoke`: 1 round, 64 requests, 200 training sentences, hidden 16, 1 layer
(a check that it runs; the numbers mean nothing).
"""

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import harness  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras import MultiTaskModel, SharedEncoder, Task  # noqa: E402
from mtl_keras.export import export_saved_model, load_saved_model  # noqa: E402
from mtl_keras.preprocess import TextPreprocessor  # noqa: E402

SST2 = "/work/shared/data/sst2"
TARGET_RATIO = 1.25  # strings-in latency at batch 1, relative to ids-in
MIN_CALLS = 40  # timed calls per round, signature and batch size


def read_sentences(path, limit):
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)  # header
        return [row[0].strip() for _, row in zip(range(limit), rows)]


def generated_sentences(count, seed):
    rng = np.random.default_rng(seed)
    words = (
        "the a film movie story actor plot great dull funny slow long short "
        "charming boring moving script scene director music and but not very "
        "quite really is was it this that of to in with"
    ).split()
    return [" ".join(rng.choice(words, size=n)) for n in rng.integers(3, 30, count)]


def load_texts(data_dir, train_count, request_count):
    train_file = os.path.join(data_dir, "train.tsv")
    dev_file = os.path.join(data_dir, "dev.tsv")
    if os.path.exists(train_file) and os.path.exists(dev_file):
        return (
            read_sentences(train_file, train_count),
            read_sentences(dev_file, request_count),
            "sst2",
        )
    return (
        generated_sentences(train_count, seed=0),
        generated_sentences(request_count, seed=1),
        "generated",
    )


def build(preprocessor, args):
    encoder = SharedEncoder.for_preprocessor(
        preprocessor, hidden_dim=args.hidden, num_layers=args.layers, num_heads=2
    )
    tasks = [
        Task("sentiment", "binary", label_names=["negative", "positive"]),
        Task("topic", "multiclass", num_classes=4),
    ]
    return MultiTaskModel(tasks, encoder, preprocessor)


def packed(preprocessor, batch):
    """The ids the strings-in signature computes: packed, cut to the longest row."""
    x = preprocessor(tf.constant(batch))
    length = max(
        1, int(tf.reduce_max(tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32), 1)))
    )
    return {k: v[:, :length] for k, v in x.items()}


def time_calls(fn, requests):
    latencies = []
    for request in requests:
        start = time.perf_counter()
        outputs = fn(request)
        for value in outputs.values():
            value.numpy()
        latencies.append(time.perf_counter() - start)
    return latencies


def summarize(round_medians):
    ms = [1000 * v for v in round_medians]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--requests", type=int, default=256, help="texts per round")
    parser.add_argument("--train-sentences", type=int, default=5000)
    parser.add_argument("--vocabulary-size", type=int, default=4000)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--data", default=SST2, help="a GLUE-style sst2 folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.requests, args.train_sentences = 1, 64, 200
        args.hidden, args.layers, args.vocabulary_size = 16, 1, 500
    keras.utils.set_random_seed(args.seed)

    train_texts, texts, source = load_texts(
        args.data, args.train_sentences, args.requests
    )
    start = time.perf_counter()
    preprocessor = TextPreprocessor.from_texts(
        train_texts, args.vocabulary_size, sequence_length=args.sequence_length
    )
    vocab_seconds = time.perf_counter() - start
    model = build(preprocessor, args)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "saved_model")
        start = time.perf_counter()
        export_saved_model(model, path)
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        loaded = load_saved_model(path)
        load_seconds = time.perf_counter() - start
        from_text = loaded.signatures["serving_default"]
        from_ids = loaded.signatures["serve_token_ids"]
        start = time.perf_counter()
        from_text(text=tf.constant(texts[:1]))["sentiment_label"].numpy()
        first_call_seconds = time.perf_counter() - start

        def run_text(batch):
            return from_text(text=tf.constant(batch))

        def run_ids(x):
            return from_ids(token_ids=x["token_ids"], padding_mask=x["padding_mask"])

        results = {}
        for batch_size in (1, 64):
            text_batches = [
                texts[i : i + batch_size]
                for i in range(0, len(texts) - batch_size + 1, batch_size)
            ]
            # At least MIN_CALLS timed calls per round and kind.
            text_batches *= -(-MIN_CALLS // len(text_batches))
            id_batches = [packed(preprocessor, b) for b in text_batches]
            for warm in range(3):  # warm-up, untimed
                run_text(text_batches[warm % len(text_batches)])
                run_ids(id_batches[warm % len(id_batches)])
            medians = {"strings": [], "ids": []}
            for r in range(args.rounds):
                # Interleave, alternating which goes first.
                order = ["strings", "ids"] if r % 2 == 0 else ["ids", "strings"]
                for kind in order:
                    if kind == "strings":
                        latencies = time_calls(run_text, text_batches)
                    else:
                        latencies = time_calls(run_ids, id_batches)
                    medians[kind].append(statistics.median(latencies))
            strings, ids = summarize(medians["strings"]), summarize(medians["ids"])
            results[f"batch_{batch_size}"] = {
                "requests_per_round": len(text_batches),
                "strings_in": strings,
                "ids_in": ids,
                "ratio": strings["median_ms"] / ids["median_ms"],
            }

    mean_tokens = float(
        np.mean(preprocessor(tf.constant(texts))["padding_mask"].numpy().sum(1))
    )
    report = {
        "setup": {
            "texts": source,
            "requests": len(texts),
            "mean_tokens_per_text": mean_tokens,
            "vocabulary_size": preprocessor.vocabulary_size,
            "sequence_length": args.sequence_length,
            "hidden_dim": args.hidden,
            "num_layers": args.layers,
            "rounds": args.rounds,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "environment": harness.environment(),
        "seconds": {
            "learn_vocabulary": vocab_seconds,
            "export": export_seconds,
            "load": load_seconds,
            "first_call": first_call_seconds,
        },
        "latency": results,
        "target": {
            "batch_1_ratio_max": TARGET_RATIO,
            "met": results["batch_1"]["ratio"] <= TARGET_RATIO,
        },
    }
    print(markdown(report))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.out}")
    return 0


def markdown(report):
    setup = report["setup"]
    lines = [
        f"Serving latency ({setup['texts']} texts, {setup['mean_tokens_per_text']:.1f} "
        f"tokens on average, hidden {setup['hidden_dim']}, {setup['num_layers']} "
        f"layers, vocabulary {setup['vocabulary_size']}, "
        f"{setup['rounds']} interleaved rounds; median of round medians, min–max)",
        "",
        harness.machine_line(report["environment"]),
        "",
        "| batch | strings-in (ms) | ids-in (ms) | strings / ids |",
        "|---:|---:|---:|---:|",
    ]
    for key, row in report["latency"].items():
        s, i = row["strings_in"], row["ids_in"]
        lines.append(
            f"| {key.split('_')[1]} | {s['median_ms']:.3f} ({s['min_ms']:.3f}–{s['max_ms']:.3f}) "
            f"| {i['median_ms']:.3f} ({i['min_ms']:.3f}–{i['max_ms']:.3f}) "
            f"| {row['ratio']:.2f}× |"
        )
    seconds = report["seconds"]
    target = report["target"]
    lines += [
        "",
        "| step | seconds |",
        "|---|---:|",
        *(f"| {name} | {value:.2f} |" for name, value in seconds.items()),
        "",
        f"Target strings-in ≤ {target['batch_1_ratio_max']}× ids-in at batch 1: "
        f"{'met' if target['met'] else 'NOT met'} "
        f"({report['latency']['batch_1']['ratio']:.2f}×).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
