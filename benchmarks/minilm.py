"""Multi-task fine-tuning of pretrained MiniLM-L6 on SST-2 + CoLA + AG News, on CPU.

Part 1 trains all-MiniLM-L6-v2 (`mtl_keras.pretrained.minilm_preset_dir`,
offline) as the shared encoder of three heads on a `Mixture` of the three
training sets, then reports SST-2 dev accuracy, CoLA (in-domain) dev MCC and
AG News test accuracy (the description column of the official `test.csv`,
like the 10k training sample).

Part 2 adds a fourth task, TweetEval emotion (4 classes), with
`mtl_keras.add_task.add_task(freeze=True)`: only the new head trains, on the
emotion data alone. It reports the old tasks' metrics before and after,
checks that the old tasks' logits are bit-identical, evaluates emotion on its
test set, and checks that a `.keras` round trip and a SavedModel export of
the bigger model give its predictions.

Targets: SST-2 >= 88 %, AG News >= 90 %, CoLA MCC >= 0.30.

Needs the optional dependencies (`pip install 'mtl_keras[pretrained]'`) and
the datasets in /work/shared/data (or `--data`).

Usage:
    python benchmarks/minilm.py [--sst2-rows N] [--ag-rows 10001]
        [--cola-rows 8551] [--epochs 2] [--sampler temperature]
        [--temperature 2] [--sequence-length 64] [--pooling first]
        [--batch-size 32]
        [--precision mixed_bfloat16] [--out results.json] [--smoke]
"""

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras import MultiTaskModel, Task  # noqa: E402
from mtl_keras.add_task import add_task  # noqa: E402
from mtl_keras.data import FileSource, Mixture, Temperature, eval_datasets  # noqa: E402
from mtl_keras.export import export_saved_model, load_for_serving  # noqa: E402
from mtl_keras.preprocess import make_batches  # noqa: E402
from mtl_keras.pretrained import (  # noqa: E402
    EncoderAdamW,
    load_pretrained,
    minilm_preset_dir,
)

AG_MAP = {"1": 0, "2": 1, "3": 2, "4": 3}
TASKS = (
    Task("sst2", "binary", label_names=("negative", "positive")),
    Task("cola", "binary", label_names=("unacceptable", "acceptable")),
    Task(
        "ag_news",
        "multiclass",
        4,
        label_names=("World", "Sports", "Business", "Sci/Tech"),
    ),
)
NEW_TASK = Task(
    "emotion", "multiclass", 4, label_names=("anger", "joy", "optimism", "sadness")
)
TARGETS = {"sst2_accuracy": 0.88, "ag_news_accuracy": 0.90, "cola_mcc": 0.30}


def train_sources(data, args):
    return [
        FileSource(f"{data}/sst2/train.tsv", "sentence", {"sst2": "label"},
                   quoting="none", max_rows=args.sst2_rows, name="sst2"),
        FileSource(f"{data}/cola/in_domain_train.tsv", 3, {"cola": 1}, header=False,
                   quoting="none", max_rows=args.cola_rows, name="cola"),
        FileSource(f"{data}/ag_news/train_sample_10k.tsv", "description",
                   {"ag_news": "label"}, label_map={"ag_news": AG_MAP},
                   max_rows=args.ag_rows, name="ag_news"),
    ]  # fmt: skip


def eval_sources(data, args):
    limit = args.eval_rows
    return [
        FileSource(f"{data}/sst2/dev.tsv", "sentence", {"sst2": "label"},
                   quoting="none", max_rows=limit, name="sst2_dev"),
        FileSource(f"{data}/cola/in_domain_dev.tsv", 3, {"cola": 1}, header=False,
                   quoting="none", max_rows=limit, name="cola_dev"),
        FileSource(f"{data}/ag_news/test.csv", 2, {"ag_news": 0}, header=False,
                   label_map={"ag_news": AG_MAP}, max_rows=limit, name="ag_news_test"),
    ]  # fmt: skip


def emotion_source(data, split, args):
    limit = args.eval_rows if split != "train" else args.emotion_rows
    return FileSource(f"{data}/tweet_eval/emotion/{split}.tsv", "text",
                      {"emotion": "label"}, max_rows=limit, name=f"emotion_{split}")  # fmt: skip


