"""The `mtl-keras` command line: train, evaluate, export, predict, compare.

    mtl-keras train [--config FILE] [--out DIR] [--epochs N] [--precision P]
                    [--seed N] [--batch-size B] [--learning-rate LR] [--set KEY=VALUE ...]
                    [--data-root DIR] [--restart] [--allow-changed-settings]
                    [--strategy none|mirrored|multi_worker] [--collective-timeout S]
    mtl-keras evaluate MODEL [--config FILE] [--json OUT] [--data-root DIR] [--split dev|test]
    mtl-keras export MODEL OUT_DIR
    mtl-keras predict PATH [TEXT ...] [--file F] [--top-k K]   (TEXT "-": stdin lines)
    mtl-keras compare [--config FILE] [--seeds K] [--out DIR] [--epochs N] [--weighting A,B]
                      [--data-root DIR] [--multitask-budget F] [--set KEY=VALUE ...]
    mtl-keras --version

With no `--config`, `train` runs the bundled sample (`configs/sample.yaml`)
into `runs/<config>`; rerunning it resumes from the run's newest checkpoint.
MODEL is a run directory or a `.keras` file; PATH is also allowed to be an
exported SavedModel. A config or data problem prints one paragraph and
exits with status 2. Exit codes: 0 done, 1 training failed (a non-finite
loss; the run directory has FAILED.json), 2 a config, data or checkpoint
problem, 143 / 130 stopped by SIGTERM / SIGINT after saving a checkpoint
(rerun to resume); with `--strategy multi_worker`, 1 also when another
worker was lost (rerun every worker to resume). This is the only module
that parses `sys.argv`.
"""

import os
import sys

# Before TensorFlow is imported (when it is not yet: `mtl_keras/__init__.py`
# may already have imported it): no C++ info/warning logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")  # plots go to files

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


@contextlib.contextmanager
def _stderr_silenced():
    """Sends file descriptor 2 to /dev/null (C++ logs that ignore log levels)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. captured by a test)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _quiet_tensorflow():
    """Imports TensorFlow without its start-up chatter; quiets absl and TF logs.

    TensorFlow 2.21 writes some start-up lines through absl whatever the log
    level, so they are silenced at the file descriptor while importing (if
    not done yet) and while the devices initialize (the CUDA probe).
    """
    with _stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)


def _fail(message):
    """Prints one wrapped paragraph to stderr; returns the usage exit code."""
    text = textwrap.fill(
        f"mtl-keras: error: {message}",
        width=100,
        break_long_words=False,
        break_on_hyphens=False,  # keep paths whole
    )
    print(text, file=sys.stderr)
    return EXIT_USAGE


# --------------------------------------------------------------------------
# Commands.


def _config_and_out(args, prefix=""):
    """The config of `--config` with the flags' overrides, and the output directory."""
    from mtl_keras.config import load_config

    training = {key: getattr(args, key, None) for key in ("epochs", "seed", "batch_size",
                                                          "learning_rate")}
    config = load_config(args.config, data_root=args.data_root, precision=args.precision,
                         overrides=args.set, **training)
    name = Path(config.source).stem if config.source else "run"
    if not prefix:  # a training run: the same command, the same run directory
        return config, args.out or Path("runs") / name
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return config, args.out or Path("runs") / f"{prefix}{name}-{stamp}"


def _cmd_train(args):
    import tensorflow as tf

    from mtl_keras.distribute import make_strategy

    # First: a multi-worker strategy must exist before any other TensorFlow call.
    strategy = make_strategy(args.strategy, args.collective_timeout)
    from mtl_keras.checkpoints import Preempted
    from mtl_keras.guards import NonFiniteLossError
    from mtl_keras.train import run_training

    config, out = _config_and_out(args)
    try:
        run_training(config, out, verbose=0 if args.quiet else 1, restart=args.restart,
                     allow_changed_settings=args.allow_changed_settings, strategy=strategy,
                     command=args.command_line)
    except tf.errors.OpError as error:
        if args.strategy != "multi_worker":
            raise
        reason = str(error).strip().splitlines()[0][:300]
        print(f"mtl-keras: training stopped: a collective operation failed, so another "
              f"worker was lost or cannot be reached ({type(error).__name__}: {reason}). "
              f"Start every worker again with the same command to resume from the newest "
              f"checkpoint in {out}.", file=sys.stderr)
        return EXIT_ERROR
    except NonFiniteLossError as error:
        print(f"mtl-keras: training failed: {error} The run directory {out} is marked "
              "failed (FAILED.json); its newest checkpoint is the last finite state.",
              file=sys.stderr)
        return EXIT_ERROR
    except Preempted as stopped:
        print(f"mtl-keras: {stopped}", file=sys.stderr)
        return stopped.exit_code
    return EXIT_OK


def _run_dir_config(model, config_path, data_root):
    """The config for MODEL: `--config`, else the run directory's config.yaml."""
    from mtl_keras.config import ConfigError, load_config

    if config_path is None:
        model = Path(model)
        run_dir = model if model.is_dir() else model.parent
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(
                f"No --config given and no config.yaml next to {model}: pass the "
                "config whose dev data to use, e.g. --config my_run.yaml."
            )
        config_path = run_dir / "config.yaml"
    return load_config(config_path, data_root=data_root)


