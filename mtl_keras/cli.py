"""The `mtl-keras` command line: train, evaluate, export, predict, compare.

    mtl-keras train [--config FILE] [--out DIR] [--epochs N] [--precision P]
                    [--seed N] [--batch-size B] [--learning-rate LR] [--set KEY=VALUE ...]
                    [--data-root DIR] [--restart] [--allow-changed-settings]
                    [--strategy none|mirrored|multi_worker] [--collective-timeout S]
    mtl-keras evaluate MODEL [--config FILE] [--json OUT] [--data-root DIR]
                       [--split dev|test|train | --data FILE]
    mtl-keras export MODEL OUT_DIR
    mtl-keras predict PATH [TEXT ...] [--file F] [--top-k K]   (TEXT "-": stdin lines)
    mtl-keras serve PATH [--host 127.0.0.1] [--port 8501] [--name NAME] [limits]
    mtl-keras compare [--config FILE] [--seeds K] [--out DIR] [--epochs N] [--weighting A,B]
                      [--data-root DIR] [--multitask-budget F] [--set KEY=VALUE ...]
    mtl-keras --version

`evaluate`, `export`, `predict` and `serve` load only models whose SHA-256 manifest
matches (`mtl_keras.manifest`); `--trust-unverified` (unsafe) skips that.

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

import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

# TensorFlow-free: the arguments are checked before TensorFlow starts.
from mtl_keras.cli_checks import (  # noqa: E402
    UsageError,
    check_before_tensorflow,
    out_dir,
    serving_path,
)
from mtl_keras.cli_parser import build_parser  # noqa: E402
from mtl_keras.config_files import ConfigError  # noqa: E402

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
    return config, out_dir(args, prefix)


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


def _run_dir_config(model, path, data_root):
    """The config for MODEL: `--config`, else the run directory's config.yaml."""
    from mtl_keras.config import load_config

    if path is None:  # its existence was checked before TensorFlow started
        model = Path(model)
        path = (model if model.is_dir() else model.parent) / "config.yaml"
    return load_config(path, data_root=data_root)


def _cmd_evaluate(args):
    from mtl_keras.train import run_evaluation

    config = _run_dir_config(args.model, args.config, args.data_root)
    metrics = run_evaluation(args.model, config, verbose=1, split=args.split,
                             data_file=args.data, trust_unverified=args.trust_unverified)
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

    model = load_run_model(args.model, trust_unverified=args.trust_unverified)
    metadata = export_saved_model(model, args.out_dir)
    tasks = ", ".join(f"{t['name']} ({t['kind']})" for t in metadata["tasks"])
    print(f"Exported a SavedModel to {args.out_dir}: takes raw text; tasks {tasks}.")
    return EXIT_OK


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

    path = serving_path(args.path)
    texts = _read_texts(args)
    if not texts:
        raise RunError(
            "No texts to predict: pass TEXT arguments, `-` for stdin or --file F."
        )
    try:
        results = predict_records(str(path), texts, batch_size=args.batch_size, top_k=args.top_k,
                                  trust_unverified=args.trust_unverified)
    except ValueError as error:
        raise RunError(str(error)) from None
    for result in results:
        print(json.dumps(result, ensure_ascii=False))
    return EXIT_OK


def _cmd_serve(args):
    from mtl_keras.serve import Limits, ModelServer, make_server

    path = serving_path(args.path)
    try:
        limits = Limits(args.max_body_bytes, args.max_batch, args.max_text_chars,
                        args.timeout, args.workers)
    except ValueError as error:
        raise UsageError(str(error)) from None
    name = args.name or (path.parent if path.name == "saved_model" else path).stem
    model_server = ModelServer(str(path), name, limits, trust_unverified=args.trust_unverified)
    server = make_server(model_server, args.host, args.port, verbose=not args.quiet)
    host, port = server.server_address[:2]
    print(f"Serving {path} on http://{host}:{port}/v1/models/{name} (POST :predict). "
          "No authentication: keep it on localhost or behind a proxy. Ctrl-C stops it.",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("Stopped.", flush=True)
    finally:
        server.server_close()
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


COMMANDS = {
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "export": _cmd_export,
    "predict": _cmd_predict,
    "serve": _cmd_serve,
    "compare": _cmd_compare,
}


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
    try:
        first_line = check_before_tensorflow(args)
    except (UsageError, ConfigError) as error:
        return _fail(str(error))
    if first_line and not getattr(args, "quiet", False):
        print(first_line, flush=True)
    _quiet_tensorflow()

    from mtl_keras.checkpoints import CheckpointError
    from mtl_keras.data import DataValidationError
    from mtl_keras.distribute import StrategyError
    from mtl_keras.train import RunError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, UsageError, DataValidationError, RunError, CheckpointError,
            StrategyError) as error:
        return _fail(str(error))
    except FileNotFoundError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