def mcc(y_true, y_pred):
    """Matthews correlation coefficient of two 0/1 arrays."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = float(np.sum(y_true & y_pred))
    tn = float(np.sum(~y_true & ~y_pred))
    fp = float(np.sum(~y_true & y_pred))
    fn = float(np.sum(y_true & ~y_pred))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denominator == 0 else (tp * tn - fp * fn) / denominator


def macro_f1(y_true, y_pred, num_classes):
    scores = []
    for c in range(num_classes):
        tp = np.sum((y_true == c) & (y_pred == c))
        predicted, actual = np.sum(y_pred == c), np.sum(y_true == c)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        total = precision + recall
        scores.append(0.0 if total == 0 else 2 * precision * recall / total)
    return float(np.mean(scores))


def predict_task(functions, dataset, preprocessor, task, batch_size):
    """Labels and each function's logits for `task` over the labelled `dataset`."""
    batches = make_batches(dataset, preprocessor, batch_size)
    labels, logits = [], [[] for _ in functions]
    for x, y, w in batches:
        keep = w[task.name].numpy() > 0
        labels.append(y[task.name].numpy()[keep])
        for out, fn in zip(logits, functions):
            out.append(fn(x)[task.name].numpy()[keep])
    return np.concatenate(labels), [np.concatenate(out) for out in logits]


def scores(task, labels, logits):
    if task.kind == "binary":
        predicted = (logits.reshape(-1) > 0).astype(int)
        labels = labels.astype(int)
        result = {f"{task.name}_accuracy": float(np.mean(predicted == labels))}
        if task.name == "cola":
            result["cola_mcc"] = mcc(labels, predicted)
        return result
    predicted = logits.argmax(-1)
    return {
        f"{task.name}_accuracy": float(np.mean(predicted == labels)),
        f"{task.name}_macro_f1": macro_f1(labels, predicted, task.num_classes),
    }


def evaluate(models, tasks, datasets, preprocessor, batch_size):
    """Scores of each model on each task; also whether their logits are identical."""
    results = [{} for _ in models]
    identical = {}
    functions = [
        tf.function(lambda x, m=m: m(x, training=False), reduce_retracing=True)
        for m in models
    ]
    for task in tasks:
        labels, logits = predict_task(
            functions, datasets[task.name], preprocessor, task, batch_size
        )
        for result, out in zip(results, logits):
            result.update(scores(task, labels, out))
            result[f"{task.name}_examples"] = len(labels)
        if len(models) > 1:
            identical[task.name] = bool(np.array_equal(logits[0], logits[1]))
    return results, identical


class Progress(keras.callbacks.Callback):
    """Logs steps, examples/s and the running losses every `every` steps."""

    def __init__(self, batch_size, every=50):
        super().__init__()
        self.batch_size, self.every = batch_size, every

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every == 0:
            elapsed = time.time() - self.start
            losses = " ".join(
                f"{k}={float(v):.3f}" for k, v in logs.items() if k.endswith("loss")
            )
            print(
                f"  step {batch + 1}: {elapsed:.0f}s, ~{(batch + 1) * self.batch_size / elapsed:.1f} ex/s, {losses}",
                flush=True,
            )