def _cmd_evaluate(args):
    from mtl_keras.train import format_metrics_table, run_evaluation

    config = _run_dir_config(args.model, args.config, args.data_root)
    metrics = run_evaluation(args.model, config, split=args.split)
    print(format_metrics_table(metrics))
    text = json.dumps(metrics, indent=2)
    if args.json == "-":
        print(text)
    elif args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")
        print(f"Metrics written to {args.json}")
    return EXIT_OK


def _cmd_export(args):
    from mtl_keras.export import export_saved_model
    from mtl_keras.train import load_run_model

    metadata = export_saved_model(load_run_model(args.model), args.out_dir)
    tasks = ", ".join(f"{t['name']} ({t['kind']})" for t in metadata["tasks"])
    print(f"Exported a SavedModel to {args.out_dir}: takes raw text; tasks {tasks}.")
    return EXIT_OK


def _serving_path(path):
    """A SavedModel directory or `.keras` bundle for PATH (a run dir included)."""
    from mtl_keras.train import RunError

    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return path
        if (path / "saved_model" / "saved_model.pb").is_file():
            return path / "saved_model"
        if (path / "model.keras").is_file():
            return path / "model.keras"
        raise RunError(
            f"{path} is neither a SavedModel (no saved_model.pb) nor a run "
            "directory (no saved_model/ or model.keras)."
        )
    if path.is_file() and path.suffix == ".keras":
        return path
    raise RunError(
        f"No model at {path}: pass an exported SavedModel directory, a run "
        "directory or a .keras file written by `mtl-keras train`."
    )


def _read_texts(args):
    texts = []
    for text in args.texts:
        if text == "-":
            texts.extend(line.rstrip("\r\n") for line in sys.stdin)
        else:
            texts.append(text)
    if args.file:
        with open(args.file, encoding="utf-8", errors="surrogateescape") as f:
            texts.extend(line.rstrip("\r\n") for line in f)
    return texts


def _cmd_predict(args):
    from mtl_keras.export import predict_records
    from mtl_keras.train import RunError

    path = _serving_path(args.path)
    texts = _read_texts(args)
    if not texts:
        raise RunError(
            "No texts to predict: pass TEXT arguments, `-` for stdin or --file F."
        )
    try:
        results = predict_records(str(path), texts, batch_size=args.batch_size, top_k=args.top_k)
    except ValueError as error:
        raise RunError(str(error)) from None
    for result in results:
        print(json.dumps(result, ensure_ascii=False))
    return EXIT_OK


def _cmd_compare(args):
    from mtl_keras.compare import compare

    config, out = _config_and_out(args, prefix="compare-")
    compare(
        config,
        seeds=args.seeds,
        out_dir=out,
        multitask_budget=args.multitask_budget,
        vocabulary="own" if args.own_vocabulary else "shared",
        verbose=0 if args.quiet else 1,
        weightings=args.weighting.split(",") if args.weighting else None,
    )
    return EXIT_OK


# --------------------------------------------------------------------------
# Parser.


def build_parser():
    """build_parser.

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
        + ", ".join(sorted(p.stem for p in (Path(__file__).parent / "configs").glob("*.yaml")))
        + ")",
    )  # the configs directory is read without importing mtl_keras.config (TensorFlow)
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
    train.set_defaults(run=_cmd_train)

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
    evaluate.add_argument(
        "--split", choices=("dev", "test"), default="dev",
        help="evaluate on the config's dev data (default) or on its data.test",
    )
    evaluate.set_defaults(run=_cmd_evaluate)

    export = commands.add_parser(
        "export",
        help="export a strings-in SavedModel from a run directory or .keras file",
    )
    export.add_argument("model", help="run directory or .keras file")
    export.add_argument("out_dir", help="SavedModel directory to write")
    export.set_defaults(run=_cmd_export)

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
    predict.set_defaults(run=_cmd_predict)

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
    compare.set_defaults(run=_cmd_compare)
    return parser


def _version():
    # The installed distribution's version, read without importing mtl_keras
    # (and so TensorFlow): `--version` answers at once.
    from importlib import metadata

    try:
        return metadata.version("mtl_keras")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _add_setting_flags(parser):
    parser.add_argument("--batch-size", type=int, help="override training.batch_size")
    parser.add_argument("--learning-rate", type=float, help="override training.learning_rate")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="change any config key, value in YAML syntax (repeatable), e.g. "
        "--set encoder.hidden_dim=128 --set data.train.0.max_rows=500",
    )


def main(argv=None):
    """Runs the command line; returns the exit code.

    Example:
    >>> main(["train", "--precision", "fp8"])  # a usage error: exit status 2
    2
    """
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and (args.command != "predict" or any(e[:1] == "-" != e for e in extra)):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if extra:  # `predict PATH --top-k 1 TEXT ...`: argparse leaves these TEXTs over
            args.texts += extra
    except SystemExit as exit_:  # --help, or a usage error (already printed)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    args.command_line = shlex.join(["mtl-keras", *map(str, sys.argv[1:] if argv is None else argv)])
    _quiet_tensorflow()

    from mtl_keras.checkpoints import CheckpointError
    from mtl_keras.config import ConfigError
    from mtl_keras.data import DataValidationError
    from mtl_keras.distribute import StrategyError
    from mtl_keras.train import RunError

    try:
        return args.run(args)
    except (ConfigError, DataValidationError, RunError, CheckpointError, StrategyError) as error:
        return _fail(str(error))
    except FileNotFoundError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
