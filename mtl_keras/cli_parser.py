"""The `mtl-keras` argument parser: the commands, their flags and help.

`mtl_keras.cli` runs the command `args.command` names; this module only
describes the arguments (and imports no TensorFlow).
"""

import argparse

from mtl_keras.config_files import shipped_configs


def build_parser():
    """The `mtl-keras` parser: one sub-command per job.

    Example:
    >>> build_parser().parse_args(["train", "--epochs", "2"]).epochs
    2
    """
    parser = argparse.ArgumentParser(
        prog="mtl-keras",
        description="Multi-task learning on text with Keras: one shared encoder, "
        "one head per task.",
    )
    parser.add_argument("--version", action="version", version=f"mtl-keras {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train on a config (default: the bundled sample) into a run directory",
    )
    train.add_argument(
        "--config",
        help="YAML or JSON run config, or a shipped config name ("
        + ", ".join(p.stem for p in shipped_configs())
        + ")",
    )
    train.add_argument("--out", help="run directory (default: runs/<config>-<time>)")
    train.add_argument("--epochs", type=int, help="override training.epochs")
    train.add_argument(
        "--precision",
        choices=["float32", "mixed_float16", "mixed_bfloat16", "auto"],
        help="override precision (auto: bf16 on CPU/TPU, fp16 on GPU)",
    )
    train.add_argument(
        "--data-root", help="override data_root (base of relative data paths)"
    )
    _add_setting_flags(train)
    train.add_argument("--seed", type=int, help="override training.seed")
    train.add_argument("--quiet", action="store_true", help="no progress bar or table")
    train.add_argument(
        "--restart", action="store_true",
        help="delete the run directory's checkpoints and start over (default: resume)",
    )
    train.add_argument(
        "--allow-changed-settings", action="store_true",
        help="resume although training settings differ from the checkpoints'",
    )
    train.add_argument(
        "--strategy", choices=["none", "mirrored", "multi_worker"], default="none",
        help="tf.distribute strategy: mirrored = every local GPU; multi_worker = the "
        "processes TF_CONFIG lists, each running this command (default: none)",
    )
    train.add_argument(
        "--collective-timeout", type=float, metavar="SECONDS",
        help="multi_worker: fail when another worker has not answered for this long "
        "(default: wait)",
    )

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a trained model on each task's dev data"
    )
    evaluate.add_argument("model", help="run directory or .keras file")
    evaluate.add_argument(
        "--config", help="config with the dev data (default: the run's config.yaml)"
    )
    evaluate.add_argument(
        "--json", help="also write the metrics as JSON here ('-': stdout)"
    )
    evaluate.add_argument("--data-root", help="override data_root")
    which = evaluate.add_mutually_exclusive_group()
    which.add_argument(
        "--split", choices=("dev", "test", "train"), default="dev",
        help="evaluate on the config's dev data (default), its data.test or its training data",
    )
    which.add_argument(
        "--data", metavar="FILE",
        help="evaluate on FILE, laid out like the config's dev (or train) sources: the "
        "tasks whose columns it has",
    )
    _add_trust_flag(evaluate)

    export = commands.add_parser(
        "export",
        help="export a strings-in SavedModel from a run directory or .keras file",
    )
    export.add_argument("model", help="run directory or .keras file")
    export.add_argument("out_dir", help="SavedModel directory to write")
    _add_trust_flag(export)

    predict = commands.add_parser(
        "predict", help="predict every task for texts; one JSON object per text, the text first",
        description="Prints one JSON line per text: {\"text\": ..., task: {\"label\": ..., "
        "\"probabilities\": ...}}; a sentence-pair model takes TEXT<TAB>TEXT_PAIR lines.",
    )
    predict.add_argument(
        "path", help="exported SavedModel, run directory or .keras file"
    )
    predict.add_argument(
        "texts", nargs="*", metavar="TEXT", help="texts; '-' reads stdin lines"
    )
    predict.add_argument("--file", help="read texts from this file, one per line")
    predict.add_argument(
        "--top-k", type=int, metavar="K",
        help="only the K most probable classes per classification task (binary, multiclass, "
        "multilabel; tagging: each word's K tags too); regression unchanged (default: all)",
    )
    predict.add_argument("--batch-size", type=int, default=64, help=argparse.SUPPRESS)
    _add_trust_flag(predict)

    serve = commands.add_parser(
        "serve", help="answer TF Serving's REST API for an export over HTTP (localhost)")
    serve.add_argument("path", help="exported SavedModel, run directory or .keras file")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; no authentication)")
    serve.add_argument("--port", type=int, default=8501, help="port (default 8501; 0: any)")
    serve.add_argument("--name", help="the model's name in /v1/models/NAME (default: "
                       "the run or export directory's name)")
    for flag, default, kind, what in (
        ("--max-body-bytes", 1 << 20, int, "largest request body"),
        ("--max-batch", 64, int, "most texts in one request"),
        ("--max-text-chars", 20_000, int, "longest text"),
        ("--timeout", 30.0, float, "seconds to send a request or wait for a worker"),
        ("--workers", 4, int, "requests computed at once"),
    ):
        serve.add_argument(flag, type=kind, default=default, help=f"{what} (default {default})")
    serve.add_argument("--quiet", action="store_true", help="no request log")
    _add_trust_flag(serve)

    compare = commands.add_parser(
        "compare",
        help="train the multi-task model and one single-task model per task on "
        "the same data, over seeds; report dev metrics and compute",
        description="Trains the multi-task model of a config and one single-task "
        "model per task (same size, schedule and seed) for K seeds. Budget: each "
        "single-task model trains `training.epochs` passes over its task's rows; "
        "the multi-task model trains on F times the sum of their examples, drawn "
        "by the config's sampler. Writes compare.json and compare.md.",
    )
    compare.add_argument(
        "--config",
        help="YAML or JSON run config with two or more tasks, or a "
        "shipped config name (default: the bundled sample)",
    )
    compare.add_argument(
        "--seeds", type=int, default=3, help="seeds per model (default 3)"
    )
    compare.add_argument(
        "--out", help="output directory (default: runs/compare-<config>-<time>)"
    )
    compare.add_argument(
        "--epochs", type=int, help="override training.epochs (single-task passes)"
    )
    compare.add_argument(
        "--multitask-budget",
        type=float,
        metavar="F",
        help="multi-task examples as a share of the single-task runs' sum "
        "(default 1/number of tasks)",
    )
    compare.add_argument(
        "--own-vocabulary",
        action="store_true",
        help="each model learns its vocabulary from its own training texts "
        "(default: one vocabulary from all tasks' texts, shared)",
    )
    compare.add_argument(
        "--precision",
        choices=["float32", "mixed_float16", "mixed_bfloat16", "auto"],
        help="override precision",
    )
    compare.add_argument(
        "--weighting",
        help="comma-separated weighting methods, one multi-task model each "
        "(e.g. static,uncertainty,famo,pcgrad; default: the config's)",
    )
    compare.add_argument("--data-root", help="override data_root")
    _add_setting_flags(compare)
    compare.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _version():
    # The installed distribution's version, read without importing mtl_keras
    # (and so TensorFlow): `--version` answers at once.
    from importlib import metadata

    try:
        return metadata.version("mtl_keras")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _add_trust_flag(parser):
    parser.add_argument(
        "--trust-unverified", action="store_true",
        help="UNSAFE: load a model without (or not matching) its SHA-256 manifest, "
        "e.g. a SavedModel mtl_keras did not export; loading a SavedModel runs "
        "its code, so use it only for a model from a source you trust",
    )


def _add_setting_flags(parser):
    parser.add_argument("--batch-size", type=int, help="override training.batch_size")
    parser.add_argument("--learning-rate", type=float, help="override training.learning_rate")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="change any config key, value in YAML syntax (repeatable), e.g. "
        "--set encoder.hidden_dim=128 --set data.train.0.max_rows=500",
    )