def warmup_cosine(peak, steps, warmup_fraction=0.06):
    warmup = max(1, int(steps * warmup_fraction))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=peak, warmup_steps=warmup
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/shared/data")
    parser.add_argument("--cache-dir", default=None, help="where MiniLM is unpacked")
    parser.add_argument(
        "--sst2-rows", type=int, default=None, help="default: all 67,349"
    )
    parser.add_argument("--cola-rows", type=int, default=8551)
    parser.add_argument("--ag-rows", type=int, default=10001)
    parser.add_argument("--emotion-rows", type=int, default=None)
    parser.add_argument(
        "--eval-rows", type=int, default=None, help="limit per eval file"
    )
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--pooling", default="first", help="first ([CLS]) or mean")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--sampler",
        default="temperature",
        help="proportional|temperature|uniform|annealed",
    )
    parser.add_argument(
        "--temperature", type=float, default=2.0, help="for --sampler temperature"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="heads, peak")
    parser.add_argument(
        "--encoder-learning-rate", type=float, default=1e-4, help="peak"
    )
    parser.add_argument("--emotion-epochs", type=int, default=2)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON")
    parser.add_argument("--smoke", action="store_true", help="a few hundred rows")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sst2_rows = args.cola_rows = args.ag_rows = args.emotion_rows = 160
        args.eval_rows = 64
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy(args.precision)
    started = time.time()
    report = {"args": vars(args), "command": " ".join(sys.argv)}

    # --- Part 1: SST-2 + CoLA + AG News on MiniLM ---------------------------------
    preset = minilm_preset_dir(args.cache_dir)
    encoder, preprocessor = load_pretrained(
        preset, args.sequence_length, pooling=args.pooling, dtype=args.precision
    )
    model = MultiTaskModel(list(TASKS), encoder, name="minilm_mtl")
    sampler = (
        Temperature(args.temperature) if args.sampler == "temperature" else args.sampler
    )
    mixture = Mixture(TASKS, train_sources(args.data, args), sampler=sampler,
                      num_epochs=args.epochs, seed=args.seed)  # fmt: skip
    steps = args.epochs * math.ceil(mixture.epoch_size / args.batch_size)
    model.compile(
        optimizer=EncoderAdamW(
            warmup_cosine(args.learning_rate, steps),
            encoder_learning_rate_multiplier=args.encoder_learning_rate
            / args.learning_rate,
            weight_decay=0.01,
            clipnorm=1.0,
        )
    )
    train = make_batches(mixture.dataset(), preprocessor, args.batch_size)
    print(
        f"Training {mixture.epoch_size} examples x {args.epochs} epoch(s), about {steps} steps; per source {[mixture.counts(e) for e in range(args.epochs)]}",
        flush=True,
    )
    t0 = time.time()
    history = model.fit(
        train, epochs=1, verbose=0, callbacks=[Progress(args.batch_size)]
    )
    train_seconds = time.time() - t0
    report["train"] = {
        "examples": mixture.epoch_size * args.epochs,
        "steps": int(model.train_step_counter.numpy()),
        "seconds": round(train_seconds, 1),
        "examples_per_second": round(
            mixture.epoch_size * args.epochs / train_seconds, 1
        ),
        "final_logs": {k: float(v[-1]) for k, v in history.history.items()},
    }
    print(f"Trained in {train_seconds:.0f}s", flush=True)

    dev = eval_datasets(TASKS, eval_sources(args.data, args))
    t0 = time.time()
    (before,), _ = evaluate([model], TASKS, dev, preprocessor, 128)
    report["eval_seconds"] = round(time.time() - t0, 1)
    report["results"] = before
    report["targets"] = {
        k: {"target": v, "value": before[k], "met": before[k] >= v}
        for k, v in TARGETS.items()
    }
    print("Results:", json.dumps(before, indent=1), flush=True)

    # --- Part 2: add TweetEval emotion with the encoder and old heads frozen -----------
    bigger = add_task(model, NEW_TASK, freeze=True)
    bigger.compile(learning_rate=args.learning_rate)
    emotion = Mixture([NEW_TASK], [emotion_source(args.data, "train", args)],
                      num_epochs=args.emotion_epochs, seed=args.seed)  # fmt: skip
    t0 = time.time()
    bigger.fit(
        make_batches(emotion.dataset(), preprocessor, args.batch_size),
        epochs=1,
        verbose=0,
        callbacks=[Progress(args.batch_size)],
    )
    add_seconds = time.time() - t0
    (_, after), identical = evaluate([model, bigger], TASKS, dev, preprocessor, 128)
    emotion_dev = eval_datasets([NEW_TASK], [emotion_source(args.data, "test", args)])
    (emotion_scores,), _ = evaluate(
        [bigger], [NEW_TASK], emotion_dev, preprocessor, 128
    )
    report["add_task"] = {
        "task": NEW_TASK.name,
        "train_examples": emotion.epoch_size * args.emotion_epochs,
        "train_seconds": round(add_seconds, 1),
        "old_tasks_before": before,
        "old_tasks_after": after,
        "old_logits_bit_identical": identical,
        "new_task_test": emotion_scores,
    }
    print("Add task:", json.dumps(report["add_task"], indent=1), flush=True)

    # --- The bigger model still saves, loads and exports ---------------------------
    texts = ["a gripping, beautifully acted film", "The stocks fell sharply on Monday."]
    expected = bigger(preprocessor(tf.constant(texts)), training=False)
    with tempfile.TemporaryDirectory() as tmp:
        bigger.save(f"{tmp}/model.keras")
        restored = keras.saving.load_model(f"{tmp}/model.keras")
        reloaded = restored(preprocessor(tf.constant(texts)), training=False)
        keras_ok = all(
            np.array_equal(expected[k].numpy(), reloaded[k].numpy()) for k in expected
        )
        export_saved_model(bigger, preprocessor, f"{tmp}/export")
        served = load_for_serving(f"{tmp}/export").predict_arrays(texts)
        served_probabilities = served["emotion_probabilities"]
        export_ok = bool(
            np.allclose(
                served_probabilities,
                tf.nn.softmax(expected["emotion"]).numpy(),
                atol=1e-2,  # bfloat16 compute; the served batch is cut to its longest text
            )
        )
    report["saving"] = {
        "keras_round_trip_identical": bool(keras_ok),
        "export_matches": export_ok,
        "frozen_tasks_after_load": restored.get_config()["frozen_tasks"],
        "served_labels": [label.decode() for label in served["emotion_label"]],
    }
    report["total_seconds"] = round(time.time() - started, 1)
    print("Saving:", json.dumps(report["saving"]), flush=True)
    print("Targets:", json.dumps(report["targets"], indent=1), flush=True)
    print(f"Total {report['total_seconds']:.0f}s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
